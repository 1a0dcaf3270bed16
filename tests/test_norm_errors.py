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
