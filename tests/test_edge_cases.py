"""Off the happy path: each case runs on tinygradnorm and on PyTorch (the oracle), on both CPU paths.

The two must agree: the same values and gradients, or an error in both (ours naming what was
given and what was expected). Where PyTorch is the less accurate side (float32 inputs of 1e30),
the check is against a float64 reference instead.
"""
import contextlib
import warnings

import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn as nn
import tinygradnorm.nn.functional as F

R = np.random.default_rng(21)
pytestmark = pytest.mark.usefixtures("cpu_path")


def _lib(torch, which):
    """(tensor factory, nn, functional) of one library; the factory keeps the array's dtype."""
    if which == "torch":
        return (lambda a, rg=False: torch.tensor(np.asarray(a), requires_grad=rg)), torch.nn, torch.nn.functional
    return (lambda a, rg=False: tg.tensor(np.asarray(a), dtype=np.asarray(a).dtype, requires_grad=rg)), nn, F


def _np(t):
    return None if t is None else np.asarray(t.detach().numpy(), dtype=np.float64)


def _agree(torch, body, rtol=1e-10, atol=1e-12):
    """body(tensor, nn, F) -> list of tensors, on both libraries: equal values (nan where nan)."""
    ours = [_np(t) for t in body(*_lib(torch, "tg"))]
    theirs = [_np(t) for t in body(*_lib(torch, "torch"))]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


def _grads_of(y, *leaves):
    """[y, d sum(y) / d leaf, ...]."""
    y.backward(y.detach().clone().fill_(1.0))
    return [y] + [t.grad for t in leaves]


# ---- wrong answers and internal errors at the edges ------------------------------------------------
@pytest.mark.parametrize("layer", ["layer_norm", "group_norm"])
def test_bias_without_weight(torch, layer):
    """PyTorch's group_norm backward fails here ("tensor does not have a device"): its forward is the oracle,
    and the gradients are checked by finite differences and against the composite version."""
    x0, b0 = R.standard_normal((3, 4, 5)), R.standard_normal(4 if layer == "group_norm" else 5)

    def body(T, nn_, F_, impl=None):
        x, b = T(x0, True), T(b0, True)
        kw = {} if impl is None else {"impl": impl}
        y = F_.layer_norm(x, (5,), None, b, **kw) if layer == "layer_norm" else F_.group_norm(x, 2, None, b, **kw)
        return [y] if layer == "group_norm" and impl is None else _grads_of((y * y).sum(), x, b)
    _agree(torch, body)
    fused, composite = body(*_lib(torch, "tg"), impl="fused"), body(*_lib(torch, "tg"), impl="composite")
    for a, b in zip(fused, composite):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10)
    fn = (lambda x, b: F.layer_norm(x, (5,), None, b)) if layer == "layer_norm" else \
        (lambda x, b: F.group_norm(x, 2, None, b))
    assert tg.gradcheck(fn, (tg.tensor(x0, requires_grad=True), tg.tensor(b0, requires_grad=True)))


def test_sigmoid_of_a_0d_tensor(torch):
    def body(T, nn_, F_):
        x = T(np.float64(0.3), True)
        return _grads_of(x.sigmoid() * 2, x)
    _agree(torch, body)
    assert tg.tensor(0.3).sigmoid().shape == ()


@pytest.mark.parametrize("case", ["default", "none", "dof0", "unbiased_false"])
def test_var_corrections(torch, case):
    kwargs = {"default": {}, "none": {"correction": None}, "dof0": {"correction": 1},
              "unbiased_false": {"unbiased": False}}[case]
    shape = (1,) if case == "dof0" else (4, 3)

    def body(T, nn_, F_):
        x = T(np.linspace(-1, 2, int(np.prod(shape))).reshape(shape), True)
        return _grads_of(x.var(**kwargs), x)
    with _quiet():
        _agree(torch, body)


def _var_formula_grad(x, dim, correction):
    """d sum(var) / dx by the formula 2 (x - mean) / max(0, m - correction), in float64 NumPy."""
    m = x.size if dim is None else x.shape[dim]
    d = x - x.mean(axis=dim, keepdims=True)
    with np.errstate(all="ignore"):
        return 2 * d / max(0, m - correction)


