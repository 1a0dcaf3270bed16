"""The GPU backend: CuPy arrays. CuPy is imported only when this backend is first asked for."""


class CupyBackend:
    """Array module and the few operations CuPy spells its own way."""

    name = "cupy"
    kernels = None  # no compiled kernels yet: every op runs its CuPy (NumPy-spelled) code

    def __init__(self, index=0):
        self.index = index
        self._xp = None
        self._norm = None
        self.rng = None

    def available(self):
        """(True, "") when CuPy imports and sees this GPU, else (False, the reason)."""
        try:
            import cupy
        except Exception as e:  # ImportError, or a CUDA library that fails to load
            return False, f"CuPy is not importable ({type(e).__name__}: {e}); install tinygradnorm[cuda12] or [cuda13]"
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:
            return False, f"CuPy found no usable GPU ({type(e).__name__}: {e})"
        if self.index >= count:
            return False, f"cuda:{self.index} requested but only {count} GPU(s) are visible"
        return True, ""

    @staticmethod
    def device_count():
        """How many GPUs CuPy sees (0 without CuPy or a driver)."""
        try:
            import cupy
            return int(cupy.cuda.runtime.getDeviceCount())
        except Exception:           # noqa: BLE001  (ImportError, or a CUDA library or driver that is missing)
            return 0

    @property
    def norm(self):
        """The normalization maths: the reference array code of backend/norm.py, on CuPy arrays. (The CUDA
        kernels of cuda_kernels.py take this slot once they are verified on a GPU; nothing selects them yet.)"""
        if self._norm is None:
            from .norm import ArrayNorm
            self._norm = ArrayNorm(self.xp)
        return self._norm

    @property
    def xp(self):
        if self._xp is None:
            ok, why = self.available()
            if not ok:
                raise RuntimeError(f"device 'cuda:{self.index}' is unavailable: {why}")
            import cupy
            self._xp = cupy
            with cupy.cuda.Device(self.index):
                self.rng = cupy.random.default_rng()
        return self._xp

    def device(self):
        """Context manager that makes this GPU current."""
        return self.xp.cuda.Device(self.index)

    def asarray(self, data, dtype=None):
        xp = self.xp
        with xp.cuda.Device(self.index):
            return xp.asarray(data, dtype=dtype)

    def to_host(self, array):
        return array.get()

    def from_dlpack(self, obj):
        """A CuPy array sharing the GPU memory of obj, which speaks DLPack."""
        with self.device():
            return self.xp.from_dlpack(obj)

    def erf(self, x):
        """The error function, elementwise."""
        import cupyx.scipy.special
        return cupyx.scipy.special.erf(x)

    def scatter_add(self, target, index, values):
        """target[index] += values, accumulating repeated indices."""
        import cupyx
        cupyx.scatter_add(target, index, values)

    def windows(self, array, window_shape, axis):
        """Read-only strided view of every window along the given axes."""
        from cupy.lib.stride_tricks import as_strided
        axis = tuple(a % array.ndim for a in axis)
        shape, strides = list(array.shape), list(array.strides)
        for ax, w in zip(axis, window_shape):
            shape[ax] -= w - 1
        shape += list(window_shape)
        strides += [array.strides[ax] for ax in axis]
        return as_strided(array, shape=tuple(shape), strides=tuple(strides))

    def parallel(self, fn, *arrays, min_bytes=None):
        """Call fn on the whole arrays (one piece): a GPU kernel already runs on every core."""
        return [fn(*arrays)]

    def matmul(self, a, b):
        """a @ b (cuBLAS already uses the whole GPU)."""
        return a @ b

    def seed(self, seed):
        xp = self.xp
        with xp.cuda.Device(self.index):
            self.rng = xp.random.default_rng(seed)

    def get_rng_state(self):
        raise NotImplementedError("saving the CuPy generator's state is not supported; reseed with manual_seed")

    def set_rng_state(self, state):
        raise NotImplementedError("restoring the CuPy generator's state is not supported; reseed with manual_seed")

    def synchronize(self):
        self.xp.cuda.Device(self.index).synchronize()
