"""The higher-order autograd API against PyTorch's: autograd.grad and backward (create_graph, retain_graph,
allow_unused, materialize_grads, inputs=), custom Functions once and twice differentiable, gradgradcheck, and
autograd.functional (vjp, jvp, jacobian, hessian, hvp, vhp)."""
import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm.autograd import Function
from conftest import leaf

R = np.random.default_rng(7)


def _both(torch, fn, *arrays):
    """fn(lib, *tensors) on both libraries, each tensor a float64 leaf; the results as NumPy arrays."""
    out = []
    for lib in (tg, torch):
        tensors = [lib.tensor(a, requires_grad=True) for a in arrays]
        res = fn(lib, *tensors)
        out.append([None if r is None else np.asarray(r.detach().numpy()) for r in res])
    return out


def _agree(ours, theirs, tol=1e-10):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ---- grad and backward -------------------------------------------------------------------------------------------
def test_grad_of_grad_matches_torch(torch):
    def fn(lib, x, w):
        y = ((x @ w).tanh() * x.sum()).sum()
        gx, gw = lib.autograd.grad(y, (x, w), create_graph=True)
        z = (gx * gx).sum() + (gw.exp() * gx.sum()).sum()
        return [gx, gw] + list(lib.autograd.grad(z, (x, w)))
    _agree(*_both(torch, fn, R.standard_normal((3, 4)), R.standard_normal((4, 2))))


def test_create_graph_backward_leaves_grad_with_a_graph(torch):
    def fn(lib, x):
        (x.exp() * x).sum().backward(create_graph=True)
        g = x.grad
        assert g.requires_grad and g.grad_fn is not None
        x.grad = None
        (g * g).sum().backward()
        return [g, x.grad]
    _agree(*_both(torch, fn, R.standard_normal(5)))


def test_grad_does_not_touch_dot_grad_and_retain_graph_defaults_to_create_graph():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    g, = tg.autograd.grad(y, x, create_graph=True)
    assert x.grad is None
    tg.autograd.grad(y, x)                     # the graph was retained: a second pass works
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        tg.autograd.grad(y, x)


def test_unused_input_is_an_error_naming_allow_unused_else_none_or_zeros():
    x, u = leaf([1.0, 2.0]), leaf([3.0])
    y = (x * 2).sum()
    with pytest.raises(RuntimeError, match=r"not have been used in the graph \(inputs\[1\].*allow_unused=True"):
        tg.autograd.grad(y, (x, u), retain_graph=True)
    assert tg.autograd.grad(y, (x, u), retain_graph=True, allow_unused=True)[1] is None
    zeros = tg.autograd.grad(y, (x, u), materialize_grads=True)[1]
    np.testing.assert_array_equal(zeros.numpy(), [0.0])
    with pytest.raises(ValueError, match="allow_unused to be True or not passed when materialize_grads=True"):
        tg.autograd.grad(y, x, allow_unused=False, materialize_grads=True)


def test_grad_errors_name_what_was_given():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.autograd.grad((x * 2).sum(), tg.tensor([1.0]))
    with pytest.raises(RuntimeError, match=r"implicitly created only for scalar outputs \(got shape \(2,\)\)"):
        tg.autograd.grad(x * 2, x)
    with pytest.raises(RuntimeError, match=r"Mismatch in shape: grad_outputs\[0\] has a shape of \(3,\)"):
        tg.autograd.grad(x * 2, x, tg.ones(3, dtype=tg.float64))
    with pytest.raises(TypeError, match=r"inputs\[0\] must be a Tensor, not list"):
        tg.autograd.grad((x * 2).sum(), [[1.0]])


def test_grad_with_respect_to_a_non_leaf_and_grad_outputs_that_require_grad(torch):
    def fn(lib, x, v):
        h = x * 3
        y = (h.exp() * x).sum(0)
        gh, = lib.autograd.grad(y, h, v, create_graph=True)     # v requires grad: gh depends on it
        return [gh] + list(lib.autograd.grad(gh.sum(), (x, v)))
    _agree(*_both(torch, fn, R.standard_normal((2, 3)), R.standard_normal(3)))


def test_backward_inputs_accumulates_only_into_those(torch):
    def fn(lib, a, b):
        h = a * b
        y = (h * h).sum()
        y.backward(inputs=[a, h])
        return [a.grad, b.grad, h.grad]
    _agree(*_both(torch, fn, R.standard_normal(3), R.standard_normal(3)))


class Scale(Function):
    """y = a * b, recording which gradients each backward was asked for."""
    asked = []

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved
        Scale.asked.append(self.needs_input_grad)
        return (g * b if self.needs_input_grad[0] else None), (g * a if self.needs_input_grad[1] else None)


