"""The normalization functions, with PyTorch's signatures, plus ``impl`` to pick the backward.

``impl="fused"`` (default) runs the hand-derived Functions of fused.py; ``impl="composite"``
runs the same maths as primitive ops (composite.py) and lets autograd derive the backward.
Running statistics follow PyTorch: running = (1 - momentum) * running + momentum * batch,
storing the unbiased batch variance while normalizing with the biased one.
"""
from ...autograd import no_grad
from ...tensor import Tensor
from . import composite
from .fused import FrozenStandardize, LocalResponseNormalize, RMSNormalize, Standardize

IMPLS = ("fused", "composite")


def _check_impl(impl):
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS} (got {impl!r})")


def _check_tensor(name, x, min_dim=1):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor input (got {type(x).__name__})")
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point input, got dtype {x.dtype}; convert it with .float()")
    if x.ndim < min_dim:
        raise ValueError(f"{name}: expected an input with at least {min_dim} dims (got {x.ndim}D input of shape "
                         f"{tuple(x.shape)})")


def _check_vector(name, what, t, size, x):
    if t is not None and tuple(t.shape) != (size,):
        raise ValueError(f"{name}: expected {what} of shape ({size},) to match the {size} channels of input of shape "
                         f"{tuple(x.shape)}, got {what} of shape {tuple(t.shape)}")


def _check_eps(name, eps):
    if not eps > 0:
        raise ValueError(f"{name}: eps must be positive (got {eps}); it keeps 1/sqrt(var + eps) finite when a "
                         "statistic has zero variance")


def _standardize(impl, x, weight, bias, axes, eps):
    """(y, mean, biased var, m) for x standardized over ``axes``; weight/bias already broadcastable."""
    if impl == "composite":
        return composite.standardize(x, weight, bias, axes, eps)
    stats = {}
    params = [p for p in (weight, bias) if p is not None]
    y = Standardize.apply(x, *params, axes=axes, eps=eps, has_weight=weight is not None,
                          has_bias=bias is not None, stats=stats)
    return y, stats["mean"], stats["var"], stats["m"]


def _frozen(impl, x, weight, bias, mean, var, eps):
    if impl == "composite":
        return composite.frozen_standardize(x, weight, bias, Tensor(mean, device=x.device),
                                            Tensor(var, device=x.device), eps)
    params = [p for p in (weight, bias) if p is not None]
    return FrozenStandardize.apply(x, *params, mean=mean, var=var, eps=eps, has_weight=weight is not None,
                                   has_bias=bias is not None)


def _update_running(running, batch, momentum):
    """running = (1 - momentum) * running + momentum * batch, in place and outside the graph."""
    with no_grad():
        running.mul_(1 - momentum).add_(batch.astype(running.dtype, copy=False), alpha=momentum)


def _channel_shape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _as_param(t, shape):
    return None if t is None else t.reshape(shape)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               *, impl="fused"):
    """Normalize each channel (dim 1) over the batch and every other dim, as torch.nn.functional.batch_norm."""
    name = "batch_norm"
    _check_impl(impl)
    _check_tensor(name, input, 2)
    c = input.shape[1]
    for what, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_vector(name, what, t, c, input)
    shape = _channel_shape(input)
    w, b = _as_param(weight, shape), _as_param(bias, shape)
    axes = (0,) + tuple(range(2, input.ndim))
    if training or running_mean is None or running_var is None:
        m = input.numel() // max(c, 1)
        if training and m <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                             f"{tuple(input.shape)}")
        _check_eps(name, eps)
        y, mean, var, m = _standardize(impl, input, w, b, axes, eps)
        if training and running_mean is not None and running_var is not None:
            _update_running(running_mean, mean.reshape(c), momentum)
            _update_running(running_var, var.reshape(c) * (m / (m - 1)), momentum)
        return y
    mean = running_mean.data.reshape(shape)
    var = running_var.data.reshape(shape)
    return _frozen(impl, input, w, b, mean, var, eps)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5, *, impl="fused"):
    """Normalize each (sample, channel) over its spatial dims, as torch.nn.functional.instance_norm.

    With running statistics, the per-instance statistics averaged over the batch update them.
    """
    name = "instance_norm"
    _check_impl(impl)
    _check_tensor(name, input, 3)
    n, c = input.shape[:2]
    for what, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_vector(name, what, t, c, input)
    shape = _channel_shape(input)
    w, b = _as_param(weight, shape), _as_param(bias, shape)
    if use_input_stats or running_mean is None or running_var is None:
        m = input.numel() // max(n * c, 1)
        if use_input_stats and m <= 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size "
                             f"{tuple(input.shape)}")
        _check_eps(name, eps)
        y, mean, var, m = _standardize(impl, input, w, b, tuple(range(2, input.ndim)), eps)
        if use_input_stats and running_mean is not None and running_var is not None:
            _update_running(running_mean, mean.reshape(n, c).mean(axis=0), momentum)
            _update_running(running_var, (var.reshape(n, c) * (m / (m - 1))).mean(axis=0), momentum)
        return y
    return _frozen(impl, input, w, b, running_mean.data.reshape(shape), running_var.data.reshape(shape), eps)


