"""In-place ops: each writes into a tensor's own memory and bumps its version counter.

PyTorch's three rules keep gradients honest:

- A leaf that requires grad (a parameter) may change in place only while no graph is recorded,
  under ``no_grad``, as optimizers and ``nn.init`` do.
- Each Function records the versions of the tensors it saved (see autograd.py). Backward refuses
  to use a tensor that an in-place op has changed since.
- When the graph is recording and the new value needs a gradient, the op is differentiable. The
  tensor's old value (a copy) and its old grad_fn become the input of the out-of-place op. Its
  result is written back into the tensor, which takes that op as its new grad_fn. A view cannot
  be rebased that way, because its base would not know, so that case is refused with a clear error.
"""
from ..autograd.function import Function
from ..autograd.grad_mode import is_grad_enabled, is_inference_mode_enabled, no_grad
from ..backend import transfer
from ..tensor import Tensor
from ._util import as_tensor, broadcast_shape, sum_to
from . import elementwise
from .movement import SetItem, index_key, put


def _describe(t):
    return f"a {t.dtype} tensor of shape {tuple(t.shape)}"


def bump_version(t, op):
    """Record that ``op`` changed t's memory in place (for code that writes t.data directly)."""
    if t._vc is not None:
        t._vc.value += 1
        t._vc.op = op


_bump = bump_version


def _differentiable(t, op, operands=()):
    """Check the rules for changing t in place; True when the change must be recorded in the graph."""
    if t._vc is None and not is_inference_mode_enabled():
        raise RuntimeError(f"Inplace update to inference tensor outside InferenceMode is not allowed ({op} on "
                           f"{_describe(t)}). clone() it to get a normal tensor first")
    data = t.data
    if any(s == 0 and n > 1 for s, n in zip(data.strides, data.shape)) or not getattr(data.flags, "writeable", True):
        raise RuntimeError(f"unsupported operation: more than one element of the written-to tensor refers to a single "
                           f"memory location ({op} on {_describe(t)}, an expanded or read-only view). Please clone() "
                           "the tensor before performing the operation.")
    if not (is_grad_enabled() and not is_inference_mode_enabled()):
        return False
    if t.requires_grad and t._ctx is None:
        raise RuntimeError(f"a leaf Variable that requires grad is being used in an in-place operation ({op} on "
                           f"{_describe(t)}). Make the change under `with tinygradnorm.no_grad():`, as optimizers "
                           "do, or use the out-of-place op")
    needed = t.requires_grad or any(isinstance(o, Tensor) and o.requires_grad for o in operands)
    if needed and t._vc is not None and t._vc.plain_views:
        # NOTE: a view made without a graph shares this memory but would keep no path to the new grad_fn, so
        # a gradient through it would silently miss this op (PyTorch regenerates such views; this refuses).
        raise RuntimeError(f"{op}: {_describe(t)} has views made without a graph (under no_grad, or before it "
                           "required grad); an in-place op that needs a gradient would leave them stale. clone() "
                           "the tensor first, or use the out-of-place op")
    base = t._base
    if base is not None:
        if base.requires_grad and base._ctx is None:
            raise RuntimeError(f"a view of a leaf Variable that requires grad is being used in an in-place operation "
                               f"({op} on {_describe(t)}, a view of a tensor of shape {tuple(base.shape)}). Make the "
                               "change under no_grad(), or use the out-of-place op")
        if needed:
            raise RuntimeError(f"{op}: an in-place op on a view that needs a gradient is not supported ({_describe(t)}, "
                               f"a view of a tensor of shape {tuple(base.shape)}). Use the out-of-place op, or clone() "
                               "the view first")
    return needed


def _rebase(t, op, out_of_place):
    """Differentiable in-place: out_of_place(old) on a copy that carries t's old graph; t takes the result."""
    old = Tensor._wrap(t.data.copy(), t.device, t.requires_grad, t._ctx)
    old._oi = t._oi
    new = out_of_place(old)
    t.data[...] = new.data
    t._ctx, t._oi, t.requires_grad = new._ctx, new._oi, new.requires_grad
    _bump(t, op)
    return t


def _check_cast(t, result_dtype, op):
    xp = t.xp
    if not xp.can_cast(result_dtype, t.dtype, casting="same_kind"):
        raise RuntimeError(f"{op}: result type {result_dtype} can't be cast to the desired output type {t.dtype} "
                           f"({_describe(t)}); use the out-of-place op, which returns the wider type")


def _operand(t, other, op):
    if isinstance(other, Tensor) and other.device is not t.device:
        raise RuntimeError(f"{op}: expected the other tensor on {t.device} like {_describe(t)}, got one on "
                           f"{other.device}; move it with .to('{t.device}')")
    if not isinstance(other, (Tensor, int, float, bool)) and not hasattr(other, "shape"):
        raise TypeError(f"{op}(): argument 'other' must be a Tensor or a number, not {type(other).__name__}")
    o = as_tensor(other, t)
    shape = broadcast_shape(t.shape, o.shape, op)
    if shape != t.shape:
        raise RuntimeError(f"{op}: output with shape {list(t.shape)} doesn't match the broadcast shape {list(shape)} "
                           f"(other has shape {list(o.shape)})")
    return o


def _arithmetic(t, other, op, out_of_place, ufunc, alpha=1):
    o = _operand(t, other, op)
    if alpha != 1:
        o = elementwise.mul(o, alpha)
    result = t.xp.result_type(t.data, o.data)
    if op == "div_" and result.kind in "biu":
        result = t.xp.dtype("float32")                   # true division of integers gives floats
    _check_cast(t, result, op)
    if _differentiable(t, op, (o,)):
        return _rebase(t, op, lambda old: out_of_place(old, o))
    getattr(t.xp, ufunc)(t.data, o.data, out=t.data, casting="unsafe")
    _bump(t, op)
    return t


