"""Bad input to the normalization layers: clear errors naming the layer and the shapes."""
import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm import nn
import tinygradnorm.nn.functional as F


def test_wrong_number_of_dims():
    with pytest.raises(ValueError, match=r"BatchNorm2d expected 4D input \(got 3D input of shape \(2, 3, 4\)\)"):
        nn.BatchNorm2d(3)(tg.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"BatchNorm1d expected 2D or 3D input \(got 4D input"):
        nn.BatchNorm1d(3)(tg.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"BatchNorm3d expected 5D input \(got 4D input"):
        nn.BatchNorm3d(3)(tg.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"InstanceNorm1d expected 2D or 3D input \(got 4D input"):
        nn.InstanceNorm1d(3)(tg.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"Expected 3D or higher dimensionality input \(got 2 dimensions"):
        nn.LocalResponseNorm(2)(tg.zeros(2, 3))


def test_channel_count_mismatch():
    with pytest.raises(ValueError, match=r"BatchNorm2d expected input with 3 channels \(num_features\) at dim 1, got 4 "
                                         r"channels in input of shape \(2, 4, 5, 5\)"):
        nn.BatchNorm2d(3)(tg.zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"InstanceNorm1d: expected input's size at dim=1 to match num_features \(3\), "
                                         r"but got: 4"):
        nn.InstanceNorm1d(3, affine=True)(tg.zeros(2, 4, 5))
    with pytest.warns(UserWarning, match="does not match num_features"):
        nn.InstanceNorm1d(3)(tg.randn(2, 4, 5))
    with pytest.raises(ValueError, match=r"GroupNorm expected input \(N, 6, \*\) with 6 channels at dim 1, got input of "
                                         r"shape \(2, 4, 3\)"):
        nn.GroupNorm(2, 6)(tg.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"batch_norm: expected running_mean of shape \(3,\) to match the 3 channels"):
        F.batch_norm(tg.zeros(2, 3), tg.zeros(4), tg.ones(4))


def test_one_value_per_channel_when_training():
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training, got input size "
                                         r"\(1, 3\)"):
        nn.BatchNorm1d(3)(tg.zeros(1, 3))
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel when training, got input size "
                                         r"\(1, 3, 1, 1\)"):
        nn.BatchNorm2d(3)(tg.zeros(1, 3, 1, 1))
    nn.BatchNorm1d(3).eval()(tg.zeros(1, 3))  # fine in eval mode, with running statistics
    with pytest.raises(ValueError, match=r"Expected more than 1 spatial element when training"):
        nn.InstanceNorm1d(3)(tg.zeros(2, 3, 1))


def test_group_norm_divisibility_at_construction():
    with pytest.raises(ValueError, match=r"GroupNorm: num_channels \(6\) must be divisible by num_groups \(4\)"):
        nn.GroupNorm(4, 6)


def test_layer_norm_trailing_shape():
    with pytest.raises(ValueError, match=r"Given normalized_shape=\[4\], expected input with shape \[\*, 4\], but got "
                                         r"input of size\[2, 3\]"):
        nn.LayerNorm(4)(tg.zeros(2, 3))
    with pytest.raises(ValueError, match=r"normalized_shape=\[3, 4\].*size\[2, 4, 4\]"):
        nn.LayerNorm((3, 4))(tg.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"rms_norm: Given normalized_shape=\[4\]"):
        nn.RMSNorm(4)(tg.zeros(2, 3))


@pytest.mark.parametrize("make", [
    lambda: nn.BatchNorm2d(0), lambda: nn.BatchNorm1d(-2), lambda: nn.InstanceNorm2d(0), lambda: nn.GroupNorm(0, 4),
    lambda: nn.LayerNorm(0), lambda: nn.RMSNorm((3, 0)), lambda: nn.LocalResponseNorm(0)])
def test_non_positive_sizes(make):
    with pytest.raises(ValueError, match=r"must be a positive int \(got"):
        make()


@pytest.mark.parametrize("make", [
    lambda: nn.BatchNorm2d(3, eps=0), lambda: nn.BatchNorm1d(3, eps=-1e-5), lambda: nn.LayerNorm(3, eps=0.0),
    lambda: nn.GroupNorm(1, 3, eps=0), lambda: nn.RMSNorm(3, eps=0), lambda: nn.InstanceNorm1d(3, eps=-1)])
def test_non_positive_eps(make):
    with pytest.raises(ValueError, match=r"eps must be positive \(got"):
        make()


