"""Every op: float64 gradcheck (broadcasting and edge shapes) and forward values against NumPy."""
import numpy as np
import pytest

import tinygradnorm as tg
from conftest import leaf

R = np.random.default_rng(42)


def pos(*shape):
    return R.uniform(0.5, 2.0, size=shape)


def rnd(*shape):
    return R.standard_normal(shape)


def away_from_zero(*shape):
    x = R.uniform(0.3, 1.5, size=shape)
    return x * R.choice([-1, 1], size=shape)


# name: (function of tensors, list of input arrays, NumPy reference of the forward or None)
CASES = {
    "add": (lambda a, b: a + b, [rnd(3, 4), rnd(4)], np.add),
    "add_scalar_left": (lambda a: 2.5 + a, [rnd(2, 3)], lambda a: 2.5 + a),
    "add_size1_dims": (lambda a, b: a + b, [rnd(3, 1, 5), rnd(1, 4, 1)], np.add),
    "add_0d": (lambda a, b: a + b, [rnd(), rnd(2, 3)], np.add),
    "sub": (lambda a, b: a - b, [rnd(2, 3), rnd(2, 1)], np.subtract),
    "rsub_scalar": (lambda a: 1.0 - a, [rnd(3)], lambda a: 1.0 - a),
    "mul": (lambda a, b: a * b, [rnd(2, 3, 4), rnd(3, 1)], np.multiply),
    "div": (lambda a, b: a / b, [rnd(2, 3), away_from_zero(3)], np.divide),
    "rdiv_scalar": (lambda a: 2.0 / a, [away_from_zero(4)], lambda a: 2.0 / a),
    "pow_scalar": (lambda a: a ** 3, [rnd(2, 3)], lambda a: a ** 3),
    "pow_tensor": (lambda a, b: a ** b, [pos(2, 3), rnd(3)], np.power),
    "rpow_scalar": (lambda b: 2.0 ** b, [rnd(4)], lambda b: 2.0 ** b),
    "neg": (lambda a: -a, [rnd(3, 2)], np.negative),
    "matmul_2d": (lambda a, b: a @ b, [rnd(3, 4), rnd(4, 5)], np.matmul),
    "matmul_batched_broadcast": (lambda a, b: a @ b, [rnd(2, 1, 3, 4), rnd(5, 4, 2)], np.matmul),
    "matmul_1d_1d": (lambda a, b: a @ b, [rnd(4), rnd(4)], np.matmul),
    "matmul_1d_2d": (lambda a, b: a @ b, [rnd(4), rnd(2, 4, 3)], np.matmul),
    "matmul_2d_1d": (lambda a, b: a @ b, [rnd(2, 3, 4), rnd(4)], np.matmul),
    "exp": (lambda a: a.exp(), [rnd(2, 3)], np.exp),
    "log": (lambda a: a.log(), [pos(2, 3)], np.log),
    "sqrt": (lambda a: a.sqrt(), [pos(2, 3)], np.sqrt),
    "rsqrt": (lambda a: a.rsqrt(), [pos(2, 3)], lambda a: 1 / np.sqrt(a)),
    "abs": (lambda a: a.abs(), [away_from_zero(2, 3)], np.abs),
    "tanh": (lambda a: a.tanh(), [rnd(2, 3)], np.tanh),
    "sigmoid": (lambda a: a.sigmoid(), [rnd(2, 3) * 3], lambda a: 1 / (1 + np.exp(-a))),
    "relu": (lambda a: a.relu(), [away_from_zero(3, 4)], lambda a: np.maximum(a, 0)),
    "maximum": (lambda a, b: tg.maximum(a, b), [rnd(3, 4), rnd(4)], np.maximum),
    "minimum": (lambda a, b: tg.minimum(a, b), [rnd(3, 4), rnd(3, 1)], np.minimum),
    "clip": (lambda a: a.clip(-0.5, 0.5), [away_from_zero(3, 4) * 0.8], lambda a: np.clip(a, -0.5, 0.5)),
    "clip_min_only": (lambda a: a.clip(min=0.1), [rnd(5) + 0.05], lambda a: np.clip(a, 0.1, None)),
    "where": (lambda a, b: tg.where(a > 0, a, b), [rnd(3, 4), rnd(4)], lambda a, b: np.where(a > 0, a, b)),
    "sum_all": (lambda a: a.sum(), [rnd(2, 3)], np.sum),
    "sum_dim_keepdim": (lambda a: a.sum(dim=1, keepdim=True), [rnd(2, 3, 4)], lambda a: a.sum(1, keepdims=True)),
    "sum_tuple_dims": (lambda a: a.sum(dim=(0, 2)), [rnd(2, 3, 4)], lambda a: a.sum((0, 2))),
    "sum_axis_alias": (lambda a: a.sum(axis=-1), [rnd(2, 3)], lambda a: a.sum(-1)),
    "sum_0d": (lambda a: a.sum(), [rnd()], np.sum),
    "sum_empty": (lambda a: a.sum(dim=0), [rnd(0, 3)], lambda a: a.sum(0)),
    "mean": (lambda a: a.mean(dim=(1, 2)), [rnd(2, 3, 4)], lambda a: a.mean((1, 2))),
    "mean_size1": (lambda a: a.mean(dim=1), [rnd(3, 1)], lambda a: a.mean(1)),
    "var_unbiased": (lambda a: a.var(dim=0), [rnd(5, 3)], lambda a: a.var(0, ddof=1)),
    "var_biased_keepdim": (lambda a: a.var(dim=(0, 2), correction=0, keepdim=True), [rnd(3, 2, 4)],
                           lambda a: a.var((0, 2), keepdims=True)),
    "var_all": (lambda a: a.var(), [rnd(4, 3)], lambda a: a.var(ddof=1)),
    "max_all": (lambda a: a.max(), [rnd(3, 4)], np.max),
    "max_dim": (lambda a: a.max(dim=1).values, [rnd(3, 4)], lambda a: a.max(1)),
    "max_tuple": (lambda a: a.max(dim=(0, 2), keepdim=True), [rnd(2, 3, 4)], lambda a: a.max((0, 2), keepdims=True)),
    "min_all": (lambda a: a.min(), [rnd(3, 4)], np.min),
    "min_dim_keepdim": (lambda a: a.min(dim=0, keepdim=True).values, [rnd(3, 4)], lambda a: a.min(0, keepdims=True)),
    "logsumexp": (lambda a: a.logsumexp(1), [rnd(3, 5)], lambda a: np.log(np.exp(a).sum(1))),
    "softmax": (lambda a: a.softmax(-1), [rnd(3, 5)], lambda a: np.exp(a) / np.exp(a).sum(-1, keepdims=True)),
    "log_softmax": (lambda a: a.log_softmax(0), [rnd(4, 2)], lambda a: a - np.log(np.exp(a).sum(0, keepdims=True))),
    "reshape": (lambda a: a.reshape(4, -1), [rnd(2, 3, 2)], lambda a: a.reshape(4, -1)),
    "view": (lambda a: a.view(6), [rnd(2, 3)], lambda a: a.reshape(6)),
    "transpose": (lambda a: a.transpose(0, 2), [rnd(2, 3, 4)], lambda a: a.swapaxes(0, 2)),
    "permute": (lambda a: a.permute(1, 2, 0), [rnd(2, 3, 4)], lambda a: a.transpose(1, 2, 0)),
    "T": (lambda a: a.T, [rnd(2, 3)], lambda a: a.T),
    "flatten": (lambda a: a.flatten(1), [rnd(2, 3, 4)], lambda a: a.reshape(2, 12)),
    "squeeze": (lambda a: a.squeeze(), [rnd(2, 1, 3, 1)], np.squeeze),
    "squeeze_dim": (lambda a: a.squeeze(1), [rnd(2, 1, 3, 1)], lambda a: a.squeeze(1)),
    "unsqueeze": (lambda a: a.unsqueeze(-1), [rnd(2, 3)], lambda a: a[..., None]),
    "expand": (lambda a: a.expand(2, -1, 4), [rnd(3, 1)], lambda a: np.broadcast_to(a, (2, 3, 4))),
    "broadcast_to": (lambda a: a.broadcast_to((4, 3)), [rnd(3)], lambda a: np.broadcast_to(a, (4, 3))),
    "pad": (lambda a: tg.pad(a, (1, 2, 0, 1)), [rnd(2, 3, 4)], lambda a: np.pad(a, ((0, 0), (0, 1), (1, 2)))),
    "cat": (lambda a, b: tg.cat([a, b, a], dim=1), [rnd(2, 3), rnd(2, 1)], lambda a, b: np.concatenate([a, b, a], 1)),
    "stack": (lambda a, b: tg.stack([a, b], dim=-1), [rnd(2, 3), rnd(2, 3)], lambda a, b: np.stack([a, b], -1)),
    "getitem_basic": (lambda a: a[1:, None, ..., ::2], [rnd(3, 4, 5)], lambda a: a[1:, None, ..., ::2]),
    "getitem_int": (lambda a: a[-1, 2], [rnd(3, 4)], lambda a: a[-1, 2]),
    "getitem_repeated_indices": (lambda a: a[[0, 2, 0, 0]], [rnd(3, 2)], lambda a: a[[0, 2, 0, 0]]),
    "getitem_two_arrays": (lambda a: a[[0, 1, 1], [2, 0, 2]], [rnd(2, 3)], lambda a: a[[0, 1, 1], [2, 0, 2]]),
    "getitem_mixed": (lambda a: a[:, tg.tensor([1, 1, 0])], [rnd(2, 3)], lambda a: a[:, [1, 1, 0]]),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.usefixtures("cpu_path")
def test_gradcheck(name, device):
    fn, arrays, _ = CASES[name]
    inputs = [leaf(a, device) for a in arrays]
    assert tg.gradcheck(fn, inputs)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.usefixtures("cpu_path")
def test_forward_matches_numpy(name, device):
    fn, arrays, ref = CASES[name]
    out = fn(*[leaf(a, device, requires_grad=False) for a in arrays])
    np.testing.assert_allclose(out.numpy(), ref(*arrays), rtol=1e-12, atol=1e-12)
    assert out.shape == np.shape(ref(*arrays))


def test_repeated_index_gradient_accumulates():
    x = leaf(np.arange(3.0))
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 1.0])


