"""Movement ops: they change how values are laid out, never the values themselves."""
import functools

from ..autograd.function import Function
from ..autograd.grad_mode import is_grad_enabled, is_inference_mode_enabled
from ..dtypes import promote_types
from ..backend import transfer
from ..tensor import Tensor
from ._util import check_tensor, dim_index, sum_to
from .scatter import IndexPut, index_put_array, take


class Reshape(Function):
    is_view = True

    def forward(self, x, shape):
        self.in_shape = x.shape
        return x.reshape(shape)

    def backward(self, g):
        return g.reshape(self.in_shape)

    gradient = backward


class Permute(Function):
    is_view = True

    def forward(self, x, dims):
        self.inverse = tuple(sorted(range(len(dims)), key=dims.__getitem__))
        return x.transpose(dims)

    def backward(self, g):
        return g.transpose(self.inverse)

    def gradient(self, g):
        return Permute.apply(g, dims=self.inverse)


class Expand(Function):
    is_view = True

    def forward(self, x, shape):
        self.in_shape = x.shape
        return self.xp.broadcast_to(x, shape)

    def backward(self, g):
        return sum_to(g, self.in_shape)

    gradient = backward


class Pad(Function):
    def forward(self, x, widths, value):
        self.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))
        return self.xp.pad(x, widths, mode="constant", constant_values=value)

    def backward(self, g):
        return g[self.slices]

    gradient = backward


class Cat(Function):
    """Join along dim. As in PyTorch, 1-D empty arrays take no part (a legacy rule) and get empty gradients."""

    def forward(self, *arrays, dim):
        skip = [a.ndim == 1 and a.shape[0] == 0 for a in arrays]
        if all(skip):
            skip = [False] * len(arrays)
        self.dim, self.sizes = dim, [None if s else a.shape[dim] for a, s in zip(arrays, skip)]
        return self.xp.concatenate([a for a, s in zip(arrays, skip) if not s], axis=dim)

    def backward(self, g):
        grads, start = [], 0
        index = [slice(None)] * g.ndim
        for n in self.sizes:
            if n is None:
                empty = self.xp.zeros((0,), dtype=g.dtype)
                grads.append(Tensor._wrap(empty, g.device, False, None) if isinstance(g, Tensor) else empty)
                continue
            index[self.dim] = slice(start, start + n)
            grads.append(g[tuple(index)])
            start += n
        return tuple(grads)

    gradient = backward


class GetItem(Function):
    """x[key], where key is (select, rest) from ``index_key``; basic indexing gives a view. The gradient puts g
    back where x[key] read it (IndexPut, its adjoint)."""

    is_view = True

    def forward(self, x, key, advanced):
        self.in_shape, self.key, self.advanced = x.shape, key, advanced
        return take(x, key)

    def backward(self, g):
        return index_put_array(self.xp, self.backend, g, self.key, self.advanced, self.in_shape)

    def gradient(self, g):
        return IndexPut.apply(g, key=self.key, advanced=self.advanced, shape=self.in_shape)


class SetItem(Function):
    """out = x with out[key] = value (broadcast); x's gradient is zero where the key wrote."""

    def forward(self, x, value, key):
        self.key, self.value_shape = key, value.shape
        out = x.copy()
        put(out, key, value)
        return out

    def backward(self, g):
        gx = gv = None
        if self.needs_input_grad[0]:
            gx = g.copy()
            put(gx, self.key, 0)
        if self.needs_input_grad[1]:
            gv = take(g, self.key)
            extra = len(self.value_shape) - gv.ndim       # a value may carry extra leading 1s
            gv = sum_to(gv, self.value_shape[extra:]).reshape(self.value_shape)
        return gx, gv

    def gradient(self, g):
        gx = gv = None
        if self.needs_input_grad[0]:
            zero = Tensor._wrap(self.xp.zeros((), dtype=g.dtype), g.device, False, None)
            gx = SetItem.apply(g, zero, key=self.key)
        if self.needs_input_grad[1]:
            advanced = any(getattr(p, "ndim", 0) > 0 for p in self.key[1])
            gv = GetItem.apply(g, key=self.key, advanced=advanced)
            extra = len(self.value_shape) - gv.ndim
            gv = sum_to(gv, self.value_shape[extra:]).reshape(self.value_shape)
        return gx, gv


def put(a, key, value):
    """a[key] = value for a key from ``index_key``."""
    select, rest = key
    (a[select] if select is not None else a)[rest] = value


