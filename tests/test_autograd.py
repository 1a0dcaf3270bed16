"""The backward walk: diamonds, reuse, accumulation, grad mode, graph freeing and deep graphs."""
import numpy as np
import pytest

import tinygradnorm as tg
from conftest import leaf


def test_diamond_graph(device):
    x = leaf([1.5, -2.0], device)
    a = x * 3
    b = x.exp()
    (a * b).sum().backward()  # d/dx (3x e^x) = 3 e^x (1 + x)
    v = np.array([1.5, -2.0])
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.exp(v) * (1 + v))


def test_reused_node(device):
    x = leaf([2.0, 3.0], device)
    y = x * x * x  # x used three times
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.array([2.0, 3.0]) ** 2)


def test_two_backward_calls_accumulate(device):
    x = leaf([1.0, 2.0], device)
    (x * 2).sum().backward()
    (x * 5).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [7.0, 7.0])


def test_grads_of_two_leaves_never_alias(device):
    a, b = leaf([1.0], device), leaf([2.0], device)
    (a + b).sum().backward()
    a.grad.data += 10
    np.testing.assert_allclose(b.grad.numpy(), [1.0])


def test_retain_graph_allows_second_backward(device):
    x = leaf([1.0, 2.0], device)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])


def test_second_backward_through_freed_graph_raises(device):
    x = leaf([1.0, 2.0], device)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        y.backward()


def test_no_grad_context_and_decorator(device):
    x = leaf([1.0], device)
    with tg.no_grad():
        y = x * 2
        with tg.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad

    @tg.no_grad()
    def f(t):
        return t * 3

    assert not f(x).requires_grad
    assert tg.is_grad_enabled()


def test_enable_grad_decorator(device):
    x = leaf([1.0], device)

    @tg.enable_grad()
    def f(t):
        return t * 3

    with tg.no_grad():
        assert f(x).requires_grad


def test_requires_grad_propagation(device):
    a = leaf([1.0], device)
    c = leaf([1.0], device, requires_grad=False)
    assert (a + c).requires_grad and not (c + c).requires_grad
    assert a.is_leaf and not (a + c).is_leaf
    assert not (a + c).detach().requires_grad
    with pytest.raises(RuntimeError, match="only floating-point"):
        tg.tensor([1, 2], requires_grad=True)


def test_only_needed_inputs_get_gradients(device):
    a = leaf([1.0, 2.0], device)
    c = leaf([3.0, 4.0], device, requires_grad=False)
    (a * c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 4.0])


def test_non_scalar_backward_needs_gradient(device):
    x = leaf([1.0, 2.0], device)
    with pytest.raises(RuntimeError, match=r"implicitly created only for scalar outputs \(got shape \(2,\)\)"):
        (x * 2).backward()
    (x * 2).backward(tg.tensor([1.0, 10.0], dtype=tg.float64, device=device))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 20.0])


def test_backward_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.tensor([1.0]).sum().backward()


def test_retain_grad_on_intermediate(device):
    x = leaf([1.0, 2.0], device)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * 3 * np.array([1.0, 2.0]))


def test_chain_of_100k_ops_backprops_without_recursion():
    x = tg.tensor([1.0], dtype=tg.float64, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1e-5
    y.sum().backward()
    assert x.grad.item() == 1.0
    np.testing.assert_allclose(y.item(), 2.0)
