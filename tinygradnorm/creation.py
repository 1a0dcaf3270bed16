"""Tensor factories. Each asks the device's backend for the array, so none hard-codes numpy."""
from .backend import default_device, device as as_device
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
    """A new Tensor from data (PyTorch's torch.tensor)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


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
