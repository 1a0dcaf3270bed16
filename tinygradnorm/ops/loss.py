"""Negative log-likelihood on class indices, the loss under cross_entropy."""
from ..autograd import Function


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
