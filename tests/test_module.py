"""Module and Parameter: registration, traversal, modes, device/dtype moves, state_dict."""
import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm.nn import Module, Parameter


class Affine(Module):
    def __init__(self, n):
        super().__init__()
        self.weight = Parameter(tg.ones(n))
        self.bias = Parameter(tg.zeros(n))
        self.register_buffer("count", tg.zeros((), dtype=tg.int64))
        self.register_buffer("scratch", tg.zeros(n), persistent=False)

    def forward(self, x):
        return x * self.weight + self.bias


class Net(Module):
    def __init__(self):
        super().__init__()
        self.a = Affine(3)
        self.b = Affine(3)
        self.scale = Parameter(tg.ones(1))

    def forward(self, x):
        return self.b(self.a(x)) * self.scale


def test_names_follow_pytorch():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["scale", "a.weight", "a.bias", "b.weight", "b.bias"]
    assert [n for n, _ in net.named_buffers()] == ["a.count", "a.scratch", "b.count", "b.scratch"]
    assert list(net.state_dict()) == ["scale", "a.weight", "a.bias", "a.count", "b.weight", "b.bias", "b.count"]
    assert len(list(net.children())) == 2 and len(list(net.modules())) == 3


def test_train_eval_recurse():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_and_parameters_get_gradients():
    net = Net()
    net(tg.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_double_float_and_to_keep_objects():
    net = Net()
    w = net.a.weight
    net.double()
    assert net.a.weight is w and w.dtype == tg.float64 and net.a.count.dtype == tg.int64
    net.half()
    assert net.a.weight is w and w.dtype == tg.float16 and net.a.count.dtype == tg.int64
    net.float()
    assert w.dtype == tg.float32
    net.to("cpu")
    assert w.device == "cpu"


def test_state_dict_round_trip_is_bit_exact():
    tg.manual_seed(0)
    src, dst = Net(), Net()
    for p in src.parameters():
        p.data[...] = tg.randn(*p.shape).data
    dst.load_state_dict(src.state_dict())
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert a.numpy().tobytes() == b.numpy().tobytes(), k


def test_load_accepts_numpy_and_keeps_dtype():
    net = Net()
    state = {k: np.full(v.shape, 2, dtype=np.float64) for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    assert net.a.weight.dtype == tg.float32 and net.a.weight.tolist() == [2.0, 2.0, 2.0]


def test_strict_load_names_keys_and_shapes():
    net = Net()
    state = dict(net.state_dict())
    del state["a.bias"]
    state["extra"] = np.zeros(1)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "a.bias".*\n.*Unexpected key\(s\) in '
                                           r'state_dict: "extra"'):
        net.load_state_dict(state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert missing == ["a.bias"] and unexpected == ["extra"]
    state = dict(net.state_dict())
    state["scale"] = np.zeros(2)
    with pytest.raises(RuntimeError, match=r"size mismatch for scale: copying a param with shape \(2,\) from "
                                           r"checkpoint, the shape in current model is \(1,\)"):
        net.load_state_dict(state, strict=False)


def test_repr_looks_like_pytorch():
    text = repr(Net())
    assert text.startswith("Net(\n  (a): Affine()\n  (b): Affine()\n)")


def test_setattr_before_init_is_a_clear_error():
    class Broken(Module):
        def __init__(self):
            self.w = Parameter(tg.ones(1))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Broken()