class To(Function):
    """Copy to another device and/or dtype; the gradient goes back the same way (a real input takes the real part
    of a complex gradient, as in PyTorch)."""

    complex_grad = True

    @classmethod
    def apply(cls, x, device, dtype):
        data = transfer(x.data, x.device, device)
        if dtype is not None and data.dtype != dtype:
            data = data.astype(dtype)
        elif data is x.data:
            data = data.copy()
        out = Tensor._wrap(data, device, False, None)
        if x.requires_grad and data.dtype.kind in "fc" and is_grad_enabled() and not is_inference_mode_enabled():
            fn = cls._node(x.device, (True,))
            fn.src_device, fn.src_dtype, fn.out_device = x.device, x.dtype, device
            fn.link((x,), (out,))
        return out

    def backward(self, g):
        g = transfer(g, self.out_device, self.src_device)
        return (g.real if g.dtype.kind == "c" and self.src_dtype.kind != "c" else g).astype(self.src_dtype, copy=False)

    def gradient(self, g):
        if g.dtype.kind == "c" and self.src_dtype.kind != "c":
            raise NotImplementedError("To: a complex gradient of a real tensor cannot be differentiated again")
        return To.apply(g, self.src_device, self.src_dtype)


# ---- public functions -------------------------------------------------------------
def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def _infer_shape(shape, size, op):
    if list(shape).count(-1) > 1:
        raise ValueError(f"{op}: only one dimension can be inferred (got shape {list(shape)})")
    known = 1
    for s in shape:
        if s != -1:
            if s < 0:
                raise ValueError(f"{op}: invalid shape dimension {s} in {list(shape)}")
            known *= s
    if -1 in shape:
        if known == 0 or size % known:
            raise ValueError(f"{op}: shape '{list(shape)}' is invalid for input of size {size}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    elif known != size:
        raise ValueError(f"{op}: shape '{list(shape)}' is invalid for input of size {size}")
    return shape


def reshape(x, *shape):
    check_tensor("reshape", x)
    shape = _infer_shape(_shape_arg(shape), x.numel(), "reshape")
    return x if shape == x.shape else Reshape.apply(x, shape=shape)


def permute(x, *dims):
    dims = _shape_arg(dims)
    if len(dims) != x.ndim:
        raise ValueError(f"permute: the number of dims does not match: input.dim() = {x.ndim} is not equal to "
                         f"len(dims) = {len(dims)} (got dims {dims} for shape {tuple(x.shape)})")
    dims = tuple(dim_index(d, x.ndim, "permute") for d in dims)
    if len(set(dims)) != len(dims):
        raise ValueError(f"permute: repeated dim in {dims}")
    return Permute.apply(x, dims=dims)


def transpose(x, dim0, dim1):
    check_tensor("transpose", x)
    a, b = dim_index(dim0, x.ndim, "transpose"), dim_index(dim1, x.ndim, "transpose")
    if x.ndim == 0:
        return Reshape.apply(x, shape=())
    dims = list(range(x.ndim))
    dims[a], dims[b] = dims[b], dims[a]
    return Permute.apply(x, dims=tuple(dims))


def t(x):
    """The transpose of a matrix (a vector or a 0-d tensor is returned as it is), as torch.t."""
    check_tensor("t", x)
    if x.ndim > 2:
        raise ValueError(f"t() expects a tensor with <= 2 dimensions, but self is {x.ndim}D (shape "
                         f"{tuple(x.shape)}); use transpose(dim0, dim1) or permute")
    return transpose(x, 0, 1) if x.ndim == 2 else Reshape.apply(x, shape=x.shape)


def flatten(x, start_dim=0, end_dim=-1):
    check_tensor("flatten", x)
    if x.ndim == 0:
        return reshape(x, 1)
    s, e = dim_index(start_dim, x.ndim, "flatten"), dim_index(end_dim, x.ndim, "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    n = 1
    for d in x.shape[s:e + 1]:
        n *= d
    return reshape(x, x.shape[:s] + (n,) + x.shape[e + 1:])


def squeeze(x, dim=None):
    if dim is None:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    dims = {dim_index(d, x.ndim, "squeeze") for d in ((dim,) if isinstance(dim, int) else dim)}
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in dims and n == 1)))


def unsqueeze(x, dim):
    d = dim_index(dim, x.ndim + 1, "unsqueeze")
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def broadcast_to(x, shape):
    shape = _shape_arg((shape,) if isinstance(shape, int) else (shape,))
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"expand: the number of sizes provided ({len(shape)}) must be greater or equal to the "
                         f"number of dimensions in the tensor ({x.ndim}); shape {tuple(x.shape)}")
    shape = tuple(x.shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(shape))
    for i, n in enumerate(x.shape):
        if n != 1 and n != shape[lead + i]:
            raise ValueError(f"expand: the expanded size of the tensor ({shape[lead + i]}) must match the existing "
                             f"size ({n}) at non-singleton dimension {lead + i}; cannot expand {tuple(x.shape)} "
                             f"to {shape}")
    return x if shape == x.shape else Expand.apply(x, shape=shape)


