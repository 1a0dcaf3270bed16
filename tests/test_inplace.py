"""In-place ops and version counters: PyTorch's rules, so that an in-place edit never gives a wrong gradient.

Each case runs the same code on tinygradnorm and on PyTorch (as the oracle): both must raise, or
both must give the same values and gradients.
"""
import numpy as np
import pytest

import tinygradnorm as tg
from conftest import leaf

R = np.random.default_rng(5)

pytestmark = pytest.mark.usefixtures("cpu_path")    # both CPU paths: compiled kernels and NumPy alone


def _run(lib, body):
    """body(lib) on tinygradnorm or torch: ('error', message) or ('ok', numpy results)."""
    try:
        out = body(lib)
    except RuntimeError as e:
        return "error", str(e)
    return "ok", [np.asarray(o.detach().numpy() if hasattr(o, "detach") else o, dtype=np.float64) for o in out]


def _lib_torch(torch):
    class Lib:
        tensor = staticmethod(lambda a, rg=False: torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=rg))
        no_grad = torch.no_grad
    return Lib


class _LibTg:
    tensor = staticmethod(lambda a, rg=False: tg.tensor(np.asarray(a, dtype=np.float64), dtype=tg.float64,
                                                       requires_grad=rg))
    no_grad = tg.no_grad


def _fill_after_use(L):
    x, w = L.tensor([1.0, 2.0, 3.0], True), L.tensor([4.0, 5.0, 6.0], True)
    h = x * 1.0
    y = (h * w).sum()
    h.fill_(10.0)
    y.backward()
    return [w.grad]


def _copy_after_use(L):
    x, w = L.tensor([1.0, 2.0, 3.0], True), L.tensor([4.0, 5.0, 6.0], True)
    h = x * 1.0
    y = (h * w).sum()
    h.copy_(L.tensor([7.0, 7.0, 7.0]))
    y.backward()
    return [w.grad]


def _zero_saved_constant(L):
    x, w = L.tensor([1.0, 2.0, 3.0], True), L.tensor([4.0, 5.0, 6.0])
    y = (x * w).sum()
    w.zero_()
    y.backward()
    return [x.grad]


def _leaf_in_place(L):
    x = L.tensor([1.0, 2.0], True)
    x.add_(1.0)
    return [x]


def _view_of_leaf_in_place(L):
    x = L.tensor([1.0, 2.0, 3.0], True)
    x[0:2].mul_(2.0)
    return [x]


def _leaf_under_no_grad(L):
    x = L.tensor([1.0, 2.0], True)
    with L.no_grad():
        x.mul_(3.0).add_(1.0)
    (x * x).sum().backward()
    return [x, x.grad]


def _modified_output_of_exp(L):
    x = L.tensor([0.5, -1.0], True)
    y = x.exp()
    s = y.sum()
    with L.no_grad():
        y.add_(1.0)
    s.backward()
    return [x.grad]


