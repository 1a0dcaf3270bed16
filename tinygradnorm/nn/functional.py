"""tinygradnorm.nn.functional: stateless layers, in PyTorch's names and signatures."""
from ..ops import log_softmax, softmax, relu, sigmoid, tanh, pad, where  # noqa: F401  (re-exported)
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
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if isinstance(padding, str):
        x, padding = _padding_for(padding, x, weight, stride, dilation)
    padding = _pair(padding, "padding")
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


def _padding_for(mode, x, weight, stride, dilation):
    """conv2d's padding='valid' (none) or 'same' (the output keeps the input's size; stride 1 only). Where 'same'
    needs an odd total, the extra row or column goes after the input, as in PyTorch."""
    if mode == "valid":
        return x, (0, 0)
    if mode != "same":
        raise ValueError(f"conv2d: Invalid padding string {mode!r}, should be one of ('valid', 'same')")
    if stride != (1, 1):
        raise ValueError(f"conv2d: padding='same' is not supported for strided convolutions (got stride {stride})")
    total = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
    if total[0] % 2 or total[1] % 2:
        x = pad(x, (0, total[1] % 2, 0, total[0] % 2))
    return x, (total[0] // 2, total[1] // 2)


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
    """Negative log-likelihood of class indices: input (N, C[, d...]) or unbatched (C,) log-probabilities,
    target (N[, d...]) or () int64."""
    input, target, unbatched = _classification("nll_loss", input, target, weight, ignore_index, reduction)
    if target.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: expected target of class indices with dtype int64, got dtype {target.dtype} and "
                        f"shape {tuple(target.shape)}; convert labels with target.long()")
    loss = NLLLoss.apply(input, target=target.data, weight=None if weight is None else weight.data,
                         ignore_index=ignore_index, reduction=reduction)
    return loss.reshape(()) if unbatched and reduction == "none" else loss


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """The usual classification loss on raw logits: log_softmax over the class dim, then the negative
    log-likelihood of the targets, as torch.nn.functional.cross_entropy.

    target holds class indices (int64, shaped like input without its class dim) or class probabilities
    (floating point, shaped like input). label_smoothing mixes each target with the uniform distribution.
    """
    input, target, unbatched = _classification("cross_entropy", input, target, weight, ignore_index, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    logp = log_softmax(input, 1)
    c = input.shape[1]
    w = None if weight is None else weight.reshape((1, c) + (1,) * (input.ndim - 2))
    if target.dtype.kind == "f":
        # NOTE: class probabilities: -Σ_c w_c t_c log p_c per sample; the mean is over samples, not weights.
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / c
        per = -(logp * target if w is None else logp * target * w).sum(1)
        loss = per if reduction == "none" else per.sum() if reduction == "sum" else per.sum() / (input.numel() // c)
    else:
        loss = nll_loss(logp, target, weight, ignore_index, reduction)
        if label_smoothing > 0:
            # NOTE: the smoothing term -Σ_c w_c log p_c / C, zero where the target is ignored, and normalized
            # like nll_loss's mean (by the kept targets' weights), as PyTorch does.
            kept = target.ne(ignore_index)
            smooth = where(kept, -(logp if w is None else logp * w).sum(1), 0.0)
            if reduction == "mean":
                norm = kept.sum() if weight is None else (weight[target.data * kept.data] * kept).sum()
                smooth = smooth.sum() / norm
            elif reduction == "sum":
                smooth = smooth.sum()
            loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / c)
    return loss.reshape(()) if unbatched and reduction == "none" else loss


def _classification(op, input, target, weight, ignore_index, reduction):
    """Check the arguments of a classification loss; an unbatched input (C,) becomes a batch of one."""
    check_tensor(op, input)
    check_tensor(op, target, "target", 2)
    unbatched = input.ndim == 1
    if unbatched:
        input = input.unsqueeze(0)
        target = target.unsqueeze(0)
    _check_classification(op, input, target, weight, ignore_index, reduction)
    return input, target, unbatched


def _check_classification(op, input, target, weight, ignore_index, reduction):
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{op}: input and target must be Tensors (got {type(input).__name__} and "
                        f"{type(target).__name__})")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS} (got {reduction!r})")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected floating-point input, got dtype {input.dtype}")
    if target.dtype.kind == "f":
        if ignore_index != -100:
            raise ValueError(f"{op}: ignore_index is not supported for floating point target (class probabilities); "
                             f"got ignore_index={ignore_index}")
        if target.shape != input.shape:
            raise ValueError(f"{op}: a target of class probabilities must have the input's shape: expected "
                             f"{tuple(input.shape)}, got {tuple(target.shape)}; for class indices use an int64 "
                             "target (target.long())")
        if target.dtype != input.dtype:
            raise RuntimeError(f"{op}: expected target of dtype {input.dtype} (the input's), got {target.dtype}")
    elif target.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected target of class indices (int64) or class probabilities (floating point), "
                        f"got dtype {target.dtype}")
    elif input.ndim < 2 or target.shape != input.shape[:1] + input.shape[2:]:
        raise ValueError(f"{op}: expected input (N, C, ...) and target (N, ...) with matching N and trailing dims, "
                         f"got input {tuple(input.shape)} and target {tuple(target.shape)}")
    if input.device is not target.device:
        raise RuntimeError(f"{op}: input is on {input.device} but target is on {target.device}; move the target "
                           f"with target.to('{input.device}')")
    if weight is not None and tuple(weight.shape) != (input.shape[1],):
        raise ValueError(f"{op}: weight must have shape ({input.shape[1]},), one per class, got {tuple(weight.shape)}")
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(f"{op}: expected weight of dtype {input.dtype} (the input's), got {weight.dtype}")
    if target.device.type == "cpu" and target.numel() and target.dtype.kind != "f":
        # NOTE: checked on the CPU only: on a GPU this would cost a host sync every step.
        t = target.data
        bad = (t != ignore_index) & ((t < 0) | (t >= input.shape[1]))
        if bad.any():
            raise IndexError(f"{op}: Target {int(t[bad][0])} is out of bounds: expected class indices in "
                             f"[0, {input.shape[1] - 1}]")
