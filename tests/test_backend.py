"""Backend selection: NumPy always, CuPy lazily, and no op or layer module touching numpy itself."""
import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import tinygradnorm as tg

PACKAGE = pathlib.Path(tg.__file__).parent
# Modules allowed to import numpy: the backend itself, dtype names, gradcheck's host-side
# random generator, host-side data loading and file I/O, and the host-side tools: the graph pictures'
# value summaries, the learner's comparisons, and MPI's buffers (which live on the host).
ALLOWED = {"backend", "dtypes.py", "gradcheck.py", "data", "serialization.py", "viz.py", "testing.py", "distributed"}


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
    if tg.cuda.is_available():
        pytest.skip("a GPU is present")
    assert tg.cuda_available() is False and tg.cuda.is_available() is False and tg.cuda.device_count() == 0
    why = tg.cuda.unavailable_reason()
    assert why
    device = "cuda" if tg.cuda_available() else "cpu"      # the usual idiom picks the CPU here
    assert device == "cpu"
    with pytest.raises(RuntimeError, match="device 'cuda:0' is unavailable: " + why[:20]):
        tg.zeros(2, device="cuda")
    with pytest.raises(RuntimeError, match="unavailable"):
        tg.cuda.synchronize()


def test_devices_are_interned():
    assert tg.device("cpu") is tg.device("CPU")
    assert tg.device("cpu") == "cpu"
    assert str(tg.device("cpu")) == "cpu"


def test_compiled_kernels_can_be_switched_off_and_say_why(monkeypatch):
    from tinygradnorm.backend.numpy_backend import NumpyBackend
    monkeypatch.setenv("TINYGRADNORM_JIT", "0")
    backend = NumpyBackend()
    assert backend.kernels is None and "TINYGRADNORM_JIT=0" in backend.kernels_missing


def test_missing_numba_falls_back_with_the_reason(monkeypatch):
    import sys
    from tinygradnorm.backend.numpy_backend import NumpyBackend
    monkeypatch.delenv("TINYGRADNORM_JIT", raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)          # makes `import numba` raise ImportError
    for name in [m for m in sys.modules if m.startswith("tinygradnorm.backend.cpu_kernels")]:
        monkeypatch.delitem(sys.modules, name)
    backend = NumpyBackend()
    assert backend.kernels is None
    assert "Numba" in backend.kernels_missing and "pip install numba" in backend.kernels_missing


def test_parallel_range_covers_every_index_once():
    backend = tg.device("cpu").backend
    for n, nbytes in [(1, 1 << 30), (7, 1 << 30), (64, 1 << 30), (64, 10)]:
        seen = np.zeros(n, dtype=int)

        def mark(lo, hi):
            seen[lo:hi] += 1
        backend.parallel_range(mark, n, nbytes)
        assert (seen == 1).all(), (n, seen)


def test_scratch_is_reused_per_name_and_separate_per_thread():
    import threading
    kernels = tg.device("cpu").backend.kernels
    if kernels is None:
        pytest.skip("no compiled CPU kernels")
    a = kernels.scratch("test-a", (4, 5), np.float32)
    assert a.shape == (4, 5) and a.dtype == np.float32
    assert np.shares_memory(a, kernels.scratch("test-a", (2, 3), np.float64))
    assert not np.shares_memory(a, kernels.scratch("test-b", (4, 5), np.float32))
    other = []
    t = threading.Thread(target=lambda: other.append(kernels.scratch("test-a", (4, 5), np.float32)))
    t.start()
    t.join()
    assert not np.shares_memory(a, other[0])
