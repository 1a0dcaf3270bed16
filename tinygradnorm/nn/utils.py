"""tinygradnorm.nn.utils: clip_grad_norm_, as torch.nn.utils."""
import math

from ..autograd import no_grad
from ..tensor import Tensor


@no_grad()
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of parameters in place so that their total norm is at most max_norm.

    The total norm is the norm_type-norm of all the gradients together (inf: the largest absolute
    value). Each gradient is multiplied by max_norm / (total + 1e-6) when that is below 1. Returns
    the total norm before clipping, a 0-d tensor.
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    norm_type, max_norm = float(norm_type), float(max_norm)
    if not grads:
        return Tensor(0.0)
    xp = grads[0].xp
    if norm_type == math.inf:
        norms = [xp.abs(g.data).max() for g in grads if g.numel()]
        total = xp.max(xp.stack(norms)) if norms else xp.asarray(0.0)
    else:
        sums = [(xp.abs(g.data.astype(xp.float64)) ** norm_type).sum() for g in grads]
        total = xp.sum(xp.stack(sums)) ** (1 / norm_type)
    total = total.astype(grads[0].dtype)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it "
                           "cannot be clipped. To disable this error and scale the gradients by the non-finite norm "
                           "anyway, set `error_if_nonfinite=False`")
    coef = min(max_norm / (float(total) + 1e-6), 1.0)
    for g in grads:
        g.mul_(coef)
    return Tensor._wrap(total, grads[0].device, False, None)
