"""Reductions, and the softmax family built on them."""
import warnings
from collections import namedtuple

from ..autograd.function import Function
from ..tensor import Tensor
from ._util import check_tensor, dim_index, reduce_dims
from .scatter import ScatterAdd, scatter_add_array


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    def forward(self, x, axes, keepdim):
        self.in_shape, self.kept = x.shape, _kept_shape(x.shape, axes)
        return x.sum(axis=axes, keepdims=keepdim)

    def backward(self, g):
        return self.xp.broadcast_to(g.reshape(self.kept), self.in_shape)

    def gradient(self, g):
        return g.reshape(self.kept).expand(self.in_shape)


class Mean(Function):
    def forward(self, x, axes, keepdim):
        self.in_shape, self.kept = x.shape, _kept_shape(x.shape, axes)
        self.m = _count(x.shape, axes)
        return x.mean(axis=axes, keepdims=keepdim) if self.m else self.xp.full(
            x.sum(axis=axes, keepdims=keepdim).shape, float("nan"), dtype=x.dtype)

    def backward(self, g):
        return self.xp.broadcast_to(g.reshape(self.kept) / (self.m or 1), self.in_shape)

    def gradient(self, g):
        return (g.reshape(self.kept) / (self.m or 1)).expand(self.in_shape)


class Var(Function):
    """Σ(x - mean)^2 / max(0, m - correction); with no degrees of freedom left that is nan or inf, as in PyTorch.

    The gradient is 2 (x - mean) / max(0, m - correction) per unit of g: with no degrees of freedom, an infinity
    with the sign of x - mean (nan where x equals the mean), as the formula gives.
    """

    def forward(self, x, axes, keepdim, correction):
        self.save_for_backward(x)
        self.axes, self.kept = axes, _kept_shape(x.shape, axes)
        d = x - x.mean(axis=axes, keepdims=True)
        dof = _count(x.shape, axes) - correction
        self.dof = dof if dof > 0 else 0
        return (d * d).sum(axis=axes, keepdims=keepdim) / x.dtype.type(self.dof)

    def backward(self, g):
        x, = self.saved_for(g)
        d = x - x.mean(self.axes, keepdim=True) if isinstance(x, Tensor) else x - x.mean(axis=self.axes, keepdims=True)
        if self.dof > 0:
            return g.reshape(self.kept) * (2 / self.dof) * d
        # NOTE: no degrees of freedom left: 2 (x - mean) / 0, an infinity of the sign of x - mean (nan where
        # x is the mean). PyTorch gives that over a dim with dof = 0, but +inf everywhere for a full reduction
        # and a finite value of the wrong sign over a dim with dof < 0; the formula decides here.
        return g.reshape(self.kept) * (d * float("inf"))

    gradient = backward


class Amax(Function):
    """Max over dims; at ties the gradient is shared evenly, as for torch.amax."""

    def forward(self, x, axes, keepdim, use_min=False):
        out = x.min(axis=axes, keepdims=True) if use_min else x.max(axis=axes, keepdims=True)
        mask = x == out
        share = mask / mask.sum(axis=tuple(i for i, n in enumerate(out.shape) if n == 1), keepdims=True)
        self.save_for_backward(share.astype(x.dtype) if x.dtype.kind == "f" else share)
        self.kept = out.shape
        return out if keepdim else out.reshape(tuple(n for i, n in enumerate(x.shape) if i not in axes))

    def backward(self, g):
        share = self.saved_for(g)[0]
        return g.reshape(self.kept) * share

    gradient = backward


class MaxDim(Function):
    """Max along one dim; the gradient goes to the index that was picked, as for torch.max(x, dim)."""

    def forward(self, x, dim, keepdim, use_min=False):
        xp = self.xp
        if x.ndim == 0:                    # a 0-d tensor is its own max along "dim 0"
            self.dim = None
            return x.copy()
        idx = xp.expand_dims((x.argmin if use_min else x.argmax)(axis=dim), dim)
        self.save_for_backward(idx)
        self.dim, self.in_shape = dim, x.shape
        out = xp.take_along_axis(x, idx, axis=dim)
        return out if keepdim else out.squeeze(dim)

    def backward(self, g):
        if self.dim is None:
            return g
        idx = self.saved[0]
        return scatter_add_array(self.xp, self.backend, g.reshape(idx.shape), idx, self.dim, self.in_shape)

    def gradient(self, g):
        if self.dim is None:
            return g
        idx = self.saved[0]
        return ScatterAdd.apply(g.reshape(idx.shape), index=idx, axis=self.dim, shape=self.in_shape)