def expand(x, *shape):
    return broadcast_to(x, _shape_arg(shape))


class PadIndex(Function):
    """reflect, replicate or circular padding: along each padded dim the output reads the input at an index array
    (one source position per output position); backward adds each gradient back to its source, dim by dim."""

    def forward(self, x, index):
        self.in_shape, self.index = x.shape, index
        out = x
        for d, idx in enumerate(index):
            if idx is not None:
                out = self.xp.take(out, idx, axis=d)
        return out

    def backward(self, g):
        xp = self.xp
        for d in reversed(range(len(self.index))):
            idx = self.index[d]
            if idx is None:
                continue
            moved = xp.moveaxis(g, d, 0)
            gx = xp.zeros((self.in_shape[d],) + moved.shape[1:], dtype=g.dtype)
            self.backend.scatter_add(gx, idx, moved)            # repeats (edge rows) accumulate
            g = xp.moveaxis(gx, 0, d)
        return g

    def gradient(self, g):
        # NOTE: taking idx along dim d is x[:, ..., idx] (one integer-array index keeps the dim's place), so
        # each step back is IndexPut, dim by dim.
        for d in reversed(range(len(self.index))):
            idx = self.index[d]
            if idx is None:
                continue
            shape = tuple(g.shape[:d]) + (self.in_shape[d],) + tuple(g.shape[d + 1:])
            g = IndexPut.apply(g, key=(None, (slice(None),) * d + (idx,)), advanced=True, shape=shape)
        return g


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")     # Conv2d's padding_mode


def _source(n, lo, hi, mode, op):
    """For each output position along a dim of size n padded by (lo, hi): the input position it reads."""
    if mode == "reflect" and (lo >= n or hi >= n):
        raise ValueError(f"{op}: Padding size should be less than the corresponding input dimension, but got: "
                         f"padding ({lo}, {hi}) at dimension of size {n}")
    if mode == "circular" and (lo > n or hi > n):
        raise ValueError(f"{op}: Padding value causes wrapping around more than once (padding ({lo}, {hi}) at "
                         f"dimension of size {n})")
    if mode == "circular":
        # NOTE: a negative width crops first, and the wrap is within what is left, as in PyTorch.
        start, m = max(-lo, 0), n - max(-lo, 0) - max(-hi, 0)
        return [start + q % m for q in range(-max(lo, 0), m + max(hi, 0))]
    out = []
    for p in range(-lo, n + hi):
        if mode == "replicate":
            out.append(min(max(p, 0), n - 1))
        else:                                                       # reflect, without repeating the edge
            out.append(-p if p < 0 else 2 * (n - 1) - p if p >= n else p)
    return out


def pad(x, pad, mode="constant", value=None):
    """Padding, as torch.nn.functional.pad: ``pad`` lists (left, right) pairs from the last dim backwards.

    mode "constant" fills with value (0 by default; a negative width crops); "reflect" mirrors the input
    without repeating its edge, "replicate" repeats the edge, "circular" wraps around. The last three
    pad the last 1, 2 or 3 dims of an input with one or two more dims (unbatched or batched).
    """
    check_tensor("pad", x)
    modes = ("constant", "reflect", "replicate", "circular")
    if mode not in modes:
        raise NotImplementedError(f"pad: mode must be one of {modes} (got mode={mode!r})")
    pad = tuple(int(p) for p in pad)
    if mode != "constant":
        return _pad_index(x, pad, mode, value)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: Padding length must be divisible by 2 and at most 2*ndim = {2 * x.ndim} (got "
                         f"{len(pad)} for an input of shape {tuple(x.shape)})")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, x.shape))
    for (lo, hi), n in zip(widths, x.shape):
        if n + lo + hi < 0:
            raise ValueError(f"pad: the input size {n} plus negative padding {lo} and {hi} would give a negative "
                             f"size (input of shape {tuple(x.shape)}, pad {pad})")
    if any(lo < 0 or hi < 0 for lo, hi in widths):
        x = getitem(x, crop)
        widths = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    return Pad.apply(x, widths=tuple(widths), value=0.0 if value is None else value)


