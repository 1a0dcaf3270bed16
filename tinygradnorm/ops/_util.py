"""Helpers every op shares: reduce a broadcast gradient, normalize dims, coerce operands."""
from ..tensor import Tensor


def compiled_kernels(backend, a):
    """The backend's compiled kernels when they take this array (float32 or float64), else None."""
    kernels = backend.kernels
    return kernels if kernels is not None and a.dtype.itemsize >= 4 else None


def sum_to(grad, shape):
    """Sum ``grad`` down to ``shape``: the adjoint of broadcasting an array of ``shape``."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad.reshape(shape)


def broadcast_shape(a, b, op="op"):
    """The broadcast of two shapes, or a ValueError that names both."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and x != 1 and y != 1:
            dim = max(len(a), len(b)) - i
            raise ValueError(f"{op}: the size of tensor a ({x}) must match the size of tensor b ({y}) at "
                             f"non-singleton dimension {dim}; shapes {tuple(a)} and {tuple(b)} do not broadcast")
        out.append(max(x, y) if x and y else 0)
    return tuple(reversed(out))


def dim_index(dim, ndim, op="op"):
    """A dim in [-ndim, ndim) as a non-negative int, with PyTorch's error otherwise."""
    lo, hi = -max(ndim, 1), max(ndim, 1) - 1
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int (got {type(dim).__name__} {dim!r})")
    if not lo <= dim <= hi:
        raise IndexError(f"{op}: Dimension out of range (expected to be in range of [{lo}, {hi}], but got {dim})")
    return dim % max(ndim, 1)


def reduce_dims(dim, ndim, axis=None, op="op"):
    """Normalize ``dim`` (or its NumPy alias ``axis``) to a sorted tuple; None means every dim."""
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{op}: pass dim or axis, not both")
        dim = axis
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = tuple(sorted({dim_index(d, ndim, op) for d in dims}))
    if len(out) != len(dims):
        raise ValueError(f"{op}: dim {dim} appears more than once")
    return out if ndim else ()


def as_tensor(value, like):
    """``value`` as a Tensor on ``like``'s device; Python scalars take ``like``'s dtype, as in PyTorch."""
    if isinstance(value, Tensor):
        return value
    dtype = like.dtype
    if isinstance(value, float) and dtype.kind in "biu":
        dtype = None  # int tensor * float scalar: promote to the default float dtype
    elif not isinstance(value, (int, float, bool)):
        dtype = None
    return Tensor(value, dtype=dtype, device=like.device)


def pair(a, b):
    """Both operands of a binary op as Tensors on the same device."""
    if isinstance(a, Tensor):
        return a, as_tensor(b, a)
    return as_tensor(a, b), b
