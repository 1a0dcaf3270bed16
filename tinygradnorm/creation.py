"""Tensor factories. Each asks the device's backend for the array, so none hard-codes numpy."""
from .backend import default_device, device as as_device, is_array
from .dtypes import as_dtype, float32, int64
from .tensor import Tensor


def _shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return shape


def _make(array_fn, shape, dtype, device, requires_grad, default=float32):
    dev = as_device(device) if device is not None else default_device()
    dtype = as_dtype(dtype) or default
    data = array_fn(dev.backend, _shape(shape), dtype)
    return Tensor._wrap(data, dev, False, None).requires_grad_(requires_grad)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new Tensor holding a copy of data, as torch.tensor (as_tensor and from_numpy share memory instead)."""
    if isinstance(data, Tensor):
        data = data.data
    if is_array(data):
        data = data.copy()
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def as_tensor(data, dtype=None, device=None):
    """data as a Tensor, sharing its memory when dtype and device allow (a Tensor comes back as it is), as
    torch.as_tensor."""
    if isinstance(data, Tensor):
        dev = as_device(device) if device is not None else data.device
        return data.to(dev, as_dtype(dtype) or data.dtype)
    return Tensor(data, dtype=dtype, device=device)


def from_numpy(array):
    """A Tensor sharing a NumPy array's memory and dtype, as torch.from_numpy: each sees the other's changes."""
    cpu = as_device("cpu")
    if not isinstance(array, cpu.backend.xp.ndarray):
        raise TypeError(f"from_numpy: expected np.ndarray (got {type(array).__name__})")
    if not array.flags.writeable:
        raise ValueError("from_numpy: the array is read-only, and a tensor that shares it could never change in "
                         "place; pass array.copy(), or use tinygradnorm.tensor(array)")
    return Tensor._wrap(array, cpu, False, None)


_DLPACK_DEVICES = {1: "cpu", 2: "cuda"}        # DLPack's kDLCPU and kDLCUDA


def from_dlpack(obj):
    """A Tensor sharing the memory of any array that speaks DLPack (torch, NumPy, CuPy, JAX), without a copy:
    each sees the other's changes."""
    if not hasattr(obj, "__dlpack__") or not hasattr(obj, "__dlpack_device__"):
        raise TypeError(f"from_dlpack: expected an object with __dlpack__ and __dlpack_device__ (a torch tensor, a "
                        f"NumPy, CuPy or JAX array), got {type(obj).__name__}")
    kind, index = obj.__dlpack_device__()
    if int(kind) not in _DLPACK_DEVICES:
        raise RuntimeError(f"from_dlpack: the array lives on a DLPack device of type {int(kind)}; only the CPU (1) "
                           "and CUDA GPUs (2) are supported")
    dev = as_device("cpu" if int(kind) == 1 else f"cuda:{index}")
    return Tensor._wrap(dev.backend.from_dlpack(obj), dev, False, None)


def empty(*shape, dtype=None, device=None, requires_grad=False):
    """Uninitialized memory of shape, as torch.empty: write it before reading it."""
    return _make(lambda b, s, d: b.xp.empty(s, dtype=d), shape, dtype, device, requires_grad)


def randint(low, high=None, size=None, dtype=None, device=None, requires_grad=False):
    """Random integers in [low, high) (int64 by default) from the device's seeded generator, as torch.randint:
    randint(high, size) or randint(low, high, size)."""
    if size is None and isinstance(high, (tuple, list)):
        low, high, size = 0, low, high
    if size is None:
        raise TypeError("randint() missing the size argument: randint(high, size) or randint(low, high, size)")
    if high is None:
        low, high = 0, low
    if not low < high:
        raise ValueError(f"randint: random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    return _make(lambda b, s, d: b.rng.integers(low, high, s).astype(d), (size,), dtype, device, requires_grad,
                 int64)


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    return _make(lambda b, s, d: b.xp.zeros(s, dtype=d), shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    return _make(lambda b, s, d: b.xp.ones(s, dtype=d), shape, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    default = int64 if isinstance(fill_value, int) and not isinstance(fill_value, bool) else float32
    return _make(lambda b, s, d: b.xp.full(s, fill_value, dtype=d), (shape,), dtype, device, requires_grad, default)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal samples from the device's seeded generator."""
    return _make(lambda b, s, d: b.rng.standard_normal(s, dtype=d if d.itemsize >= 4 else float32).astype(d, copy=False),
                 shape, dtype, device, requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform samples in [0, 1) from the device's seeded generator."""
    return _make(lambda b, s, d: b.rng.random(s, dtype=d if d.itemsize >= 4 else float32).astype(d, copy=False),
                 shape, dtype, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """Evenly spaced values in [start, end)."""
    if end is None:
        start, end = 0, start
    floats = any(isinstance(v, float) for v in (start, end, step))
    default = float32 if floats else int64
    return _make(lambda b, s, d: b.xp.arange(start, end, step, dtype=d), (), dtype, device, requires_grad, default)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    return randn(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    return rand(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def empty_param(shape, device=None, dtype=None):
    """Uninitialized storage for a parameter that an initializer fills next."""
    return zeros(shape, dtype=dtype, device=device)
