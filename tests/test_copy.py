"""Tensors, modules, state dicts and optimizers copy and pickle like PyTorch's, at any point."""
import copy
import pickle

import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn as nn


def _trained_model():
    """A small model after a forward and backward on the compiled kernels (when present) and the thread pool."""
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(27, 4))
    x = tg.randn(8, 1, 8, 8)
    model(x).sum().backward()
    return model


@pytest.mark.usefixtures("cpu_path")
def test_deepcopy_of_a_used_model_and_its_state_dict():
    model = _trained_model()
    twin = copy.deepcopy(model)
    best = copy.deepcopy(model.state_dict())
    for (k, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert np.shares_memory(a.numpy(), best[k].numpy()) is False
    assert isinstance(twin[0].weight, nn.Parameter) and twin[0].weight.grad is not None
    with tg.no_grad():
        model[0].weight.add_(1.0)
    assert not np.array_equal(model[0].weight.numpy(), best["0.weight"].numpy())
    model.load_state_dict(best)                # "keep the best weights" and restore them
    np.testing.assert_array_equal(model[0].weight.numpy(), twin[0].weight.numpy())


@pytest.mark.usefixtures("cpu_path")
def test_pickle_round_trips_tensors_parameters_modules_and_optimizers():
    model = _trained_model()
    opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.step()
    model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    x = tg.randn(2, 1, 8, 8)
    model.eval(), model2.eval()
    np.testing.assert_array_equal(model(x).numpy(), model2(x).numpy())
    p = pickle.loads(pickle.dumps(model[0].weight))
    assert type(p) is nn.Parameter and p.requires_grad and p.device is tg.device("cpu") and p.grad is None
    assert len(opt2.state) == len(opt.state)


def test_non_leaf_pickles_as_a_leaf_and_refuses_deepcopy_as_in_torch():
    x = tg.randn(3, requires_grad=True)
    y = x * 2
    z = pickle.loads(pickle.dumps(y))
    assert z.is_leaf and z.requires_grad
    np.testing.assert_array_equal(z.numpy(), y.numpy())
    with pytest.raises(RuntimeError, match="graph leaves.*deepcopy t.detach"):
        copy.deepcopy(y)
    v = tg.arange(6.0).reshape(2, 3)[1]        # a view pickles its own elements only
    assert pickle.loads(pickle.dumps(v)).tolist() == [3.0, 4.0, 5.0]


def test_deepcopy_keeps_shared_parameters_shared():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, lin)
    twin = copy.deepcopy(model)
    assert twin[0].weight is twin[1].weight and twin[0].weight is not lin.weight


def test_a_device_pickles_as_its_name():
    dev = tg.device("cpu")
    assert pickle.loads(pickle.dumps(dev)) is dev and copy.deepcopy(dev) is dev
