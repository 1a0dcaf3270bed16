"""The everyday layers: float64 gradchecks, PyTorch's initialization and module behaviour."""
import math

import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm import nn

R = np.random.default_rng(4)


def grad_inputs(module, x_shape, device):
    module.double().to(device)
    names = [n for n, _ in module.named_parameters()]

    def fn(x, *params):
        for name, p in zip(names, params):
            *path, leaf = name.split(".")
            owner = module
            for part in path:
                owner = owner._modules[part]
            owner._parameters[leaf] = p
        return module(x)
    x = tg.tensor(R.standard_normal(x_shape), device=device, requires_grad=True)
    return fn, (x, *[p.detach().requires_grad_() for p in module.parameters()])


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Linear(4, 3), (5, 4)),
    (lambda: nn.Linear(4, 3, bias=False), (2, 5, 4)),
    (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 7, 6)),
    (lambda: nn.Conv2d(1, 2, (3, 2), bias=False), (2, 1, 5, 5)),
    (lambda: nn.AvgPool2d(2), (2, 3, 6, 5)),
    (lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 2, 7, 7)),
    (lambda: nn.Flatten(), (2, 3, 4)),
    (lambda: nn.Sigmoid(), (3, 4)),
    (lambda: nn.Tanh(), (3, 4)),
    (lambda: nn.ReLU(), (3, 4)),
    (lambda: nn.Sequential(nn.Linear(4, 5), nn.Sigmoid(), nn.Linear(5, 2)), (3, 4)),
], ids=["linear", "linear_nobias_3d", "conv_stride_pad", "conv_rect_nobias", "avgpool", "maxpool", "flatten",
        "sigmoid", "tanh", "relu", "sequential"])
def test_layer_gradcheck(make, shape, device):
    fn, inputs = grad_inputs(make(), shape, device)
    assert tg.gradcheck(fn, inputs)


def test_dropout_and_loss_gradcheck(device):
    x = tg.tensor(R.standard_normal((6, 5)), device=device, requires_grad=True)
    t = tg.tensor(R.integers(0, 5, 6), device=device)
    assert tg.gradcheck(lambda z: nn.CrossEntropyLoss()(z, t), (x,))
    tg.manual_seed(3)
    drop = nn.Dropout(0.4)

    def fn(z):
        tg.manual_seed(3)  # the same mask for every evaluation
        return drop(z)
    assert tg.gradcheck(fn, (x,))


def test_dropout_semantics():
    x = tg.ones(1000, 100)
    y = nn.Dropout(0.3)(x).numpy()
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.7)}
    assert abs((y == 0).mean() - 0.3) < 0.01
    d = nn.Dropout(0.3).eval()
    assert d(x) is x
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


@pytest.mark.parametrize("make,fan_in", [(lambda: nn.Linear(50, 30), 50), (lambda: nn.Conv2d(4, 8, 3), 36)])
def test_default_init_is_pytorchs(make, fan_in):
    tg.manual_seed(0)
    m = make()
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) and the bias rule agree on this bound
    w = m.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.15 * bound      # the std of U(-b, b) is b/sqrt(3)
    assert np.abs(m.bias.numpy()).max() <= bound


def test_init_functions():
    w = tg.zeros(64, 32)
    nn.init.xavier_uniform_(w)
    assert np.abs(w.numpy()).max() <= math.sqrt(6 / 96)
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    assert abs(w.numpy().std() - math.sqrt(2 / 32)) < 0.02
    nn.init.constant_(w, 0.5)
    assert (w.numpy() == 0.5).all()
    assert nn.init.calculate_gain("tanh") == 5 / 3


def test_sequential_and_repr():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU) and len(seq[1:]) == 2
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in repr(seq)


def test_layers_match_torch(torch):
    ours = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 5))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                 torch.nn.Linear(48, 5)).double()
    ours.double().load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert repr(ours) == repr(theirs)
    x = R.standard_normal((4, 1, 8, 8))
    t = R.integers(0, 5, 4)
    loss = nn.CrossEntropyLoss()(ours(tg.tensor(x)), tg.tensor(t))
    tloss = torch.nn.CrossEntropyLoss()(theirs(torch.tensor(x)), torch.tensor(t))
    loss.backward()
    tloss.backward()
    assert abs(loss.item() - tloss.item()) < 1e-12
    for p, tp in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_module_to_and_dtype_moves():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    m.to("cpu").double()
    assert all(p.dtype == tg.float64 for p in m.parameters())
    assert m[1].num_batches_tracked.dtype == tg.int64
    assert all(p.device == "cpu" for p in m.parameters())


def test_linear_errors():
    with pytest.raises(ValueError, match=r"input \(2, 3\) has 3 features but weight \(4, 5\) expects 5"):
        nn.Linear(5, 4)(tg.zeros(2, 3))
    with pytest.raises(ValueError, match=r"in_channels must be divisible by groups \(got in_channels=3, groups=2\)"):
        nn.Conv2d(3, 2, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(2, 2, 3, padding_mode="mirror")