def test_bool_mask_index():
    a = np.array([1.0, -2.0, 3.0])
    x = leaf(a)
    y = x[x > 0]
    y.sum().backward()
    np.testing.assert_array_equal(y.numpy(), [1.0, 3.0])
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 0.0, 1.0])


@pytest.mark.parametrize("scale", [1000.0, -1000.0])
def test_softmax_family_is_stable_for_large_logits(scale):
    z = leaf(np.array([[1.0, 0.0, -1.0], [3.0, 3.0, 3.0]]) * scale)
    assert np.isfinite(z.log_softmax(1).numpy()).all()
    assert np.isfinite(z.softmax(1).numpy()).all()
    assert np.isfinite(z.logsumexp(1).numpy()).all()
    np.testing.assert_allclose(z.logsumexp(1).numpy()[1], 3 * scale + np.log(3))


def test_float32_ops_keep_float32():
    x = tg.randn(3, 4)
    for y in (x + 1, x * 2.0, x.exp(), x.sum(), x.mean(0), x.var(), x @ x.T, x.softmax(1), 3 / x):
        assert y.dtype == tg.float32


def test_comparisons_return_bool_without_grad():
    x = leaf(np.array([1.0, 2.0, 3.0]))
    for y in (x > 2, x >= 2, x < 2, x <= 2, x == 2, x != 2):
        assert y.dtype == tg.bool and not y.requires_grad
    np.testing.assert_array_equal((x > 1.5).numpy(), [False, True, True])


def test_argmax_argmin():
    a = np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    x = leaf(a)
    assert x.argmax().item() == 3
    np.testing.assert_array_equal(x.argmax(dim=1).numpy(), [1, 0])
    np.testing.assert_array_equal(x.argmin(axis=0, keepdim=True).numpy(), [[0, 1, 0]])
    assert x.argmax(1).dtype == tg.int64 and not x.argmax(1).requires_grad
    values, indices = x.max(dim=1)
    np.testing.assert_array_equal(values.numpy(), [5.0, 7.0])
    np.testing.assert_array_equal(indices.numpy(), [1, 0])


def test_max_ties_split_gradient_evenly():
    x = leaf(np.array([2.0, 2.0, 1.0]))
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 0.5, 0.0])
