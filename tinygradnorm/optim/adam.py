"""Adam and AdamW, with PyTorch's update rules (bias correction, eps outside the square root)."""
import math

from ..autograd import no_grad
from .optimizer import Optimizer, subtract_update


class Adam(Optimizer):
    """Adam; weight_decay adds wd * p to the gradient (L2), as torch.optim.Adam does."""

    decoupled = False
    state_spec = {"step": ("number", True), "exp_avg": ("tensor", True), "exp_avg_sq": ("tensor", True),
                  "max_exp_avg_sq": ("tensor", False)}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Invalid beta parameters: {betas}; each must be in [0, 1)")
        if weight_decay < 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    @no_grad()
    def step(self):
        for group, p, state in self._params_with_grad():
            xp = p.xp
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            grad = p.grad.data
            if not state:
                state["step"] = 0
                state["exp_avg"] = xp.zeros_like(p.data)
                state["exp_avg_sq"] = xp.zeros_like(p.data)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = xp.zeros_like(p.data)
            state["step"] += 1
            step = state["step"]
            if wd != 0:
                if self.decoupled:
                    p.mul_(1 - lr * wd)
                else:
                    grad = grad + wd * p.data
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg += (1 - beta1) * (grad - exp_avg)          # m = beta1 m + (1 - beta1) g
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad              # v = beta2 v + (1 - beta2) g^2
            bias_correction1 = 1 - beta1 ** step
            bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
            if group["amsgrad"]:
                xp.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                second = state["max_exp_avg_sq"]
            else:
                second = exp_avg_sq
            denom = xp.sqrt(second) / bias_correction2_sqrt + eps
            subtract_update(p, exp_avg / denom, lr / bias_correction1)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * wd before the Adam step, as torch.optim.AdamW."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