class LogSumExp(Function):
    """log Σ exp(x) over dims (a tuple), computed as max + log Σ exp(x - max)."""

    def forward(self, x, dims, keepdim):
        self.kept = _kept_shape(x.shape, dims)
        out = _logsumexp(self.xp, x, dims)
        out = out if keepdim else out.reshape(tuple(n for i, n in enumerate(x.shape) if i not in dims))
        self.save_for_backward(x, out)
        return out

    def backward(self, g):
        x, out = self.saved
        return g.reshape(self.kept) * self.xp.exp(x - out.reshape(self.kept))

    def gradient(self, g):
        x, out = self.saved_tensors
        return g.reshape(self.kept) * (x - out.reshape(self.kept)).exp()


class LogSoftmax(Function):
    def forward(self, x, dim):
        self.dim = dim
        out = x - _logsumexp(self.xp, x, dim)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        out = self.saved[0]
        return g - self.xp.exp(out) * g.sum(axis=self.dim, keepdims=True)

    def gradient(self, g):
        out = self.saved_tensors[0]
        return g - out.exp() * g.sum(self.dim, keepdim=True)


class Softmax(Function):
    def forward(self, x, dim):
        xp = self.xp
        e = xp.exp(x - _finite_max(xp, x, dim))
        out = e / e.sum(axis=dim, keepdims=True)
        self.dim = dim
        self.save_for_backward(out)
        return out

    def backward(self, g):
        out = self.saved_for(g)[0]
        if isinstance(g, Tensor):
            return out * (g - (g * out).sum(self.dim, keepdim=True))
        return out * (g - (g * out).sum(axis=self.dim, keepdims=True))

    gradient = backward


def _finite_max(xp, x, dims):
    """The max over dims (an int or a tuple), with -inf/inf replaced by 0 so that x - max stays finite-safe
    (0 over an empty dim)."""
    dims = (dims,) if isinstance(dims, int) else dims
    if any(x.shape[d] == 0 for d in dims):
        return xp.zeros(_kept_shape(x.shape, dims), dtype=x.dtype)
    m = x.max(axis=dims, keepdims=True)
    return xp.where(xp.isfinite(m), m, 0)


def _logsumexp(xp, x, dim):
    # NOTE: subtracting the max keeps exp() from overflowing for logits of +-1000.
    m = _finite_max(xp, x, dim)
    return m + xp.log(xp.exp(x - m).sum(axis=dim, keepdims=True))


def _count(shape, axes):
    m = 1
    for a in axes:
        m *= shape[a]
    return m


# ---- public functions -------------------------------------------------------------
MaxResult = namedtuple("max", ["values", "indices"])
MinResult = namedtuple("min", ["values", "indices"])


def sum(x, dim=None, keepdim=False, *, axis=None):
    check_tensor("sum", x)
    return Sum.apply(x, axes=reduce_dims(dim, x.ndim, axis, "sum"), keepdim=keepdim)


def mean(x, dim=None, keepdim=False, *, axis=None):
    check_tensor("mean", x)
    if x.dtype.kind != "f":
        raise TypeError(f"mean(): could not infer output dtype. Input dtype must be floating point (got {x.dtype}); "
                        "convert it first, e.g. x.float()")
    return Mean.apply(x, axes=reduce_dims(dim, x.ndim, axis, "mean"), keepdim=keepdim)


def var(x, dim=None, *, correction=None, keepdim=False, axis=None, unbiased=None):
    """Variance with ``correction`` subtracted from the count (1, the default: unbiased; 0: biased).

    With no degrees of freedom left (m - correction <= 0) the result is nan or inf, with a warning, as in PyTorch.
    ``var(x, True)`` is PyTorch's older spelling of ``var(x, unbiased=True)``.
    """
    check_tensor("var", x)
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    if unbiased is not None:
        if correction is not None:
            raise TypeError("var(): pass correction or unbiased, not both")
        correction = 1 if unbiased else 0
    correction = 1 if correction is None else correction
    if x.dtype.kind != "f":
        raise TypeError(f"var(): could not infer output dtype. Input dtype must be floating point (got {x.dtype})")
    axes = reduce_dims(dim, x.ndim, axis, "var")
    if _count(x.shape, axes) - correction <= 0:
        warnings.warn(f"var(): degrees of freedom is <= 0 ({_count(x.shape, axes)} values per result, correction "
                      f"{correction}): the result is nan or inf", stacklevel=2)
    return Var.apply(x, axes=axes, keepdim=keepdim, correction=correction)


