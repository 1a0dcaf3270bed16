"""How the kernels are compiled: by Numba, without the GIL, cached on disk.

``pjit`` compiles a loop written with ``prange``: Numba's own threads (OpenMP) run its
iterations, with a launch that costs microseconds where handing work to a Python thread pool
costs some 50. Every prange loop here computes each iteration's result on its own, or adds
partial sums over blocks that depend on the shapes only, so the result never depends on how
many threads run it. (The convolution, whose chunks call BLAS, runs on the backend's thread pool
instead: see conv.py.)

NOTE: Numba's fallback threading layer (workqueue) aborts the process when two Python threads
launch parallel loops at once. Where no thread-safe layer (OpenMP or TBB) is installed, ``pjit``
compiles the loops serially instead: correct everywhere, multithreaded where it is safe.
"""
import importlib
import threading

import numba
from numba import njit

# NOTE: reassociation lets the compiler vectorize the sums (it changes only their rounding, as
# NumPy's pairwise sums do); no other fast-math flag, so inf and nan propagate as they should.
FAST = {"reassoc", "contract"}


def _thread_safe_layer():
    """True when Numba can load a threading layer that several Python threads may use at once."""
    if numba.config.THREADING_LAYER not in ("default", "threadsafe", "safe", "omp", "tbb"):
        return False
    for pool in ("omppool", "tbbpool"):
        try:
            importlib.import_module(f"numba.np.ufunc.{pool}")
        except ImportError:
            continue
        if numba.config.THREADING_LAYER == "default":
            numba.config.THREADING_LAYER = "threadsafe"
        return True
    return False


PARALLEL = _thread_safe_layer()
MAX_THREADS = numba.config.NUMBA_NUM_THREADS if PARALLEL else 1


def pjit(fn=None, **options):
    """Compile a prange loop: ``@pjit``, or ``@pjit(option=...)`` to change Numba's options.

    NOTE: NumPy's error model: a float divided by zero is inf or nan, as in NumPy and PyTorch, not Python's
    ZeroDivisionError (a running variance of -eps, say, makes 1/sqrt(var + eps) a division by zero)."""
    compile_ = njit(**dict(dict(nogil=True, fastmath=FAST, cache=True, parallel=PARALLEL, error_model="numpy"),
                           **options))
    return compile_ if fn is None else compile_(fn)


class ThreadCount:
    """Gives each calling thread's prange loops the backend's thread count (Numba keeps the count per thread)."""

    def __init__(self, threads):
        self.threads = threads              # a function: the backend's current thread count
        self._seen = threading.local()

    def __call__(self):
        """Set the calling thread's count for Numba, when it changed; return it."""
        k = max(1, min(self.threads(), MAX_THREADS))
        if getattr(self._seen, "k", None) != k:
            if PARALLEL:
                numba.set_num_threads(k)
            self._seen.k = k
        return k
