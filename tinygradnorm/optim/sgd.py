"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay, as torch.optim.SGD."""
from ..autograd import no_grad
from .optimizer import Optimizer, subtract_update


class SGD(Optimizer):
    """p -= lr * d_p, where d_p is the gradient (+ weight decay), optionally through a momentum buffer."""

    state_spec = {"momentum_buffer": ("tensor", False)}

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    @no_grad()
    def step(self):
        for group, p, state in self._params_with_grad():
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            d_p = p.grad.data
            if wd != 0:
                d_p = d_p + wd * p.data
            if momentum != 0:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d_p.copy()
                else:
                    buf *= momentum
                    buf += (1 - group["dampening"]) * d_p
                d_p = d_p + momentum * buf if group["nesterov"] else buf
            subtract_update(p, d_p, lr)
