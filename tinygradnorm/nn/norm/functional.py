"""The normalization functions, with PyTorch's signatures, plus ``impl`` to pick the backward.

``impl="fused"`` (default) runs the hand-derived Functions of fused.py; ``impl="composite"``
runs the same maths as primitive ops (composite.py) and lets autograd derive the backward.
Running statistics follow PyTorch: running = (1 - momentum) * running + momentum * batch,
storing the unbiased batch variance while normalizing with the biased one.
"""
import math
import operator

from ...autograd.grad_mode import is_recording
from ...ops.inplace import bump_version
from ...dtypes import float32
from ...tensor import Tensor
from . import composite
from .fused import (FrozenStandardize, LocalResponseNormalize, RMSNormalize, Standardize, frozen_arrays,
                    standardize_arrays)

IMPLS = ("fused", "composite")


def _check_impl(impl):
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS} (got {impl!r})")


def _check_tensor(name, x, min_dim=1):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}(): argument 'input' (position 1) must be Tensor, not {type(x).__name__}")
    if x.data.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point input, got dtype {x.dtype}; convert it with .float()")
    if x.data.ndim < min_dim:
        raise ValueError(f"{name}: expected an input with at least {min_dim} dims (got {x.ndim}D input of shape "
                         f"{tuple(x.shape)})")


def _check_dtypes(name, x, *params):
    """As in PyTorch on the CPU: parameters share the input's dtype, or are float32 for a float16 input."""
    for t in params:
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}(): weight, bias and running statistics must be Tensors, not {type(t).__name__}")
        if t.data.dtype != x.data.dtype and not (x.data.dtype.itemsize < 4 and t.dtype == float32):
            raise RuntimeError(f"{name}: mixed dtype (CPU): all inputs must share same datatype (input is {x.dtype}, "
                               f"a parameter or statistic is {t.dtype}); convert the input with .to({t.dtype}) or "
                               f"the module with .to({x.dtype})")
        if t._device is not x._device:
            raise RuntimeError(f"{name}: input is on {x.device} but a parameter or statistic is on {t.device}; move "
                               f"the module with .to('{x.device}')")


def _check_vector(name, what, t, size, x):
    if t is not None and t.data.shape != (size,):
        raise ValueError(f"{name}: expected {what} of shape ({size},) to match the {size} channels of input of shape "
                         f"{tuple(x.shape)}, got {what} of shape {tuple(t.shape)}")


def _check_eps(name, eps):
    if not eps > 0:
        raise ValueError(f"{name}: eps must be positive (got {eps}); it keeps 1/sqrt(var + eps) finite when a "
                         "statistic has zero variance")


def _standardize(impl, x, weight, bias, axes, eps, shape, view=None, on_stats=None):
    """y: x standardized over ``axes``, weight and bias flat, ``shape`` the shape that broadcasts them against x.
    ``on_stats(mean, biased var, m)``, when given, gets the batch's statistics as arrays (float64 from the fused
    layer, x's dtype from the composite one) and the count m of each
    (to update running statistics: inside the forward, as PyTorch's kernel does, with no Tensors made for them).

    An empty x gives an empty y (as in PyTorch), with no statistics (on_stats is not called) and zero gradients for
    the parameters.
    """
    if x.data.size == 0:
        return _affine_only(x, _as_param(weight, shape), _as_param(bias, shape))
    if impl == "composite":
        y, mean, var, m = composite.standardize(x if view is None else x.reshape(view), _as_param(weight, shape),
                                                _as_param(bias, shape), axes, eps)
        if on_stats is not None:
            on_stats(mean, var, m)
        return y if view is None else y.reshape(x.shape)
    if not _records(x, weight, bias):
        y = standardize_arrays(x._device.backend, x.data, _data(weight), _data(bias), axes, eps, shape, view,
                               on_stats)[0]
        return Tensor._wrap(y, x._device, False, None)
    params = [p for p in (weight, bias) if p is not None]
    return Standardize.apply(x, *params, axes=axes, eps=eps, has_weight=weight is not None, has_bias=bias is not None,
                             param_shape=shape, view=view, on_stats=on_stats)


def _records(x, weight, bias):
    """Whether an op on these inputs records a graph (Function.apply's test). Where none is recorded, the fused
    layers run their array forward with no Function: the same result, without the per-call cost of one."""
    return ((x.requires_grad or weight is not None and weight.requires_grad
             or bias is not None and bias.requires_grad) and is_recording())