def _extreme(x, dim, keepdim, axis, use_min):
    name = "min" if use_min else "max"
    check_tensor(name, x)
    if axis is not None:
        dim = axis
    if x.numel() == 0:
        raise RuntimeError(f"{name}(): expected a non-empty tensor (got shape {tuple(x.shape)})")
    if isinstance(dim, int):
        d = dim_index(dim, x.ndim, name)
        values = MaxDim.apply(x, dim=d, keepdim=keepdim, use_min=use_min)
        indices = (argmin if use_min else argmax)(x, d, keepdim)
        return (MinResult if use_min else MaxResult)(values, indices)
    return Amax.apply(x, axes=reduce_dims(dim, x.ndim, None, name), keepdim=keepdim, use_min=use_min)


def max(x, dim=None, keepdim=False, *, axis=None):
    """The max; with an int dim, a (values, indices) pair as torch.max returns."""
    return _extreme(x, dim, keepdim, axis, use_min=False)


def min(x, dim=None, keepdim=False, *, axis=None):
    """The min; with an int dim, a (values, indices) pair as torch.min returns."""
    return _extreme(x, dim, keepdim, axis, use_min=True)


def amax(x, dim=None, keepdim=False):
    return Amax.apply(x, axes=reduce_dims(dim, x.ndim, None, "amax"), keepdim=keepdim)


def amin(x, dim=None, keepdim=False):
    return Amax.apply(x, axes=reduce_dims(dim, x.ndim, None, "amin"), keepdim=keepdim, use_min=True)


def _arg(x, dim, keepdim, axis, name):
    if axis is not None:
        dim = axis
    if dim is None:
        out = getattr(x.data.reshape(-1), name)()
        out = out.reshape((1,) * x.ndim) if keepdim else out
    else:
        d = dim_index(dim, x.ndim, name)
        out = getattr(x.data, name)(axis=d, keepdims=keepdim) if x.ndim else x.data.astype("int64") * 0
    return Tensor._wrap(x.xp.asarray(out, dtype="int64"), x.device, False, None)


def argmax(x, dim=None, keepdim=False, *, axis=None):
    return _arg(x, dim, keepdim, axis, "argmax")


def argmin(x, dim=None, keepdim=False, *, axis=None):
    return _arg(x, dim, keepdim, axis, "argmin")


def logsumexp(x, dim, keepdim=False):
    """log Σ exp(x) over dim (an int or a tuple of ints)."""
    check_tensor("logsumexp", x)
    x = x if x.dtype.kind == "f" else x.float()
    if x.ndim == 0:
        return LogSumExp.apply(x.reshape(1), dims=(0,), keepdim=False).reshape(())
    return LogSumExp.apply(x, dims=reduce_dims(dim, x.ndim, None, "logsumexp"), keepdim=keepdim)


def log_softmax(x, dim, dtype=None):
    """log(softmax(x)) along dim; ``dtype`` casts the input first, as in PyTorch."""
    return _softmax_like(LogSoftmax, "log_softmax", x, dim, dtype)


def softmax(x, dim, dtype=None):
    """exp(x) / Σ exp(x) along dim; ``dtype`` casts the input first, as in PyTorch."""
    return _softmax_like(Softmax, "softmax", x, dim, dtype)


def _softmax_like(cls, name, x, dim, dtype):
    check_tensor(name, x)
    if dtype is not None:
        x = x.to(dtype)
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point input, got {x.dtype}; pass dtype=tinygradnorm.float32 "
                        "or convert it first")
    if x.ndim == 0:
        dim_index(dim, 0, name)
        return cls.apply(x.reshape(1), dim=0).reshape(())
    return cls.apply(x, dim=dim_index(dim, x.ndim, name))
