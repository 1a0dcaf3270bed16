"""Normalization layers against PyTorch: outputs, every gradient, running statistics and eval, over
several training steps; state_dict keys, shapes and dtypes; and loading PyTorch's arrays directly."""
import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm import nn
from norm_cases import ALL, IDS, make

TOL = {"float64": 1e-10, "float32": 1e-5}


@pytest.mark.parametrize("impl", ["fused", "composite"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ALL, ids=IDS)
@pytest.mark.usefixtures("cpu_path")
def test_training_steps_then_eval_match_torch(case, dtype, impl, torch):
    rng = np.random.default_rng(5)
    theirs = make(torch.nn, case).to(getattr(torch, dtype))
    ours = make(nn, case, impl=impl).to(getattr(tg, dtype))
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.uniform(0.5, 1.5, tuple(p.shape))))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})  # PyTorch's arrays load directly
    tol = TOL[dtype]

    def check(a, b):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=tol, atol=tol)

    for step in range(3):
        x = (rng.standard_normal(case[4]) * (step + 1) + step).astype(dtype)
        gy = rng.standard_normal(case[4]).astype(dtype)
        ox, tx = tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        oy, ty = ours(ox), theirs(tx)
        oy.backward(tg.tensor(gy))
        ty.backward(torch.tensor(gy))
        check(oy, ty)
        check(ox.grad, tx.grad)
        for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert name == tname
            check(p.grad, tp.grad)
            p.grad, tp.grad = None, None
        theirs_state = theirs.state_dict()
        for name, b in ours.named_buffers():
            check(b, theirs_state[name])
    ours.eval()
    theirs.eval()
    x = rng.standard_normal(case[4]).astype(dtype)
    check(ours(tg.tensor(x)), theirs(torch.tensor(x)))


@pytest.mark.parametrize("case", ALL, ids=IDS)
def test_state_dict_keys_shapes_dtypes_match_torch(case, torch):
    ours = make(nn, case).state_dict()
    theirs = make(torch.nn, case).state_dict()
    assert list(ours) == list(theirs)
    for k in ours:
        assert tuple(ours[k].shape) == tuple(theirs[k].shape), k
        assert str(ours[k].dtype) == str(theirs[k].dtype).replace("torch.", ""), k
        np.testing.assert_array_equal(ours[k].numpy(), theirs[k].numpy())


@pytest.mark.parametrize("case", ALL, ids=IDS)
def test_repr_matches_torch(case, torch):
    assert repr(make(nn, case)) == repr(make(torch.nn, case))
