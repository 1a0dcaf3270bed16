"""Activation functions, each with its hand-derived backward: sigmoid, tanh, relu, leaky_relu, gelu and silu."""
import math

from ..autograd import Function
from ._util import check_tensor, compiled_kernels, contiguous

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
            self.out = self.kernels.sigmoid_forward(contiguous(self.xp, x))
        else:
            self.out = _sigmoid(self.xp, x)
        return self.out

    def backward(self, g):
        if self.kernels is not None:
            return self.kernels.sigmoid_backward(self.out, contiguous(self.xp, g))
        gx = 1 - self.out
        gx *= self.out
        gx *= g
        return gx


class Tanh(Function):
    def forward(self, x):
        self.out = self.xp.tanh(x)
        return self.out

    def backward(self, g):
        return g * (1 - self.out * self.out)


class Relu(Function):
    def forward(self, x):
        self.out = self.xp.maximum(x, 0)
        return self.out

    def backward(self, g):
        # NOTE: zero where the output is <= 0, else g: a nan input passes its gradient on, as in PyTorch.
        return self.xp.where(self.out <= 0, g.dtype.type(0), g)


class LeakyRelu(Function):
    """y = x for x > 0, else slope * x; the gradient is 1 or slope (slope at 0 and at nan, as in PyTorch)."""

    def forward(self, x, slope):
        self.x, self.slope = x, slope
        return self.xp.where(x > 0, x, x * x.dtype.type(slope))

    def backward(self, g):
        return self.xp.where(self.x > 0, g, g * g.dtype.type(self.slope))


class Gelu(Function):
    """y = x * Phi(x), Phi the standard normal CDF; dy/dx = Phi(x) + x * phi(x).

    With approximate="tanh", Phi(x) is replaced by (1 + tanh(u)) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3),
    and dy/dx = (1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u).
    """

    def forward(self, x, approximate):
        xp = self.xp
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            self.t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))
            return 0.5 * x * (1 + self.t)
        self.cdf = 0.5 * (1 + self.backend.erf(x * (1 / math.sqrt(2))))
        return x * self.cdf

    def backward(self, g):
        xp, x = self.xp, self.x
        if self.approximate == "tanh":
            t = self.t
            du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
            return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        pdf = xp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return g * (self.cdf + x * pdf)


class Silu(Function):
    """y = x * sigmoid(x); dy/dx = s (1 + x (1 - s)) with s = sigmoid(x)."""

    def forward(self, x):
        self.x, self.s = x, _sigmoid(self.xp, x)
        return x * self.s

    def backward(self, g):
        s = self.s
        return g * (s * (1 + self.x * (1 - s)))


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
