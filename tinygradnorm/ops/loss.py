"""The losses with hand-derived backward passes: negative log-likelihood (under cross_entropy), mean squared error,
mean absolute error, and binary cross-entropy on logits."""
from ..autograd import Function
from ._util import sum_to
from .activation import _sigmoid


class NLLLoss(Function):
    """loss_n = -weight[t_n] * logp[n, t_n]; targets equal to ignore_index contribute nothing."""

    def forward(self, logp, target, weight, ignore_index, reduction):
        xp = self.xp
        keep = target != ignore_index
        t = xp.where(keep, target, 0)[:, None]                            # (N, 1, d1, ...)
        w = (weight[t[:, 0]] if weight is not None else xp.ones(t[:, 0].shape, dtype=logp.dtype)) * keep
        picked = xp.take_along_axis(logp, t, axis=1)[:, 0]
        losses = -w * picked
        self.t, self.w, self.shape, self.reduction = t, w, logp.shape, reduction
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        self.total = w.sum()
        return losses.sum() / self.total

    def backward(self, g):
        xp = self.xp
        scale = -self.w * g
        if self.reduction == "mean":
            # NOTE: when every target is ignored the loss is 0/0 = nan, but each weight is 0 and so is the
            # gradient, as in PyTorch; dividing by 1 then keeps it 0 rather than nan.
            scale = scale / self.xp.where(self.total == 0, 1, self.total)
        gx = xp.zeros(self.shape, dtype=self.w.dtype)
        xp.put_along_axis(gx, self.t, scale[:, None].astype(gx.dtype), axis=1)
        return gx


def _reduce(xp, losses, reduction):
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def _scale(g, shape, reduction):
    """The upstream gradient of a reduced loss, spread back over the elements."""
    if reduction == "none":
        return g
    n = 1
    for s in shape:
        n *= s
    return g / n if reduction == "mean" else g


class MSELoss(Function):
    """loss = (x - t)^2; gx = 2 (x - t) g, gt = -gx (divided by the count for reduction='mean')."""

    def forward(self, x, t, reduction):
        self.d, self.reduction = x - t, reduction
        self.x_shape, self.t_shape = x.shape, t.shape
        return _reduce(self.xp, self.d * self.d, reduction)

    def backward(self, g):
        gd = 2 * self.d * _scale(g, self.d.shape, self.reduction)
        return (sum_to(gd, self.x_shape) if self.needs_input_grad[0] else None,
                sum_to(-gd, self.t_shape) if self.needs_input_grad[1] else None)


class L1Loss(Function):
    """loss = |x - t|; gx = sign(x - t) g (0 where x == t), gt = -gx."""

    def forward(self, x, t, reduction):
        self.d, self.reduction = x - t, reduction
        self.x_shape, self.t_shape = x.shape, t.shape
        return _reduce(self.xp, self.xp.abs(self.d), reduction)

    def backward(self, g):
        d = self.d
        gd = ((d > 0).astype(d.dtype) - (d < 0)) * _scale(g, d.shape, self.reduction)
        return (sum_to(gd, self.x_shape) if self.needs_input_grad[0] else None,
                sum_to(-gd, self.t_shape) if self.needs_input_grad[1] else None)


class BCEWithLogits(Function):
    """Binary cross-entropy on logits x, per element: w [(1 - t) x + L softplus(-x)], L = 1 + (p - 1) t, with p
    the positive weight (1 without one) and softplus(-x) = log(1 + exp(-|x|)) + max(-x, 0), which never overflows.

    Derivatives: d/dx = w (L sigmoid(x) - p t); d/dt = w (-x + (p - 1) softplus(-x)). As in PyTorch, w and p
    are constants (the functional form refuses them when they require grad).
    """

    def forward(self, x, t, *extra, has_weight, has_pos_weight, reduction):
        xp = self.xp
        w = extra[0] if has_weight else None
        p = extra[-1] if has_pos_weight else None
        sp = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0)             # softplus(-x)
        big_l = 1 + (p - 1) * t if p is not None else 1
        per = (1 - t) * x + big_l * sp
        self.x, self.t, self.w, self.p, self.sp, self.big_l = x, t, w, p, sp, big_l
        losses = per * w if w is not None else per
        self.per, self.shape, self.reduction = per, losses.shape, reduction
        return _reduce(xp, losses, reduction)

    def backward(self, g):
        xp, x, t, w, p = self.xp, self.x, self.t, self.w, self.p
        gs = _scale(g, self.shape, self.reduction)
        ww = gs * w if w is not None else gs
        grads = []
        needs = self.needs_input_grad
        if needs[0]:
            s = _sigmoid(xp, x)
            grads.append(sum_to(ww * (self.big_l * s - (p * t if p is not None else t)), x.shape))
        else:
            grads.append(None)
        if needs[1]:
            grads.append(sum_to(ww * (-x + ((p - 1) * self.sp if p is not None else 0)), t.shape))
        else:
            grads.append(None)
        return tuple(grads) + (None,) * (len(needs) - 2)
