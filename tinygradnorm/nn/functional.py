"""tinygradnorm.nn.functional: stateless layers, in PyTorch's names and signatures."""
from ..ops import log_softmax, softmax, relu, sigmoid, tanh, pad  # noqa: F401  (re-exported)
from ..ops._util import check_tensor
from ..ops.conv import AvgPool2d, Conv2d, MaxPool2d, _out_size, _pair
from ..ops.linalg import Linear
from ..ops.loss import NLLLoss
from ..tensor import Tensor
from .norm.functional import (batch_norm, group_norm, instance_norm, layer_norm, local_response_norm,  # noqa: F401
                              rms_norm)

_REDUCTIONS = ("mean", "sum", "none")


def linear(input, weight, bias=None):
    """input @ weight.T + bias, as torch.nn.functional.linear."""
    check_tensor("linear", input)
    check_tensor("linear", weight, "weight", 2)
    if bias is not None:
        check_tensor("linear", bias, "bias", 3)
    _same_dtype("linear", input, weight, bias,
                lambda a, b: f"mat1 and mat2 must have the same dtype, but got {a} and {b}")
    if input.ndim < 1 or weight.ndim != 2 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: mat1 and mat2 shapes cannot be multiplied: input {tuple(input.shape)} has "
                         f"{input.shape[-1] if input.ndim else 0} features but weight {tuple(weight.shape)} expects "
                         f"{weight.shape[1] if weight.ndim == 2 else '?'} (in_features)")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    return Linear.apply(input, weight) if bias is None else Linear.apply(input, weight, bias)


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p); the identity when not training."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    rng = input.device.backend.rng
    keep = rng.random(input.shape, dtype=input.dtype if input.dtype.itemsize >= 4 else None) >= p
    return input * Tensor(keep.astype(input.dtype) / (1 - p), device=input.device)


def _same_dtype(op, x, weight, bias, say):
    """PyTorch's rule for layers with weights: input, weight and bias share one dtype."""
    for t in (weight, bias):
        if t is not None and t.dtype != x.dtype:
            fix = f" or the model with .to({x.dtype})" if x.dtype.kind == "f" else ""
            raise RuntimeError(f"{op}: {say(x.dtype, t.dtype)}; convert the input with .to({t.dtype}){fix}")
    if x.dtype.kind != "f":
        raise RuntimeError(f"{op}: expected a floating-point input, got {x.dtype}; convert it first, e.g. x.float()")


def _batched(op, x, layout="(N, C, H, W)"):
    check_tensor(op, x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: expected 3D (unbatched) or 4D (batched) input {layout}, but got input of size: "
                         f"{tuple(x.shape)}")
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def _check_output(op, x, kernel, stride, padding, dilation=(1, 1)):
    oh = _out_size(x.shape[2], kernel[0], stride[0], padding[0], dilation[0])
    ow = _out_size(x.shape[3], kernel[1], stride[1], padding[1], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: input of size {tuple(x.shape)} gives output size ({oh}x{ow}) for kernel {kernel}, "
                         f"stride {stride}, padding {padding}, dilation {dilation}: output size is too small; "
                         "use a larger input or more padding")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"{op}: stride and dilation must be positive and padding non-negative (got stride {stride}, "
                         f"padding {padding}, dilation {dilation})")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation of input (N, C, H, W) with weight (O, C, KH, KW), as torch.nn.functional.conv2d."""
    x, unbatched = _batched("conv2d", input)
    check_tensor("conv2d", weight, "weight", 2)
    if bias is not None:
        check_tensor("conv2d", bias, "bias", 3)
    _same_dtype("conv2d", x, weight, bias, lambda a, b: f"Input type ({a}) and weight type ({b}) should be the same")
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be 4D (out_channels, in_channels, kH, kW), got {tuple(weight.shape)}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv2d: weight of size {list(weight.shape)} expected input{list(x.shape)} to have "
                         f"{weight.shape[1]} channels, but got {x.shape[1]} channels instead")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({weight.shape[0]},) to match the weight's out_channels, "
                         f"got {tuple(bias.shape)}")
    _check_output("conv2d", x, weight.shape[2:], stride, padding, dilation)
    args = (x, weight) if bias is None else (x, weight, bias)
    y = Conv2d.apply(*args, stride=stride, padding=padding, dilation=dilation)
    return y.squeeze(0) if unbatched else y


def _pool(op, cls, input, kernel_size, stride, padding):
    x, unbatched = _batched(op, input)
    if x.dtype.kind == "b":
        raise NotImplementedError(f"\"{op}\" not implemented for 'Bool' (input of shape {tuple(x.shape)}); convert it "
                                  "first, e.g. x.float()")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    padding = _pair(padding, "padding")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: pad should be at most half of effective kernel size, but got pad={padding} and "
                         f"kernel_size={kernel}")
    _check_output(op, x, kernel, stride, padding)
    y = cls.apply(x, kernel=kernel, stride=stride, padding=padding)
    return y.squeeze(0) if unbatched else y


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    """Mean over each window; padded zeros count in the mean (PyTorch's count_include_pad=True)."""
    return _pool("avg_pool2d", AvgPool2d, input, kernel_size, stride, padding)


def max_pool2d(input, kernel_size, stride=None, padding=0):
    """Max over each window; padding never wins."""
    return _pool("max_pool2d", MaxPool2d, input, kernel_size, stride, padding)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices: input (N, C[, d...]) log-probabilities, target (N[, d...]) int64."""
    _check_classification("nll_loss", input, target, weight, ignore_index, reduction)
    return NLLLoss.apply(input, target=target.data, weight=None if weight is None else weight.data,
                         ignore_index=ignore_index, reduction=reduction)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """log_softmax over dim 1, then nll_loss: the usual classification loss on raw logits."""
    _check_classification("cross_entropy", input, target, weight, ignore_index, reduction)
    return nll_loss(log_softmax(input, 1), target, weight, ignore_index, reduction)


def _check_classification(op, input, target, weight, ignore_index, reduction):
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{op}: input and target must be Tensors (got {type(input).__name__} and "
                        f"{type(target).__name__})")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS} (got {reduction!r})")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected target of class indices with dtype int64, got dtype {target.dtype} and "
                        f"shape {tuple(target.shape)}; convert labels with target.long() (class probabilities "
                        "are not supported)")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected floating-point input, got dtype {input.dtype}")
    if input.ndim < 2 or target.shape != input.shape[:1] + input.shape[2:]:
        raise ValueError(f"{op}: expected input (N, C, ...) and target (N, ...) with matching N and trailing dims, "
                         f"got input {tuple(input.shape)} and target {tuple(target.shape)}")
    if input.device is not target.device:
        raise RuntimeError(f"{op}: input is on {input.device} but target is on {target.device}; move the target "
                           f"with target.to('{input.device}')")
    if weight is not None and tuple(weight.shape) != (input.shape[1],):
        raise ValueError(f"{op}: weight must have shape ({input.shape[1]},), one per class, got {tuple(weight.shape)}")
    if target.device.type == "cpu" and target.numel():
        # NOTE: checked on the CPU only: on a GPU this would cost a host sync every step.
        t = target.data
        bad = (t != ignore_index) & ((t < 0) | (t >= input.shape[1]))
        if bad.any():
            raise IndexError(f"{op}: Target {int(t[bad][0])} is out of bounds: expected class indices in "
                             f"[0, {input.shape[1] - 1}]")
