"""Linear, and the layers that reshape or drop (Flatten, Identity, Dropout); the convolutions are in conv.py."""
import math

from .. import ops
from ..creation import empty_param
from . import functional as F
from . import init
from .module import Module, Parameter


def _positive(layer, what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{layer}: {what} must be a positive int (got {value!r})")


def _weight_and_bias(module, weight_shape, bias, device, dtype, bias_size=None):
    """Register weight and (optionally) bias (of weight_shape[0] entries unless bias_size says), initialized as
    PyTorch does for Linear and the convolutions."""
    module.weight = Parameter(empty_param(weight_shape, device, dtype))
    if bias:
        module.bias = Parameter(empty_param((bias_size or weight_shape[0],), device, dtype))
    else:
        module.register_parameter("bias", None)
    _reset_parameters(module)


def _reset_parameters(module):
    # NOTE: kaiming_uniform with a=sqrt(5) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias
    # uses the same bound.
    init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(module.weight)
        bound = 1 / math.sqrt(fan_in)
        init.uniform_(module.bias, -bound, bound)


class Linear(Module):
    """y = x @ weight.T + bias, with PyTorch's default initialization."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        _positive("Linear", "in_features", in_features)
        _positive("Linear", "out_features", out_features)
        self.in_features, self.out_features = in_features, out_features
        _weight_and_bias(self, (out_features, in_features), bias, device, dtype)

    def reset_parameters(self):
        _reset_parameters(self)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Flatten dims start_dim..end_dim (by default all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return ops.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    def forward(self, x):
        return x


class Dropout(Module):
    """Zero each element with probability p while training, scaling the rest by 1/(1-p)."""

    _function = staticmethod(F.dropout)

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input):
        return self._function(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout2d(Dropout):
    """Zero whole channels of (N, C, H, W) input with probability p while training, scaling the rest by 1/(1-p)."""

    _function = staticmethod(F.dropout2d)