def test_a_walk_for_some_inputs_asks_each_function_only_for_the_gradients_that_lead_there():
    """grad(loss, x) asks no Function for a weight's gradient (a gradient penalty's first walk computes none), and
    the graph keeps its needs for a later walk that wants them."""
    x, w = tg.tensor([1.0, 2.0], requires_grad=True), tg.tensor([3.0, 4.0], requires_grad=True)
    y = Scale.apply(Scale.apply(x, w), w)
    Scale.asked.clear()
    gx, = tg.autograd.grad(y.sum(), x, retain_graph=True)
    assert Scale.asked == [(True, False), (True, False)] and gx.tolist() == [9.0, 16.0]
    Scale.asked.clear()
    y.sum().backward()
    assert Scale.asked == [(True, True), (True, True)] and w.grad.tolist() == [6.0, 16.0]


def test_hessian_vector_product_of_a_mlp_matches_torch(torch):
    def fn(lib, x, w1, w2, v1, v2):
        loss = ((x @ w1).tanh() @ w2).pow(2).mean()
        g = lib.autograd.grad(loss, (w1, w2), create_graph=True)
        dot = (g[0] * v1.detach()).sum() + (g[1] * v2.detach()).sum()
        return list(lib.autograd.grad(dot, (w1, w2)))
    _agree(*_both(torch, fn, R.standard_normal((5, 4)), R.standard_normal((4, 3)), R.standard_normal((3, 2)),
                  R.standard_normal((4, 3)), R.standard_normal((3, 2))))


# ---- custom Functions -------------------------------------------------------------------------------------------
class ArrayCube(Function):
    """x**3 with a backward on arrays only: once-differentiable."""

    def forward(self, x):
        self.save_for_backward(x)
        return x ** 3

    def backward(self, g):
        x, = self.saved
        return 3 * g * x * x


class Cube(ArrayCube):
    """The same, with a differentiable gradient on Tensors: the documented way to make it twice differentiable."""

    def gradient(self, g):
        x, = self.saved_tensors
        return 3 * g * x * x


def test_once_differentiable_function_raises_naming_itself_when_differentiated_twice():
    x = leaf([1.0, 2.0])
    g, = tg.autograd.grad(ArrayCube.apply(x).sum(), x, create_graph=True)    # the first gradient is fine
    np.testing.assert_allclose(g.numpy(), [3.0, 12.0])
    with pytest.raises(RuntimeError, match="ArrayCube is once-differentiable.*define ArrayCube.gradient"):
        g.sum().backward()


def test_function_with_a_tensor_gradient_is_differentiable_to_any_order():
    x = leaf([1.0, 2.0])
    g, = tg.autograd.grad(Cube.apply(x).sum(), x, create_graph=True)
    h, = tg.autograd.grad(g.sum(), x, create_graph=True)
    k, = tg.autograd.grad(h.sum(), x)
    np.testing.assert_allclose(h.numpy(), [6.0, 12.0])
    np.testing.assert_allclose(k.numpy(), [6.0, 6.0])
    assert tg.gradgradcheck(Cube.apply, (leaf(R.standard_normal(4)),))


def test_function_with_only_a_gradient_runs_it_at_first_order():
    class Square(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * x

        def gradient(self, g):
            x, = self.saved_tensors
            return 2 * g * x
    x = leaf([1.0, -3.0])
    Square.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -6.0])


def test_function_with_neither_way_back_says_so():
    class Nothing(Function):
        def forward(self, x):
            return x * 1
    with pytest.raises(NotImplementedError, match="Nothing defines neither backward"):
        Nothing.apply(leaf([1.0])).sum().backward()


def test_saved_output_makes_no_reference_cycle():
    import gc
    import weakref
    gc.collect()
    gc.disable()
    try:
        x = leaf([1.0, 2.0])
        y = x.exp()                   # Exp saves its output
        fn = weakref.ref(y.grad_fn)
        del y
        assert fn() is None           # freed by reference counting alone: no cycle holds it
    finally:
        gc.enable()


def test_release_frees_exactly_what_was_saved():
    x = leaf(R.standard_normal(3))
    y = x.exp()
    fn = y.grad_fn
    assert fn.saved[0] is y.data
    y.sum().backward()
    assert fn._saved is None and fn.parents is None
    assert not any(isinstance(v, np.ndarray) for v in vars(fn).values())


# ---- gradgradcheck -------------------------------------------------------------------------------------------------
class WrongCube(ArrayCube):
    def gradient(self, g):
        x, = self.saved_tensors
        return 3 * g * x * x.detach()          # planted: half the second derivative is lost


def test_gradgradcheck_catches_a_wrong_double_backward_naming_the_input_and_element():
    x = leaf(np.linspace(0.5, 1.5, 6).reshape(2, 3))
    with pytest.raises(tg.GradcheckError) as err:
        tg.autograd.gradgradcheck(WrongCube.apply, (x,))
    msg = str(err.value)
    assert "gradgradcheck failed for input 0" in msg and "worst element" in msg


def test_gradgradcheck_checks_grad_outputs_too_and_accepts_given_ones():
    x = leaf(R.standard_normal((2, 3)))
    gy = leaf(R.standard_normal((2, 3)))
    assert tg.gradgradcheck(lambda t: t.tanh() * t, (x,), (gy,))
    assert tg.gradgradcheck(lambda t: t.tanh() * t, (x,), fast=True)
    with pytest.raises(ValueError, match="2 grad_outputs for 1 outputs"):
        tg.gradgradcheck(lambda t: t * 2, (x,), (gy, gy))