def test_var_over_a_dim_with_no_degrees_of_freedom_carries_the_sign_of_x_minus_mean(torch):
    """correction equal to the count: an infinity with the sign of x - mean, as the formula and PyTorch give."""
    def body(T, nn_, F_):
        x = T(np.array([[1.0, 2.0, 4.0], [4.0, 5.0, 9.0]]), True)
        with _quiet():
            return _grads_of(x.var(1, correction=3), x)
    with _quiet():
        _agree(torch, body)
    x0 = np.array([[1.0, 2.0, 4.0], [4.0, 5.0, 9.0]])
    x = tg.tensor(x0, requires_grad=True)
    with _quiet():
        x.var(1, correction=3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), _var_formula_grad(x0, 1, 3))


@pytest.mark.parametrize("dim, correction", [(None, 6), (None, 8), (1, 4)])
def test_var_without_degrees_of_freedom_follows_the_formula(dim, correction):
    """Where PyTorch disagrees with itself (a full reduction gives +inf everywhere, a dim with dof < 0 a finite value
    of the wrong sign for an infinite output), the formula decides: an infinity with the sign of x - mean."""
    x0 = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]])
    x = tg.tensor(x0, requires_grad=True)
    with _quiet():
        v = x.var(dim, correction=correction)
        v.sum().backward()
    assert np.isinf(v.numpy()).all()
    np.testing.assert_array_equal(x.grad.numpy(), _var_formula_grad(x0, dim, correction))


@contextlib.contextmanager
def _quiet():
    """Both libraries warn about nan results here (no degrees of freedom, 0/0); the values are what is checked."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def test_relu_passes_the_gradient_at_nan(torch):
    def body(T, nn_, F_):
        x = T(np.array([np.nan, 1.0, -1.0, 0.0]), True)
        return _grads_of(F_.relu(x), x)
    _agree(torch, body)


def test_cross_entropy_with_every_target_ignored(torch):
    def body(T, nn_, F_):
        x, t = T(R.standard_normal((3, 4)), True), T(np.array([-100, -100, -100]))
        return _grads_of(F_.cross_entropy(x, t), x)
    with _quiet():
        _agree(torch, body)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_softmax_family_over_an_empty_dim(torch, op):
    def body(T, nn_, F_):
        x = T(np.zeros((3, 0)), True)
        y = getattr(x, op)(1)
        return _grads_of(y.sum(), x) + [y]
    with _quiet():
        _agree(torch, body)


@pytest.mark.parametrize("case", ["bn_train_n0", "bn_eval_n0", "bn_c0", "gn_n0", "gn_c0", "in_n0", "in_c0", "ln_n0",
                                  "rms_n0", "lrn_n0", "lrn_c0"])
def test_empty_inputs_give_empty_outputs(torch, case):
    make, shape = {
        "bn_train_n0": (lambda nn_: nn_.BatchNorm2d(3), (0, 3, 2, 2)),
        "bn_eval_n0": (lambda nn_: nn_.BatchNorm1d(3).eval(), (0, 3)),
        "bn_c0": (lambda nn_: (lambda x: nn_.functional.batch_norm(x, None, None, training=True)), (4, 0, 3)),
        "gn_n0": (lambda nn_: nn_.GroupNorm(2, 4), (0, 4, 3)),
        "gn_c0": (lambda nn_: (lambda x: nn_.functional.group_norm(x, 1)), (4, 0, 3)),
        "in_n0": (lambda nn_: nn_.InstanceNorm2d(3), (0, 3, 4, 4)),
        "in_c0": (lambda nn_: (lambda x: nn_.functional.instance_norm(x)), (2, 0, 4, 4)),
        "ln_n0": (lambda nn_: nn_.LayerNorm(5), (0, 5)),
        "rms_n0": (lambda nn_: nn_.RMSNorm(5), (0, 5)),
        "lrn_n0": (lambda nn_: nn_.LocalResponseNorm(2), (0, 3, 4)),
        "lrn_c0": (lambda nn_: nn_.LocalResponseNorm(2), (2, 0, 4)),
    }[case]

    def body(T, nn_, F_):
        if nn_ is not nn:
            nn_.functional = F_
        m = make(nn_)
        x = T(np.zeros(shape), True)
        if hasattr(m, "double"):
            m = m.double()
        y = m(x)
        buffers = [b for name, b in m.named_buffers()] if hasattr(m, "named_buffers") else []
        params = list(m.parameters()) if hasattr(m, "parameters") else []
        y.sum().backward()
        return [y] + buffers + [x.grad] + [p.grad for p in params]
    _agree(torch, body)


def test_empty_batch_through_affine_instance_norm():
    """PyTorch's InstanceNorm with affine fails on N = 0 (an IndexError from inside); here it gives an empty output."""
    m = nn.InstanceNorm2d(3, affine=True, track_running_stats=True)
    x = tg.zeros(0, 3, 4, 4, requires_grad=True)
    y = m(x)
    y.sum().backward()
    assert y.shape == (0, 3, 4, 4) and x.grad.shape == (0, 3, 4, 4)
    assert m.weight.grad.tolist() == [0.0] * 3 and m.running_mean.tolist() == [0.0] * 3