def test_bad_impl_and_momentum_and_dtype():
    with pytest.raises(ValueError, match=r"impl must be one of \('fused', 'composite'\) \(got 'magic'\)"):
        nn.BatchNorm2d(3, impl="magic")
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\] or None"):
        nn.BatchNorm2d(3, momentum=1.5)
    with pytest.raises(TypeError, match=r"expected a floating-point input, got dtype int64"):
        nn.BatchNorm1d(3)(tg.tensor(np.zeros((2, 3), dtype=np.int64)))


# layer_norm checks its common call in one test and sends anything else through the detailed checks: each bad
# argument below must still be refused with its own message (torch refuses each too), and each odd but valid one
# accepted as the checks would.
LAYER_NORM_REFUSED = [
    ("weight of another shape", dict(weight=np.ones(3, np.float32)), ValueError, r"expected weight of shape \(4,\)"),
    ("bias of another shape", dict(bias=np.ones((1, 4), np.float32)), ValueError, r"expected bias of shape \(4,\)"),
    ("weight of another dtype", dict(weight=np.ones(4, np.float64)), RuntimeError, "mixed dtype"),
    ("bias of another dtype", dict(bias=np.ones(4, np.float64)), RuntimeError, "mixed dtype"),
    ("another trailing shape", dict(normalized_shape=(2, 4), weight=None, bias=None), ValueError,
     r"expected input with shape \[\*, 2, 4\]"),
    ("more dims than the input", dict(normalized_shape=(1, 2, 3, 4), weight=None, bias=None), ValueError,
     "expected input with shape"),
    ("no dims", dict(normalized_shape=(), weight=None, bias=None), ValueError, "expected input with shape"),
    ("integer input", dict(x=np.ones((2, 3, 4), np.int64), weight=None, bias=None), TypeError, "floating-point input"),
]


@pytest.mark.parametrize("what, change, error, message", LAYER_NORM_REFUSED, ids=[c[0] for c in LAYER_NORM_REFUSED])
def test_layer_norm_refuses_each_bad_argument_with_its_own_message(what, change, error, message):
    import torch
    args = dict(x=np.ones((2, 3, 4), np.float32), normalized_shape=(4,), weight=np.ones(4, np.float32),
                bias=np.zeros(4, np.float32))
    args.update(change)
    as_tg = {k: tg.tensor(v) if isinstance(v, np.ndarray) else v for k, v in args.items()}
    as_torch = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in args.items()}
    with pytest.raises(error, match=message):
        F.layer_norm(as_tg["x"], as_tg["normalized_shape"], as_tg["weight"], as_tg["bias"])
    with pytest.raises((RuntimeError, ValueError, TypeError)):
        torch.nn.functional.layer_norm(as_torch["x"], as_torch["normalized_shape"], as_torch["weight"],
                                       as_torch["bias"])


@pytest.mark.parametrize("layer", ["layer_norm", "rms_norm"])
def test_a_normalized_shape_of_floats_is_refused_as_in_torch(layer):
    import torch
    x = np.ones((2, 3, 4), np.float32)
    for shape in ((3.0, 4), (4.0,), 4.0):
        with pytest.raises(TypeError, match=rf"{layer}\(\): argument 'normalized_shape' \(position 2\) must be tuple "
                                            r"of ints, but found element of type float at pos 0"):
            getattr(F, layer)(tg.tensor(x), shape)
        with pytest.raises(TypeError):
            getattr(torch.nn.functional, layer)(torch.tensor(x), shape)
    with pytest.raises(TypeError, match="LayerNorm"):
        nn.LayerNorm((2, 3.5))


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan")])
def test_layer_norm_refuses_an_eps_that_is_not_positive(eps):
    with pytest.raises(ValueError, match="eps must be positive"):
        F.layer_norm(tg.ones(2, 4), (4,), tg.ones(4), tg.zeros(4), eps=eps)


def test_layer_norm_refuses_a_weight_that_is_not_a_tensor_and_an_unknown_impl():
    with pytest.raises(TypeError, match="must be Tensors, not ndarray"):
        F.layer_norm(tg.ones(2, 4), (4,), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="impl must be one of"):
        F.layer_norm(tg.ones(2, 4), (4,), impl="fast")


def test_layer_norm_accepts_what_the_checks_accept_off_the_common_path():
    x = tg.randn(2, 3, 4)
    want = F.layer_norm(x, (3, 4)).numpy()
    for shape in ([3, 4], (np.int64(3), 4)):                   # a list, a NumPy integer
        np.testing.assert_array_equal(F.layer_norm(x, shape).numpy(), want)
    half = F.layer_norm(x.half(), (4,), tg.ones(4), tg.zeros(4))   # float32 parameters for a float16 input
    assert half.dtype == tg.float16
