"""Normalization layers: float64 gradcheck of every gradient, fused against composite, running statistics
against a NumPy reference, eval mode and the numerics the docs promise."""
import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm import nn
import tinygradnorm.nn.functional as F
from conftest import mutant
from norm_cases import ALL, IDS, make

R = np.random.default_rng(11)

# NOTE: every test here runs twice on the CPU, with the compiled kernels and with NumPy's code alone.
pytestmark = pytest.mark.usefixtures("cpu_path")


def prepare(case, device, impl="fused", seed=0):
    """A float64 module with random parameters and running statistics, and a random input."""
    rng = np.random.default_rng(seed)
    m = make(nn, case, impl=impl) if "impl" not in case[3] else make(nn, case)
    m.double().to(device)
    for p in m.parameters():
        p.data[...] = m.weight.xp.asarray(rng.uniform(0.5, 1.5, p.shape))
    if getattr(m, "track_running_stats", False):
        m.running_mean.data[...] = m.running_mean.xp.asarray(rng.standard_normal(m.running_mean.shape))
        m.running_var.data[...] = m.running_var.xp.asarray(rng.uniform(0.5, 2.0, m.running_var.shape))
    x = tg.tensor(rng.standard_normal(case[4]), dtype=tg.float64, device=device, requires_grad=True)
    return m, x


def with_params(module):
    """fn(x, *params) that runs the module with the given tensors as its parameters (for gradcheck)."""
    names = [n for n, _ in module.named_parameters()]

    def fn(x, *params):
        for name, p in zip(names, params):
            module._parameters[name] = p
        return module(x)
    return fn, [p.detach().requires_grad_() for p in module.parameters()]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", ALL, ids=IDS)
def test_gradcheck_input_weight_bias(case, training, device):
    m, x = prepare(case, device)
    m.train(training)
    fn, params = with_params(m)
    assert tg.gradcheck(fn, (x, *params))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", ALL, ids=IDS)