def test_eval_weight_gradient_does_not_cancel(torch):
    """float32, running_mean 1000, running_var 1e-4, x = 1000 + 0.01 N(0, 1): Σgy*x - mean*Σgy would cancel."""
    x0 = (1000 + 0.01 * R.standard_normal((64, 3, 8, 8))).astype(np.float32)
    gy0 = R.standard_normal(x0.shape).astype(np.float32)
    bn = nn.BatchNorm2d(3).eval()
    with tg.no_grad():
        bn.running_mean.fill_(1000.0)
        bn.running_var.fill_(1e-4)
    bn(tg.tensor(x0, requires_grad=True)).backward(tg.tensor(gy0))
    exact = (gy0.astype(np.float64) * (x0.astype(np.float64) - 1000) / np.sqrt(1e-4 + 1e-5)).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(bn.weight.grad.numpy(), exact, rtol=1e-5)


@pytest.mark.parametrize("case", ["bn1d", "bn2d", "in2d", "ln", "gn", "rms", "ln_mean_1e4"])
def test_float32_inputs_of_1e30_match_a_float64_reference(case):
    """PyTorch gives nan or -2.3e24 here (it squares in float32); both our paths accumulate in float64."""
    make, shape = {"bn1d": (lambda: nn.BatchNorm1d(3), (8, 3)), "bn2d": (lambda: nn.BatchNorm2d(3), (4, 3, 2, 2)),
                   "in2d": (lambda: nn.InstanceNorm2d(3, affine=True), (4, 3, 2, 2)),
                   "ln": (lambda: nn.LayerNorm(6), (4, 6)), "gn": (lambda: nn.GroupNorm(2, 4), (4, 4, 3)),
                   "rms": (lambda: nn.RMSNorm(6), (4, 6)), "ln_mean_1e4": (lambda: nn.LayerNorm(6), (4, 6))}[case]
    x0 = (R.standard_normal(shape) * 1e30) if case != "ln_mean_1e4" else 1e4 + R.standard_normal(shape)
    x0 = x0.astype(np.float32)
    gy = R.standard_normal(shape).astype(np.float32)
    results = []
    for dtype in (tg.float32, tg.float64):
        m = make().to(dtype)
        x = tg.tensor(x0.astype(dtype), dtype=dtype, requires_grad=True)
        with _quiet():
            y = m(x)
        y.backward(tg.tensor(gy.astype(dtype), dtype=dtype))
        results.append((y.numpy(), x.grad.numpy(), [p.grad.numpy() for p in m.parameters()]))
    (y32, gx32, gp32), (y64, gx64, gp64) = results
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx32, gx64, rtol=1e-4, atol=1e-5 * np.abs(gx64).max())
    for a, b in zip(gp32, gp64):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("index", [
    "[-2, -1::2, [0, 5, 1], [-1, -2, -1]]", "[1, [0, 1], :, [0, 1]]", "[[0, 1], None, [0, 1]]", "[..., 1, [0, 1]]",
    "[T(1), :, :, [0, 1]]", "[:, 0, [1, 1, 0]]", "[[1, 0], 1]", "[T([True, False])]", "[0, ..., T([1, 0])]"])
