"""Helpers every op shares: reduce a broadcast gradient, normalize dims, coerce operands."""
from ..dtypes import category, promote_types
from ..tensor import Tensor


def compiled_kernels(backend, a):
    """The backend's compiled kernels when they take this array (float32 or float64), else None."""
    kernels = backend.kernels
    return kernels if kernels is not None and a.dtype.kind == "f" and a.dtype.itemsize >= 4 else None


def as_pair(v, name):
    """An int or a pair of ints as a pair (a kernel size, stride, padding or dilation)."""
    v = (v, v) if isinstance(v, int) else tuple(v)
    if len(v) == 1:
        v = (v[0], v[0])
    if len(v) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        raise ValueError(f"{name} must be an int or a pair of ints (got {v!r})")
    return v


def check_tensor(op, x, name="input", position=1):
    """Raise PyTorch's TypeError unless x is a Tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}(): argument '{name}' (position {position}) must be Tensor, not {type(x).__name__}")
    return x


def contiguous(xp, a):
    """a as a C-contiguous array, 0-d arrays staying 0-d (xp.ascontiguousarray makes them 1-d)."""
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)


def sum_to(grad, shape):
    """Sum ``grad`` (an array or a Tensor) down to ``shape``: the adjoint of broadcasting an array of ``shape``."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    if not axes:
        return grad.reshape(shape)
    if isinstance(grad, Tensor):
        return grad.sum(dim=axes, keepdim=True).reshape(shape)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


def select(xp, condition, a, b):
    """where(condition, a, b) for a backward that runs on arrays and on Tensors alike: the Tensor op (with its
    gradient) when a Tensor is among them, else xp.where."""
    if isinstance(a, Tensor) or isinstance(b, Tensor) or isinstance(condition, Tensor):
        from .elementwise import where
        return where(condition, a, b)
    return xp.where(condition, a, b)


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
    elif isinstance(value, int) and not isinstance(value, bool) and dtype.kind == "b":
        dtype = None  # bool tensor + int scalar: int64
    elif isinstance(value, complex):
        dtype = "complex64" if dtype.kind == "f" and dtype.itemsize <= 4 else "complex128"
    elif not isinstance(value, (int, float, bool)):
        dtype = None
    return Tensor(value, dtype=dtype, device=like.device)


def pair(a, b, op="op"):
    """Both operands of a binary op as Tensors on one device, promoted to one dtype by PyTorch's rules."""
    if isinstance(a, Tensor):
        b = as_tensor(b, a)
    elif isinstance(b, Tensor):
        a = as_tensor(a, b)
    elif _is_number(a) and _is_number(b):
        a = Tensor(a)                                   # two Python numbers: torch.add(2.0, 3.0) is tensor(5.)
        b = as_tensor(b, a)
    else:
        raise TypeError(f"{op}(): argument 'input' (position 1) must be Tensor, not {type(a).__name__}")
    dtype = result_type(a, b)
    return (a if a.dtype == dtype else a.to(dtype)), (b if b.dtype == dtype else b.to(dtype))


def _is_number(v):
    return isinstance(v, (int, float, bool, complex))


def result_type(a, b):
    """The dtype of a binary op on Tensors a and b, by PyTorch's rules: a 0-d tensor (a Python number
    included) decides the dtype only when it is of a higher category than the other operand.
    float32[3] + a float64 0-d tensor is float32; int64[3] + a float64 0-d tensor is float64."""
    if a.dtype == b.dtype:
        return a.dtype
    if (a.ndim == 0) == (b.ndim == 0):
        return promote_types(a.dtype, b.dtype)
    dim, zero = (a.dtype, b.dtype) if a.ndim else (b.dtype, a.dtype)
    if category(dim) >= category(zero):
        return dim
    return promote_types(dim, zero)
