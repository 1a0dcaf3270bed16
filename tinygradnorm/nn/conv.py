"""The convolution modules, with PyTorch's arguments, defaults, initialization, repr and state_dict keys:
Conv1d/2d/3d and ConvTranspose1d/2d/3d."""
from ..ops.conv import transposed_output_shape
from ..ops.movement import PADDING_MODES
from . import functional as F
from .layers import _positive, _reset_parameters, _weight_and_bias
from .module import Module


class _ConvNd(Module):
    """What the convolutions share: channels, kernel geometry, groups, the weight and bias."""

    _d = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None, output_padding=0):
        super().__init__()
        layer = type(self).__name__
        _positive(layer, "in_channels", in_channels)
        _positive(layer, "out_channels", out_channels)
        _positive(layer, "groups", groups)
        if in_channels % groups:
            raise ValueError(f"{layer}: in_channels must be divisible by groups (got in_channels={in_channels}, "
                             f"groups={groups})")
        if out_channels % groups:
            raise ValueError(f"{layer}: out_channels must be divisible by groups (got out_channels={out_channels}, "
                             f"groups={groups})")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"{layer}: padding_mode must be one of {PADDING_MODES}, but got padding_mode="
                             f"'{padding_mode}'")
        if self._transposed and padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {layer}')
        d = self._d
        tup = lambda v, what: _ntuple(v, d, what, layer)  # noqa: E731
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = tup(kernel_size, "kernel_size"), tup(stride, "stride"), \
            tup(dilation, "dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid") or self._transposed:
                raise ValueError(f"{layer}: Invalid padding string {padding!r}, should be one of ('valid', 'same')"
                                 if not self._transposed else
                                 f"{layer}: padding={padding!r} is not supported for transposed convolutions")
            if padding == "same" and self.stride != (1,) * d:
                raise ValueError(f"{layer}: padding='same' is not supported for strided convolutions (got stride "
                                 f"{self.stride})")
            self.padding = padding
        else:
            self.padding = tup(padding, "padding")
        self.output_padding = tup(output_padding, "output_padding")
        self.groups, self.padding_mode, self.transposed = groups, padding_mode, self._transposed
        shape = (in_channels, out_channels // groups) if self._transposed else (out_channels, in_channels // groups)
        _weight_and_bias(self, shape + self.kernel_size, bias, device, dtype, bias_size=out_channels)

    def reset_parameters(self):
        _reset_parameters(self)

    def extra_repr(self):
        d = self._d
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * d:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * d:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * d:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


def _ntuple(v, d, what, layer):
    t = (v,) * d if isinstance(v, int) and not isinstance(v, bool) else tuple(v)
    if len(t) != d or not all(isinstance(i, int) and not isinstance(i, bool) for i in t):
        raise ValueError(f"{layer}: {what} must be an int or a tuple of {d} ints (got {v!r})")
    return t


class _Conv(_ConvNd):
    """Cross-correlation over d spatial dims; padding_mode other than zeros pads with F.pad first."""

    _function = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype)

    def forward(self, input):
        conv = type(self)._function
        if self.padding_mode == "zeros" or self.padding == "valid":
            return conv(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.padding == "same":
            totals = [dl * (k - 1) for dl, k in zip(self.dilation, self.kernel_size)]
            sides = [(t // 2, t - t // 2) for t in totals]
        else:
            sides = [(p, p) for p in self.padding]
        widths = tuple(w for lo_hi in reversed(sides) for w in lo_hi)
        x = F.pad(input, widths, mode=self.padding_mode)
        return conv(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class Conv1d(_Conv):
    """1-D convolution (cross-correlation) over (N, C, L) input, as torch.nn.Conv1d."""

    _d = 1
    _function = staticmethod(F.conv1d)


class Conv2d(_Conv):
    """2-D convolution (cross-correlation) over (N, C, H, W) input, as torch.nn.Conv2d."""

    _d = 2
    _function = staticmethod(F.conv2d)


class Conv3d(_Conv):
    """3-D convolution (cross-correlation) over (N, C, D, H, W) input, as torch.nn.Conv3d."""

    _d = 3
    _function = staticmethod(F.conv3d)


class _ConvTranspose(_ConvNd):
    """The transposed convolution over d spatial dims; forward(input, output_size) picks output_padding so that the
    output has that size, as in PyTorch."""

    _transposed = True
    _function = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype, output_padding)

    def forward(self, input, output_size=None):
        output_padding = self._output_padding(input, output_size)
        return type(self)._function(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                    self.groups, self.dilation)

    def _output_padding(self, input, output_size):
        """self.output_padding, or the one that makes the spatial output ``output_size`` (its last d entries)."""
        if output_size is None:
            return self.output_padding
        d, layer = self._d, type(self).__name__
        size = tuple(output_size)[-d:]
        if len(size) != d:
            raise ValueError(f"{layer}: output_size must have {d} or {d + 2} elements (got {output_size!r})")
        smallest = transposed_output_shape(input.shape[-d:], self.kernel_size, self.stride, self.padding, (0,) * d,
                                           self.dilation)
        padding = tuple(s - lo for s, lo in zip(size, smallest))
        for p, s, lo in zip(padding, self.stride, smallest):
            if not 0 <= p < s:
                raise ValueError(f"{layer}: requested an output size of {list(size)}, but valid sizes range from "
                                 f"{list(smallest)} to {[lo_ + st - 1 for lo_, st in zip(smallest, self.stride)]} "
                                 f"(for an input of {list(input.shape[-d:])})")
        return padding


class ConvTranspose1d(_ConvTranspose):
    """The transposed 1-D convolution, as torch.nn.ConvTranspose1d."""

    _d = 1
    _function = staticmethod(F.conv_transpose1d)


class ConvTranspose2d(_ConvTranspose):
    """The transposed 2-D convolution, as torch.nn.ConvTranspose2d."""

    _d = 2
    _function = staticmethod(F.conv_transpose2d)


class ConvTranspose3d(_ConvTranspose):
    """The transposed 3-D convolution, as torch.nn.ConvTranspose3d."""

    _d = 3
    _function = staticmethod(F.conv_transpose3d)
