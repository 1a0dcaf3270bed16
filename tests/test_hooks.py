"""Tensor and module hooks against PyTorch: what each sees, what a returned value replaces, the order they run in,
and handles that remove them. The module hooks are checked on a BatchNorm2d, grad_input included."""
import numpy as np
import pytest

import tinygradnorm as tg

R = np.random.default_rng(3)


def _np(t):
    return None if t is None else np.asarray(t.detach().numpy()).copy()


def _agree(a, b, tol=1e-12):
    assert type(a) is type(b) or (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)))
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _agree(u, v, tol)
    elif isinstance(a, np.ndarray):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    else:
        assert a == b


def _on_both(torch, body):
    out = [body(lib, lib.nn) for lib in (tg, torch)]
    _agree(*out)
    return out[0]


def test_tensor_hooks_see_and_replace_gradients(torch):
    x0 = R.standard_normal((2, 3))

    def body(lib, nn):
        seen = []
        x = lib.tensor(x0, requires_grad=True)
        h = x * 2
        h.register_hook(lambda g: seen.append(_np(g)))
        h.register_hook(lambda g: g * 10)                # replaces what flows on
        x.register_hook(lambda g: seen.append(_np(g)))
        (h.exp() * h).sum().backward()
        return seen + [_np(x.grad)]
    _on_both(torch, body)


def test_removed_hooks_stay_removed_and_leaf_hooks_change_dot_grad(torch):
    def body(lib, nn):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        handle = x.register_hook(lambda g: g * 100)
        (x * x).sum().backward()
        first = _np(x.grad)
        handle.remove()
        handle.remove()                                  # a second remove does nothing
        x.grad = None
        (x * x).sum().backward()
        return [first, _np(x.grad)]
    _on_both(torch, body)


def test_retain_grad_sees_what_the_hooks_made_of_the_gradient(torch):
    def body(lib, nn):
        x = lib.tensor([1.0, -2.0], dtype=lib.float64, requires_grad=True)
        h = x * 3
        h.retain_grad()
        h.register_hook(lambda g: g + 1)
        (h * h).sum().backward()
        return [_np(h.grad), _np(x.grad)]
    _on_both(torch, body)


def test_hook_on_a_tensor_that_needs_no_gradient_is_refused():
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        tg.tensor([1.0]).register_hook(lambda g: g)


def test_tensor_hooks_run_with_create_graph_and_their_result_is_differentiated(torch):
    def body(lib, nn):
        x = lib.tensor([0.5, 1.5], dtype=lib.float64, requires_grad=True)
        h = x * x
        h.register_hook(lambda g: g * x)                 # a gradient that depends on x
        g, = lib.autograd.grad(h.sum(), x, create_graph=True)
        return [_np(g)] + [_np(t) for t in lib.autograd.grad(g.sum(), x)]
    _on_both(torch, body)


def _bn_hooks(lib, nn, x_requires_grad, replace=False):
    m = nn.BatchNorm2d(3).double()
    with (lib.no_grad()):
        m.weight.copy_(lib.tensor([0.5, 1.0, 2.0], dtype=lib.float64))
    seen = {}

    def pre(mod, args):
        seen["pre"] = tuple(args[0].shape)

    def forward(mod, args, out):
        seen["forward"] = _np(out)
        return out * 2                                   # replaces the output

    def backward_pre(mod, grad_output):
        seen["grad_output_pre"] = [_np(g) for g in grad_output]

    def backward(mod, grad_input, grad_output):
        seen["grad_input"] = [_np(g) for g in grad_input]
        seen["grad_output"] = [_np(g) for g in grad_output]
        if replace:
            return tuple(None if g is None else g * 0.5 for g in grad_input)

    handles = [m.register_forward_pre_hook(pre), m.register_forward_hook(forward),
               m.register_full_backward_pre_hook(backward_pre), m.register_full_backward_hook(backward)]
    x = lib.tensor(R.standard_normal((4, 3, 2, 2)), requires_grad=x_requires_grad)
    y = m(x)
    y.backward(lib.tensor(np.linspace(-1, 1, y.numel()).reshape(tuple(y.shape))))
    seen["x.grad"] = _np(x.grad)
    seen["weight.grad"] = _np(m.weight.grad)
    for h in handles:
        h.remove()
    m.weight.grad = None
    out = _np(m(x))
    seen["after removal"] = out
    return [seen[k] for k in sorted(seen)]


@pytest.mark.parametrize("x_requires_grad", [True, False], ids=["input_requires_grad", "input_constant"])
@pytest.mark.parametrize("replace", [False, True], ids=["observe", "replace_grad_input"])
def test_module_hooks_on_batchnorm2d_match_torch(torch, x_requires_grad, replace):
    if replace and not x_requires_grad:
        pytest.skip("a module whose input needs no gradient has no grad_input to replace")
    np.random.seed(0)
    global R
    state = R.bit_generator.state
    ours = _bn_hooks(tg, tg.nn, x_requires_grad, replace)
    R.bit_generator.state = state
    theirs = _bn_hooks(torch, torch.nn, x_requires_grad, replace)
    _agree(ours, theirs)


def test_forward_pre_hook_may_replace_the_arguments(torch):
    def body(lib, nn):
        m = nn.ReLU()
        m.register_forward_pre_hook(lambda mod, args: (args[0] - 1,))
        return [_np(m(lib.tensor([0.5, 1.5, 3.0], dtype=lib.float64)))]
    _on_both(torch, body)


def test_module_backward_hook_of_a_module_whose_input_needs_no_gradient_must_return_none():
    m = tg.nn.Linear(2, 2)
    m.register_full_backward_hook(lambda mod, gi, go: (tg.ones(2),))
    with pytest.raises(RuntimeError, match="no input requires gradient should always return None"):
        m(tg.ones(1, 2)).sum().backward()
