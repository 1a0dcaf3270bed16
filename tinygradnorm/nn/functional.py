"""tinygradnorm.nn.functional: stateless layers, activations and losses, in PyTorch's names and signatures."""
import warnings

from .. import ops
from ..autograd import is_grad_enabled
from ..ops import log_softmax, softmax, sigmoid, tanh, pad, where  # noqa: F401  (re-exported)
from ..ops._util import as_pair as _pair, check_tensor
from ..ops.conv import convolution, transposed_convolution
from ..ops.inplace import unary_
from ..ops.linalg import Linear
from ..ops.loss import BCEWithLogits, L1Loss, MSELoss, NLLLoss
from ..ops.pool import (AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, MaxUnpool2d, avg_divisors, check_window,
                        out_size, unpool_size)
from ..tensor import Tensor
from .norm.functional import (batch_norm, group_norm, instance_norm, layer_norm, local_response_norm,  # noqa: F401
                              rms_norm)

_REDUCTIONS = ("mean", "sum", "none")


# ---- linear and convolution ------------------------------------------------------------------------------
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


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D cross-correlation of input (N, C, L) or (C, L) with weight (O, C/groups, K), as
    torch.nn.functional.conv1d; padding is ints, 'valid' or 'same'."""
    return convolution(input, weight, bias, stride, padding, dilation, groups, 1, "conv1d")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation of input (N, C, H, W) with weight (O, C/groups, KH, KW), as torch.nn.functional.conv2d.

    With groups G, input and output channels split into G groups, each convolved on its own (G = C: depthwise).
    padding is ints, or 'valid' (none) or 'same' (the output keeps the input's size; stride 1 only).
    """
    return convolution(input, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-D cross-correlation of input (N, C, D, H, W) or (C, D, H, W) with weight (O, C/groups, KD, KH, KW), as
    torch.nn.functional.conv3d."""
    return convolution(input, weight, bias, stride, padding, dilation, groups, 3, "conv3d")


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The transposed 1-D convolution (the gradient of conv1d with respect to its input), as
    torch.nn.functional.conv_transpose1d: weight (C_in, C_out/groups, K)."""
    return transposed_convolution(input, weight, bias, stride, padding, output_padding, groups, dilation, 1,
                                  "conv_transpose1d")


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The transposed 2-D convolution, as torch.nn.functional.conv_transpose2d: weight (C_in, C_out/groups, KH, KW)."""
    return transposed_convolution(input, weight, bias, stride, padding, output_padding, groups, dilation, 2,
                                  "conv_transpose2d")


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The transposed 3-D convolution, as torch.nn.functional.conv_transpose3d."""
    return transposed_convolution(input, weight, bias, stride, padding, output_padding, groups, dilation, 3,
                                  "conv_transpose3d")


# ---- pooling -----------------------------------------------------------------------------------------------
def _pool_args(op, input, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    x, unbatched = _batched(op, input)
    if x.dtype.kind == "b":
        raise NotImplementedError(f"\"{op}\" not implemented for 'Bool' (input of shape {tuple(x.shape)}); convert "
                                  "it first, e.g. x.float()")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, "stride")
    padding, dilation = _pair(padding, "padding"), _pair(dilation, "dilation")
    out_hw = check_window(op, x.shape[2:], kernel, stride, padding, dilation, ceil_mode)
    return x, unbatched, kernel, stride, padding, dilation, out_hw


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """The mean over each window, as torch.nn.functional.avg_pool2d: padded zeros count in the divisor unless
    count_include_pad=False; divisor_override replaces the divisor; ceil_mode rounds the output size up."""
    x, unbatched, kernel, stride, padding, _, out_hw = _pool_args("avg_pool2d", input, kernel_size, stride, padding,
                                                                  1, ceil_mode)
    if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override == 0):
        raise ValueError(f"avg_pool2d: divisor must be not zero (got divisor_override={divisor_override!r})")
    div = avg_divisors(x.xp, x.shape[2:], kernel, stride, padding, out_hw, count_include_pad, divisor_override)
    y = AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, out_hw=out_hw, div=div)
    return y.squeeze(0) if unbatched else y


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """The max over each window (padding never wins), as torch.nn.functional.max_pool2d; with return_indices,
    also where each max came from (flat indices into the input's planes, for max_unpool2d)."""
    x, unbatched, kernel, stride, padding, dilation, out_hw = _pool_args("max_pool2d", input, kernel_size, stride,
                                                                         padding, dilation, ceil_mode)
    found = {}
    y = MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation, out_hw=out_hw,
                        found=found)
    indices = Tensor._wrap(found["indices"], y.device, False, None)
    if unbatched:
        y, indices = y.squeeze(0), indices.squeeze(0)
    return (y, indices) if return_indices else y


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Put each value back where max_pool2d found it (indices), zeros elsewhere, as torch.nn.functional.max_unpool2d.

    The output size is (in - 1) * stride - 2 * padding + kernel_size unless output_size gives it.
    """
    x, unbatched = _batched("max_unpool2d", input)
    check_tensor("max_unpool2d", indices, "indices", 2)
    idx = indices.unsqueeze(0) if unbatched else indices
    if idx.shape != x.shape or idx.dtype.kind not in "iu":
        raise ValueError(f"max_unpool2d: expected indices of integers with the input's shape {tuple(x.shape)}, got "
                         f"{idx.dtype} of shape {tuple(idx.shape)}")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    out_hw = unpool_size(x.shape[2:], kernel, stride, _pair(padding, "padding"))
    if output_size is not None:
        out_hw = tuple(output_size)[-2:]
    plane = out_hw[0] * out_hw[1]
    if idx.numel() and (int(idx.data.min()) < 0 or int(idx.data.max()) >= plane):
        raise ValueError(f"max_unpool2d: Found an invalid max index {int(idx.data.max())} (output volumes are of "
                         f"size {out_hw[0]}x{out_hw[1]})")
    y = MaxUnpool2d.apply(x, indices=idx.data, out_shape=x.shape[:2] + tuple(out_hw))
    return y.squeeze(0) if unbatched else y


def adaptive_avg_pool2d(input, output_size):
    """The mean over PyTorch's adaptive bins, so that the output is output_size (an int, a pair, None keeps a dim)."""
    x, unbatched = _batched("adaptive_avg_pool2d", input)
    out = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(out) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair (got {output_size!r})")
    out = tuple(n if o is None else o for n, o in zip(x.shape[2:], out))
    if min(out) < 0 or (min(out) == 0 and x.numel()):
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive (got {output_size!r})")
    if x.dtype.kind != "f":
        raise NotImplementedError(f"\"adaptive_avg_pool2d\" not implemented for {x.dtype} input; convert it first, "
                                  "e.g. x.float()")
    y = AdaptiveAvgPool2d.apply(x, out_hw=out)
    return y.squeeze(0) if unbatched else y


