"""gradcheck itself: it passes on right gradients and fails, clearly, on a planted wrong one."""
import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm.autograd import Function
from conftest import leaf


class WrongSquare(Function):
    """x**2 with a planted bug: the backward forgets the factor 2."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return g * self.x


class RightSquare(WrongSquare):
    def backward(self, g):
        return 2 * g * self.x


def test_passes_on_correct_backward(device):
    assert tg.gradcheck(RightSquare.apply, (leaf(np.linspace(-1, 1, 6).reshape(2, 3), device),))


def test_planted_wrong_backward_fails_with_a_clear_report(device):
    x = leaf(np.linspace(0.5, 1.5, 6).reshape(2, 3), device)
    with pytest.raises(tg.GradcheckError) as err:
        tg.gradcheck(WrongSquare.apply, (x,))
    msg = str(err.value)
    assert "input 0" in msg and "worst element (1, 2)" in msg
    assert "analytic" in msg and "numeric" in msg and "abs error" in msg and "rel error" in msg


def test_raise_exception_false_returns_false(device):
    assert tg.gradcheck(WrongSquare.apply, (leaf([1.0, 2.0], device),), raise_exception=False) is False


def test_fast_mode_passes_and_catches_the_planted_bug(device):
    x = leaf(np.random.default_rng(0).standard_normal((50, 40)), device)
    assert tg.gradcheck(RightSquare.apply, (x,), fast=True)
    with pytest.raises(tg.GradcheckError, match="random direction"):
        tg.gradcheck(WrongSquare.apply, (x,), fast=True)


def test_only_inputs_requiring_grad_are_checked_and_left_untouched(device):
    a = leaf([1.0, 2.0], device)
    b = leaf([3.0, 4.0], device, requires_grad=False)
    assert tg.gradcheck(lambda x, y: x * y, (a, b))
    assert a.grad is None  # gradcheck works on copies


def test_warns_on_float32_inputs():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.warns(UserWarning, match="not float64"):
        tg.gradcheck(lambda t: t * t, (x,))


def test_multiple_outputs(device):
    x = leaf([0.3, 0.7], device)
    assert tg.gradcheck(lambda t: (t.exp(), t * 2), (x,))


def test_no_input_requires_grad_is_an_error():
    with pytest.raises(ValueError, match="no input requires grad"):
        tg.gradcheck(lambda t: t, (tg.tensor([1.0]),))


def test_an_input_that_shares_memory_with_what_fn_uses_is_checked_on_a_copy():
    """gradcheck perturbs its own copies: a parameter the function also reads, passed as an input after detach()
    (the same memory), is not perturbed with it."""
    w = tg.tensor([0.5, 1.5, 2.0], dtype=tg.float64, requires_grad=True)
    x = leaf(np.random.default_rng(3).standard_normal((2, 3)))
    assert tg.gradcheck(lambda t, g: (t * w) * g, (x, w.detach().requires_grad_()))
    assert tg.gradgradcheck(lambda t, g: (t * w).tanh() * g, (x, w.detach().requires_grad_()))
