"""The GPU path, checked without a GPU: everything the code asks of CuPy exists in CuPy, with the arguments used.

The array code of the ops and layers is written once against ``xp`` (NumPy or CuPy). This test reads the
source (statically, with ``ast``) and collects:

- every attribute used on ``xp`` (``xp.sqrt``, ``self.xp.random.default_rng``, ...), with the keyword
  arguments of each call;
- every ``cupy``/``cupyx`` import and attribute of the CuPy backend;
- every attribute the package asks of a backend (``self.backend.matmul``, ...);

and checks each against the installed CuPy (which imports without a GPU) and against ``CupyBackend``. A
NumPy-only call (``xp.frompyfunc``, say) fails it, which a planted one below shows.
"""
import ast
import functools
import inspect
import pathlib

import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install -e \".[cuda12]\")")
import cupyx  # noqa: E402,F401  (cupyx.scipy.special and the other submodules resolve through it)
import cupyx.scipy.special  # noqa: E402,F401

from tinygradnorm.backend.cupy_backend import CupyBackend  # noqa: E402

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tinygradnorm"
# Host-side or CPU-only code, which never sees a CuPy array: the NumPy backend, its compiled kernels, the
# data pipeline (NumPy by design), checkpoints' file format, and the learning tools.
HOST_ONLY = ("backend/numpy_backend.py", "backend/cpu_kernels/", "data/", "viz.py", "testing.py")


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not rel.startswith(HOST_ONLY):
            yield rel, path.read_text()


def _chain(node):
    """'a.b.c' for an Attribute chain; a root that is not a name (a call, a subscript) reads as '()'."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "()")
    return ".".join(reversed(parts))


def xp_uses(source):
    """{'sqrt': {kwarg names}, 'random.default_rng': set(), ...}: what the code asks of ``xp``."""
    uses = {}
    tree = ast.parse(source)
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        parts = _chain(node).split(".")
        # the xp root: a variable named xp, or an attribute .xp of anything (self.xp, t.xp, backend.xp)
        if "xp" not in parts[:-1]:
            continue
        rest = parts[parts.index("xp") + 1:]
        if not rest:
            continue
        name = ".".join(rest)
        call = calls.get(id(node))
        uses.setdefault(name, set()).update(k.arg for k in (call.keywords if call else ()) if k.arg)
    # keep only the longest chains (xp.random.default_rng, not also xp.random)
    return {n: kw for n, kw in uses.items() if not any(o.startswith(n + ".") for o in uses)}


def cupy_imports(source):
    """Names imported from cupy or cupyx ('cupyx.scipy.special', 'cupy.lib.stride_tricks.as_strided') and the
    attributes used on cupyx."""
    found = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in ("cupy", "cupyx"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("cupy", "cupyx"):
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain.split(".")[0] == "cupyx":
                found.add(chain)
    return found


def backend_uses(source):
    """Attributes asked of a backend object: x.backend.<name> or backend.<name>."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            parts = _chain(node).split(".")
            if "backend" in parts[:-1]:
                found.add(parts[parts.index("backend") + 1])
    return found


def _resolve(root, dotted):
    try:
        return functools.reduce(getattr, dotted.split("."), root)
    except AttributeError:
        return None


UFUNC_KWARGS = {"out", "dtype", "casting"}


def missing_in_cupy(uses):
    """[(name, why)] for every use CuPy cannot serve: a missing attribute, or a keyword argument it does not take."""
    problems = []
    for name, kwargs in sorted(uses.items()):
        target = _resolve(cupy, name)
        if target is None:
            problems.append((name, "cupy has no such attribute"))
            continue
        if not kwargs or not callable(target):
            continue
        if type(target).__name__ == "ufunc":
            bad = kwargs - UFUNC_KWARGS
        else:
            try:
                params = inspect.signature(target).parameters
            except (TypeError, ValueError):
                continue                                     # a compiled function without a signature to read
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                continue
            bad = kwargs - set(params)
        if bad:
            problems.append((name, f"cupy's {name} takes no keyword {', '.join(sorted(bad))}"))
    return problems


def _all_xp_uses():
    uses = {}
    for _, src in _sources():
        for name, kw in xp_uses(src).items():
            uses.setdefault(name, set()).update(kw)
    return uses


