"""The losses with hand-derived backward passes: negative log-likelihood (under cross_entropy), mean squared error,
mean absolute error, and binary cross-entropy on logits."""
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import sum_to
from .activation import _sigmoid
from .scatter import ScatterAdd


class NLLLoss(Function):
    """loss_n = -weight[t_n] * logp[n, t_n]; targets equal to ignore_index contribute nothing."""

    def forward(self, logp, target, weight, ignore_index, reduction):
        xp = self.xp
        keep = target != ignore_index
        t = xp.where(keep, target, 0)[:, None]                            # (N, 1, d1, ...)
        w = (weight[t[:, 0]] if weight is not None else xp.ones(t[:, 0].shape, dtype=logp.dtype)) * keep
        picked = xp.take_along_axis(logp, t, axis=1)[:, 0]
        losses = -w * picked
        self.shape, self.reduction = logp.shape, reduction
        total = w.sum()
        # NOTE: when every target is ignored the mean is 0/0 = nan, but each weight is 0 and so is the
        # gradient, as in PyTorch; dividing the weights by 1 then keeps it 0 rather than nan.
        factor = -w / xp.where(total == 0, 1, total) if reduction == "mean" else -w
        self.save_for_backward(t, factor)
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        return losses.sum() / total

    def backward(self, g):
        xp = self.xp
        t, factor = self.saved
        gx = xp.zeros(self.shape, dtype=factor.dtype)
        xp.put_along_axis(gx, t, (factor * g)[:, None].astype(gx.dtype), axis=1)
        return gx

    def gradient(self, g):
        t, factor = self.saved_tensors
        return ScatterAdd.apply((factor * g).unsqueeze(1), index=t.data, axis=1, shape=self.shape)


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
        self.save_for_backward(x, t)
        d = x - t
        self.reduction, self.x_shape, self.t_shape = reduction, x.shape, t.shape
        return _reduce(self.xp, d * d, reduction)

    def backward(self, g):
        x, t = self.saved_for(g)
        d = x - t
        gd = 2 * d * _scale(g, d.shape, self.reduction)
        return (sum_to(gd, self.x_shape) if self.needs_input_grad[0] else None,
                sum_to(-gd, self.t_shape) if self.needs_input_grad[1] else None)

    gradient = backward


class L1Loss(Function):
    """loss = |x - t|; gx = sign(x - t) g (0 where x == t), gt = -gx."""

    def forward(self, x, t, reduction):
        self.save_for_backward(x, t)
        self.reduction, self.x_shape, self.t_shape = reduction, x.shape, t.shape
        return _reduce(self.xp, self.xp.abs(x - t), reduction)

    def backward(self, g):
        x, t = self.saved_for(g)
        d = x - t
        gd = ((d > 0).astype(d.dtype) - (d < 0)) * _scale(g, d.shape, self.reduction)
        return (sum_to(gd, self.x_shape) if self.needs_input_grad[0] else None,
                sum_to(-gd, self.t_shape) if self.needs_input_grad[1] else None)

    gradient = backward


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
        self.save_for_backward(x, t, *extra)
        self.has_weight, self.has_pos_weight = has_weight, has_pos_weight
        losses = per * w if w is not None else per
        self.shape, self.reduction = losses.shape, reduction
        return _reduce(xp, losses, reduction)

    def backward(self, g):
        graph = isinstance(g, Tensor)
        saved = self.saved_for(g)
        x, t = saved[:2]
        w = saved[2] if self.has_weight else None
        p = saved[-1] if self.has_pos_weight else None
        gs = _scale(g, self.shape, self.reduction)
        ww = gs * w if w is not None else gs
        needs = self.needs_input_grad
        big_l = 1 + (p - 1) * t if p is not None else 1
        grads = [None, None]
        if needs[0]:
            s = x.sigmoid() if graph else _sigmoid(self.xp, x)
            grads[0] = sum_to(ww * (big_l * s - (p * t if p is not None else t)), x.shape)
        if needs[1]:
            if p is not None:
                sp = softplus_neg(x) if graph else self.xp.log1p(self.xp.exp(-self.xp.abs(x))) + self.xp.maximum(-x, 0)
                grads[1] = sum_to(ww * (-x + (p - 1) * sp), t.shape)
            else:
                grads[1] = sum_to(ww * -x, t.shape)
        return tuple(grads) + (None,) * (len(needs) - 2)

    gradient = backward


def softplus_neg(x):
    """softplus(-x) = log(1 + exp(-|x|)) + max(-x, 0) of a Tensor, in differentiable ops."""
    from .elementwise import maximum
    return (1 + (-x.abs()).exp()).log() + maximum(-x, x * 0)