def _normalized_shape(normalized_shape):
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(int(s) for s in normalized_shape)


def _check_trailing(name, x, normalized_shape):
    k = len(normalized_shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise ValueError(f"{name}: Given normalized_shape={list(normalized_shape)}, expected input with shape "
                         f"[*, {', '.join(map(str, normalized_shape))}], but got input of size{list(x.shape)}")


def _check_param(name, what, t, normalized_shape):
    if t is not None and tuple(t.shape) != normalized_shape:
        raise ValueError(f"{name}: expected {what} of shape {normalized_shape} (normalized_shape), got "
                         f"{tuple(t.shape)}")


def _trailing_setup(name, input, normalized_shape, weight, impl):
    """Checks shared by the layers that normalize trailing dims; returns (normalized_shape, their axes)."""
    _check_impl(impl)
    _check_tensor(name, input)
    normalized_shape = _normalized_shape(normalized_shape)
    _check_trailing(name, input, normalized_shape)
    _check_param(name, "weight", weight, normalized_shape)
    return normalized_shape, tuple(range(input.ndim - len(normalized_shape), input.ndim))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, impl="fused"):
    """Normalize over the trailing ``normalized_shape`` dims of each sample, as torch.nn.functional.layer_norm."""
    name = "layer_norm"
    normalized_shape, axes = _trailing_setup(name, input, normalized_shape, weight, impl)
    _check_param(name, "bias", bias, normalized_shape)
    _check_eps(name, eps)
    shape = (1,) * axes[0] + normalized_shape
    return _standardize(impl, input, _as_param(weight, shape), _as_param(bias, shape), axes, eps)[0]


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *, impl="fused"):
    """Normalize each sample's groups of channels (with their spatial dims), as torch.nn.functional.group_norm."""
    name = "group_norm"
    _check_impl(impl)
    _check_tensor(name, input, 2)
    n, c = input.shape[:2]
    if num_groups <= 0 or c % num_groups:
        raise ValueError(f"{name}: Expected number of channels in input to be divisible by num_groups, but got input "
                         f"of shape {tuple(input.shape)} and num_groups={num_groups}")
    _check_vector(name, "weight", weight, c, input)
    _check_vector(name, "bias", bias, c, input)
    _check_eps(name, eps)
    # NOTE: GroupNorm is a reshape plus the same standardization: (N, C, *) -> (N, G, C/G, S)
    # with statistics over (C/G, S), and weight/bias shaped (1, G, C/G, 1) to stay per channel.
    grouped = (n, num_groups, c // num_groups, -1)
    shape = (1, num_groups, c // num_groups, 1)
    y = _standardize(impl, input.reshape(grouped), _as_param(weight, shape), _as_param(bias, shape), (2, 3), eps)[0]
    return y.reshape(input.shape)


def rms_norm(input, normalized_shape, weight=None, eps=None, *, impl="fused"):
    """x / sqrt(mean(x^2) + eps) * weight over the trailing dims; eps=None means the dtype's machine epsilon."""
    name = "rms_norm"
    normalized_shape, axes = _trailing_setup(name, input, normalized_shape, weight, impl)
    if eps is None:
        eps = float(input.xp.finfo(input.dtype).eps)
    _check_eps(name, eps)
    if impl == "composite":
        return composite.rms_norm(input, weight, axes, eps)
    return RMSNormalize.apply(input, *([weight] if weight is not None else []), axes=axes, eps=eps)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0, *, impl="fused"):
    """Divide each element by (k + alpha/size * Σ squares over neighbouring channels)^beta."""
    name = "local_response_norm"
    _check_impl(impl)
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: expected a Tensor input (got {type(input).__name__})")
    if input.ndim < 3:
        raise ValueError(f"{name}: Expected 3D or higher dimensionality input (got {input.ndim} dimensions, "
                         f"shape {tuple(input.shape)})")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"{name}: size must be a positive int (got {size!r})")
    if impl == "composite":
        return composite.local_response_norm(input, size, alpha, beta, k)
    return LocalResponseNormalize.apply(input, size=size, alpha=alpha, beta=beta, k=k)