def test_fused_matches_composite(case, training, device):
    fused, x = prepare(case, device, "fused")
    comp, _ = prepare(case, device, "composite")
    gy = tg.tensor(R.standard_normal(case[4]), dtype=tg.float64, device=device)
    results = []
    for m in (fused, comp):
        m.train(training)
        xi = x.detach().requires_grad_()
        for _ in range(2):  # two steps, so running statistics move too
            xi.grad = None
            m.zero_grad()
            y = m(xi)
            y.backward(gy)
        results.append([y, xi.grad] + [p.grad for p in m.parameters()] + list(m.buffers()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [tg.float64, tg.float32, tg.float16])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", ALL, ids=IDS)
def test_no_graph_path_matches_the_recorded_one(case, training, dtype):
    """Where no graph is recorded (no_grad, or nothing requires grad), functional.py runs the fused layers' array
    forward without a Function. Its output and running statistics are the recorded forward's, bit for bit."""
    results = []
    for record in (True, False):
        m, x = prepare(case, "cpu")
        m.train(training).to(dtype)
        x = x.detach().to(dtype).requires_grad_(record)
        with tg.set_grad_enabled(record):
            ys = [m(x) for _ in range(2)]                   # two calls, so running statistics move in between
        assert ys[0].requires_grad is record
        results.append([y.detach().numpy() for y in ys] + [b.numpy() for b in m.buffers()])
    for recorded, plain in zip(*results):
        np.testing.assert_array_equal(plain, recorded)


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("kind", ["BatchNorm2d", "InstanceNorm2d"])
def test_running_stats_match_numpy_reference(kind, momentum):
    m = getattr(nn, kind)(3, momentum=momentum, track_running_stats=True).double()
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(1, 6):
        x = R.standard_normal((4, 3, 5, 2)) * (step + 1) + step
        m(tg.tensor(x))
        if kind == "BatchNorm2d":
            mean = x.mean(axis=(0, 2, 3))
            var = x.var(axis=(0, 2, 3), ddof=1)           # unbiased, as PyTorch stores it
            factor = 1 / step if momentum is None else momentum
        else:
            mean = x.mean(axis=(2, 3)).mean(axis=0)        # per-instance statistics, averaged over the batch
            var = x.var(axis=(2, 3), ddof=1).mean(axis=0)
            factor = 0.0 if momentum is None else momentum  # InstanceNorm: momentum=None leaves them alone
        rm = (1 - factor) * rm + factor * mean
        rv = (1 - factor) * rv + factor * var
        np.testing.assert_allclose(m.running_mean.numpy(), rm, rtol=1e-12)
        np.testing.assert_allclose(m.running_var.numpy(), rv, rtol=1e-12)
    expected = 5 if kind == "BatchNorm2d" else 0          # InstanceNorm never counts batches
    assert m.num_batches_tracked.item() == expected and m.num_batches_tracked.dtype == tg.int64


def test_eval_uses_running_stats_when_tracked_and_batch_stats_otherwise():
    x = R.standard_normal((6, 2, 3, 3))
    m = nn.BatchNorm2d(2).double().eval()
    m.running_mean.data[...] = [1.0, -1.0]
    m.running_var.data[...] = [4.0, 0.25]
    y = m(tg.tensor(x)).numpy()
    expected = (x - np.array([1.0, -1.0])[:, None, None]) / np.sqrt(np.array([4.0, 0.25])[:, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    untracked = nn.BatchNorm2d(2, track_running_stats=False).double().eval()
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)            # the batch's own biased variance
    np.testing.assert_allclose(untracked(tg.tensor(x)).numpy(), (x - mean) / np.sqrt(var + 1e-5), rtol=1e-12)


def test_switched_off_parameters_do_not_exist():
    assert list(nn.BatchNorm2d(3, affine=False).state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    assert list(nn.BatchNorm2d(3, track_running_stats=False).state_dict()) == ["weight", "bias"]
    assert list(nn.BatchNorm2d(3, bias=False).state_dict())[:1] == ["weight"]
    assert list(nn.LayerNorm(4, bias=False).state_dict()) == ["weight"]
    assert list(nn.LayerNorm(4, elementwise_affine=False).state_dict()) == []
    assert list(nn.GroupNorm(2, 4, affine=False).state_dict()) == []
    assert list(nn.InstanceNorm2d(3).state_dict()) == []
    assert list(nn.RMSNorm(4, elementwise_affine=False).state_dict()) == []
    assert nn.BatchNorm2d(3, affine=False).weight is None


@pytest.mark.parametrize("impl", ["fused", "composite"])
def test_constant_channels_give_zero_output_and_finite_gradients(impl):
    x = tg.tensor(np.full((4, 2, 3, 3), 7.0), requires_grad=True)
    m = nn.BatchNorm2d(2, impl=impl).double()
    y = m(x)
    np.testing.assert_array_equal(y.numpy(), 0.0)
    y.backward(tg.tensor(R.standard_normal(y.shape)))
    assert np.isfinite(x.grad.numpy()).all()
    assert all(np.isfinite(p.grad.numpy()).all() for p in m.parameters())


def test_float32_large_mean_normalizes_like_float64():
    x = R.standard_normal((64, 8, 28, 28)) + 1e4
    y64 = nn.BatchNorm2d(8).double()(tg.tensor(x)).numpy()
    y32 = nn.BatchNorm2d(8)(tg.tensor(x.astype(np.float32))).numpy()
    assert np.abs(y32 - y64).max() < 1e-2


def test_float16_input_accumulates_in_float32():
    x = R.standard_normal((8, 4, 6, 6)) * 3 + 50
    y16 = nn.BatchNorm2d(4).to(tg.float16)(tg.tensor(x.astype(np.float16)))
    y64 = nn.BatchNorm2d(4).double()(tg.tensor(x)).numpy()
    assert y16.dtype == tg.float16
    assert np.abs(y16.numpy().astype(np.float64) - y64).max() < 5e-2


def test_functional_forms_match_modules():
    x = tg.tensor(R.standard_normal((2, 4, 3, 3)))
    w, b = tg.tensor(R.uniform(0.5, 1.5, 4)), tg.tensor(R.standard_normal(4))
    np.testing.assert_allclose(F.group_norm(x, 2, w, b).numpy(),
                               _with(nn.GroupNorm(2, 4).double(), w, b)(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(F.instance_norm(x, weight=w, bias=b).numpy(),
                               _with(nn.InstanceNorm2d(4, affine=True).double(), w, b)(x).numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(F.layer_norm(x, (3, 3)).numpy(), nn.LayerNorm((3, 3)).double()(x).numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(F.rms_norm(x, (3,)).numpy(), nn.RMSNorm(3).double()(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(F.local_response_norm(x, 3).numpy(), nn.LocalResponseNorm(3)(x).numpy(), rtol=1e-5, atol=1e-6)
    y = F.batch_norm(x, None, None, w, b, training=True, impl="composite")
    np.testing.assert_allclose(y.numpy(), F.batch_norm(x, None, None, w, b, training=True).numpy(), rtol=1e-5,
                               atol=1e-6)


def _with(module, w, b):
    module.weight.data[...] = w.data
    module.bias.data[...] = b.data
    return module


def test_planted_bug_in_the_closed_form_is_caught(monkeypatch, cpu_path):
    """Drop the -Σg_hat/m term from the hand-derived backward: gradcheck and the composite oracle both object."""
    if cpu_path == "numpy":
        from tinygradnorm.backend.norm import ArrayNorm
        monkeypatch.setattr(ArrayNorm, "standardize_backward", mutant(
            ArrayNorm.standardize_backward, "m * g_hat - sum_g_hat.astype(dt) - x_hat", "m * g_hat - x_hat"))
    else:
        from tinygradnorm.backend.cpu_kernels import norm
        monkeypatch.setattr(norm, "_channels_backward", mutant(
            norm._channels_backward, "k = -sc * sg / m\n", "k = 0.0\n"))
    m, x = prepare(ALL[IDS.index("bn2d-affine1-track1")], "cpu")
    fn, params = with_params(m)
    with pytest.raises(tg.GradcheckError):
        tg.gradcheck(fn, (x, *params))
    comp, _ = prepare(ALL[IDS.index("bn2d-affine1-track1")], "cpu", "composite")
    grads = []
    for mod in (m, comp):
        xi = x.detach().requires_grad_()
        mod(xi).backward(tg.tensor(R.standard_normal(x.shape)))
        grads.append(xi.grad.numpy())
    assert np.abs(grads[0] - grads[1]).max() > 1e-6
