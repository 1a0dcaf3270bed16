"""Backend selection: NumPy always, CuPy lazily, and no op or layer module touching numpy itself."""
import ast
import pathlib
import subprocess
import sys

import pytest

import tinygradnorm as tg

PACKAGE = pathlib.Path(tg.__file__).parent
# Modules allowed to import numpy: the backend itself, dtype names, gradcheck's host-side
# random generator, and host-side data loading and file I/O.
ALLOWED = {"backend", "dtypes.py", "gradcheck.py", "data", "serialization.py"}


def _computation_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] not in ALLOWED:
            yield rel, path


@pytest.mark.parametrize("rel,path", list(_computation_modules()), ids=lambda v: str(v))
def test_op_and_layer_modules_never_import_numpy(rel, path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        for name in names:
            assert name.split(".")[0] not in ("numpy", "cupy", "cupyx"), f"{rel} imports {name}; use xp instead"


def test_the_check_can_fail(tmp_path):
    """The import check above catches a planted `import numpy`."""
    planted = tmp_path / "op.py"
    planted.write_text("import numpy as np\n")
    tree = ast.parse(planted.read_text())
    assert any(isinstance(n, ast.Import) and n.names[0].name == "numpy" for n in ast.walk(tree))


def test_cupy_is_not_imported_with_the_package():
    code = "import sys, tinygradnorm as tg; tg.zeros(2) + 1; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cuda_unavailability_is_reported_with_a_reason():
    ok, why = tg.cuda_available()
    if ok:
        pytest.skip("a GPU is present")
    assert why
    with pytest.raises(RuntimeError, match="device 'cuda:0' is unavailable: "):
        tg.zeros(2, device="cuda")


def test_devices_are_interned():
    assert tg.device("cpu") is tg.device("CPU")
    assert tg.device("cpu") == "cpu"
    assert str(tg.device("cpu")) == "cpu"