# ---- autograd.functional ----------------------------------------------------------------------------------------
def _f(lib, x, y):
    return (x.exp() * y.sum() + x * x).sum(0)


def _scalar(lib, x, y):
    return ((x * y.sum()).tanh() * x).sum()


@pytest.mark.parametrize("what", ["vjp", "jvp", "jacobian", "hessian", "hvp", "vhp"])
def test_functional_matches_torch(torch, what):
    x0, y0 = R.standard_normal((3, 2)), R.standard_normal(4)
    v_out, v_in = R.standard_normal(2), (R.standard_normal((3, 2)), R.standard_normal(4))
    results = []
    for lib in (tg, torch):
        F = lib.autograd.functional
        x, y = lib.tensor(x0), lib.tensor(y0)
        if what == "vjp":
            out = F.vjp(lambda a, b: _f(lib, a, b), (x, y), lib.tensor(v_out))
        elif what == "jvp":
            out = F.jvp(lambda a, b: _f(lib, a, b), (x, y), tuple(lib.tensor(v) for v in v_in))
        elif what == "jacobian":
            out = F.jacobian(lambda a, b: _f(lib, a, b), (x, y))
        elif what == "hessian":
            out = F.hessian(lambda a, b: _scalar(lib, a, b), (x, y))
        else:
            out = getattr(F, what)(lambda a, b: _scalar(lib, a, b), (x, y), tuple(lib.tensor(v) for v in v_in))
        results.append(_flatten(out))
    _agree(*results)


def _flatten(v):
    if isinstance(v, (tuple, list)):
        return [t for item in v for t in _flatten(item)]
    return [np.asarray(v.detach().numpy())]


def test_functional_create_graph_differentiates_again(torch):
    def fn(lib, x):
        _, hv = lib.autograd.functional.hvp(lambda a: (a ** 4).sum(), x, lib.ones_like(x), create_graph=True)
        return [hv] + list(lib.autograd.grad(hv.sum(), x))
    _agree(*_both(torch, fn, R.standard_normal(4)))


# ---- whole second-order training against PyTorch -----------------------------------------------------------------
def _lenet_bn(lib):
    """The example's LeNet with batch norm (examples/lenet.py), in either library."""
    nn = lib.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
        nn.Linear(256, 120), nn.BatchNorm1d(120), nn.Sigmoid(), nn.Linear(120, 84), nn.BatchNorm1d(84),
        nn.Sigmoid(), nn.Linear(84, 10))


def _same_start(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def test_gradient_penalty_training_matches_torch_in_float64(torch):
    """Five WGAN-GP critic steps with Adam (score, plus 10 x the gradient penalty on interpolates, differentiated
    through batch norm and the convolutions): every parameter and buffer within 1e-8 of PyTorch's."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    theirs = _lenet_bn(torch).double()
    ours = _lenet_bn(tg).double()
    _same_start(ours, theirs)
    opts = [lib.optim.Adam(m.parameters(), lr=1e-3, betas=(0.5, 0.9)) for lib, m in ((tg, ours), (torch, theirs))]
    for _ in range(5):
        real, fake = rng.random((6, 1, 28, 28)), rng.standard_normal((6, 1, 28, 28))
        alpha = rng.random((6, 1, 1, 1))
        for lib, model, opt in ((tg, ours, opts[0]), (torch, theirs, opts[1])):
            opt.zero_grad()
            r, f, a = lib.tensor(real), lib.tensor(fake), lib.tensor(alpha)
            mixed = (a * r + (1 - a) * f).requires_grad_()
            g, = lib.autograd.grad(model(mixed)[:, 0].sum(), mixed, create_graph=True)
            norms = (g * g).reshape(6, -1).sum(1).sqrt()
            loss = model(f)[:, 0].mean() - model(r)[:, 0].mean() + 10 * ((norms - 1) ** 2).mean()
            loss.backward()
            opt.step()
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-8, atol=1e-8, err_msg=name)


def test_lenet_bn_hessian_vector_product_matches_torch_in_float64(torch):
    rng = np.random.default_rng(1)
    theirs = _lenet_bn(torch).double()
    ours = _lenet_bn(tg).double()
    _same_start(ours, theirs)
    x, y = rng.standard_normal((8, 1, 28, 28)), rng.integers(0, 10, 8)
    vs = [rng.standard_normal(tuple(p.shape)) for p in theirs.parameters()]
    results = []
    for lib, model in ((tg, ours), (torch, theirs)):
        params = list(model.parameters())
        loss = lib.nn.functional.cross_entropy(model(lib.tensor(x)), lib.tensor(y))
        g = lib.autograd.grad(loss, params, create_graph=True)
        dot = sum((a * lib.tensor(v)).sum() for a, v in zip(g, vs))
        results.append([t.detach().numpy() for t in lib.autograd.grad(dot, params)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)
