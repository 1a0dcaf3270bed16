"""Property-based tests of the edges, in float32, fused and composite: one-element statistics (their input
gradient exactly 0), large offsets (mean about 1e3 and std 0.1 to 1: no further from float64 than PyTorch's float32
is, to a factor), and var/std with no degrees of freedom (an infinity with the sign of x - mean, as the formula
gives). The reference is PyTorch in float64 on the same float32 values."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import tinygradnorm as tg  # noqa: E402
from norm_cases import output_and_input_grad  # noqa: E402

EXAMPLES = 30
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def one_element_cases(draw):
    """A LayerNorm over trailing dims of size 1, or a GroupNorm with one channel per group and at most one
    position: every statistic holds one element."""
    if draw(st.booleans()):
        k = draw(st.integers(1, 2))
        lead = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 2))))
        return "LayerNorm", ((1,) * k,), dict(eps=draw(st.sampled_from([1e-5, 1e-8]))), lead + (1,) * k
    c = draw(st.integers(1, 4))
    n = draw(st.integers(2, 4))
    return "GroupNorm", (c, c), dict(eps=draw(st.sampled_from([1e-5, 1e-8]))), (n, c) + (1,) * draw(st.integers(0, 1))


@pytest.mark.usefixtures("cpu_path")
@pytest.mark.parametrize("impl", ["fused", "composite"])
def test_one_element_statistics_have_exactly_zero_input_gradient(impl):
    @settings(**SETTINGS)
    @given(one_element_cases(), st.integers(0, 2 ** 16))
    def check(case, seed):
        layer, args, kwargs, shape = case
        rng = np.random.default_rng(seed)
        x0 = (rng.standard_normal(shape) * rng.uniform(0.1, 10) + rng.uniform(-1e3, 1e3)).astype(np.float32)
        gy = rng.standard_normal(shape).astype(np.float32)
        m = getattr(tg.nn, layer)(*args, **kwargs, impl=impl)
        x = tg.tensor(x0, requires_grad=True)
        y = m(x)
        y.backward(tg.tensor(gy))
        assert (x.grad.numpy() == 0).all(), (case, np.abs(x.grad.numpy()).max())
        t = getattr(torch.nn, layer)(*args, **kwargs).double()(torch.tensor(x0.astype(np.float64)))
        np.testing.assert_allclose(y.detach().numpy(), t.detach().numpy(), atol=1e-6)   # (0 plus the bias)
    check()


LARGE = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "LayerNorm", "GroupNorm"]


@st.composite
def offset_cases(draw, layer):
    c = draw(st.integers(1, 4))
    if layer.startswith(("BatchNorm", "InstanceNorm")):
        spatial = {"1d": draw(st.integers(0 if layer.startswith("Batch") else 1, 1)), "2d": 2, "3d": 3}[layer[-2:]]
        shape = (draw(st.integers(2, 6)), c) + tuple(draw(st.integers(2, 6)) for _ in range(spatial))
        args, kwargs = (c,), dict(affine=draw(st.booleans()))
    elif layer == "LayerNorm":
        norm = tuple(draw(st.integers(2, 8)) for _ in range(draw(st.integers(1, 2))))
        shape = (draw(st.integers(1, 4)),) + norm
        args, kwargs = (norm,), {}
    else:
        g = draw(st.integers(1, 3))
        shape = (draw(st.integers(1, 3)), g * c, draw(st.integers(2, 8)))
        args, kwargs = (g, g * c), {}
    offset = draw(st.sampled_from([1e3, -1e3, 3e3]))
    scale = draw(st.sampled_from([0.1, 0.3, 1.0]))
    return args, kwargs, shape, offset, scale, draw(st.integers(0, 2 ** 16))


@pytest.mark.usefixtures("cpu_path")
@pytest.mark.parametrize("impl", ["fused", "composite"])
@pytest.mark.parametrize("layer", LARGE)
def test_large_offsets_in_float32_stay_close_to_float64(layer, impl):
    @settings(**SETTINGS)
    @given(offset_cases(layer))
    def check(case):
        args, kwargs, shape, offset, scale, seed = case
        rng = np.random.default_rng(seed)
        x0 = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
        gy = rng.standard_normal(shape).astype(np.float32)

        def build(nn, **extra):
            return getattr(nn, layer)(*args, **kwargs, **extra)
        ref = output_and_input_grad(torch, build, x0, gy, np.float64)
        theirs = output_and_input_grad(torch, build, x0, gy, np.float32)
        ours = output_and_input_grad(tg, lambda nn: build(nn, impl=impl), x0, gy, np.float32)
        for what, a, b, r in zip(("output", "input gradient"), ours, theirs, ref):
            size = np.abs(r).max() + np.abs(gy).max() / scale
            floor = 4e-7 * size                                  # a few float32 roundings of the result's size
            assert np.abs(a - r).max() <= max(10 * np.abs(b - r).max(), floor), (what, case)
    check()


@st.composite
def dof_cases(draw):
    shape = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 3))))
    dims = draw(st.one_of(st.none(), st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape),
                                              unique=True)))
    return shape, None if dims is None else tuple(sorted(dims)), draw(st.integers(0, 2 ** 16))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_degrees_of_freedom_follows_the_formula(dtype):
    """correction equal to the count: var is inf (nan for a count of 0) and its gradient 2 g (x - mean) / 0, an
    infinity with the sign of x - mean, nan where x is the mean."""
    @settings(**SETTINGS)
    @given(dof_cases())
    def check(case):
        shape, dims, seed = case
        rng = np.random.default_rng(seed)
        x0 = np.round(rng.standard_normal(shape) * 4) / 2            # halves: ties with the mean happen
        x0 = x0.astype(dtype)
        count = int(np.prod([shape[d] for d in dims])) if dims is not None else x0.size
        x = tg.tensor(x0, requires_grad=True)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            v = x.var(dims, correction=count)
            v.sum().backward()
        d = x0.astype(np.float64) - x0.astype(np.float64).mean(axis=dims, keepdims=True)
        expected = np.where(d == 0, np.nan, np.sign(d) * np.inf)
        got = x.grad.numpy()
        assert np.array_equal(np.isnan(got), np.isnan(expected)), case
        assert (got[~np.isnan(got)] == expected[~np.isnan(expected)]).all(), case
        assert np.isinf(v.numpy()).all() or np.isnan(v.numpy()).all()
    check()
