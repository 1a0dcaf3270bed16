"""Memory over many second-order steps: nothing the graph of a gradient holds outlives its step, with or without
the garbage collector (no reference cycles; after backward(create_graph=True), once .grad is set to None, as the
warning and the docs say). benchmarks/gp_memory.py measures the process's memory over 500 steps."""
import gc

import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm.autograd import Function
from tinygradnorm import nn, optim


def _lenet_bn():
    return nn.Sequential(nn.Conv2d(1, 2, 5), nn.BatchNorm2d(2), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
                         nn.Linear(2 * 12 * 12, 8), nn.BatchNorm1d(8), nn.Sigmoid(), nn.Linear(8, 1))


def _live_functions():
    return sum(1 for o in gc.get_objects() if issubclass(type(o), Function))   # (type: a dead weak proxy may be there)


@pytest.mark.parametrize("how", ["autograd.grad", "backward(create_graph=True)"])
def test_gradient_penalty_steps_leave_nothing_behind(how):
    rng = np.random.default_rng(0)
    critic = _lenet_bn()
    opt = optim.Adam(critic.parameters(), lr=1e-3)
    real, fake = (tg.tensor(rng.standard_normal((6, 1, 28, 28)).astype(np.float32)) for _ in range(2))

    def step():
        opt.zero_grad()
        mixed = (0.3 * real + 0.7 * fake).requires_grad_()
        if how == "autograd.grad":
            g, = tg.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
        else:
            with pytest.warns(UserWarning, match="reference cycle"):
                critic(mixed).sum().backward(create_graph=True)
            g = mixed.grad
        loss = ((g * g).sum() - 1) ** 2 + critic(fake).mean()
        loss.backward()
        opt.step()
        mixed.grad = None               # the docs' advice: .grad holds a graph that refers back to mixed
    gc.collect()
    gc.disable()                        # reference counting alone must free each step's graphs
    try:
        for _ in range(3):
            step()
        before = _live_functions()
        for _ in range(20):
            step()
        after = _live_functions()
    finally:
        gc.enable()
    assert after <= before, f"{after - before} Functions more after 20 steps"