def test_the_scan_finds_what_the_array_code_uses():
    """A sanity check of the scanner itself: it must see the calls it is meant to check."""
    uses = _all_xp_uses()
    for name in ("sqrt", "float64", "random.default_rng", "square", "maximum", "float32"):
        assert name in uses, name
    assert "dtype" in uses["square"] or "dtype" in uses.get("float64", set()) or len(uses) > 60


def test_every_attribute_the_array_code_uses_on_xp_exists_in_cupy():
    problems = missing_in_cupy(_all_xp_uses())
    assert not problems, "\n".join(f"xp.{n}: {why}" for n, why in problems)


def _import(name):
    """The object a dotted name imports as: the longest importable module prefix, then attributes."""
    import importlib
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        return _resolve(module, ".".join(parts[i:])) if parts[i:] else module
    return None


def test_every_cupy_and_cupyx_import_resolves():
    names = set()
    for _, src in _sources():
        names |= cupy_imports(src)
    assert "cupyx.scipy.special" in names and "cupyx.scatter_add" in names
    missing = sorted(n for n in names if _import(n) is None)
    assert not missing, f"not in CuPy: {missing}"


def test_every_backend_attribute_the_package_uses_exists_on_the_cupy_backend():
    used = set()
    for _, src in _sources():
        used |= backend_uses(src)
    backend = CupyBackend(0)                       # constructs without touching the GPU
    have = set(dir(CupyBackend)) | set(vars(backend)) | {"_pending_seed"}   # set by backend/__init__.py on use
    assert {"xp", "kernels", "asarray", "matmul", "scatter_add", "erf", "synchronize"} <= used
    assert not used - have, f"CupyBackend lacks {sorted(used - have)}"


@pytest.mark.parametrize("snippet, name", [
    ("def f(self, x):\n    return self.xp.frompyfunc(abs, 1, 1)(x)\n", "frompyfunc"),
    ("def f(xp, x):\n    return xp.ma.masked_invalid(x)\n", "ma.masked_invalid"),
    ("def f(xp, x):\n    return xp.add(x, x, where=x > 0, subok=True)\n", "add"),
])
def test_a_planted_numpy_only_call_is_caught(snippet, name):
    problems = missing_in_cupy(xp_uses(snippet))
    assert [n for n, _ in problems] == [name], problems


def test_the_cuda_kernels_are_not_selectable_until_verified_on_a_gpu():
    """Unverified GPU kernels must never be the default: the CuPy backend's dispatcher offers none."""
    assert CupyBackend.kernels is None
    assert inspect.getattr_static(CupyBackend, "kernels") is None


# ---- the CUDA kernels' source, compiled by NVRTC without a GPU -------------------------------------------------
def _nvrtc():
    from cupy.cuda import nvrtc
    try:
        nvrtc.getVersion()
    except Exception as e:          # noqa: BLE001  (the library is missing: a DynamicLibNotFoundError or OSError)
        pytest.skip(f"NVRTC is not installed ({type(e).__name__}); pip install nvidia-cuda-nvrtc-cu12")
    return nvrtc


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_the_cuda_kernel_sources_compile_with_nvrtc(dtype, arch):
    """NVRTC needs no driver and no GPU: every kernel compiles to PTX, for each element type."""
    from tinygradnorm.backend import cuda_kernels
    nvrtc = _nvrtc()
    prog = nvrtc.createProgram(cuda_kernels.source(dtype), "norm.cu", [], [])
    try:
        nvrtc.compileProgram(prog, [f"-arch={arch}", "-std=c++11"])
    except nvrtc.NVRTCError as e:
        pytest.fail(f"{e}\n{nvrtc.getProgramLog(prog)}")
    ptx = nvrtc.getPTX(prog).decode()
    for name in cuda_kernels.KERNELS:
        assert f".entry {name}(" in ptx, name


def test_a_planted_cuda_error_fails_to_compile():
    from tinygradnorm.backend import cuda_kernels
    nvrtc = _nvrtc()
    broken = cuda_kernels.source("float32").replace("double sc = inv * (double)weight[s];", "double sc = inv * weight;")
    prog = nvrtc.createProgram(broken, "norm.cu", [], [])
    with pytest.raises(nvrtc.NVRTCError):
        nvrtc.compileProgram(prog, ["-arch=compute_90", "-std=c++11"])
    assert "weight" in nvrtc.getProgramLog(prog)
