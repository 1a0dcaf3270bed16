"""Bad input gets an exception that names what was given and what was expected."""
import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn.functional as F


def test_shapes_that_do_not_broadcast_name_both_shapes():
    with pytest.raises(ValueError, match=r"add: .*shapes \(2, 3\) and \(4,\) do not broadcast"):
        tg.zeros(2, 3) + tg.zeros(4)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        tg.zeros(2, 3) * tg.zeros(2, 4)


def test_matmul_inner_dims():
    with pytest.raises(ValueError, match=r"mat1 and mat2 shapes cannot be multiplied \(\(2, 3\) and \(4, 5\)\).*3 and 4"):
        tg.zeros(2, 3) @ tg.zeros(4, 5)
    with pytest.raises(ValueError, match="at least 1D"):
        tg.tensor(1.0) @ tg.zeros(2)


def test_reshape_and_dims():
    with pytest.raises(ValueError, match=r"shape '\[4, 2\]' is invalid for input of size 6"):
        tg.zeros(2, 3).reshape(4, 2)
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"):
        tg.zeros(2, 3).sum(dim=2)
    with pytest.raises(ValueError, match="number of dims does not match"):
        tg.zeros(2, 3).permute(1, 0, 2)
    with pytest.raises(ValueError, match=r"cat: sizes of tensors must match except in dimension 0"):
        tg.cat([tg.zeros(2, 3), tg.zeros(2, 4)])
    with pytest.raises(ValueError, match=r"expanded size of the tensor \(4\) must match the existing size \(3\)"):
        tg.zeros(3).expand(2, 4)
    with pytest.raises(IndexError, match=r"invalid for a tensor of shape \(2, 3\)"):
        tg.zeros(2, 3)[5]


def test_cpu_and_cuda_tensors_do_not_mix():
    """A tensor claiming a CUDA device is enough to exercise the check without a GPU."""
    from tinygradnorm.backend import Device, CupyBackend
    a = tg.zeros(2)
    b = tg.zeros(2)
    b._device = Device("cuda", 0, CupyBackend(0))
    with pytest.raises(RuntimeError, match=r"same device.*\(2,\) on cpu.*\(2,\) on cuda:0.*\.to\('cuda:0'\)"):
        a + b


def test_cross_entropy_needs_integer_labels():
    logits = tg.zeros(3, 4)
    with pytest.raises(ValueError, match=r"cross_entropy: a target of class probabilities must have the input's "
                                         r"shape: expected \(3, 4\), got \(3,\).*target.long\(\)"):
        F.cross_entropy(logits, tg.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"input \(3, 4\) and target \(2,\)"):
        F.cross_entropy(logits, tg.tensor([0, 1]))
    with pytest.raises(IndexError, match="Target 4 is out of bounds"):
        F.cross_entropy(logits, tg.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(logits, tg.tensor([0, 1, 1]), reduction="avg")


def test_conv_and_pool_inputs():
    x = tg.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"expected input\[2, 3, 8, 8\] to have 1 channels, but got 3 channels"):
        F.conv2d(x, tg.zeros(4, 1, 3, 3))
    with pytest.raises(ValueError, match=r"3D \(unbatched\) or 4D \(batched\).*got input of size: \[8, 8\]"):
        F.conv2d(tg.zeros(8, 8), tg.zeros(4, 1, 3, 3))
    with pytest.raises(ValueError, match=r"padded input size per channel: \(8 x 8\)\. Kernel size: \(9 x 9\)"):
        F.conv2d(x, tg.zeros(4, 3, 9, 9))
    with pytest.raises(ValueError, match="pad should be at most half"):
        F.max_pool2d(x, 2, padding=2)


def test_requires_grad_on_integers():
    with pytest.raises(RuntimeError, match=r"only floating-point tensors can require gradients \(got dtype int64\)"):
        tg.tensor(np.arange(3)).requires_grad_()


def test_bad_device_name():
    with pytest.raises(ValueError, match="expected 'cpu', 'cuda' or 'cuda:N'"):
        tg.zeros(2, device="gpu0")