# ---- activations -------------------------------------------------------------------------------------------
def relu(input, inplace=False):
    """max(x, 0); with inplace, written into input (as torch.nn.functional.relu)."""
    return unary_(input, "relu_", ops.relu) if inplace else ops.relu(input)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x where x > 0, else negative_slope * x."""
    fn = lambda t: ops.leaky_relu(t, negative_slope)  # noqa: E731
    return unary_(input, "leaky_relu_", fn) if inplace else fn(input)


def gelu(input, approximate="none"):
    """x * Phi(x), exact or with the tanh approximation (approximate="tanh")."""
    return ops.gelu(input, approximate)


def silu(input, inplace=False):
    """x * sigmoid(x) (also called swish)."""
    return unary_(input, "silu_", ops.silu) if inplace else ops.silu(input)


def _softmax_dim(name, ndim):
    """PyTorch's implicit softmax dim, for code that passes none (with its warning)."""
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X as an "
                  "argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


# ---- dropout -----------------------------------------------------------------------------------------------
def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the rest by 1/(1-p); the identity when not training."""
    return _dropout("dropout", input, p, training, inplace, lambda x: x.shape)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels with probability p (one draw per sample and channel), scale the rest by 1/(1-p).
    Input (N, C, H, W), or (C, H, W) unbatched."""
    check_tensor("dropout2d", input)
    if input.ndim not in (3, 4):
        raise ValueError(f"dropout2d: expected 3D (unbatched) or 4D input (N, C, H, W), got input of size "
                         f"{tuple(input.shape)}")
    return _dropout("dropout2d", input, p, training, inplace, lambda x: x.shape[:-2] + (1, 1))


def _dropout(op, input, p, training, inplace, mask_shape):
    check_tensor(op, input)
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        scale = input.xp.zeros(mask_shape(input), dtype=input.dtype)
    else:
        rng = input.device.backend.rng
        keep = rng.random(mask_shape(input), dtype=input.dtype if input.dtype.itemsize >= 4 else None) >= p
        scale = keep.astype(input.dtype) / input.dtype.type(1 - p)
    mask = Tensor._wrap(scale, input.device, False, None)
    return unary_(input, f"{op}_", lambda t: t * mask) if inplace else input * mask


# ---- losses ------------------------------------------------------------------------------------------------
def _regression(op, cls, input, target, reduction):
    check_tensor(op, input)
    check_tensor(op, target, "target", 2)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: {reduction!r} is not a valid value for reduction; expected one of {_REDUCTIONS}")
    if input.shape != target.shape:
        warnings.warn(f"{op}: Using a target size ({tuple(target.shape)}) that is different to the input size "
                      f"({tuple(input.shape)}). This will likely lead to incorrect results due to broadcasting. "
                      "Please ensure they have the same size.", stacklevel=3)
    if input.dtype.kind != "f" or target.dtype.kind != "f":
        raise RuntimeError(f"{op}: expected floating-point input and target, got {input.dtype} and {target.dtype}")
    dtype = input.dtype if input.dtype.itemsize >= target.dtype.itemsize else target.dtype
    input, target = input.to(dtype), target.to(dtype)
    return cls.apply(input, target, reduction=reduction)


def mse_loss(input, target, reduction="mean"):
    """(input - target)^2, averaged (or summed, or per element), as torch.nn.functional.mse_loss."""
    return _regression("mse_loss", MSELoss, input, target, reduction)


def l1_loss(input, target, reduction="mean"):
    """|input - target|, averaged (or summed, or per element), as torch.nn.functional.l1_loss."""
    return _regression("l1_loss", L1Loss, input, target, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Binary cross-entropy of target probabilities against sigmoid(input), computed from the logits without
    overflow; weight scales each element's loss, pos_weight the positive class's term (both broadcast)."""
    op = "binary_cross_entropy_with_logits"
    check_tensor(op, input)
    check_tensor(op, target, "target", 2)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: {reduction!r} is not a valid value for reduction; expected one of {_REDUCTIONS}")
    if target.shape != input.shape:
        raise ValueError(f"{op}: Target size ({tuple(target.shape)}) must be the same as input size "
                         f"({tuple(input.shape)})")
    for what, t in (("weight", weight), ("pos_weight", pos_weight)):
        if t is not None and t.requires_grad and is_grad_enabled():
            raise RuntimeError(f"The function '{op}' is not differentiable with respect to argument '{what}'. This "
                               "input cannot have requires_grad True.")
    extra = [t for t in (weight, pos_weight) if t is not None]
    return BCEWithLogits.apply(input, target, *extra, has_weight=weight is not None,
                               has_pos_weight=pos_weight is not None, reduction=reduction)


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
