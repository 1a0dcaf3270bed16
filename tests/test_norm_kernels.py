"""The compiled normalization kernels (backend/cpu_kernels/norm.py).

- Each layer reaches the kernel layout the module's table promises.
- A planted bug in any kernel, forward or backward, train or eval, is caught by float64 gradcheck or by the
  composite (autograd) oracle: the checks of tests/test_norm.py can fail on every kernel.
- The rows layout's partial parameter gradients join correctly however many blocks the rows are cut into.
- Every kernel gives the same bits on one thread as on all of them.
- Inputs far outside float32's comfortable range take the float64 fallback and stay accurate.

Parity with PyTorch on both CPU paths is in tests/test_norm_torch.py, and the kernels' agreement with the
NumPy path follows from both matching the composite layers (tests/test_norm.py runs everything on both).
"""
import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm import nn
from conftest import mutant

BACKEND = tg.device("cpu").backend
pytestmark = pytest.mark.skipif(BACKEND.kernels is None, reason=f"no compiled CPU kernels: {BACKEND.kernels_missing}")

if BACKEND.kernels is not None:
    from tinygradnorm.backend.cpu_kernels import norm

# (id, module factory taking impl=, input shape, the layout its training forward takes)
LAYERS = [
    ("bn2d", lambda impl: nn.BatchNorm2d(3, impl=impl), (4, 3, 5, 5), "channels"),
    ("bn1d_2d", lambda impl: nn.BatchNorm1d(70, impl=impl), (9, 70), "columns"),      # two column blocks
    ("bn1d_3d", lambda impl: nn.BatchNorm1d(3, impl=impl), (4, 3, 6), "channels"),
    ("in2d", lambda impl: nn.InstanceNorm2d(3, affine=True, impl=impl), (2, 3, 4, 4), "channels"),
    ("ln", lambda impl: nn.LayerNorm(6, impl=impl), (5, 4, 6), "rows"),                # 20 rows, 16 blocks
    ("ln_2d", lambda impl: nn.LayerNorm((3, 4), impl=impl), (5, 3, 4), "rows"),
    ("ln_no_affine", lambda impl: nn.LayerNorm(6, elementwise_affine=False, impl=impl), (5, 6), "channels"),
    ("gn", lambda impl: nn.GroupNorm(2, 6, impl=impl), (3, 6, 2, 3), "groups"),
    ("gn_on_vectors", lambda impl: nn.GroupNorm(2, 6, impl=impl), (3, 6), "rows"),       # G = 2 weight rows
    ("gn_no_affine", lambda impl: nn.GroupNorm(3, 6, affine=False, impl=impl), (3, 6, 4), "channels"),
    ("rms", lambda impl: nn.RMSNorm(6, impl=impl), (5, 4, 6), None),
    # statistics of two elements: the backward's elementwise pass in float64 (norm._in_float32)
    ("in_tiny", lambda impl: nn.InstanceNorm2d(3, affine=True, impl=impl), (2, 3, 2, 1), "channels"),
    ("bn1d_tiny", lambda impl: nn.BatchNorm1d(5, impl=impl), (2, 5), "columns"),
    ("ln_tiny", lambda impl: nn.LayerNorm(2, impl=impl), (6, 2), "rows"),
    ("rms_tiny", lambda impl: nn.RMSNorm(2, impl=impl), (5, 2), None),
]
IDS = [c[0] for c in LAYERS]


def _random_module(make, impl, seed=0, mean=0.0):
    rng = np.random.default_rng(seed)
    m = make(impl).double()
    for p in m.parameters():
        p.data[...] = rng.uniform(0.5, 1.5, p.shape)
    if getattr(m, "running_mean", None) is not None:       # float32 values, the same in a float32 copy
        m.running_mean.data[...] = (mean + rng.standard_normal(m.running_mean.shape)).astype(np.float32)
        m.running_var.data[...] = rng.uniform(0.5, 2.0, m.running_var.shape).astype(np.float32)
    return m


