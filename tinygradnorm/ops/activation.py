"""Activation functions, each with its hand-derived backward: sigmoid, tanh, relu, leaky_relu, gelu and silu."""
import math

from ..autograd.function import Function
from ._util import check_tensor, compiled_kernels, contiguous, select
from ..tensor import Tensor

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_CUBIC = 0.044715


def _sigmoid(xp, x):
    """1 / (1 + exp(-x)) as exp(min(x, 0)) / (1 + exp(-|x|)): nothing overflows, and the result keeps its
    relative accuracy for x << 0 (0.5*tanh(x/2) + 0.5 would lose it to cancellation)."""
    t = xp.abs(x, out=xp.empty_like(x))            # out= keeps 0-d results arrays
    xp.negative(t, out=t)
    xp.exp(t, out=t)
    t += 1
    y = xp.minimum(x, 0, out=xp.empty_like(x))
    xp.exp(y, out=y)
    y /= t
    return y


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)); backward gx = g * y * (1 - y). With compiled CPU kernels, one pass each way."""

    def forward(self, x):
        self.kernels = compiled_kernels(self.backend, x)
        if self.kernels is not None:
            out = self.kernels.sigmoid_forward(contiguous(self.xp, x))
        else:
            out = _sigmoid(self.xp, x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        out, = self.saved
        if self.kernels is not None:
            return self.kernels.sigmoid_backward(out, contiguous(self.xp, g))
        gx = 1 - out
        gx *= out
        gx *= g
        return gx

    def gradient(self, g):
        out, = self.saved_tensors
        return SigmoidBackward.apply(out, g)


class SigmoidBackward(Function):
    """Sigmoid's backward as an op: (y, g) -> g * y * (1 - y), one compiled pass on the CPU. Its gradient:
    d/dg = u * y * (1 - y) (this op again), d/dy = u * g * (1 - 2 y)."""

    def forward(self, y, g):
        self.save_for_backward(y, g)
        kernels = compiled_kernels(self.backend, y)
        if kernels is not None:
            return kernels.sigmoid_backward(contiguous(self.xp, y), contiguous(self.xp, g))
        return g * y * (1 - y)

    def backward(self, u):
        y, g = self.saved
        kernels = compiled_kernels(self.backend, y)
        if kernels is not None:
            xp = self.xp
            return kernels.sigmoid_double_backward(contiguous(xp, y), contiguous(xp, g), contiguous(xp, u))
        return u * g * (1 - 2 * y), u * y * (1 - y)

    def gradient(self, u):
        y, g = self.saved_tensors
        return u * g * (1 - 2 * y), SigmoidBackward.apply(y, u)


class Tanh(Function):
    def forward(self, x):
        out = self.xp.tanh(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        out, = self.saved_for(g)
        return g * (1 - out * out)

    gradient = backward


class Relu(Function):
    def forward(self, x):
        out = self.xp.maximum(x, 0)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        # NOTE: zero where the output is <= 0, else g: a nan input passes its gradient on, as in PyTorch.
        out, = self.saved_for(g)
        return select(self.xp, out <= 0, g.dtype.type(0), g)

    gradient = backward


class LeakyRelu(Function):
    """y = x for x > 0, else slope * x; the gradient is 1 or slope (slope at 0 and at nan, as in PyTorch)."""

    def forward(self, x, slope):
        self.save_for_backward(x)
        self.slope = slope
        return self.xp.where(x > 0, x, x * x.dtype.type(slope))

    def backward(self, g):
        x, = self.saved_for(g)
        return select(self.xp, x > 0, g, g * g.dtype.type(self.slope))

    gradient = backward


class Gelu(Function):
    """y = x * Phi(x), Phi the standard normal CDF; dy/dx = Phi(x) + x * phi(x).

    With approximate="tanh", Phi(x) is replaced by (1 + tanh(u)) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3),
    and dy/dx = (1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u).
    """

    def forward(self, x, approximate):
        xp = self.xp
        self.approximate = approximate
        if approximate == "tanh":
            t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))
            self.save_for_backward(x, t)
            return 0.5 * x * (1 + t)
        cdf = 0.5 * (1 + self.backend.erf(x * (1 / math.sqrt(2))))
        self.save_for_backward(x, cdf)
        return x * cdf

    def backward(self, g):
        xp, (x, t_or_cdf) = self.xp, self.saved
        if self.approximate == "tanh":
            t = t_or_cdf
            du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
            return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        pdf = xp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return g * (t_or_cdf + x * pdf)

    def gradient(self, g):
        x = self.saved_tensors[0]
        if self.approximate == "tanh":
            t = (_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)).tanh()
            du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
            return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        cdf = 0.5 * (1 + Erf.apply(x * (1 / math.sqrt(2))))
        pdf = (-0.5 * x * x).exp() * (1 / math.sqrt(2 * math.pi))
        return g * (cdf + x * pdf)


class Erf(Function):
    """The error function; d erf(x)/dx = 2/sqrt(pi) exp(-x^2)."""

    def forward(self, x):
        self.save_for_backward(x)
        return self.backend.erf(x)

    def backward(self, g):
        x, = self.saved_for(g)
        e = (-(x * x)).exp() if isinstance(x, Tensor) else self.xp.exp(-(x * x))
        return g * (2 / math.sqrt(math.pi)) * e

    gradient = backward


class Silu(Function):
    """y = x * sigmoid(x); dy/dx = s (1 + x (1 - s)) with s = sigmoid(x)."""

    def forward(self, x):
        s = _sigmoid(self.xp, x)
        self.save_for_backward(x, s)
        return x * s

    def backward(self, g):
        x, s = self.saved
        return g * (s * (1 + x * (1 - s)))

    def gradient(self, g):
        x = self.saved_tensors[0]
        s = Sigmoid.apply(x)
        return g * (s * (1 + x * (1 - s)))


def _float(x, op):
    check_tensor(op, x)
    return x if x.dtype.kind == "f" else x.float()


def tanh(x): return Tanh.apply(_float(x, "tanh"))
def sigmoid(x): return Sigmoid.apply(_float(x, "sigmoid"))
def relu(x): return Relu.apply(check_tensor("relu", x))
def silu(x): return Silu.apply(_float(x, "silu"))


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else negative_slope * x."""
    check_tensor("leaky_relu", x)
    if x.dtype.kind != "f":
        raise TypeError(f"leaky_relu: expected a floating-point input, got {x.dtype}; convert it first, e.g. x.float()")
    return LeakyRelu.apply(x, slope=float(negative_slope))


def gelu(x, approximate="none"):
    """x * Phi(x), exactly (approximate="none") or with PyTorch's tanh approximation (approximate="tanh")."""
    check_tensor("gelu", x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate argument must be either none or tanh (got {approximate!r})")
    if x.dtype.kind != "f":
        raise TypeError(f"gelu: expected a floating-point input, got {x.dtype}; convert it first, e.g. x.float()")
    return Gelu.apply(x, approximate=approximate)