def test_mixed_advanced_indexing_follows_torch(torch, index):
    x0 = np.arange(48.0).reshape(2, 2, 6, 2)

    def body(T, nn_, F_):
        x = T(x0, True)
        y = eval("x" + index, {"x": x, "T": lambda v: T(np.asarray(v))})
        return _grads_of(y * y, x)
    _agree(torch, body)


# ---- bad types and dtypes -------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda: nn.Linear(4, 2)(np.ones((2, 4), np.float32)), lambda: nn.Linear(4, 2)([1.0, 2.0, 3.0, 4.0]),
    lambda: nn.LayerNorm(4)([1.0, 2.0, 3.0, 4.0]), lambda: nn.Sigmoid()(np.ones(3)),
    lambda: nn.BatchNorm1d(2)(np.ones((3, 2))), lambda: nn.GroupNorm(1, 2)([[1.0, 2.0]]),
    lambda: nn.Flatten()(np.ones((2, 3))), lambda: nn.ReLU()([1.0]), lambda: F.conv2d(np.ones((1, 1, 3, 3)), tg.ones(1, 1, 1, 1))])
def test_non_tensor_inputs_say_must_be_tensor(call):
    with pytest.raises(TypeError, match=r"argument 'input' \(position 1\) must be Tensor, not"):
        call()


@pytest.mark.parametrize("make, dtype", [
    (lambda nn_: nn_.Linear(4, 2), "int64"), (lambda nn_: nn_.Linear(4, 2), "float16"),
    (lambda nn_: nn_.Linear(4, 2), "float64"), (lambda nn_: nn_.Conv2d(4, 2, 1), "float64"),
    (lambda nn_: nn_.Conv2d(4, 2, 1), "float16"), (lambda nn_: nn_.Conv2d(4, 2, 1), "int64"),
    (lambda nn_: nn_.BatchNorm1d(4), "float64"), (lambda nn_: nn_.LayerNorm(4), "float64"),
    (lambda nn_: nn_.GroupNorm(2, 4), "float64")])
def test_input_dtype_that_the_model_does_not_share_raises_as_in_torch(torch, make, dtype):
    shape = (2, 4, 3, 3) if "Conv" in repr(make(nn)) else (2, 4)
    with pytest.raises(RuntimeError):
        make(torch.nn)(torch.ones(shape, dtype=getattr(torch, dtype)))
    with pytest.raises(RuntimeError, match=rf"{dtype}.*float32|float32.*{dtype}"):
        make(nn)(tg.ones(*shape, dtype=getattr(tg, dtype)))


def test_float16_input_to_a_float32_norm_layer_gives_float16_as_in_torch(torch):
    for make in (lambda nn_: nn_.BatchNorm1d(4), lambda nn_: nn_.LayerNorm(4), lambda nn_: nn_.GroupNorm(2, 4)):
        x = R.standard_normal((3, 4)).astype(np.float16)
        theirs = make(torch.nn)(torch.tensor(x))
        ours = make(nn)(tg.tensor(x, dtype=tg.float16))
        assert ours.dtype == tg.float16 and theirs.dtype == torch.float16
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=2e-3, atol=2e-3)


