"""A PyTorch user's idioms: the package layout, modules and containers (state_dict keys and reprs against
PyTorch's), factories, Size, DLPack, saving under any name, and seeded shuffling."""
import subprocess
import sys

import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn as nn

# (class name, constructor args, kwargs) for every module, with the arguments that change state or repr
MODULES = [
    ("Linear", (4, 3), {}), ("Linear", (4, 3), {"bias": False}),
    ("Conv2d", (4, 6, 3), {}), ("Conv2d", (4, 6, (3, 2)), {"stride": 2, "padding": 1, "dilation": 2, "groups": 2,
                                                             "bias": False}),
    ("Conv2d", (4, 4, 3), {"padding": "same", "padding_mode": "reflect", "groups": 4}),
    ("AvgPool2d", (2,), {}), ("AvgPool2d", (3, 2, 1), {"ceil_mode": True}), ("MaxPool2d", (2,), {}),
    ("MaxPool2d", (3, 1, 1), {"dilation": 2, "ceil_mode": True}), ("MaxUnpool2d", (2,), {}),
    ("AdaptiveAvgPool2d", ((3, None),), {}), ("AdaptiveAvgPool2d", (1,), {}),
    ("ReLU", (), {}), ("ReLU", (), {"inplace": True}), ("LeakyReLU", (0.2,), {}), ("GELU", (), {}),
    ("GELU", (), {"approximate": "tanh"}), ("SiLU", (), {}), ("Sigmoid", (), {}), ("Tanh", (), {}),
    ("Softmax", (1,), {}), ("LogSoftmax", (), {"dim": -1}), ("Flatten", (), {}), ("Identity", (), {}),
    ("Dropout", (0.3,), {}), ("Dropout2d", (), {}),
    ("CrossEntropyLoss", (), {}), ("NLLLoss", (), {}), ("MSELoss", (), {"reduction": "sum"}), ("L1Loss", (), {}),
    ("BCEWithLogitsLoss", (), {}),
]


@pytest.mark.parametrize("name, args, kwargs", MODULES, ids=[f"{m[0]}-{i}" for i, m in enumerate(MODULES)])
def test_module_state_dict_keys_and_repr_match_torch(torch, name, args, kwargs):
    ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs)


def test_weighted_losses_keep_their_weights_as_buffers(torch):
    w = np.array([1.0, 2.0, 0.5], dtype=np.float32)
    for name, kw in (("CrossEntropyLoss", "weight"), ("NLLLoss", "weight"), ("BCEWithLogitsLoss", "pos_weight")):
        ours = getattr(nn, name)(**{kw: tg.tensor(w)})
        theirs = getattr(torch.nn, name)(**{kw: torch.tensor(w)})
        assert list(ours.state_dict()) == list(theirs.state_dict()) == [kw]


def test_containers_register_their_modules_as_torchs_do(torch):
    def build(lib):
        class Net(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.blocks = lib.nn.ModuleList([lib.nn.Linear(3, 3) for _ in range(2)])
                self.heads = lib.nn.ModuleDict({"a": lib.nn.Linear(3, 1), "b": lib.nn.BatchNorm1d(3)})
                self.blocks.append(lib.nn.ReLU())
        return Net()
    ours, theirs = build(tg), build(torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert len(list(ours.parameters())) == len(list(theirs.parameters())) == 8
    assert repr(ours) == repr(theirs).replace("torch", "tinygradnorm")
    assert len(ours.blocks) == 3 and isinstance(ours.blocks[-1], nn.ReLU) and "b" in ours.heads
    assert list(ours.heads.keys()) == ["a", "b"]
    with pytest.raises(TypeError, match="holds Modules only"):
        ours.blocks.append(lambda x: x)


def test_apply_visits_children_first_and_initializes(torch):
    seen = []
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.ReLU()))

    def init(m):
        seen.append(type(m).__name__)
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.5)
    assert model.apply(init) is model
    tmodel = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    tseen = []
    tmodel.apply(lambda m: tseen.append(type(m).__name__))
    assert seen == tseen and (model[1][0].weight.numpy() == 0.5).all()


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0])
def test_clip_grad_norm_matches_torch(torch, norm_type):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)) * 10, rng.standard_normal(5)]
    ours = [tg.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for o, t, g in zip(ours, theirs, grads):
        o.grad, t.grad = tg.tensor(g), torch.tensor(g)
    total = nn.utils.clip_grad_norm_(ours, 1.5, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, 1.5, norm_type)
    assert total.item() == pytest.approx(ttotal.item(), rel=1e-12)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    ours[0].grad.data[0, 0] = np.nan
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)