def _grads(m, x, gy):
    """(y, gx, *parameter gradients) of one call of m, in float64 NumPy arrays."""
    xi = tg.tensor(x, requires_grad=True)
    m.zero_grad()
    y = m(xi)
    y.backward(tg.tensor(gy))
    return [y.numpy(), xi.grad.numpy()] + [p.grad.numpy() for p in m.parameters()]


def _fused_vs_composite(make, shape, training, seed=1):
    """The largest difference between the fused layer (kernels) and the composite one, outputs and gradients."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 0.5
    gy = rng.standard_normal(shape)
    fused, comp = _random_module(make, "fused"), _random_module(make, "composite")
    fused.train(training)
    comp.train(training)
    return max(np.abs(a - b).max() for a, b in zip(_grads(fused, x, gy), _grads(comp, x, gy)))


def _gradcheck_passes(make, shape, training):
    m = _random_module(make, "fused")
    m.train(training)
    names = [n for n, _ in m.named_parameters()]

    def fn(x, *params):
        for name, p in zip(names, params):
            m._parameters[name] = p
        return m(x)
    x = tg.tensor(np.random.default_rng(2).standard_normal(shape), requires_grad=True)
    params = [p.detach().requires_grad_() for p in m.parameters()]
    try:
        return tg.gradcheck(fn, (x, *params))
    except tg.GradcheckError:
        return False


@pytest.mark.parametrize("case", LAYERS, ids=IDS)
def test_each_layer_takes_the_layout_the_table_gives(case, monkeypatch):
    name, make, shape, expected = case
    if expected is None:
        pytest.skip("RMSNorm has a kernel of its own")
    seen = []
    layout_of = norm._layout

    def spy(*args):
        layout = layout_of(*args)
        seen.append(None if layout is None else layout.kind)
        return layout
    monkeypatch.setattr(norm, "_layout", spy)
    BACKEND.kernels._layouts.clear()
    _random_module(make, "fused")(tg.tensor(np.ones(shape)))
    assert seen == [expected]


@pytest.mark.parametrize("case", LAYERS, ids=IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_kernels_match_the_composite_layers(case, training):
    _, make, shape, _ = case
    assert _fused_vs_composite(make, shape, training) < 1e-10


# Planted bugs: (kernel, text, replacement, a layer that runs it, training). Each is a plausible slip in the
# formula, not a wholesale change.
PLANTED = [
    ("_channels_forward", "sc = inv * weight[s]", "sc = inv * weight[s] * weight[s]", "bn2d", True),
    ("_channels_backward", "a = -sc * inv * inv * sgc / m", "a = -sc * inv * sgc / m", "bn2d", True),
    ("_columns_forward", "mean[lo + s], var[lo + s], inv_std[lo + s] = _finish(mu[s], sum_c[s], sum_cc[s], p, eps)",
     "mean[lo + s], var[lo + s], inv_std[lo + s] = _finish(mu[s], sum_c[s], sum_cc[s], p - 1, eps)", "bn1d_2d",
     True),
    ("_columns_backward", "k[s] = -sc[s] * sg[s] / p", "k[s] = 0.0", "bn1d_2d", True),
    ("_rows_forward", "inv_t = T(inv)", "inv_t = T(inv * inv)", "ln", True),
    ("_rows_backward", "sum_gy_xhat[blk, g, k] += gyk * c * inv", "sum_gy_xhat[blk, g, k] = gyk * c * inv", "ln",
     True),
    ("_rows_backward", "kk = -inv * s1 / k_", "kk = -inv * s1 / (k_ + 1)", "gn_on_vectors", True),
    ("_rows_backward", "sum_gy[blk] = 0.0", "sum_gy[blk] = 1.0", "ln", True),     # a block starts from stale partials
    ("_groups_forward", "scale = T(sc)", "scale = T(inv_w)", "gn", True),
    # the software pipeline's bookkeeping: a row written with the factors of the row after it
    ("_rows_forward", "w = max(s - 1, lo)", "w = min(s, hi - 1)", "ln", True),
    ("_groups_forward", "w = max(s - 1, lo)", "w = r", "gn", True),
    ("_groups_backward", "s1 += weight[g, k] * t1", "s1 += t1", "gn", True),
    ("_frozen_forward", "y[i, s, j] = (x[i, s, j] - c) * a + b", "y[i, s, j] = x[i, s, j] * a + b", "bn2d", False),
    ("_frozen_columns_forward", "out[s] = (row[s] - centre[s]) * scale[s] + offset[s]",
     "out[s] = row[s] * scale[s] + offset[s]", "bn1d_2d", False),
    ("_frozen_backward", "sgc += g * (x[i, s, j] - mu)", "sgc += g * x[i, s, j]", "bn2d", False),
    ("_frozen_columns_backward", "sgc[s] += g * (row[s] - mean[lo + s])", "sgc[s] += g * row[s]", "bn1d_2d", False),
    ("_rms_forward", "inv = 1.0 / np.sqrt(total / k_ + eps)", "inv = 1.0 / np.sqrt(total / (k_ - 1) + eps)", "rms",
     True),
    ("_rms_backward", "a = -inv * inv * inv * s2 / k_", "a = -inv * inv * s2 / k_", "rms", True),
    # the float64 pass of tiny statistics, with the gradient's mean taken out first
    ("_channels_backward", "sc * (gy[i, s, j] - g_mean)", "sc * gy[i, s, j]", "in_tiny", True),
    ("_columns_backward", "sc[s] * (gy[i, lo + s] - sg[s] / p)", "sc[s] * gy[i, lo + s]", "bn1d_tiny", True),
    ("_rows_backward", "inv * (weight[g, k] * gy[s, k] - g_mean)", "inv * (weight[g, k] * gy[s, k])", "ln_tiny",
     True),
    ("_rms_backward", "a = -inv * inv * inv * s2 / k_", "a = -inv * inv * s2 / k_", "rms_tiny", True),
]


@pytest.mark.parametrize("kernel, old, new, layer, training", PLANTED,
                         ids=[f"{p[0]}-{p[3]}-{'train' if p[4] else 'eval'}" for p in PLANTED])
def test_a_planted_bug_in_any_kernel_is_caught(kernel, old, new, layer, training, monkeypatch):
    _, make, shape, _ = LAYERS[IDS.index(layer)]
    assert _fused_vs_composite(make, shape, training) < 1e-10          # the real kernel passes ...
    monkeypatch.setattr(norm, kernel, mutant(getattr(norm, kernel), old, new))
    assert _fused_vs_composite(make, shape, training) > 1e-6            # ... the planted bug does not
    if "backward" in kernel:
        assert not _gradcheck_passes(make, shape, training)             # and gradcheck says so on its own


def _float32_error(make, shape, training):
    """The largest error of the float32 layer on inputs with mean 1e4 and std 1, against the composite layer in
    float64 (relative to each array's largest value)."""
    rng = np.random.default_rng(5)
    x = (1e4 + rng.standard_normal(shape)).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    out = []
    for impl, dtype in (("fused", np.float32), ("composite", np.float64)):
        m = _random_module(make, impl, mean=1e4).to(tg.float32 if dtype == np.float32 else tg.float64)
        m.train(training)
        out.append(_grads(m, x.astype(dtype), gy.astype(dtype)))
    return max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(*out))


