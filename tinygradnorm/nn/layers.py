"""The layers with weights (Linear, Conv2d) and the ones that reshape or drop (Flatten, Identity, Dropout)."""
import math

from .. import ops
from ..creation import empty_param
from ..ops.movement import PADDING_MODES
from . import functional as F
from . import init
from .module import Module, Parameter


def _positive(layer, what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{layer}: {what} must be a positive int (got {value!r})")


def _weight_and_bias(module, weight_shape, bias, device, dtype):
    """Register weight and (optionally) bias, initialized as PyTorch does for Linear and Conv2d."""
    module.weight = Parameter(empty_param(weight_shape, device, dtype))
    if bias:
        module.bias = Parameter(empty_param((weight_shape[0],), device, dtype))
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


class Conv2d(Module):
    """2-D convolution (cross-correlation) over (N, C, H, W) input."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        _positive("Conv2d", "in_channels", in_channels)
        _positive("Conv2d", "out_channels", out_channels)
        _positive("Conv2d", "groups", groups)
        if in_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups:
            raise ValueError(f"Conv2d: out_channels ({out_channels}) must be divisible by groups ({groups})")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"Conv2d: padding_mode must be one of {PADDING_MODES}, but got padding_mode="
                             f"'{padding_mode}'")
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = pair(kernel_size), pair(stride), pair(dilation)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        if padding not in ("same", "valid") and isinstance(padding, str):
            raise ValueError(f"Conv2d: Invalid padding string {padding!r}, should be one of ('valid', 'same')")
        if padding == "same" and self.stride != (1, 1):
            raise ValueError(f"Conv2d: padding='same' is not supported for strided convolutions (got stride "
                             f"{self.stride})")
        self.groups, self.padding_mode = groups, padding_mode
        _weight_and_bias(self, (out_channels, in_channels // groups) + self.kernel_size, bias, device, dtype)

    def reset_parameters(self):
        _reset_parameters(self)

    def forward(self, input):
        if self.padding_mode == "zeros" or self.padding == "valid":
            return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.padding == "same":
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            widths = (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)
        else:
            widths = (self.padding[1], self.padding[1], self.padding[0], self.padding[0])
        x = F.pad(input, widths, mode=self.padding_mode)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


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