def _data(t):
    return None if t is None else t.data


def _affine_only(x, weight, bias):
    """x * weight + bias, for an empty x: the right shape and dtype, and zero gradients for weight and bias."""
    y = x * weight if weight is not None else x
    y = y + bias if bias is not None else y
    return y if y is not x else x.clone()


def _frozen(impl, x, weight, bias, mean, var, eps, shape):
    """Eval mode: x normalized with the statistics ``mean`` and ``var`` (arrays), weight and bias flat."""
    if impl == "composite":
        return composite.frozen_standardize(x, _as_param(weight, shape), _as_param(bias, shape),
                                            Tensor(mean.reshape(shape), device=x.device),
                                            Tensor(var.reshape(shape), device=x.device), eps)
    if not _records(x, weight, bias):
        y = frozen_arrays(x._device.backend, x.data, _data(weight), _data(bias), mean, var, eps, shape)[0]
        return Tensor._wrap(y, x._device, False, None)
    params = [p for p in (weight, bias) if p is not None]
    return FrozenStandardize.apply(x, *params, mean=mean, var=var, eps=eps, has_weight=weight is not None,
                                   has_bias=bias is not None, param_shape=shape)


def _update_running(running_mean, running_var, mean, var, momentum, unbias=1.0):
    """running = (1 - momentum) * running + momentum * batch for both buffers, in place and outside the graph
    (backend.norm.update_running); the batch's variance is var * unbias. mean and var are flat arrays."""
    # NOTE: on the arrays directly, as torch does in its kernel: a buffer is no leaf that requires grad, and
    # the version bump tells any graph that saved the old value.
    running_mean._device.backend.norm.update_running(running_mean.data, running_var.data, mean, var, momentum,
                                                     unbias)
    bump_version(running_mean, "batch_norm")
    bump_version(running_var, "batch_norm")


def _plain_channel_call(x, eps, impl, *params):
    """True for the common call every check of batch_norm, instance_norm and group_norm on their channels would
    pass: a floating-point Tensor of at least 2 dims, each of ``params`` None or a vector of x's channels in x's
    dtype and on x's device, eps > 0. (One test instead of a dozen calls, as _plain_trailing_call.)"""
    if type(x) is not Tensor or impl not in IMPLS:
        return False
    data = x.data
    if data.dtype.kind != "f" or data.ndim < 2:
        return False
    return _params_fit(x, data.shape[1:2], params) and eps > 0


def _channel_shape(x):
    shape = x.data.shape
    return (1, shape[1]) + (1,) * (len(shape) - 2)


def _as_param(t, shape):
    return None if t is None else t.reshape(shape)


def _check_running(name, running_mean, running_var):
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{name}: running_mean and running_var must either both be None or neither be None (got "
                         f"running_mean={_what(running_mean)}, running_var={_what(running_var)})")


