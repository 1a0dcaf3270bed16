"""The CPU backend: NumPy arrays."""
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .norm import ArrayNorm

_UNSET = object()

# NOTE: after a parallel loop, each OpenMP thread spins waiting for the next one, by default for some
# 300,000 rounds: milliseconds in which it keeps a core that the thread pool below (convolution) needs
# next. Measured on the LeNet step: 20.4 ms at the default, 13.7 ms at 10,000 rounds (still enough to
# catch a kernel that follows at once), 16.2 ms at 0. OpenMP reads this when it loads, so it is set on
# import, before the kernels (or another library, such as PyTorch, whose OpenMP they would share) load
# it. A value already set wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# NOTE: handing half a product to another thread costs some 50-150 us; measured, LeNet's
# largest linear layer (256x256 @ 256x120, 8M multiply-adds: 0.12 ms on one core) ran slower split.
_SPLIT_MATMUL_MACS = 1 << 25
_MATMUL_BLOCKS = 16           # a split product is cut into this many row blocks, whatever the thread count


def _limit_blas_threads():
    """One thread per BLAS call. False where threadpoolctl is missing or finds no BLAS to limit."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    return bool(threadpool_limits(1, user_api="blas").get_original_num_threads().get("blas"))


class NumpyBackend:
    """Array module and the few operations NumPy spells its own way."""

    name = "numpy"
    xp = np

    def __init__(self):
        self.rng = np.random.default_rng()
        self.threads = int(os.environ.get("TINYGRADNORM_NUM_THREADS") or os.cpu_count() or 1)
        self.min_split_bytes = 1 << 21     # work on less data than this stays on the calling thread
        self.block_bytes = 1 << 19         # parallel's blocks: about this many bytes of the first array
        self._pool = None
        self._lock = threading.Lock()       # the pool and the kernels start once, whichever thread asks first
        self._kernels = _UNSET
        self.kernels_missing = ""
        self.split_matmul = False          # True once BLAS runs one thread per call (see kernels)
        self._array_norm = None

    @property
    def kernels(self):
        """The compiled kernels of cpu_kernels/, or None without Numba or with TINYGRADNORM_JIT=0
        (``kernels_missing`` then says why). Ops fall back to their NumPy code when it is None."""
        if self._kernels is _UNSET:
            with self._lock:
                if self._kernels is _UNSET:
                    self._start_kernels()
        return self._kernels

    def _start_kernels(self):
        kernels = None
        if os.environ.get("TINYGRADNORM_JIT", "1").strip() == "0":
            self.kernels_missing = "TINYGRADNORM_JIT=0"
        else:
            if "numba" not in sys.modules:
                # Numba's threads (the normalization kernels' prange loops) default to this count.
                os.environ.setdefault("NUMBA_NUM_THREADS", str(self.threads))
            try:
                from .cpu_kernels import CpuKernels
            except ImportError as e:
                self.kernels_missing = f"Numba could not be imported ({e}); pip install numba"
            else:
                kernels = CpuKernels(self.parallel_range, lambda: self.threads)
                # NOTE: the kernels call BLAS from the pool's threads, and BLAS's own threads, which
                # spin for a while after each call, would fight them for the same cores (measured:
                # a LeNet training step took 30 ms with both, 19 ms with BLAS on one thread). So from
                # here on BLAS gets one thread per call, for the whole process, and matmul splits
                # large products over the pool instead.
                self.split_matmul = _limit_blas_threads()
        self._kernels = kernels

    @property
    def norm(self):
        """The normalization maths (backend/norm.py): the compiled kernels where Numba is on, else the array code."""
        kernels = self._kernels
        if kernels is _UNSET:
            kernels = self.kernels
        if kernels is not None:
            return kernels
        if self._array_norm is None:
            self._array_norm = ArrayNorm(np)
        return self._array_norm

    def available(self):
        return True, ""

    def asarray(self, data, dtype=None):
        if hasattr(data, "__cuda_array_interface__"):
            data = data.get()
        return np.asarray(data, dtype=dtype)

    def to_host(self, array):
        return np.asarray(array)

    def from_dlpack(self, obj):
        """A NumPy array sharing the memory of obj, which speaks DLPack (a torch tensor, a JAX array, ...)."""
        return np.from_dlpack(obj)

    def erf(self, x):
        """The error function, elementwise (NumPy has none): compiled where the kernels are, else per element."""
        if self.kernels is not None and x.dtype.kind == "f":
            return self.kernels.erf(x)
        return np.frompyfunc(math.erf, 1, 1)(x).astype(x.dtype if x.dtype.kind == "f" else np.float64)

    def scatter_add(self, target, index, values):
        """target[index] += values, accumulating repeated indices."""
        np.add.at(target, index, values)

    def windows(self, array, window_shape, axis):
        """Read-only strided view of every window along the given axes."""
        return np.lib.stride_tricks.sliding_window_view(array, window_shape, axis=axis)

    def parallel(self, fn, *arrays):
        """Call fn on blocks of rows (axis 0) of the arrays, spread over the backend's threads.

        Arrays whose axis 0 does not match the first one's (per-channel statistics, say) are passed
        whole. Each block is about ``block_bytes``, so a chain of in-place steps in fn finds the block
        still in cache: the chain costs about one trip to memory instead of one per step. NumPy
        releases the GIL inside ufuncs and BLAS, so the threads run at once. Returns fn's results in
        block order.

        NOTE: the blocks depend on the arrays' size only, never on the number of threads, so a caller
        that adds up per-block partial sums in the order returned gets the same bits for any
        TINYGRADNORM_NUM_THREADS.
        """
        ref = arrays[0]
        n = ref.shape[0] if ref.ndim else 1
        if n <= 1 or ref.nbytes < self.min_split_bytes:
            return [fn(*arrays)]
        rows = max(1, n * self.block_bytes // ref.nbytes)
        starts = range(0, n, rows)
        results = [None] * len(starts)

        def run(lo, hi):
            for i in range(lo, hi):
                a, b = starts[i], min(starts[i] + rows, n)
                results[i] = fn(*[x[a:b] if x.ndim == ref.ndim and x.shape[0] == n else x for x in arrays])

        self.parallel_range(run, len(starts), ref.nbytes, min_bytes=0)
        return results

    def parallel_range(self, fn, n, nbytes, min_bytes=None):
        """Call fn(lo, hi) on pieces of range(n) that cover it, one per thread; nbytes (the data the calls
        touch) decides whether splitting pays. fn must release the GIL (a nogil kernel, or NumPy).

        Every index is handled by exactly one call, so what fn computes per index never depends on
        how range(n) was split.
        """
        min_bytes = self.min_split_bytes if min_bytes is None else min_bytes
        k = min(self.threads, n) if nbytes >= min_bytes else 1
        if k <= 1:
            fn(0, n)
            return
        # NOTE: the calling thread takes the first piece itself: one thread fewer to wake per call.
        others = [self._threads().submit(fn, n * i // k, n * (i + 1) // k) for i in range(1, k)]
        fn(0, n // k)
        for f in others:
            f.result()

    def matmul(self, a, b):
        """a @ b. Once BLAS runs one thread per call (see kernels), a large 2-D product is cut into a fixed
        number of row blocks, each one BLAS call, spread over the thread pool."""
        if (not self.split_matmul or a.ndim != 2 or b.ndim != 2
                or a.shape[0] * a.shape[1] * b.shape[1] < _SPLIT_MATMUL_MACS):
            return a @ b
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
        m = a.shape[0]
        rows = -(-m // _MATMUL_BLOCKS)

        def run(lo, hi):
            for r in range(lo * rows, min(hi * rows, m), rows):
                np.matmul(a[r:r + rows], b, out=out[r:r + rows])

        self.parallel_range(run, -(-m // rows), 0, min_bytes=0)
        return out

    def _threads(self):
        """The one thread pool that parallel, parallel_range and matmul share, started on first use."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tinygradnorm")
        return self._pool

    def seed(self, seed):
        self.rng = np.random.default_rng(seed)

    def get_rng_state(self):
        return self.rng.bit_generator.state

    def set_rng_state(self, state):
        self.rng.bit_generator.state = state

    def synchronize(self):
        pass
