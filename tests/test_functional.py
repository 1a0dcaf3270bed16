"""conv2d, pooling and the losses: float64 gradcheck, and parity with PyTorch to 1e-9."""
import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn.functional as F
from conftest import leaf

R = np.random.default_rng(3)

CONV = [dict(), dict(stride=2, padding=1), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1)), dict(padding=2)]
POOL = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(3, 2), stride=1),
        dict(kernel_size=2, stride=2)]


@pytest.mark.parametrize("kw", CONV)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.usefixtures("cpu_path")
def test_conv2d_gradcheck(kw, bias, device):
    x = leaf(R.standard_normal((2, 3, 7, 6)), device)
    w = leaf(R.standard_normal((4, 3, 3, 2)), device)
    b = leaf(R.standard_normal(4), device) if bias else None
    inputs = (x, w, b) if bias else (x, w)
    assert tg.gradcheck(lambda *a: F.conv2d(*a, **kw), inputs)


@pytest.mark.usefixtures("cpu_path")
def test_conv2d_unbatched(device):
    x = leaf(R.standard_normal((3, 5, 5)), device)
    w = leaf(R.standard_normal((2, 3, 3, 3)), device)
    assert F.conv2d(x, w).shape == (2, 3, 3)
    assert tg.gradcheck(F.conv2d, (x, w))


@pytest.mark.parametrize("kw", POOL)
@pytest.mark.parametrize("pool", [F.avg_pool2d, F.max_pool2d])
@pytest.mark.usefixtures("cpu_path")
def test_pool_gradcheck(pool, kw, device):
    x = leaf(R.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 10.0, device)  # distinct values: no max ties
    assert tg.gradcheck(lambda t: pool(t, **kw), (x,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_and_nll_gradcheck(reduction, device):
    x = leaf(R.standard_normal((5, 4)), device)
    t = tg.tensor([0, 3, 1, 1, 2], device=device)
    assert tg.gradcheck(lambda z: F.cross_entropy(z, t, reduction=reduction), (x,))
    assert tg.gradcheck(lambda z: F.nll_loss(z, t, reduction=reduction), (x,))
    assert tg.gradcheck(lambda z: F.log_softmax(z, 1), (x,))


def test_cross_entropy_spatial_weight_and_ignore_index(device):
    x = leaf(R.standard_normal((2, 3, 4)), device)
    t = tg.tensor([[0, 2, -100, 1], [1, 1, 0, 2]], device=device)
    w = leaf([0.2, 1.0, 3.0], device, requires_grad=False)
    assert tg.gradcheck(lambda z: F.cross_entropy(z, t, weight=w), (x,))


def _torch_pair(torch, arrays):
    ours = [leaf(a) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    return ours, theirs


def _assert_same(ours_out, theirs_out, ours, theirs, torch, tol=1e-9):
    gy = R.standard_normal(ours_out.shape).astype(ours_out.numpy().dtype)
    ours_out.backward(tg.tensor(gy))
    theirs_out.backward(torch.tensor(gy))
    np.testing.assert_allclose(ours_out.numpy(), theirs_out.detach().numpy(), rtol=tol, atol=tol)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("kw", CONV)
@pytest.mark.usefixtures("cpu_path")
def test_conv2d_matches_torch(torch, kw):
    arrays = [R.standard_normal((3, 2, 9, 8)), R.standard_normal((5, 2, 3, 3)), R.standard_normal(5)]
    ours, theirs = _torch_pair(torch, arrays)
    _assert_same(F.conv2d(*ours, **kw), torch.nn.functional.conv2d(*theirs, **kw), ours, theirs, torch)


@pytest.mark.parametrize("kw", CONV)
@pytest.mark.usefixtures("cpu_path")
def test_conv2d_float32_matches_torch(torch, kw):
    """The float32 path (the one training takes) against PyTorch's float32, to float32 rounding."""
    arrays = [R.standard_normal(s).astype(np.float32) for s in ((4, 3, 11, 10), (6, 3, 5, 3), (6,))]
    ours = [tg.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    _assert_same(F.conv2d(*ours, **kw), torch.nn.functional.conv2d(*theirs, **kw), ours, theirs, torch, tol=1e-4)


@pytest.mark.parametrize("kw", POOL)
@pytest.mark.parametrize("name", ["avg_pool2d", "max_pool2d"])
@pytest.mark.usefixtures("cpu_path")
def test_pools_match_torch(torch, name, kw):
    ours, theirs = _torch_pair(torch, [R.standard_normal((2, 3, 9, 8))])
    _assert_same(getattr(F, name)(ours[0], **kw), getattr(torch.nn.functional, name)(theirs[0], **kw),
                 ours, theirs, torch)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(torch, reduction):
    ours, theirs = _torch_pair(torch, [R.standard_normal((6, 5)) * 3])
    target = np.array([0, 4, 2, 2, 1, 3])
    _assert_same(F.cross_entropy(ours[0], tg.tensor(target), reduction=reduction),
                 torch.nn.functional.cross_entropy(theirs[0], torch.tensor(target), reduction=reduction),
                 ours, theirs, torch)
