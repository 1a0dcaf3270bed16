"""Tensor construction, attributes, conversions and factories."""
import numpy as np
import pytest

import tinygradnorm as tg


def test_dtype_rules():
    assert tg.Tensor(1.5).dtype == tg.float32
    assert tg.Tensor([1.0, 2.0]).dtype == tg.float32
    assert tg.Tensor(3).dtype == tg.int64
    assert tg.Tensor([True, False]).dtype == tg.bool
    assert tg.Tensor(np.zeros(2)).dtype == tg.float64  # a NumPy array keeps its dtype
    assert tg.Tensor(np.zeros(2, np.float32)).dtype == tg.float32
    assert tg.Tensor([1, 2], dtype=np.float64).dtype == tg.float64
    assert tg.Tensor([1, 2], dtype="float32").dtype == tg.float32
    with pytest.raises(TypeError, match="unsupported dtype"):
        tg.Tensor([1], dtype="not-a-dtype")
    with pytest.raises(TypeError, match="unsupported type"):
        tg.Tensor(["a", "b"])


def test_attributes(device):
    t = tg.randn(2, 3, device=device)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == tg.float32
    assert t.device == device and str(t.device) in (device, device + ":0")
    assert t.T.shape == (3, 2) and t.grad is None and not t.requires_grad
    assert t.size(1) == 3 and t.numel() == 6 and len(t) == 2


def test_conversions(device):
    t = tg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True, device=device)
    assert isinstance(t.numpy(), np.ndarray)  # works even with requires_grad
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert t[1, 0].item() == 3.0
    with pytest.raises(ValueError, match="4 elements cannot be converted"):
        t.item()
    d = t.to(tg.float64)
    assert d.dtype == tg.float64 and d.requires_grad
    d.sum().backward()
    assert t.grad.dtype == tg.float32
    assert t.to(device) is t
    assert t.detach().grad_fn is None and t.detach().data is t.data
    assert "tensor(" in repr(t) and "requires_grad=True" in repr(t)


def test_factories(device):
    assert tg.zeros(2, 3, device=device).numpy().sum() == 0
    assert tg.ones((2, 3), device=device).numpy().sum() == 6
    assert tg.full((2,), 7.0, device=device).tolist() == [7.0, 7.0]
    assert tg.full((2,), 7).dtype == tg.int64
    assert tg.arange(5, device=device).tolist() == [0, 1, 2, 3, 4]
    assert tg.arange(0, 1, 0.5).dtype == tg.float32
    x = tg.randn(3, 4, dtype=tg.float64, device=device)
    for like in (tg.zeros_like, tg.ones_like, tg.randn_like, tg.rand_like):
        y = like(x)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert tg.full_like(x, 2.0).numpy().mean() == 2.0
    r = tg.rand(1000, device=device).numpy()
    assert 0 <= r.min() and r.max() < 1


def test_manual_seed_reproduces(device):
    tg.manual_seed(7)
    a = tg.randn(5, device=device).numpy()
    tg.manual_seed(7)
    b = tg.randn(5, device=device).numpy()
    np.testing.assert_array_equal(a, b)


def test_default_device_from_env(monkeypatch):
    monkeypatch.delenv("TINYGRADNORM_DEVICE", raising=False)
    assert tg.default_device() == "cpu"
    monkeypatch.setenv("TINYGRADNORM_DEVICE", "cpu")
    assert tg.zeros(1).device == "cpu"
    monkeypatch.setenv("TINYGRADNORM_DEVICE", "tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        tg.zeros(1)


def test_setitem_and_inplace():
    t = tg.zeros(3)
    t[1] = 5.0
    assert t.tolist() == [0.0, 5.0, 0.0]
    p = tg.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
        p[0] = 1.0
    with tg.no_grad():
        p[0] = 1.0
    assert p.tolist()[0] == 1.0
