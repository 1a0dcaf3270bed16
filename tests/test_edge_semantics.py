"""Edge semantics that fuzzing against PyTorch and probing as a user would turned up: each test here failed before
its fix. (The randomized counterpart, one-element statistics, no degrees of freedom and large offsets in float32,
is tests/test_norm_edge_hypothesis.py.)"""
import pathlib
import re
import warnings

import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn.functional as F
from tinygradnorm import nn
from norm_cases import output_and_input_grad

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("cpu_path")


# ---- 1. eps = 0 in eval mode: a clear refusal, never a ZeroDivisionError --------------------------------------
@pytest.mark.parametrize("call", [
    lambda x, rm, rv: F.batch_norm(x, rm, rv, training=False, eps=0.0),
    lambda x, rm, rv: F.batch_norm(x, rm, rv, training=False, eps=-1e-5),
    lambda x, rm, rv: F.instance_norm(x.reshape(2, 3, 2), rm, rv, use_input_stats=False, eps=0.0),
], ids=["batch_norm_eps0", "batch_norm_eps_negative", "instance_norm_eps0"])
def test_eval_mode_with_eps_zero_is_refused_clearly(call):
    x = tg.tensor(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    rm, rv = tg.zeros(3), tg.tensor([0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"eps must be positive \(got -?[0-9.e-]+\); it keeps 1/sqrt\(var \+ eps\)"):
        call(x, rm, rv)


def test_a_running_variance_of_minus_eps_gives_inf_or_nan_not_an_exception(torch):
    """The kernels divide as NumPy does: 1/sqrt(var + eps) = 1/0 is inf (the ZeroDivisionError came from there)."""
    x0 = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    rv = np.array([-0.5, 1.0, 2.0], np.float32)                  # var + eps exactly 0 in the first channel
    ours = F.batch_norm(tg.tensor(x0), tg.zeros(3), tg.tensor(rv), training=False, eps=0.5).numpy()
    theirs = torch.nn.functional.batch_norm(torch.tensor(x0), torch.zeros(3), torch.tensor(rv), training=False,
                                            eps=0.5).numpy()
    assert not np.isfinite(ours[:, 0]).any() and not np.isfinite(theirs[:, 0]).any()
    np.testing.assert_allclose(ours[:, 1:], theirs[:, 1:], rtol=1e-6)


# ---- 2. one value per channel is reported before a dtype mismatch, as in PyTorch -------------------------------
@pytest.mark.parametrize("layer, shape, expected", [
    ("BatchNorm1d", (1, 3), "Expected more than 1 value per channel when training"),
    ("InstanceNorm1d", (2, 3, 1), "Expected more than 1 spatial element when training"),
    ("GroupNorm", (1, 3), "Expected more than 1 value per channel when training"),
])
def test_one_value_per_channel_comes_before_the_dtype_error(torch, layer, shape, expected):
    make = {"BatchNorm1d": lambda lib: lib.BatchNorm1d(3), "InstanceNorm1d": lambda lib: lib.InstanceNorm1d(3,
            affine=True), "GroupNorm": lambda lib: lib.GroupNorm(3, 3)}[layer]
    x0 = np.zeros(shape)                                     # float64 into a float32 layer: both errors apply
    with pytest.raises(ValueError, match=expected):
        make(torch.nn)(torch.tensor(x0))
    with pytest.raises(ValueError, match=expected):
        make(nn)(tg.tensor(x0))


def test_one_value_per_channel_comes_before_a_weight_of_the_wrong_shape(torch):
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.functional.batch_norm(torch.ones(1, 3), None, None, torch.ones(4), training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        F.batch_norm(tg.ones(1, 3), None, None, tg.ones(4), training=True)


# ---- 3. var/std with no degrees of freedom: infinities with the sign of x - mean ----------------------------------
@pytest.mark.parametrize("op", ["var", "std"])
def test_zero_degrees_of_freedom_over_a_dim_carries_the_sign_of_x_minus_mean(torch, op):
    x0 = np.array([[1.0, 2.0, 4.0], [3.0, -1.0, 0.5]])
    grads = []
    for lib in (tg, torch):
        x = lib.tensor(x0, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(x, op)(1, correction=3).sum().backward()
        grads.append(x.grad.numpy())
    if op == "var":
        np.testing.assert_array_equal(grads[0], grads[1])
        np.testing.assert_array_equal(np.sign(grads[0]), np.sign(x0 - x0.mean(1, keepdims=True)))
    else:       # std = sqrt(var): d sqrt(v)/dv = 1/(2 sqrt(inf)) = 0, times an infinity: nan in both libraries
        assert np.isnan(grads[0]).all() and np.isnan(grads[1]).all()


# ---- 4. one element per statistic: the input's gradient is exactly 0 ------------------------------------------------
@pytest.mark.parametrize("make, shape", [
    (lambda lib: lib.LayerNorm(1), (6, 1)),
    (lambda lib: lib.LayerNorm((1, 1)), (2, 3, 1, 1)),
    (lambda lib: lib.GroupNorm(4, 4), (3, 4)),
    (lambda lib: lib.GroupNorm(3, 3), (2, 3, 1)),
], ids=["ln_1", "ln_1x1", "gn_one_channel_no_spatial", "gn_one_channel_one_position"])
@pytest.mark.parametrize("impl", ["fused", "composite"])
def test_a_one_element_statistic_has_exactly_zero_input_gradient(make, shape, impl, torch):
    rng = np.random.default_rng(2)
    x0 = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    m = make(nn) if impl == "fused" else _composite(make(nn))
    x = tg.tensor(x0, requires_grad=True)
    m(x).backward(tg.tensor(gy))
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(shape, np.float32))
    t = torch.tensor(x0, requires_grad=True)
    make(torch.nn)(t).backward(torch.tensor(gy))
    if "ln" in str(shape) or t.grad.abs().max() == 0:           # PyTorch's LayerNorm is exact here too
        np.testing.assert_array_equal(t.grad.numpy(), x.grad.numpy())


def _composite(module):
    module.impl = "composite"
    return module


@pytest.mark.parametrize("m, eps", [(2, 1e-8), (2, 1e-5)])
def test_tiny_statistics_keep_their_digits_in_float32(m, eps, torch):
    """Two elements per statistic: gx is a small difference of terms of size inv_std·|gy| (x_hat is ±1 up to eps,
    and P(a) vanishes but for eps). Against float64 on the same float32 values, the error stays at float32's
    resolution of each element, where the float32 rewrite left noise of inv_std·|gy|·2^-24, a hundred times some
    of the elements. (From three elements on nothing cancels so: the float32 pass is kept.)"""
    rng = np.random.default_rng(3)
    x0 = (rng.standard_normal((64, m)) + 2).astype(np.float32)
    gy = rng.standard_normal((64, m)).astype(np.float32)
    ref = torch.tensor(x0.astype(np.float64), requires_grad=True)
    torch.nn.functional.layer_norm(ref, (m,), eps=eps).backward(torch.tensor(gy.astype(np.float64)))
    x = tg.tensor(x0, requires_grad=True)
    nn.LayerNorm(m, eps=eps, elementwise_affine=False)(x).backward(tg.tensor(gy))
    relative = np.abs(x.grad.numpy() - ref.grad.numpy()) / np.abs(ref.grad.numpy())
    assert relative.max() <= 1e-6, relative.max()                    # a few float32 roundings of each element


# ---- 5. the composite twins in float32 with a large offset ---------------------------------------------------------
@pytest.mark.parametrize("make, shape", [
    (lambda lib, **k: lib.BatchNorm1d(4, **k), (64, 4, 7)),
    (lambda lib, **k: lib.BatchNorm3d(3, **k), (4, 3, 5, 6, 7)),
    (lambda lib, **k: lib.LayerNorm((6, 50), **k), (8, 6, 50)),
    (lambda lib, **k: lib.InstanceNorm2d(3, affine=True, **k), (4, 3, 20, 20)),
    (lambda lib, **k: lib.GroupNorm(2, 4, **k), (4, 4, 30, 30)),
], ids=["bn1d", "bn3d", "ln", "in2d", "gn"])
def test_the_composite_twins_are_numerically_careful_with_large_offsets(make, shape, torch):
    """Mean 1e3, std 0.1, float32: the composite layer (like the fused one) is no further from float64 than
    PyTorch's float32 is (it was 10x further before the corrected two-pass)."""
    rng = np.random.default_rng(4)
    x0 = (rng.standard_normal(shape) * 0.1 + 1e3).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)

    ref = output_and_input_grad(torch, make, x0, gy, np.float64)
    theirs = output_and_input_grad(torch, make, x0, gy, np.float32)
    for impl in ("fused", "composite"):
        ours = output_and_input_grad(tg, lambda nn: make(nn, impl=impl), x0, gy, np.float32)
        for a, b, r in zip(ours, theirs, ref):
            assert np.abs(a - r).max() <= np.abs(b - r).max(), impl


# ---- 6. contiguous() gives a row-major copy when the tensor is not one --------------------------------------------
def test_contiguous_copies_only_what_is_not_contiguous(torch):
    x = tg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    t = x.T
    assert not t.is_contiguous()
    c = t.contiguous()
    assert c.is_contiguous() and c is not t
    np.testing.assert_array_equal(c.numpy(), t.numpy())
    assert x.contiguous() is x                                   # already contiguous: the tensor itself
    (c * tg.tensor(np.arange(6.0).reshape(3, 2))).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.arange(6.0).reshape(3, 2).T)   # differentiable, as in torch
    assert torch.tensor(np.arange(6.0).reshape(2, 3)).T.contiguous().is_contiguous()


# ---- 7. the README's test command tests everything that runs on a CPU ---------------------------------------------
def test_the_readme_test_command_installs_every_extra_ci_does():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r'pip install -e "\.\[([^\]]*)\]" && pytest', readme)
    assert command, "the README gives its test command as pip install -e \".[...]\" && pytest"
    ci_extras = set(re.search(r'pip install -q -e "\.\[([^\]]*)\]"', ci).group(1).split(","))
    assert set(command.group(1).split(",")) >= ci_extras >= {"test", "oracle", "mpi"}