def _what(t):
    return "None" if t is None else f"a tensor of shape {tuple(t.shape)}"


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               *, impl="fused"):
    """Normalize each channel (dim 1) over the batch and every other dim, as torch.nn.functional.batch_norm."""
    name = "batch_norm"
    plain = (running_mean is None) == (running_var is None) and _plain_channel_call(
        input, eps, impl, weight, bias, running_mean, running_var)
    if not plain:
        _check_impl(impl)
        if isinstance(input, Tensor) and input.data.ndim == 1 and input.data.size == 0:
            return input.clone()           # PyTorch accepts an empty 1-D input (and only an empty one)
        _check_tensor(name, input, 2)
    shape = input.data.shape
    if training and math.prod(shape[:1] + shape[2:]) == 1:                   # (PyTorch checks this first)
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{tuple(input.shape)}")
    if not training and (running_mean is None or running_var is None):
        what = "running_mean" if running_mean is None else "running_var"
        raise RuntimeError(f"{name}: {what} must be defined in evaluation mode (training=False normalizes with the "
                           "running statistics); pass running_mean and running_var, or training=True")
    c = shape[1]
    if not plain:
        _check_running(name, running_mean, running_var)
        _check_vector(name, "running_mean", running_mean, c, input)
        _check_vector(name, "running_var", running_var, c, input)
        _check_vector(name, "weight", weight, c, input)
        _check_vector(name, "bias", bias, c, input)
        _check_dtypes(name, input, weight, bias, running_mean, running_var)
        _check_eps(name, eps)               # NOTE: in eval mode too: eps = 0 with a zero running_var divides by 0
    shape = _channel_shape(input)
    if training:
        axes = (0,) + tuple(range(2, input.data.ndim))
        def update(mean, var, m):
            _update_running(running_mean, running_var, mean.reshape(c), var.reshape(c), momentum, m / (m - 1))
        return _standardize(impl, input, weight, bias, axes, eps, shape,
                            on_stats=update if running_mean is not None else None)
    return _frozen(impl, input, weight, bias, running_mean.data, running_var.data, eps, shape)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5, *, impl="fused"):
    """Normalize each (sample, channel) over its spatial dims, as torch.nn.functional.instance_norm.

    With running statistics, the per-instance statistics averaged over the batch update them.
    """
    name = "instance_norm"
    _check_impl(impl)
    _check_tensor(name, input, 3)
    if use_input_stats and math.prod(input.shape[2:]) == 1:                # (PyTorch checks this first)
        raise ValueError(f"Expected more than 1 spatial element when training, got input size "
                         f"{tuple(input.shape)}")
    _check_running(name, running_mean, running_var)
    if not use_input_stats and running_mean is None:
        raise RuntimeError(f"{name}: Expected running_mean and running_var to be defined when use_input_stats is "
                           "false; pass them, or use_input_stats=True")
    n, c = input.shape[:2]
    for what, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_vector(name, what, t, c, input)
    _check_dtypes(name, input, weight, bias, running_mean, running_var)
    _check_eps(name, eps)
    shape = _channel_shape(input)
    if use_input_stats:
        def update(mean, var, m):
            _update_running(running_mean, running_var, mean.reshape(n, c).mean(axis=0),
                            var.reshape(n, c).mean(axis=0), momentum, m / (m - 1))
        # NOTE: with no instances (N = 0) PyTorch averages nothing and sets the running statistics to nan;
        # here they keep their values (an empty input has no statistics: update is not called).
        return _standardize(impl, input, weight, bias, tuple(range(2, input.ndim)), eps, shape,
                            on_stats=update if running_mean is not None else None)
    return _frozen(impl, input, weight, bias, running_mean.data, running_var.data, eps, shape)


def _normalized_shape(normalized_shape, name="layer_norm"):
    """normalized_shape as a tuple of ints: an int, or a sequence of integers (Python's, NumPy's); as in PyTorch,
    anything else (a float, say) is a TypeError."""
    if type(normalized_shape) is tuple and all(type(s) is int for s in normalized_shape):
        return normalized_shape                          # (the modules' own, checked at construction)
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    items = normalized_shape if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
    shape = []
    for i, s in enumerate(items):
        try:
            shape.append(operator.index(s))
        except TypeError:
            raise TypeError(f"{name}(): argument 'normalized_shape' (position 2) must be tuple of ints, but found "
                            f"element of type {type(s).__name__} at pos {i}") from None
    return tuple(shape)


def _check_trailing(name, x, normalized_shape):
    k = len(normalized_shape)
    shape = x.data.shape
    if k == 0 or len(shape) < k or shape[len(shape) - k:] != normalized_shape:
        raise ValueError(f"{name}: Given normalized_shape={list(normalized_shape)}, expected input with shape "
                         f"[*, {', '.join(map(str, normalized_shape))}], but got input of size{list(x.shape)}")


def _check_param(name, what, t, normalized_shape):
    if t is not None and t.data.shape != normalized_shape:
        raise ValueError(f"{name}: expected {what} of shape {normalized_shape} (normalized_shape), got "
                         f"{tuple(t.shape)}")


_TRAILING_AXES = {}                         # (ndim, number of trailing dims) -> their axes


def _trailing_axes(ndim, k):
    """The last k axes of an ndim-dimensional input, as a tuple (remembered: every call asks again)."""
    axes = _TRAILING_AXES.get((ndim, k))
    if axes is None:
        axes = _TRAILING_AXES[ndim, k] = tuple(range(ndim - k, ndim))
    return axes


