"""Normalization modules with PyTorch's arguments, defaults, buffers, state_dict keys and errors."""
import warnings

from ...autograd import no_grad
from ...creation import ones, tensor, zeros
from ...dtypes import int64
from ...ops._util import check_tensor
from ...ops.inplace import bump_version
from ..module import Module, Parameter
from . import functional as F
from .functional import IMPLS


def _check_positive_int(layer, what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{layer}: {what} must be a positive int (got {value!r})")


def _check_eps(layer, eps, allow_none=False):
    if eps is None and allow_none:
        return
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{layer}: eps must be positive (got {eps!r}); it keeps 1/sqrt(var + eps) finite when a "
                         "statistic has zero variance")


def _check_impl(layer, impl):
    if impl not in IMPLS:
        raise ValueError(f"{layer}: impl must be one of {IMPLS} (got {impl!r})")


def _attr(module, store, name):
    """module.<name>, looked up in its parameter or buffer dict first: Module.__getattr__ is slow, and a norm
    layer reads four of these per call."""
    value = module.__dict__[store].get(name, _attr)
    return getattr(module, name) if value is _attr else value


def _affine_params(module, shape, weight, bias, device, dtype):
    """Register weight (ones) and bias (zeros) of ``shape``, or None for each that is switched off."""
    if weight:
        module.weight = Parameter(ones(shape, device=device, dtype=dtype))
    else:
        module.register_parameter("weight", None)
    if weight and bias:
        module.bias = Parameter(zeros(shape, device=device, dtype=dtype))
    else:
        module.register_parameter("bias", None)


