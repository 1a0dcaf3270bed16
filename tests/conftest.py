"""Shared fixtures: the devices to run on, seeded random arrays, and the PyTorch oracle; and the skip summary."""
from collections import Counter

import numpy as np
import pytest

import tinygradnorm as tg

DEVICES = ["cpu"] + (["cuda"] if tg.cuda.is_available() else [])


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Every test that takes this runs once per device; CUDA cases skip without CuPy and a GPU."""
    if request.param == "cuda" and not tg.cuda.is_available():
        pytest.skip(f"no CUDA device: {tg.cuda.unavailable_reason()}")
    return request.param


@pytest.fixture(params=["compiled", "numpy"])
def cpu_path(request, monkeypatch):
    """Runs a test once with the CPU backend's compiled kernels (Numba) and once with NumPy's code alone. A test's
    cuda case (from the device fixture) runs once, under "numpy": the CPU path does not apply to it."""
    params = request.node.callspec.params if hasattr(request.node, "callspec") else {}
    if params.get("device") == "cuda":
        if not tg.cuda.is_available():
            pytest.skip(f"no CUDA device: {tg.cuda.unavailable_reason()}")
        if request.param == "compiled":
            pytest.skip("the CPU path does not apply to a CUDA case: it runs once, under 'numpy'")
    backend = tg.device("cpu").backend
    if request.param == "compiled":
        if backend.kernels is None:
            pytest.skip(f"no compiled CPU kernels: {backend.kernels_missing}")
    else:
        monkeypatch.setattr(backend, "_kernels", None)
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def leaf(array, device="cpu", requires_grad=True):
    """A float64 leaf tensor from a NumPy array."""
    return tg.Tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad, device=device)


def pytest_terminal_summary(terminalreporter):
    """One line per reason tests were skipped (a GPU, PyTorch, a data package missing), with how many."""
    reasons = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.section("skipped, by reason")
        for reason, n in reasons.most_common():
            terminalreporter.write_line(f"{n:6d}  {reason}")


def mutant(fn, old, new, **names):
    """fn with the text ``old`` of its source replaced by ``new``: a planted bug. fn is a Python function or a
    Numba-compiled one (recompiled with its own options, uncached). ``names`` replace globals that fn calls (a
    mutant of a helper that Numba inlines, say)."""
    import inspect
    import textwrap
    py = getattr(fn, "py_func", fn)
    src = textwrap.dedent(inspect.getsource(py))
    assert not old or src.count(old) == 1, f"{old!r} appears {src.count(old)} times in {py.__name__}"
    lines = (src.replace(old, new) if old else src).splitlines()
    body = "\n".join(lines[next(i for i, line in enumerate(lines) if line.startswith("def ")):])
    namespace = dict(py.__globals__, **names)
    exec(compile(body, f"<mutant of {py.__name__}>", "exec"), namespace)
    wrong = namespace[py.__name__]
    if py is fn:
        return wrong
    from numba import njit
    # NOTE: compiled serially (prange runs as range): the same maths, compiled several times faster.
    options = {k: v for k, v in fn.targetoptions.items() if k not in ("cache", "nopython", "parallel")}
    return njit(**options)(wrong)
