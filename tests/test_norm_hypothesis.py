"""Property-based differential test: random normalization layers, inputs and train/eval sequences, against PyTorch.

Hypothesis draws a layer (any of the ten, with random constructor arguments), an input shape, a
scale and an offset, a strided or contiguous layout, and a sequence of train and eval steps. At
each step both libraries run forward and backward in float64 from the same state; outputs, the
input's gradient (through the strided view), parameter gradients and running statistics must agree.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import tinygradnorm as tg  # noqa: E402

LAYERS = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
          "LayerNorm", "GroupNorm", "RMSNorm", "LocalResponseNorm"]
EXAMPLES = 25           # per layer and CPU path: 500 examples in all
SPATIAL = {"BatchNorm1d": (0, 1), "BatchNorm2d": (2,), "BatchNorm3d": (3,), "InstanceNorm1d": (1,),
           "InstanceNorm2d": (2,), "InstanceNorm3d": (3,)}


@st.composite
def cases(draw, layer):
    """(constructor args, kwargs, input shape) for one layer, then scale, offset, strided, steps, seed."""
    small = st.integers(1, 4)
    if layer in SPATIAL:
        c = draw(small)
        spatial = draw(st.sampled_from(SPATIAL[layer]))
        n = draw(st.integers(2 if layer.startswith("Batch") else 1, 4))
        shape = (n, c) + tuple(draw(st.integers(2, 4)) for _ in range(spatial))
        kwargs = dict(affine=draw(st.booleans()), track_running_stats=draw(st.booleans()),
                      momentum=draw(st.sampled_from([0.1, 0.5, 1.0, None])), eps=draw(st.sampled_from([1e-5, 1e-2])))
        if layer.startswith("Batch") and n * int(np.prod(shape[2:])) == 1:
            shape = (2,) + shape[1:]
        args = (c,)
    elif layer == "GroupNorm":
        g = draw(small)
        c = g * draw(st.integers(1, 3))
        shape = (draw(st.integers(1, 3)), c) + tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(0, 2))))
        if shape[0] * (c // g) * int(np.prod(shape[2:])) == 1:
            shape = (2,) + shape[1:]
        args, kwargs = (g, c), dict(affine=draw(st.booleans()), eps=draw(st.sampled_from([1e-5, 1e-2])))
    elif layer == "LocalResponseNorm":
        shape = (draw(small), draw(st.integers(1, 6))) + tuple(draw(small) for _ in range(draw(st.integers(1, 2))))
        args = (draw(st.integers(1, 5)),)
        kwargs = dict(alpha=draw(st.sampled_from([1e-4, 0.5])), beta=draw(st.sampled_from([0.75, 0.3])),
                      k=draw(st.sampled_from([1.0, 2.0])))
    else:
        lead = tuple(draw(small) for _ in range(draw(st.integers(1, 2))))
        norm = tuple(draw(st.integers(2 if layer == "LayerNorm" else 1, 5)) for _ in range(draw(st.integers(1, 2))))
        shape = lead + norm
        args = (list(norm),)
        kwargs = dict(elementwise_affine=draw(st.booleans()), eps=draw(st.sampled_from([1e-5, 1e-2, None])))
        if layer == "LayerNorm":
            kwargs["bias"] = draw(st.booleans())
            kwargs["eps"] = kwargs["eps"] or 1e-5
    return (args, kwargs, shape, draw(st.sampled_from([1e-3, 1.0, 1e3])), draw(st.sampled_from([0.0, 3.0, -1e4])),
            draw(st.booleans()), draw(st.lists(st.sampled_from(["train", "eval"]), min_size=1, max_size=4)),
            draw(st.integers(0, 2 ** 16)))


def _state(module):
    """Parameter gradients and buffers, by name, as float64 arrays."""
    out = {f"grad:{k}": p.grad for k, p in module.named_parameters()}
    out.update({f"buffer:{k}": b for k, b in module.named_buffers() if b is not None})
    return {k: None if v is None else np.asarray(v.detach().numpy(), dtype=np.float64) for k, v in out.items()}


def _differential(layer, case):
    args, kwargs, shape, scale, offset, strided, steps, seed = case
    rng = np.random.default_rng(seed)
    theirs = getattr(torch.nn, layer)(*args, **kwargs).double()
    ours = getattr(tg.nn, layer)(*args, **kwargs).double()
    with torch.no_grad():                          # start from a random state, not the defaults
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.uniform(0.5, 1.5, p.shape)))
    ours.load_state_dict({k: tg.tensor(v.numpy(), dtype=tg.float64) for k, v in theirs.state_dict().items()})
    for step in steps:
        theirs.train(step == "train"), ours.train(step == "train")
        stored = shape[:-1] + (2 * shape[-1],) if strided else shape
        raw = rng.standard_normal(stored) * scale + offset
        gy = rng.standard_normal(shape)
        t_base = torch.tensor(raw, requires_grad=True)
        o_base = tg.tensor(raw, dtype=tg.float64, requires_grad=True)
        t_x, o_x = (t_base[..., ::2], o_base[..., ::2]) if strided else (t_base, o_base)
        theirs.zero_grad(), ours.zero_grad()
        t_y, o_y = theirs(t_x), ours(o_x)
        t_y.backward(torch.tensor(gy))
        o_y.backward(tg.tensor(gy, dtype=tg.float64))
        where = f"{layer}{args} {kwargs} on {shape} x{scale}+{offset} strided={strided}, {step} step of {steps}"
        # NOTE: centring data of offset/scale = 1e7 leaves float64 only ~1e-9 of relative precision, for any
        # implementation; the tolerance grows with that conditioning (1e-8 at offset/scale <= 1e6).
        tol = max(1e-8, 1e-14 * (1 + abs(offset) / scale))
        np.testing.assert_allclose(o_y.numpy(), t_y.detach().numpy(), rtol=tol, atol=tol, err_msg=where)
        # NOTE: the input's gradient can be a small difference of terms of size |gy| / scale (exactly 0 for two
        # values per statistic); its error is relative to those terms, not to the result.
        g = t_base.grad.numpy()
        np.testing.assert_allclose(o_base.grad.numpy(), g, rtol=tol, atol=tol * max(np.abs(g).max(), np.abs(gy).max()
                                                                                        / scale), err_msg=where)
        t_state, o_state = _state(theirs), _state(ours)
        assert t_state.keys() == o_state.keys(), where
        for k in t_state:
            assert (t_state[k] is None) == (o_state[k] is None), (k, where)
            if t_state[k] is not None:
                np.testing.assert_allclose(o_state[k], t_state[k], rtol=tol, atol=tol * np.abs(t_state[k]).max(),
                                           err_msg=f"{k}: {where}")


@pytest.mark.usefixtures("cpu_path")
@pytest.mark.parametrize("layer", LAYERS)
def test_random_norm_layers_match_torch(layer):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(cases(layer))
    def check(case):
        ran.append(case)
        _differential(layer, case)
    ran = []
    check()
    assert len(ran) >= EXAMPLES    # every example ran (and passed) on this path