def _pad_index(x, pad, mode, value):
    if value is not None and value != 0:
        raise ValueError(f"pad: Padding mode \"{mode}\" doesn't take in value argument (got value={value})")
    k = len(pad) // 2
    if len(pad) % 2 or k not in (1, 2, 3) or x.ndim not in (k + 1, k + 2):
        raise NotImplementedError(f"pad: Only 2D, 3D, 4D, 5D padding with non-constant padding are supported for "
                                  f"now: mode {mode!r} pads the last 1 to 3 dims of an input with one or two more "
                                  f"(got pad {pad} for an input of shape {tuple(x.shape)})")
    index = [None] * x.ndim
    for i in range(k):
        d = x.ndim - 1 - i
        lo, hi = pad[2 * i], pad[2 * i + 1]
        if x.shape[d] + lo + hi < 0 or (x.shape[d] == 0 and lo + hi > 0):
            raise ValueError(f"pad: input of shape {tuple(x.shape)} cannot be padded by {pad} in mode {mode!r}")
        index[d] = x.device.backend.asarray(_source(x.shape[d], lo, hi, mode, "pad"), dtype="int64")
    return PadIndex.apply(x, index=tuple(index))


def cat(tensors, dim=0):
    """Join tensors along an existing dim."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of Tensors")
    for i, t in enumerate(tensors):
        check_tensor("cat", t, f"tensors[{i}]")
    # NOTE: as in PyTorch, 1-D empty tensors are skipped whatever the other shapes (a legacy rule).
    kept = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or tensors
    ref = kept[0]
    d = dim_index(dim, ref.ndim, "cat")
    for i, t in enumerate(kept):
        if t.ndim != ref.ndim or any(a != b for j, (a, b) in enumerate(zip(t.shape, ref.shape)) if j != d):
            raise ValueError(f"cat: sizes of tensors must match except in dimension {d}: tensor 0 has shape "
                             f"{tuple(ref.shape)} but tensor {i} has shape {tuple(t.shape)}")
    dtype = functools.reduce(promote_types, [t.dtype for t in tensors])
    return Cat.apply(*[t if t.dtype == dtype else t.to(dtype) for t in tensors], dim=d)


def stack(tensors, dim=0):
    """Join same-shaped tensors along a new dim."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of Tensors")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: expects each tensor to be equal size, but got {tuple(tensors[0].shape)} at "
                             f"entry 0 and {tuple(t.shape)} at entry {i}")
    d = dim_index(dim, tensors[0].ndim + 1, "stack")
    return cat([unsqueeze(t, d) for t in tensors], d)


def index_key(index, device):
    """An index as (select, rest): NumPy indices that, applied one after the other, follow PyTorch's rules.

    Tensors become their arrays and bool masks the integer indices they select. PyTorch applies
    integer indices (and 0-d integer tensors) first, as selections, and only then places the
    advanced (array) indices among the dims that remain; NumPy counts integers among the advanced
    indices, which moves the result's dims. So when both kinds appear, ``select`` holds the
    integers (with full slices elsewhere) and ``rest`` everything else; otherwise select is None.
    """
    parts = index if isinstance(index, tuple) else (index,)
    out = []
    for p in parts:
        if isinstance(p, Tensor):
            if p.device is not device:
                raise RuntimeError(f"indices on {p.device} cannot index a tensor on {device}; move them with "
                                   f".to('{device}')")
            p = p.data
        elif isinstance(p, list):
            p = device.backend.asarray(p)
        if hasattr(p, "dtype") and hasattr(p, "ndim"):
            if p.dtype.kind == "b" and p.ndim > 0:
                out.extend(p.nonzero())
                continue
            if p.dtype.kind not in "iub":
                raise IndexError(f"tensors used as indices must be long, int or bool tensors (got dtype {p.dtype})")
            if p.ndim == 0 and p.dtype.kind in "iu":
                p = int(p)                                   # a 0-d integer tensor selects, like an int
        out.append(p)
    is_int = [isinstance(p, int) and not isinstance(p, bool) for p in out]
    if not any(is_int) or not any(getattr(p, "ndim", 0) > 0 for p in out):
        return None, tuple(out)
    select = tuple(p if i else (p if p is Ellipsis else slice(None)) for p, i in zip(out, is_int) if p is not None)
    return select, tuple(p for p, i in zip(out, is_int) if not i)


def getitem(x, index):
    key = index_key(index, x.device)
    advanced = any(getattr(p, "ndim", 0) > 0 for p in key[1])
    try:
        return GetItem.apply(x, key=key, advanced=advanced)
    except IndexError as e:
        raise IndexError(f"index {index!r} is invalid for a tensor of shape {tuple(x.shape)}: {e}") from None


def to(x, device, dtype):
    if device is x.device and (dtype is None or dtype == x.dtype):
        return x
    return To.apply(x, device, dtype)


def clone(x):
    return To.apply(x, x.device, None)