def _step_between_backwards(L):
    x = L.tensor([1.0, 2.0], True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    with L.no_grad():
        x.sub_(x.grad, alpha=0.1)
    loss.backward()
    return [x.grad]


def _unsaved_input_changed(L):
    x, w = L.tensor([1.0, 2.0], True), L.tensor([3.0, 4.0], True)
    y = (x + w).sum()                   # add saves neither input: changing one later is harmless
    with L.no_grad():
        w.mul_(10.0)
    y.backward()
    return [x.grad, w.grad]


def _differentiable_chain(L):
    x, b = L.tensor([1.0, -2.0, 3.0], True), L.tensor([0.5, 0.5, 0.5], True)
    h = x * 2.0
    h.add_(b, alpha=3.0).mul_(h).sub_(1.0).div_(L.tensor([2.0, 4.0, 8.0])).clamp_(-5.0, 5.0)
    (h * h).sum().backward()
    return [h, x.grad, b.grad]


def _rebase_keeps_earlier_uses(L):
    x = L.tensor([1.0, 2.0], True)
    h = x * 3.0
    a = h + 1.0                         # uses h before the in-place op; must not see the mul_
    h.mul_(2.0)
    (a.sum() + h.sum()).backward()
    return [x.grad]


def _in_place_into_plain_tensor(L):
    w = L.tensor([1.0, 2.0, 3.0], True)
    t = L.tensor([0.0, 0.0, 0.0])
    t.add_(w * w)
    t[1] = w[0] * 5.0
    (t * t).sum().backward()
    return [t, w.grad]


def _setitem_fill_and_copy(L):
    x, v = L.tensor([[1.0, 2.0], [3.0, 4.0]], True), L.tensor(2.5, True)
    h = x * 1.0
    h[0] = L.tensor([9.0, 8.0])
    g = x * 2.0
    g.fill_(v)
    c = x * 1.0
    c.copy_(v * x[1])
    (h.sum() + (g * x).sum() + (c * c).sum()).backward()
    return [h, g, c, x.grad, v.grad]


def _base_changed_after_view(L):
    x = L.tensor([1.0, 2.0, 3.0], True)
    h = x * 1.0
    v = h[0:2]
    h.mul_(2.0)
    v.sum().backward()
    return [x.grad]


CASES = [_fill_after_use, _copy_after_use, _zero_saved_constant, _leaf_in_place, _view_of_leaf_in_place,
         _leaf_under_no_grad, _modified_output_of_exp, _step_between_backwards, _unsaved_input_changed,
         _differentiable_chain, _rebase_keeps_earlier_uses, _in_place_into_plain_tensor, _setitem_fill_and_copy]


@pytest.mark.parametrize("body", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_in_place_rules_match_torch(torch, body):
    ours, theirs = _run(_LibTg, body), _run(_lib_torch(torch), body)
    assert ours[0] == theirs[0], f"tinygradnorm: {ours}\ntorch: {theirs}"
    if ours[0] == "ok":
        for a, b in zip(ours[1], theirs[1]):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_base_changed_after_view_raises_rather_than_guess():
    """PyTorch regenerates the view's grad_fn here; this engine refuses clearly instead (never a stale gradient)."""
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*GetItemBackward.*mul_"):
        _base_changed_after_view(_LibTg)


def test_errors_name_the_op_the_shape_and_the_fix():
    x = leaf([1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError, match=r"leaf Variable.*add_ on a float64 tensor of shape \(3,\).*no_grad"):
        x.add_(1.0)
    h = x * 1.0
    y = (h * x).sum()
    h.zero_()
    with pytest.raises(RuntimeError, match=r"input 0 \(float64, shape \(3,\)\) of MulBackward is at version 1 "
                                           r"\(last changed by zero_\); expected version 0"):
        y.backward()


def test_in_place_on_a_view_that_needs_a_gradient_is_refused():
    x = leaf([1.0, 2.0, 3.0])
    h = x * 1.0
    with pytest.raises(RuntimeError, match=r"in-place op on a view that needs a gradient.*clone\(\)"):
        h[0:2].mul_(2.0)
    with tg.no_grad():
        v = h[0:2]
        v.mul_(2.0)                      # no graph recorded: a plain memory update, seen through h
    assert h.tolist() == [2.0, 4.0, 3.0] and h._version == 1


def test_a_differentiable_in_place_op_on_a_tensor_with_plain_views_is_refused():
    """Without the refusal, (v * 2 + w).sum() would silently miss the path from w through t's add_."""
    w = leaf([1.0, 2.0, 3.0])
    t = tg.zeros(3, dtype=tg.float64)
    v = t[0:2]                                  # a view, made without a graph
    with pytest.raises(RuntimeError, match=r"add_: .* has views made without a graph.*clone\(\)"):
        t.add_(w)
    u = tg.zeros(3, dtype=tg.float64)
    u.add_(w)                                   # no views: differentiable, as in PyTorch
    (u * u).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [2.0, 4.0, 6.0])
    assert v.shape == (2,)


def test_views_share_the_version_counter_and_detach_too():
    x = tg.tensor([1.0, 2.0, 3.0, 4.0])
    v, d, c = x.reshape(2, 2), x.detach(), x.clone()
    v.mul_(2.0)
    d.add_(1.0)
    assert x._version == v._version == d._version == 2 and c._version == 0
    assert x.tolist() == [3.0, 5.0, 7.0, 9.0] and v._base is x and d._base is None


def test_in_place_argument_errors_match_torch(torch):
    cases = [
        (lambda L: L.ones(3, dtype=L.int64).add_(1.5), "can't be cast"),
        (lambda L: L.ones(3, dtype=L.int64).div_(2), "can't be cast"),
        (lambda L: L.ones(3).add_(L.ones(2, 3)), "doesn't match the broadcast shape"),
        (lambda L: L.ones(3).fill_(L.ones(1)), "only supports 0-dimension value tensor"),
        (lambda L: L.ones(3).clamp_(), "must not be None"),
        (lambda L: L.ones(1).expand(3).add_(1.0), "single memory location.*clone"),
        (lambda L: L.ones(3, dtype=L.int64).normal_(), None),
    ]
    for body, pattern in cases:
        with pytest.raises((RuntimeError, NotImplementedError)):
            body(torch)
        with pytest.raises(RuntimeError, match=pattern):
            body(tg)
    with pytest.raises(TypeError, match="must be Tensor, not list"):
        tg.ones(3).copy_([1.0, 2.0, 3.0])
    assert tg.ones(3).add_(tg.ones(3, dtype=tg.float64)).dtype == tg.float32   # a wider source is cast down
    assert tg.zeros(3, dtype=tg.int64).fill_(1.7).tolist() == [1, 1, 1]


def test_augmented_assignment_is_in_place():
    x = tg.ones(3)
    alias = x
    x += 1.0
    x *= 3.0
    x -= tg.ones(3)
    x /= 5.0
    assert alias is x and x._version == 4
    np.testing.assert_allclose(x.numpy(), [1.0, 1.0, 1.0])


def test_optimizers_init_and_load_state_dict_bump_versions():
    lin = tg.nn.Linear(3, 2)
    v0 = lin.weight._version
    tg.nn.init.normal_(lin.weight)
    lin.load_state_dict(lin.state_dict())
    x = tg.randn(4, 3)
    loss = lin(x).sum()
    loss.backward(retain_graph=True)
    tg.optim.SGD(lin.parameters(), lr=0.1).step()
    assert lin.weight._version == v0 + 3
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()     # the step changed the weight that LinearBackward saved
    tg.optim.Adam(lin.parameters()).step()
    assert lin.weight._version == v0 + 4


def test_running_statistics_of_an_eval_forward_are_copied():
    """PyTorch's eval-mode backward silently uses running statistics changed after the forward; here the
    gradient always belongs to the statistics the forward used."""
    bn = tg.nn.BatchNorm1d(2, dtype=tg.float64).eval()
    x = leaf(R.standard_normal((5, 2)))
    out = bn(x)
    bn.train()(leaf(R.standard_normal((5, 2)) * 3 + 1, requires_grad=False))
    gy = R.standard_normal((5, 2))
    out.backward(tg.tensor(gy, dtype=tg.float64))
    np.testing.assert_allclose(bn.weight.grad.numpy(), (gy * x.numpy() / np.sqrt(1 + 1e-5)).sum(0), rtol=1e-12)


def test_inference_tensors(torch):
    w = leaf([1.0, 2.0])
    with tg.inference_mode():
        a = tg.ones(2, dtype=tg.float64)
        assert a.is_inference() and not tg.is_grad_enabled() and tg.is_inference_mode_enabled()
        a.add_(1.0)                      # in place inside inference mode is fine
        with tg.enable_grad():
            assert not (w * 2).requires_grad   # inference mode records nothing, as in PyTorch
    assert not (a + 1).is_inference() and a.reshape(2).is_inference()
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward.*clone"):
        a * w
    with pytest.raises(RuntimeError, match="inference tensor outside InferenceMode"):
        a.mul_(2.0)
    assert (a.clone() * w).requires_grad and (a + w).requires_grad   # add saves nothing
    with tg.inference_mode():
        with tg.inference_mode(False):
            assert tg.is_grad_enabled() and not tg.ones(1).is_inference()


def test_custom_function_mistakes_are_named():
    class TooFew(tg.autograd.Function):
        def forward(self, a, b):
            return a * b

        def backward(self, g):
            return g

    class WrongShape(tg.autograd.Function):
        def forward(self, a):
            return a.sum()

        def backward(self, g):
            return g * self.xp.ones(7)

    class Broadcast(tg.autograd.Function):
        def forward(self, a):
            return a * 2

        def backward(self, g):
            return 2 * self.xp.broadcast_to(g, (4,) + g.shape)   # summed down to the input's shape, as in torch

    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    with pytest.raises(RuntimeError, match=r"TooFewBackward returned an incorrect number of gradients \(expected 2, "
                                           r"got 1\)"):
        TooFew.apply(a, b).sum().backward()
    with pytest.raises(RuntimeError, match=r"WrongShapeBackward returned an invalid gradient at index 0: got shape "
                                           r"\(7,\) but expected shape compatible with \(2,\)"):
        WrongShape.apply(a).backward()
    Broadcast.apply(b).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), [8.0, 8.0])
    with pytest.raises(TypeError, match=r"TooFew.apply: argument 1 must be a Tensor, not ndarray"):
        TooFew.apply(a, np.ones(2))