def add_(t, other, alpha=1):
    return _arithmetic(t, other, "add_", elementwise.add, "add", alpha)


def sub_(t, other, alpha=1):
    return _arithmetic(t, other, "sub_", elementwise.sub, "subtract", alpha)


def mul_(t, other):
    return _arithmetic(t, other, "mul_", elementwise.mul, "multiply")


def div_(t, other):
    return _arithmetic(t, other, "div_", elementwise.div, "true_divide")


def clamp_(t, lo=None, hi=None):
    if lo is None and hi is None:
        raise RuntimeError("clamp_: At least one of 'min' or 'max' must not be None")
    for bound in (lo, hi):
        if bound is not None:
            _check_cast(t, t.xp.result_type(t.data, as_tensor(bound, t).data), "clamp_")
    if _differentiable(t, "clamp_"):
        return _rebase(t, "clamp_", lambda old: elementwise.clip(old, lo, hi))
    t.xp.clip(t.data, lo, hi, out=t.data)
    _bump(t, "clamp_")
    return t


def unary_(t, op, fn):
    """t = fn(t) in place, for fn a Tensor function that keeps the shape (relu_, leaky_relu_, silu_, dropout's
    inplace=True), under the rules above."""
    if _differentiable(t, op):
        return _rebase(t, op, fn)
    with no_grad():
        new = fn(t)
    t.data[...] = new.data
    _bump(t, op)
    return t


class Fill(Function):
    """Every element becomes one value; the old values get no gradient, the value (a 0-d tensor) gets Σg."""

    def forward(self, old, *value, scalar=None):
        return self.xp.full(old.shape, value[0] if value else scalar, dtype=old.dtype)

    def backward(self, g):
        return (None, g.sum()) if len(self.needs_input_grad) == 2 else None

    gradient = backward


def fill_(t, value, op="fill_"):
    if isinstance(value, Tensor):
        if value.ndim:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor with {value.ndim} "
                               f"dimensions (shape {tuple(value.shape)})")
        if value.device is not t.device:
            raise RuntimeError(f"fill_: value is on {value.device} but {_describe(t)} is on {t.device}")
    elif not isinstance(value, (int, float, bool)):
        raise TypeError(f"{op}(): value must be a number or a 0-d Tensor, not {type(value).__name__}")
    operands = (value,) if isinstance(value, Tensor) else ()
    if _differentiable(t, op, operands):
        return _rebase(t, op, lambda old: Fill.apply(old, *operands, scalar=value))
    t.data[...] = value.data if operands else value
    _bump(t, op)
    return t


class Copy(Function):
    """The destination takes the source's values (broadcast, cast); only the source gets a gradient."""

    def forward(self, old, src):
        self.src_shape = src.shape
        return self.xp.broadcast_to(src, old.shape).astype(old.dtype)

    def backward(self, g):
        return None, sum_to(g, self.src_shape)

    gradient = backward


def copy_(t, src, op="copy_"):
    if not isinstance(src, Tensor):
        raise TypeError(f"copy_(): argument 'src' (position 1) must be Tensor, not {type(src).__name__}; "
                        "wrap it with tinygradnorm.tensor(...)")
    try:
        broadcast_shape(src.shape, t.shape, op)
    except ValueError:
        raise RuntimeError(f"{op}: the source of shape {tuple(src.shape)} cannot be broadcast to the destination's "
                           f"shape {tuple(t.shape)}") from None
    if _differentiable(t, op, (src,)):
        src = src if src.device is t.device else src.to(t.device)
        return _rebase(t, op, lambda old: Copy.apply(old, src))
    t.data[...] = transfer(src.data, src.device, t.device)
    _bump(t, op)
    return t


def _random_(t, op, draw):
    if t.dtype.kind != "f":
        raise RuntimeError(f"{op}: expected a floating-point tensor, got {_describe(t)}")
    values = Tensor._wrap(draw(t.device.backend.rng).astype(t.dtype), t.device, False, None)
    return copy_(t, values, op)


def normal_(t, mean=0.0, std=1.0):
    if std < 0:
        raise RuntimeError(f"normal_ expects std >= 0.0, but found std {std}")
    return _random_(t, "normal_", lambda rng: rng.standard_normal(t.shape) * std + mean)


def uniform_(t, a=0.0, b=1.0):
    if a > b:
        raise RuntimeError(f"uniform_ expects to return a [from, to) range, but found from={a} > to={b}")
    return _random_(t, "uniform_", lambda rng: rng.uniform(a, b, t.shape))


def setitem_(t, index, value):
    """t[index] = value, with PyTorch's indexing rules."""
    key = index_key(index, t.device)
    v = as_tensor(value, t) if not isinstance(value, Tensor) else value
    if v.device is not t.device:
        raise RuntimeError(f"index_put_: value is on {v.device} but the indexed tensor is on {t.device}; move it "
                           f"with .to('{t.device}')")
    if _differentiable(t, "__setitem__", (v,)):
        return _rebase(t, "__setitem__", lambda old: SetItem.apply(old, v, key=key))
    try:
        put(t.data, key, v.data)
    except (ValueError, IndexError) as e:
        raise type(e)(f"cannot assign a value of shape {tuple(v.shape)} to index {index!r} of {_describe(t)}: "
                      f"{e}") from None
    _bump(t, "__setitem__")