def test_integer_and_bool_inputs_to_pools_and_lrn(torch):
    xi = R.integers(-9, 9, (2, 3, 5, 5))
    for fn in (lambda F_, x: F_.avg_pool2d(x, 2), lambda F_, x: F_.avg_pool2d(x, 3, 2, 1),
               lambda F_, x: F_.max_pool2d(x, 3, 1, 1)):
        theirs, ours = fn(torch.nn.functional, torch.tensor(xi)), fn(F, tg.tensor(xi))
        assert str(theirs.dtype).split(".")[1] == str(ours.dtype)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # NOTE: PyTorch's LRN on int64 averages the squares with integer (truncating) division; here integers are
    # converted to float32 first, which gives the float result
    ours = F.local_response_norm(tg.tensor(xi), 2)
    assert ours.dtype == tg.float32
    np.testing.assert_allclose(ours.numpy(), F.local_response_norm(tg.tensor(xi.astype(np.float32)), 2).numpy())
    for fn in (lambda F_, x: F_.avg_pool2d(x, 2), lambda F_, x: F_.max_pool2d(x, 2),
               lambda F_, x: F_.local_response_norm(x, 2)):
        with pytest.raises(NotImplementedError):
            fn(torch.nn.functional, torch.ones(1, 2, 4, 4, dtype=torch.bool))
        with pytest.raises(NotImplementedError, match="not implemented for.*[Bb]ool"):
            fn(F, tg.ones(1, 2, 4, 4, dtype=tg.bool))


def test_a_read_only_array_becomes_a_parameter_that_trains():
    p = nn.Parameter(tg.tensor(np.broadcast_to(np.float32(1.0), (3,))))
    locked = np.ones(3, np.float32)
    locked.setflags(write=False)
    q = nn.Parameter(tg.tensor(locked))
    (p * q).sum().backward()
    tg.optim.SGD([p, q], lr=0.5).step()
    assert p.tolist() == [0.5] * 3 and q.tolist() == [0.5] * 3 and not locked.flags.writeable and locked[0] == 1


def test_binary_ops_promote_and_accept_numbers_as_torch(torch):
    assert float(tg.add(2.0, 3.0)) == 5.0 and tg.add(2.0, 3.0).dtype == tg.float32
    assert tg.add(2, 3).dtype == tg.int64 and tg.sub(5, 3, alpha=2).item() == -1
    cases = [(np.ones(3, np.int64), np.ones(3, np.float32)), (np.ones(3, np.float32), np.float64(2.0)),
             (np.ones(3, np.int64), np.float64(2.5)), (np.ones(3, np.int32), np.int64(2)),
             (np.ones(3, np.bool_), np.ones(3, np.uint8)), (np.ones(3, np.float16), np.ones(3, np.float32)),
             (np.ones(3, np.int64), np.ones(3, np.int64))]
    for a, b in cases:
        for op in ("add", "mul", "div"):
            theirs = getattr(torch, op)(torch.tensor(a), torch.tensor(b))
            ours = getattr(tg, op)(tg.tensor(a, dtype=a.dtype), tg.tensor(b, dtype=b.dtype))
            assert str(ours.dtype) == str(theirs.dtype).split(".")[1], (op, a.dtype, b.dtype)
            np.testing.assert_allclose(ours.numpy(), theirs.numpy())


def test_gradcheck_of_a_function_that_returns_a_number():
    with pytest.raises(TypeError, match="must return a Tensor or a tuple of Tensors \\(got float\\)"):
        tg.gradcheck(lambda a: 3.0, (tg.randn(2, dtype=tg.float64, requires_grad=True),))


# ---- where PyTorch raises ---------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda L, x: L.nn.functional.batch_norm(x, None, None, training=False),
    lambda L, x: L.nn.functional.batch_norm(x, L.zeros(3), None, training=True),
    lambda L, x: L.nn.functional.batch_norm(x, None, L.ones(3), training=False),
    lambda L, x: L.nn.functional.instance_norm(x.reshape(2, 3, 2), use_input_stats=False),
    lambda L, x: L.nn.GroupNorm(4, 4)(L.ones(1, 4)),
    lambda L, x: L.nn.functional.group_norm(L.ones(1, 4, 1), 4),
    lambda L, x: L.nn.BatchNorm1d(3)(L.ones(1, 3, 1)),
    lambda L, x: L.nn.InstanceNorm1d(3)(L.ones(2, 3, 1))])
def test_raises_where_torch_raises(torch, call):
    x = np.ones((4, 3), np.float32)
    with pytest.raises(Exception) as theirs:
        call(torch, torch.tensor(x))
    with pytest.raises(type(theirs.value), match="."):
        call(tg, tg.tensor(x))