@pytest.mark.parametrize("case", LAYERS, ids=IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_float32_inputs_far_from_zero_keep_float32_accuracy(case, training):
    """x - centre is exact in float32 when x is near the mean: no digits lost to a mean of 1e4 (std 1); the
    error stays at float32's resolution (1.2e-7 measured at most)."""
    _, make, shape, _ = case
    assert _float32_error(make, shape, training) < 1e-6


# Bugs that only float32 can see: the centre's rounding dropped, or the centre itself (float64 loses nothing).
PLANTED_FLOAT32 = [
    ("_channels_forward", "offset = T(bias[s] - (mu - centre) * sc)", "offset = T(bias[s] - mu * sc)", "bn2d", True),
    ("_channels_backward", "k_t = T(sc), T(a), T(k - a * (mu - centre))", "k_t = T(sc), T(a), T(k)", "bn2d", True),
    ("_rows_forward", "centre = T(mu)", "centre = T(0.0)", "ln", True),
    ("_groups_forward", "offset = T(bias[g, k] - (mu_w - centre) * sc)", "offset = T(bias[g, k])", "gn",
     True),
    ("_frozen_forward", "y[i, s, j] = (x[i, s, j] - c) * a + b", "y[i, s, j] = x[i, s, j] * a + (b - c * a)", "bn2d",
     False),
    ("_frozen_columns_forward", "out[s] = (row[s] - centre[s]) * scale[s] + offset[s]",
     "out[s] = row[s] * scale[s] + (offset[s] - centre[s] * scale[s])", "bn1d_2d", False),
]


@pytest.mark.parametrize("kernel, old, new, layer, training", PLANTED_FLOAT32,
                         ids=[f"{p[0]}-{p[3]}" for p in PLANTED_FLOAT32])
def test_a_planted_float32_only_bug_is_caught(kernel, old, new, layer, training, monkeypatch):
    _, make, shape, _ = LAYERS[IDS.index(layer)]
    monkeypatch.setattr(norm, kernel, mutant(getattr(norm, kernel), old, new))
    assert _float32_error(make, shape, training) > 5e-6


@pytest.mark.parametrize("blocks", [1, 3, 16, 64])
@pytest.mark.parametrize("layer", ["ln", "rms", "gn_on_vectors"])
def test_the_rows_partial_gradients_join_for_any_number_of_blocks(layer, blocks, monkeypatch):
    monkeypatch.setattr(norm, "_BLOCKS", blocks)
    _, make, shape, _ = LAYERS[IDS.index(layer)]
    assert _fused_vs_composite(make, (13,) + shape[1:], True) < 1e-10
    assert _gradcheck_passes(make, (13,) + shape[1:], True)


@pytest.mark.parametrize("layer", ["ln", "ln_2d", "gn_on_vectors"])
def test_the_rows_forward_without_pass_1_ahead_matches_too(layer, monkeypatch):
    """The test inputs are small, so _rows_forward runs pass 1 ahead; large ones run it on its own."""
    monkeypatch.setattr(norm, "_AHEAD_BYTES", 0)
    _, make, shape, _ = LAYERS[IDS.index(layer)]
    for training in (True, False):
        assert _fused_vs_composite(make, shape, training) < 1e-10
    assert _gradcheck_passes(make, shape, True)


# every layer, and the rows layout once more with _rows_forward's pass 1 on its own (as for large inputs)
THREAD_CASES = [(case, True) for case in LAYERS] + [(case, False) for case in LAYERS if case[3] == "rows"]


@pytest.mark.parametrize("case, ahead", THREAD_CASES,
                         ids=[c[0] + ("" if ahead else "-pass_1_on_its_own") for c, ahead in THREAD_CASES])
def test_one_thread_and_all_threads_give_the_same_bits(case, ahead, monkeypatch):
    _, make, shape, _ = case
    monkeypatch.setattr(norm, "_AHEAD_BYTES", norm._AHEAD_BYTES if ahead else 0)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32,) + shape[1:]) * 3 + 1
    gy = rng.standard_normal(x.shape)
    results = []
    for threads in (1, BACKEND.threads, 7):
        monkeypatch.setattr(BACKEND, "threads", threads)
        for dtype in (np.float32, np.float64):          # float64 shows what a float32 rounding could hide
            m = _random_module(make, "fused").to(tg.float32 if dtype == np.float32 else tg.float64)
            for training in (True, False):
                m.train(training)
                results.append(b"".join(a.tobytes() for a in _grads(m, x.astype(dtype), gy.astype(dtype))))
    half = len(results) // 3
    assert results[:half] == results[half:2 * half] == results[2 * half:]


@pytest.mark.parametrize("layer", ["bn2d", "bn1d_2d", "ln", "gn", "rms"])
def test_float32_inputs_of_1e30_take_the_float64_fallback_and_stay_accurate(layer):
    """The backward's factor a ~ 1e-60 leaves float32's range here; the elementwise pass then runs in float64."""
    _, make, shape, _ = LAYERS[IDS.index(layer)]
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 1e30).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    ours = _grads(make("fused").float(), x, gy)
    ref = _grads(make("composite").double(), x.astype(np.float64), gy.astype(np.float64))
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