def _trailing_setup(name, input, normalized_shape, weight, impl):
    """Checks shared by the layers that normalize trailing dims; returns (normalized_shape, their axes)."""
    _check_impl(impl)
    _check_tensor(name, input)
    normalized_shape = _normalized_shape(normalized_shape, name)
    _check_trailing(name, input, normalized_shape)
    _check_param(name, "weight", weight, normalized_shape)
    return normalized_shape, _trailing_axes(input.data.ndim, len(normalized_shape))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, impl="fused"):
    """Normalize over the trailing ``normalized_shape`` dims of each sample, as torch.nn.functional.layer_norm."""
    name = "layer_norm"
    if _plain_trailing_call(input, normalized_shape, weight, bias, eps, impl):
        axes = _trailing_axes(input.data.ndim, len(normalized_shape))
    else:                                   # the checks, which name what is wrong
        normalized_shape, axes = _trailing_setup(name, input, normalized_shape, weight, impl)
        _check_param(name, "bias", bias, normalized_shape)
        _check_dtypes(name, input, weight, bias)
        _check_eps(name, eps)
    shape = (1,) * axes[0] + normalized_shape
    return _standardize(impl, input, weight, bias, axes, eps, shape)


def _plain_trailing_call(x, normalized_shape, weight, bias, eps, impl):
    """True for the common call every check of layer_norm would pass: a floating-point Tensor whose trailing dims
    are normalized_shape (a tuple of ints), weight and bias None or of that shape, x's dtype and device, eps > 0.
    (One test instead of eight calls: a layer's own overhead is what small inputs pay for.)"""
    if type(x) is not Tensor or type(normalized_shape) is not tuple or not normalized_shape or impl not in IMPLS:
        return False
    data = x.data
    k = len(normalized_shape)
    if data.dtype.kind != "f" or data.shape[len(data.shape) - k:] != normalized_shape:     # (shorter when ndim < k)
        return False
    return (_params_fit(x, normalized_shape, (weight, bias)) and all(type(n) is int for n in normalized_shape)
            and eps > 0)


def _params_fit(x, shape, params):
    """Whether each of params is None or a Tensor of ``shape`` in x's dtype and on x's device (the plain calls'
    test of their parameters)."""
    dtype, device = x.data.dtype, x._device
    for t in params:
        if t is not None and (not isinstance(t, Tensor) or t.data.shape != shape or t.data.dtype != dtype
                              or t._device is not device):
            return False
    return True


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *, impl="fused"):
    """Normalize each sample's groups of channels (with their spatial dims), as torch.nn.functional.group_norm."""
    name = "group_norm"
    plain = _plain_channel_call(input, eps, impl, weight, bias)
    if not plain:
        _check_impl(impl)
        _check_tensor(name, input, 2)
    n, c = input.data.shape[:2]
    if num_groups <= 0 or c % num_groups:
        raise ValueError(f"{name}: Expected number of channels in input to be divisible by num_groups, but got input "
                         f"of shape {tuple(input.shape)} and num_groups={num_groups}")
    if n * (c // num_groups) * math.prod(input.data.shape[2:]) == 1:
        # NOTE: PyTorch's check, kept for parity (and made before the others, as PyTorch does): it looks at
        # N * C/G * spatial, not at a group's size.
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(input.shape)}")
    if not plain:
        _check_vector(name, "weight", weight, c, input)
        _check_vector(name, "bias", bias, c, input)
        _check_dtypes(name, input, weight, bias)
        _check_eps(name, eps)
    if input.data.size == 0:
        return _affine_only(input, _as_param(weight, _channel_shape(input)), _as_param(bias, _channel_shape(input)))
    # NOTE: GroupNorm is a reshape plus the same standardization: (N, C, *) -> (N, G, C/G, S)
    # with statistics over (C/G, S), and weight/bias shaped (1, G, C/G, 1) to stay per channel.
    grouped = (n, num_groups, c // num_groups, math.prod(input.data.shape[2:]))
    shape = (1, num_groups, c // num_groups, 1)
    return _standardize(impl, input, weight, bias, (2, 3), eps, shape, view=grouped)


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
        raise TypeError(f"{name}(): argument 'input' (position 1) must be Tensor, not {type(input).__name__}")
    if input.dtype.kind == "b":
        raise NotImplementedError(f"{name}: not implemented for bool input (shape {tuple(input.shape)}); convert it "
                                  "first, e.g. x.float()")
    if input.dtype.kind != "f":
        input = input.float()          # integers give float32, as PyTorch does for int64
    if input.ndim < 3:
        raise ValueError(f"{name}: Expected 3D or higher dimensionality input (got {input.ndim} dimensions, "
                         f"shape {tuple(input.shape)})")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"{name}: size must be a positive int (got {size!r})")
    if impl == "composite":
        return composite.local_response_norm(input, size, alpha, beta, k)
    return LocalResponseNormalize.apply(input, size=size, alpha=alpha, beta=beta, k=k)