class _NormBase(Module):
    """Per-channel weight and bias, and the running statistics buffers (BatchNorm, InstanceNorm)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None, *, bias=True, impl="fused"):
        super().__init__()
        layer = type(self).__name__
        _check_positive_int(layer, "num_features", num_features)
        _check_eps(layer, eps)
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{layer}: momentum must be in [0, 1] or None for a cumulative average (got {momentum!r})")
        _check_impl(layer, impl)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats, self.impl = affine, track_running_stats, impl
        kw = dict(device=device, dtype=dtype)
        _affine_params(self, num_features, affine, bias, device, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, **kw))
            self.register_buffer("running_var", ones(num_features, **kw))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    @no_grad()
    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    @no_grad()
    def reset_parameters(self):
        self.reset_running_stats()
        if self.weight is not None:
            self.weight.fill_(1)
        if self.bias is not None:
            self.bias.zero_()

    def _check_input_dim(self, input):
        check_tensor(self._function, input)
        dims = self._dims
        if input.data.ndim not in dims:
            want = " or ".join(f"{d}D" for d in dims)
            raise ValueError(f"{type(self).__name__} expected {want} input (got {input.ndim}D input of shape "
                             f"{tuple(input.shape)})")

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    _function = "batch_norm"

    def _start(self, input):
        """Check the input, count this batch when training with tracked statistics, and return
        (running_mean, running_var, the running statistics' update factor)."""
        self._check_input_dim(input)
        channels = input.data.shape[1]
        if channels != self.num_features:
            raise ValueError(f"{type(self).__name__} expected input with {self.num_features} channels (num_features) "
                             f"at dim 1, got {channels} channels in input of shape {tuple(input.shape)}")
        running_mean, running_var = _attr(self, "_buffers", "running_mean"), _attr(self, "_buffers", "running_var")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            count = _attr(self, "_buffers", "num_batches_tracked")
            data = count.data                   # in place, as torch's add_(1): a buffer, outside any graph
            data[()] = data[()] + 1             # (as a scalar: 0.3 against 2.3 us for data += 1 on a 0-d array)
            bump_version(count, "add_")
            if self.momentum is None:
                factor = 1.0 / float(count.item())       # cumulative moving average
        return running_mean, running_var, factor

    def forward(self, input):
        running_mean, running_var, factor = self._start(input)
        # Eval uses the running statistics when they are tracked, else the batch's own.
        use_batch_stats = self.training or (running_mean is None and running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(input, running_mean if track else None, running_var if track else None,
                            _attr(self, "_parameters", "weight"), _attr(self, "_parameters", "bias"), use_batch_stats,
                            factor, self.eps, impl=self.impl)


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input: statistics per channel over N (and L)."""

    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) input: statistics per channel over N, H and W."""

    _dims = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch norm over (N, C, D, H, W) input: statistics per channel over N, D, H and W."""

    _dims = (5,)


class _InstanceNorm(_NormBase):
    _function = "instance_norm"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False, device=None,
                 dtype=None, *, bias=True, impl="fused"):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         impl=impl)

    def forward(self, input):
        self._check_input_dim(input)
        unbatched = input.ndim == self._dims[0]
        x = input.unsqueeze(0) if unbatched else input
        if x.shape[1] != self.num_features:
            if self.affine:
                raise ValueError(f"{type(self).__name__}: expected input's size at dim=1 to match num_features "
                                 f"({self.num_features}), but got: {x.shape[1]} (input of shape {tuple(input.shape)}).")
            warnings.warn(f"{type(self).__name__}: input's size at dim=1 ({x.shape[1]}) does not match num_features "
                          f"({self.num_features}). num_features is not used because affine=False", stacklevel=2)
        # NOTE: as in PyTorch, InstanceNorm never counts batches, and momentum=None means 0:
        # the running statistics then never move.
        momentum = 0.0 if self.momentum is None else self.momentum
        y = F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats, momentum, self.eps, impl=self.impl)
        return y.squeeze(0) if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    """Instance norm over (N, C, L) or unbatched (C, L): statistics per sample and channel over L."""

    _dims = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """Instance norm over (N, C, H, W) or unbatched (C, H, W)."""

    _dims = (3, 4)


class InstanceNorm3d(_InstanceNorm):
    """Instance norm over (N, C, D, H, W) or unbatched (C, D, H, W)."""

    _dims = (4, 5)


class LayerNorm(Module):
    """Normalize each sample over its trailing ``normalized_shape`` dims, then an elementwise affine."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None, *,
                 impl="fused"):
        super().__init__()
        shape = F._normalized_shape(normalized_shape, "LayerNorm")
        for s in shape:
            _check_positive_int("LayerNorm", "each normalized_shape entry", s)
        _check_eps("LayerNorm", eps)
        _check_impl("LayerNorm", impl)
        self.normalized_shape, self.eps, self.elementwise_affine, self.impl = shape, eps, elementwise_affine, impl
        _affine_params(self, shape, elementwise_affine, bias, device, dtype)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, _attr(self, "_parameters", "weight"),
                            _attr(self, "_parameters", "bias"), self.eps, impl=self.impl)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(Module):
    """Split the channels into ``num_groups`` groups and normalize each group of each sample."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True,
                 impl="fused"):
        super().__init__()
        _check_positive_int("GroupNorm", "num_groups", num_groups)
        _check_positive_int("GroupNorm", "num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        _check_eps("GroupNorm", eps)
        _check_impl("GroupNorm", impl)
        self.num_groups, self.num_channels, self.eps, self.affine, self.impl = num_groups, num_channels, eps, affine, impl
        _affine_params(self, num_channels, affine, bias, device, dtype)

    def forward(self, input):
        check_tensor("group_norm", input)
        if input.ndim < 2 or input.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm expected input (N, {self.num_channels}, *) with {self.num_channels} channels "
                             f"at dim 1, got input of shape {tuple(input.shape)}")
        return F.group_norm(input, self.num_groups, _attr(self, "_parameters", "weight"),
                            _attr(self, "_parameters", "bias"), self.eps, impl=self.impl)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(Module):
    """x / sqrt(mean(x^2) + eps) * weight over the trailing dims: LayerNorm without centring or bias."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None, *, impl="fused"):
        super().__init__()
        shape = F._normalized_shape(normalized_shape, "RMSNorm")
        for s in shape:
            _check_positive_int("RMSNorm", "each normalized_shape entry", s)
        _check_eps("RMSNorm", eps, allow_none=True)
        _check_impl("RMSNorm", impl)
        self.normalized_shape, self.eps, self.elementwise_affine, self.impl = shape, eps, elementwise_affine, impl
        _affine_params(self, shape, elementwise_affine, False, device, dtype)

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, _attr(self, "_parameters", "weight"), self.eps, impl=self.impl)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class LocalResponseNorm(Module):
    """Divide each element by (k + alpha/size * Σ squares of ``size`` neighbouring channels)^beta."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, *, impl="fused"):
        super().__init__()
        _check_positive_int("LocalResponseNorm", "size", size)
        _check_impl("LocalResponseNorm", impl)
        self.size, self.alpha, self.beta, self.k, self.impl = size, alpha, beta, k, impl

    def forward(self, input):
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k, impl=self.impl)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
