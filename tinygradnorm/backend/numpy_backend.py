"""The CPU backend: NumPy arrays."""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class NumpyBackend:
    """Array module and the few operations NumPy spells its own way."""

    name = "numpy"
    xp = np

    def __init__(self):
        self.rng = np.random.default_rng()
        self.threads = int(os.environ.get("TINYGRADNORM_NUM_THREADS") or os.cpu_count() or 1)
        self._pool = None

    def available(self):
        return True, ""

    def asarray(self, data, dtype=None):
        if hasattr(data, "__cuda_array_interface__"):
            data = data.get()
        return np.asarray(data, dtype=dtype)

    def to_host(self, array):
        return np.asarray(array)

    def scatter_add(self, target, index, values):
        """target[index] += values, accumulating repeated indices."""
        np.add.at(target, index, values)

    def windows(self, array, window_shape, axis):
        """Read-only strided view of every window along the given axes."""
        return np.lib.stride_tricks.sliding_window_view(array, window_shape, axis=axis)

    def parallel(self, fn, *arrays, min_bytes=1 << 21):
        """Split axis 0 of the arrays into one piece per thread and call fn on the pieces at once.

        Arrays whose axis 0 does not match the first one's (per-channel statistics, say) are
        passed whole. NumPy releases the GIL inside ufuncs and BLAS, so a chain of in-place
        steps on each piece runs on every core. Returns fn's results, piece by piece in order.
        """
        ref = arrays[0]
        n = ref.shape[0] if ref.ndim else 1
        k = min(self.threads, n)
        if k <= 1 or ref.nbytes < min_bytes:
            return [fn(*arrays)]
        bounds = [n * i // k for i in range(k + 1)]

        def run(i):
            lo, hi = bounds[i], bounds[i + 1]
            return fn(*[a[lo:hi] if a.ndim == ref.ndim and a.shape[0] == n else a for a in arrays])

        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tinygradnorm")
        return list(self._pool.map(run, range(k)))

    def seed(self, seed):
        self.rng = np.random.default_rng(seed)

    def get_rng_state(self):
        return self.rng.bit_generator.state

    def set_rng_state(self, state):
        self.rng.bit_generator.state = state

    def synchronize(self):
        pass
