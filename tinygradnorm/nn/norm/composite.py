"""The normalization layers built only from the engine's primitive Tensor ops.

Autograd derives their backward passes. They are the test oracle for the hand-derived
Functions in fused.py, and the step-by-step version of the same maths for learners.
"""
from ...ops import pad


def standardize(x, weight, bias, axes, eps):
    """(y, mean, biased var) with y = (x - mean) / sqrt(var + eps) * weight + bias over ``axes``."""
    mean = x.mean(dim=axes, keepdim=True)
    centred = x - mean
    # NOTE: the corrected two-pass of docs section 6, in primitive ops. Σ centred is 0 in exact arithmetic;
    # what the mean's rounding left in it (about |mean|·2^-24 in float32, against a std that may be 1e4 times
    # smaller) comes out here, so that x_hat, var and their gradients keep their digits.
    shift = centred.mean(dim=axes, keepdim=True)
    centred = centred - shift
    mean = mean + shift
    var = (centred * centred).mean(dim=axes, keepdim=True)
    inv_std = (var + eps).rsqrt()
    x_hat = centred * inv_std
    y = x_hat
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    m = x.numel() // max(mean.numel(), 1)
    return y, mean.data, var.data, m


def frozen_standardize(x, weight, bias, mean, var, eps):
    """Eval mode with running statistics: (x - mean) / sqrt(var + eps) * weight + bias, mean/var constant."""
    y = (x - mean) * (var + eps).rsqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def rms_norm(x, weight, axes, eps):
    """x / sqrt(mean(x^2) + eps) * weight."""
    y = x * ((x * x).mean(dim=axes, keepdim=True) + eps).rsqrt()
    return y * weight if weight is not None else y


def local_response_norm(x, size, alpha, beta, k):
    """x / (k + alpha/size * Σ x^2 over the channel window)^beta."""
    sq = x * x
    c = x.shape[1]
    widths = [0, 0] * (x.ndim - 2) + [size // 2, (size - 1) // 2]
    padded = pad(sq, widths)
    window = padded[:, 0:c]
    for j in range(1, size):
        window = window + padded[:, j:j + c]
    return x / (window * (alpha / size) + k) ** beta