def test_factories_and_tensor_attributes(torch):
    tg.manual_seed(3)
    r = tg.randint(2, 9, (100,))
    assert r.dtype == tg.int64 and r.shape == (100,) and 2 <= r.numpy().min() and r.numpy().max() < 9
    assert tg.randint(5, (2, 3)).shape == (2, 3)
    e = tg.empty(2, 3, dtype=tg.float64)
    assert e.shape == (2, 3) and e.dtype == tg.float64
    x = tg.zeros(2, 3, 4)
    assert isinstance(x.size(), tg.Size) and x.size().numel() == 24 and x.shape.numel() == 24 and x.size(1) == 3
    assert repr(x.size()) == "tinygradnorm.Size([2, 3, 4])" and x.size() == (2, 3, 4)
    assert x.half().dtype == tg.float16 and x.is_cuda is False
    assert tg.ones(2, 3).t().shape == (3, 2)


def test_tensor_copies_while_from_numpy_and_as_tensor_share():
    a = np.arange(3.0)
    copied, shared, alias = tg.tensor(a), tg.from_numpy(a), tg.as_tensor(a)
    a[0] = 9.0
    assert copied.tolist()[0] == 0.0 and shared.tolist()[0] == 9.0 and alias.tolist()[0] == 9.0
    assert shared.dtype == tg.float64
    with pytest.raises(TypeError, match="expected np.ndarray"):
        tg.from_numpy([1, 2])
    t = tg.ones(2)
    assert tg.as_tensor(t) is t and tg.as_tensor(t, dtype=tg.float64).dtype == tg.float64


def test_dlpack_moves_tensors_to_and_from_torch_and_numpy_without_a_copy(torch):
    t = torch.arange(6.0).reshape(2, 3)
    ours = tg.from_dlpack(t)
    ours.data[0, 0] = 100.0
    assert t[0, 0].item() == 100.0 and ours.shape == (2, 3)
    back = torch.from_dlpack(ours)
    back[1, 2] = -1.0
    assert ours.tolist()[1][2] == -1.0
    n = np.from_dlpack(ours)
    n[0, 1] = 7.0
    assert t[0, 1].item() == 7.0
    with pytest.raises(RuntimeError, match="require gradient"):
        torch.from_dlpack(tg.ones(2, requires_grad=True))
    with pytest.raises(TypeError, match="__dlpack__"):
        tg.from_dlpack([1.0])


def test_save_under_any_name_and_load_with_map_location(tmp_path):
    tg.save({"w": tg.ones(2)}, tmp_path / "model.pt")
    assert tg.load(tmp_path / "model.pt", map_location="cpu")["w"].tolist() == [1.0, 1.0]
    assert tg.load(str(tmp_path / "model.pt"), map_location=tg.device("cpu"))["w"].device is tg.device("cpu")


def test_dataloader_shuffles_from_the_global_generator_unless_seeded():
    data = tg.data.TensorDataset(np.arange(20.0), np.arange(20))

    def order(loader):
        return np.concatenate([y.numpy() for _, y in loader]).tolist()
    tg.manual_seed(1)
    a = order(tg.data.DataLoader(data, 5, shuffle=True))
    tg.manual_seed(1)
    b = order(tg.data.DataLoader(data, 5, shuffle=True))
    tg.manual_seed(2)
    c = order(tg.data.DataLoader(data, 5, shuffle=True))
    assert a == b and a != c
    seeded = tg.data.DataLoader(data, 5, shuffle=True, seed=4)
    tg.manual_seed(9)
    first = order(seeded)
    seeded.set_epoch(0)
    tg.manual_seed(10)
    assert order(seeded) == first                         # a seeded loader ignores the global generator


def test_the_package_layout_without_importing_anything_else():
    code = ("import tinygradnorm as tg\n"
            "m = tg.nn.Sequential(tg.nn.Linear(2, 2)); o = tg.optim.SGD(m.parameters(), lr=0.1)\n"
            "print(tg.nn.functional.relu(tg.ones(1)).item(), tg.data.DataLoader.__name__, tg.cuda.is_available(),\n"
            "      tg.optim.lr_scheduler.OneCycleLR.__name__, tg.nn.utils.clip_grad_norm_.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["1.0", "DataLoader"] and out[3:] == ["OneCycleLR", "clip_grad_norm_"]
