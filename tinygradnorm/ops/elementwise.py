"""Elementwise ops. Binary ops broadcast; ``sum_to`` takes each gradient back to its input's shape."""
from ..autograd.function import Function, _device_mismatch
from ..dtypes import float32
from ..tensor import Tensor
from ._util import as_tensor, broadcast_shape, check_tensor, pair, select, sum_to


# ---- binary arithmetic ------------------------------------------------------------
# NOTE: where a backward reads ``self.saved_for(g)`` and uses only what arrays and Tensors share (operators,
# sum_to, select), the same code is also the op's differentiable ``gradient``: ``gradient = backward``.
class Add(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, g):
        return sum_to(g, self.a_shape), sum_to(g, self.b_shape)

    gradient = backward


class Sub(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, g):
        return sum_to(g, self.a_shape), sum_to(-g, self.b_shape)

    gradient = backward


class Mul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved_for(g)
        ga = sum_to(g * b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(g * a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb

    gradient = backward


class Div(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a / b

    def backward(self, g):
        a, b = self.saved_for(g)
        ga = sum_to(g / b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(-g * a / (b * b), b.shape) if self.needs_input_grad[1] else None
        return ga, gb

    gradient = backward


class Pow(Function):
    def forward(self, a, b):
        out = a ** b
        self.save_for_backward(a, b, out)
        return out

    def backward(self, g):
        a, b, out = self.saved_for(g)
        log = self.xp.log if not isinstance(g, Tensor) else _log
        ga = gb = None
        if self.needs_input_grad[0]:
            # NOTE: b * a**(b-1) is 0 * inf at a = 0, b = 0; PyTorch takes it as 0, so does this.
            ga = sum_to(select(self.xp, b == 0, 0.0, g * b * a ** (b - 1)), a.shape)
        if self.needs_input_grad[1]:
            # NOTE: d(a**b)/db = a**b * log(a), defined for a > 0 only; at a = 0, b >= 0 it is 0, as in PyTorch.
            gb = sum_to(select(self.xp, (a == 0) & (b >= 0), 0.0, g * out * log(a)), b.shape)
        return ga, gb

    gradient = backward


class Maximum(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return self.xp.maximum(a, b)

    def backward(self, g):
        a, b = self.saved_for(g)
        return _pick_grads(self.xp, g, a, b, b > a, a > b)

    gradient = backward


class Minimum(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return self.xp.minimum(a, b)

    def backward(self, g):
        a, b = self.saved_for(g)
        return _pick_grads(self.xp, g, a, b, b < a, a < b)

    gradient = backward


def _pick_grads(xp, g, a, b, b_wins, a_wins):
    """The gradients of maximum/minimum: the winner takes g, ties share it in halves.

    NOTE: as in PyTorch, where a comparison involves nan neither side "wins", so both get all of g.
    """
    shared = select(xp, a == b, g * 0.5, g)
    return sum_to(select(xp, b_wins, 0.0, shared), a.shape), sum_to(select(xp, a_wins, 0.0, shared), b.shape)


class Where(Function):
    complex_grad = True             # a selection: the gradient is g or 0, with no conjugate to take

    def forward(self, a, b, condition):
        self.save_for_backward(None, None, condition)
        self.a_shape, self.b_shape = a.shape, b.shape
        return self.xp.where(condition, a, b)

    def backward(self, g):
        xp, condition = self.xp, self.saved[2]
        zero = g.dtype.type(0)
        ga = sum_to(select(xp, condition, g, zero), self.a_shape) if self.needs_input_grad[0] else None
        gb = sum_to(select(xp, condition, zero, g), self.b_shape) if self.needs_input_grad[1] else None
        return ga, gb

    gradient = backward


def _binary(cls, a, b, name):
    a, b = pair(a, b, name)
    try:
        return cls.apply(a, b)
    except ValueError:
        broadcast_shape(a.shape, b.shape, name)  # raises the clear message when that is the cause
        raise


def _alpha(b, alpha, name):
    if alpha == 1:
        return b
    if isinstance(b, Tensor):
        return mul(b, alpha)
    if not isinstance(b, (int, float, bool)):
        raise TypeError(f"{name}(): argument 'other' must be Tensor or Number, not {type(b).__name__}")
    return b * alpha


def add(a, b, *, alpha=1):
    """a + alpha * b."""
    return _binary(Add, a, _alpha(b, alpha, "add"), "add")


def sub(a, b, *, alpha=1):
    """a - alpha * b."""
    return _binary(Sub, a, _alpha(b, alpha, "sub"), "sub")


def mul(a, b): return _binary(Mul, a, b, "mul")


def pow(a, b):
    """a ** b; one of the two may be a Python number, not both (as in PyTorch)."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"pow(): one argument must be a Tensor (got {type(a).__name__} and {type(b).__name__})")
    return _binary(Pow, a, b, "pow")


class DivRounded(Function):
    """a / b rounded toward zero ("trunc") or down ("floor"); a step function, so its gradient is zero (PyTorch
    returns zeros, not None)."""

    def forward(self, a, b, mode):
        xp = self.xp
        self.a_shape, self.b_shape = a.shape, b.shape
        if a.dtype.kind in "biu":
            if bool((b == 0).any()):
                raise ZeroDivisionError(f"div(rounding_mode={mode!r}): integer division by zero")
            q = xp.floor_divide(a, b)
            if mode == "trunc":                 # floor and trunc differ where the signs differ and b does not divide a
                q = xp.where((q < 0) & (q * b != a), q + 1, q)
            return q
        return xp.trunc(a / b) if mode == "trunc" else xp.floor_divide(a, b)

    def backward(self, g):
        xp = self.xp
        return (xp.zeros(self.a_shape, dtype=g.dtype) if self.needs_input_grad[0] else None,
                xp.zeros(self.b_shape, dtype=g.dtype) if self.needs_input_grad[1] else None)

    def gradient(self, g):
        return tuple(None if z is None else Tensor._wrap(z, g.device, False, None) for z in self.backward(g.data))


def div(a, b, *, rounding_mode=None):
    """True division (integer operands give float32, as in PyTorch), or rounded: rounding_mode "trunc" rounds
    toward zero, "floor" down, and integer operands then stay integers."""
    if rounding_mode is not None:
        if rounding_mode not in ("trunc", "floor"):
            raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found "
                             f"'{rounding_mode}'")
        a, b = pair(a, b, "div")
        broadcast_shape(a.shape, b.shape, "div")
        return DivRounded.apply(a, b, mode=rounding_mode)
    a, b = pair(a, b, "div")
    if a.dtype.kind not in "fc":
        a, b = a.to(float32), b.to(float32)
    return _binary(Div, a, b, "div")
def maximum(a, b):
    """The elementwise max of two tensors (PyTorch takes no Python number here)."""
    check_tensor("maximum", a)
    check_tensor("maximum", b, "other", 2)
    return _binary(Maximum, a, b, "maximum")


def minimum(a, b):
    """The elementwise min of two tensors (PyTorch takes no Python number here)."""
    check_tensor("minimum", a)
    check_tensor("minimum", b, "other", 2)
    return _binary(Minimum, a, b, "minimum")


def where(condition, a, b):
    """Elements of ``a`` where ``condition`` holds, else of ``b`` (all three broadcast)."""
    a, b = pair(a, b, "where")
    cond = condition.data if isinstance(condition, Tensor) else a.device.backend.asarray(condition)
    if cond.dtype.kind != "b":
        raise TypeError(f"where: condition must be a bool tensor (got dtype {cond.dtype}); compare first, e.g. x > 0")
    try:
        return Where.apply(a, b, condition=cond)
    except ValueError:
        broadcast_shape(broadcast_shape(a.shape, b.shape, "where"), cond.shape, "where")
        raise


# ---- unary ------------------------------------------------------------------------
class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g

    gradient = backward


class Exp(Function):
    def forward(self, x):
        out = self.xp.exp(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        out, = self.saved_for(g)
        return g * out

    gradient = backward


class Log(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return self.xp.log(x)

    def backward(self, g):
        x, = self.saved_for(g)
        return g / x

    gradient = backward


class Sqrt(Function):
    def forward(self, x):
        out = self.xp.sqrt(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        out, = self.saved_for(g)
        return g / (2 * out)

    gradient = backward


class Rsqrt(Function):
    def forward(self, x):
        out = 1 / self.xp.sqrt(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        out, = self.saved_for(g)
        return -0.5 * g * out ** 3

    gradient = backward


class Abs(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return self.xp.abs(x)

    def backward(self, g):
        # NOTE: the sign as (x > 0) - (x < 0): 0 at nan, as PyTorch's sign is, so a nan input gets gradient 0.
        x, = self.saved_for(g)
        return g * ((x > 0).astype(g.dtype) - (x < 0))

    gradient = backward


class Clip(Function):
    def forward(self, x, lo=None, hi=None):
        self.save_for_backward(x)
        self.lo, self.hi = lo, hi
        return self.xp.clip(x, lo, hi)

    def backward(self, g):
        x, = self.saved_for(g)
        inside = True
        if self.lo is not None:
            inside = x >= self.lo
        if self.hi is not None:
            inside = inside & (x <= self.hi)
        return g * inside

    gradient = backward


def neg(x): return Neg.apply(check_tensor("neg", x))
def exp(x): return Exp.apply(_float(x, "exp"))
def log(x): return Log.apply(_float(x, "log"))
def sqrt(x): return Sqrt.apply(_float(x, "sqrt"))
def rsqrt(x): return Rsqrt.apply(_float(x, "rsqrt"))
def abs(x): return Abs.apply(check_tensor("abs", x))


def clip(x, min=None, max=None):
    """Clamp to [min, max]; either bound may be None, a number or a tensor (broadcast, and given its gradient).

    Where min > max the result is max, as in PyTorch.
    """
    check_tensor("clamp", x)
    if min is None and max is None:
        raise ValueError("clamp: At least one of 'min' or 'max' must not be None")
    if not isinstance(min, Tensor) and not isinstance(max, Tensor):
        return Clip.apply(x, lo=min, hi=max)
    bounds = [as_tensor(b, x) for b in (min, max) if b is not None]
    bounds = [b if b.dtype == x.dtype else b.to(x.dtype) for b in bounds]
    return ClampTensors.apply(x, *bounds, has_lo=min is not None, has_hi=max is not None)


class ClampTensors(Function):
    """min(max(x, lo), hi) with tensor bounds (broadcast); a nan anywhere gives nan.

    The gradients are PyTorch's masks: x gets g where lo <= x <= hi, lo where x < lo < hi, hi where x > hi
    or hi < lo (where the bounds cross, the result is hi).
    """

    def forward(self, x, *bounds, has_lo, has_hi):
        xp = self.xp
        self.save_for_backward(x, *bounds)
        self.has_lo, self.has_hi = has_lo, has_hi
        y = x
        if has_lo:
            y = xp.maximum(y, bounds[0])
        if has_hi:
            y = xp.minimum(y, bounds[-1])
        return y

    def backward(self, g):
        saved = self.saved_for(g)
        x, lo, hi = saved[0], saved[1] if self.has_lo else None, saved[-1] if self.has_hi else None
        inside = True
        grads = []
        if lo is not None:
            inside = x >= lo
        if hi is not None:
            inside = inside & (x <= hi)
        grads.append(sum_to(g * inside, x.shape))
        if lo is not None:
            grads.append(sum_to(g * ((x < lo) & (lo < hi) if hi is not None else x < lo), lo.shape))
        if hi is not None:
            grads.append(sum_to(g * ((x > hi) | (hi < lo) if lo is not None else x > hi), hi.shape))
        return tuple(grads)

    gradient = backward


def _float(x, op):
    check_tensor(op, x)
    return x if x.dtype.kind == "f" else x.float()


def _log(x):
    return Log.apply(x)


# ---- comparisons (no gradient) ----------------------------------------------------
def _compare(ufunc_name, a, b):
    check_tensor(_NAMES.get(ufunc_name, ufunc_name), a)
    a, b = pair(a, b, ufunc_name)
    if a.device is not b.device:
        _device_mismatch(ufunc_name, (a, b))
    xp = a.device.backend.xp
    try:
        out = getattr(xp, ufunc_name)(a.data, b.data)
    except ValueError:
        broadcast_shape(a.shape, b.shape, ufunc_name)
        raise
    return Tensor._wrap(out, a.device, False, None)


_NAMES = {"equal": "eq", "not_equal": "ne", "less": "lt", "less_equal": "le", "greater": "gt", "greater_equal": "ge"}


def _bitwise(ufunc_name, a, b):
    """&, |, ^ of bool or integer tensors (logical for bool), as PyTorch's bitwise ops; no gradient."""
    a, b = pair(a, b, ufunc_name)
    for t in (a, b):
        if t.dtype.kind not in "biu":
            raise TypeError(f"{ufunc_name}: only bool and integer tensors are supported (got {t.dtype}); compare "
                            "first, e.g. (x > 0) & (y > 0)")
    return Tensor._wrap(getattr(a.device.backend.xp, ufunc_name)(a.data, b.data), a.device, False, None)


def bitwise_and(a, b): return _bitwise("bitwise_and", a, b)
def bitwise_or(a, b): return _bitwise("bitwise_or", a, b)
def bitwise_xor(a, b): return _bitwise("bitwise_xor", a, b)


def bitwise_not(x):
    check_tensor("bitwise_not", x)
    if x.dtype.kind not in "biu":
        raise TypeError(f"bitwise_not: only bool and integer tensors are supported (got {x.dtype})")
    return Tensor._wrap(x.xp.invert(x.data), x.device, False, None)


def eq(a, b): return _compare("equal", a, b)
def ne(a, b): return _compare("not_equal", a, b)
def lt(a, b): return _compare("less", a, b)
def le(a, b): return _compare("less_equal", a, b)
def gt(a, b): return _compare("greater", a, b)
def ge(a, b): return _compare("greater_equal", a, b)
