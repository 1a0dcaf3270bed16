"""The convolution family against PyTorch: conv1d/2d/3d and conv_transpose1d/2d/3d, their modules, every argument
(int and tuple padding, 'same' and 'valid', padding modes, stride, dilation, groups, bias, output_padding and
output_size), first and second derivatives in float64, errors, reprs and state_dict keys, on both CPU paths.
PyTorch's own test inputs for every one of them run in tests/test_torch_opinfo.py."""
import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn.functional as F
from tinygradnorm import nn

pytestmark = pytest.mark.usefixtures("cpu_path")
R = np.random.default_rng(13)

# (d, kwargs for F.conv{d}d); the weight is (6, 4/groups, *kernel) on an input (2, 4, *spatial)
CONV = [
    (1, dict()), (1, dict(stride=2, padding=2, dilation=2)), (1, dict(padding="same", dilation=3, groups=2)),
    (1, dict(padding="valid", groups=4)), (2, dict(stride=(2, 1), padding=(1, 0))), (2, dict(padding="same")),
    (2, dict(groups=2, dilation=(1, 2), padding=1)), (2, dict(groups=4, stride=2)), (3, dict()),
    (3, dict(stride=(1, 2, 2), padding=1, groups=2)), (3, dict(padding="same", dilation=(2, 1, 1))),
]
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
SPATIAL = {1: (11,), 2: (7, 8), 3: (5, 6, 5)}

# (d, kwargs for F.conv_transpose{d}d); the weight is (4, 6/groups, *kernel)
TRANSPOSED = [
    (1, dict()), (1, dict(stride=3, padding=1, output_padding=2)), (1, dict(groups=2, dilation=2)),
    (2, dict(stride=2, padding=1, output_padding=1)), (2, dict(stride=(2, 3), output_padding=(0, 2), groups=2)),
    (2, dict(dilation=3, output_padding=2, stride=1)), (3, dict()), (3, dict(stride=2, padding=(1, 0, 1), groups=2)),
]


def _both(torch, fn_name, x0, w0, b0, kwargs, order=2, device="cpu"):
    """Outputs, gradients and second derivatives (of <grad, gg> for the inputs and gy) in both libraries (ours on
    ``device``, PyTorch's on the CPU)."""
    results = []
    for lib, fn in ((tg, getattr(F, fn_name)), (torch, getattr(torch.nn.functional, fn_name))):
        rng = np.random.default_rng(0)
        on = {"device": device} if lib is tg else {}
        leaves = [lib.tensor(a, requires_grad=True, **on) for a in (x0, w0) + ((b0,) if b0 is not None else ())]
        y = fn(*leaves[:2], leaves[2] if b0 is not None else None, **kwargs)
        gy = lib.tensor(rng.standard_normal(tuple(y.shape)), requires_grad=True, **on)
        grads = lib.autograd.grad(y, leaves, gy, create_graph=order > 1)
        out = [y] + list(grads)
        if order > 1:
            gg = [lib.tensor(rng.standard_normal(tuple(g.shape)), **on) for g in grads]
            total = sum(((g * c).sum() for g, c in zip(grads, gg)), lib.tensor(0.0, dtype=lib.float64, **on))
            out += [lib.zeros_like(t) if s is None else s
                    for s, t in zip(lib.autograd.grad(total, leaves + [gy], allow_unused=True), leaves + [gy])]
        results.append([np.asarray(t.detach().numpy()) for t in out])
    for k, (a, b) in enumerate(zip(*results)):
        assert a.shape == b.shape, (k, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=f"output {k}")


@pytest.mark.parametrize("d, kwargs", CONV, ids=[f"{d}d-{k}" for d, k in CONV])
def test_conv_matches_torch_to_second_order(torch, d, kwargs, device):
    g = kwargs.get("groups", 1)
    x0 = R.standard_normal((2, 4) + SPATIAL[d])
    w0 = R.standard_normal((6 if g != 4 else 8, 4 // g) + KERNEL[d])
    _both(torch, f"conv{d}d", x0, w0, R.standard_normal(w0.shape[0]), kwargs, device=device)


@pytest.mark.parametrize("d, kwargs", TRANSPOSED, ids=[f"{d}d-{k}" for d, k in TRANSPOSED])
def test_conv_transpose_matches_torch_to_second_order(torch, d, kwargs, device):
    g = kwargs.get("groups", 1)
    x0 = R.standard_normal((2, 4) + SPATIAL[d])
    w0 = R.standard_normal((4, 6 // g) + KERNEL[d])
    _both(torch, f"conv_transpose{d}d", x0, w0, R.standard_normal(6), kwargs, device=device)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_unbatched_input_and_no_bias(torch, d):
    _both(torch, f"conv{d}d", R.standard_normal((4,) + SPATIAL[d]), R.standard_normal((3, 4) + KERNEL[d]), None, {},
          order=1)
    _both(torch, f"conv_transpose{d}d", R.standard_normal((4,) + SPATIAL[d]), R.standard_normal((4, 3) + KERNEL[d]),
          None, dict(stride=2), order=1)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_an_empty_batch_convolves_to_an_empty_batch(torch, d):
    """A shard of no samples (an uneven split over processes): outputs and gradients of the right shapes, as in
    PyTorch."""
    _both(torch, f"conv{d}d", R.standard_normal((0, 4) + SPATIAL[d]), R.standard_normal((3, 4) + KERNEL[d]),
          R.standard_normal(3), dict(padding=1))
    _both(torch, f"conv_transpose{d}d", R.standard_normal((0, 4) + SPATIAL[d]),
          R.standard_normal((4, 3) + KERNEL[d]), None, dict(stride=2))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_gradgradcheck_of_the_convolution_and_its_adjoints(d):
    x = tg.tensor(R.standard_normal((2, 2) + tuple(max(3, s // 2) for s in SPATIAL[d])), requires_grad=True)
    w = tg.tensor(R.standard_normal((4, 1) + (2,) * d), requires_grad=True)
    conv, transposed = getattr(F, f"conv{d}d"), getattr(F, f"conv_transpose{d}d")
    assert tg.gradgradcheck(lambda a, b: conv(a, b, stride=2, padding=1, groups=2), (x, w))
    wt = tg.tensor(R.standard_normal((2, 3) + (2,) * d), requires_grad=True)
    assert tg.gradgradcheck(lambda a, b: transposed(a, b, stride=2, output_padding=1), (x, wt))


# ---- modules -----------------------------------------------------------------------------------------------------
MODULES = [
    ("Conv1d", (4, 6, 3), dict(stride=2, padding=1, groups=2)),
    ("Conv1d", (4, 4, 4), dict(padding="same", padding_mode="circular", dilation=2)),
    ("Conv2d", (4, 6, (3, 2)), dict(padding=(1, 2), padding_mode="reflect")),
    ("Conv2d", (4, 6, 3), dict(padding="same", padding_mode="replicate", bias=False)),
    ("Conv3d", (4, 2, (2, 3, 1)), dict(stride=(1, 2, 1), padding="valid")),
    ("Conv3d", (4, 4, 3), dict(padding=1, padding_mode="reflect", groups=4)),
    ("ConvTranspose1d", (4, 6, 3), dict(stride=2, output_padding=1, groups=2)),
    ("ConvTranspose2d", (4, 6, (3, 2)), dict(stride=(2, 1), padding=1, dilation=2, bias=False)),
    ("ConvTranspose3d", (4, 2, 2), dict(stride=2)),
]


@pytest.mark.parametrize("name, args, kwargs", MODULES, ids=[f"{n}-{k}" for n, _, k in MODULES])
def test_modules_match_torch(torch, name, args, kwargs):
    theirs = getattr(torch.nn, name)(*args, **kwargs).double()
    ours = getattr(nn, name)(*args, **kwargs).double()
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert tuple(a.shape) == tuple(b.shape), k
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    d = {"1d": 1, "2d": 2, "3d": 3}[name[-2:]]
    x0 = R.standard_normal((2, 4) + SPATIAL[d])
    x, t = tg.tensor(x0, requires_grad=True), torch.tensor(x0, requires_grad=True)
    gy = R.standard_normal(tuple(theirs(t).shape))
    ours(x).backward(tg.tensor(gy))
    theirs(t).backward(torch.tensor(gy))
    np.testing.assert_allclose(ours(x).detach().numpy(), theirs(t).detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-10)
    for (k, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("size", [(9, 13), (10, 14)])
def test_conv_transpose_output_size_picks_the_output_padding(torch, size):
    theirs = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1).double()
    ours = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x0 = R.standard_normal((1, 2, 5, 7))
    a, b = ours(tg.tensor(x0), output_size=size), theirs(torch.tensor(x0), output_size=size)
    assert tuple(a.shape) == tuple(b.shape) == (1, 3) + size
    np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match=r"requested an output size of \[12, 13\], but valid sizes range from"):
        ours(tg.tensor(x0), output_size=(12, 13))


def test_the_modules_initialize_as_pytorch_does():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight and the bias; fan_in is the weight's dim 1 times the
    kernel's size, for the transposed convolutions too (their dim 1 is out_channels/groups)."""
    for m, fan_in in ((nn.Conv3d(4, 8, 3), 4 * 27), (nn.ConvTranspose1d(4, 6, 5, groups=2), 3 * 5)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(m.weight.numpy()).max() <= bound and np.abs(m.bias.numpy()).max() <= bound
        assert np.abs(m.weight.numpy()).max() > 0.5 * bound


# ---- errors, with PyTorch's words ----------------------------------------------------------------------------------
ERRORS = [
    ("conv2d", (2, 3), (4, 3, 3, 3), {}, r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got "
                                         r"input of size: \[2, 3\]"),
    ("conv1d", (2, 3, 5), (4, 2, 3), {}, r"Given groups=1, weight of size \[4, 2, 3\], expected input\[2, 3, 5\] to "
                                         r"have 2 channels, but got 3 channels instead"),
    ("conv3d", (1, 2, 2, 2, 2), (4, 2, 3, 3, 3), {}, r"Kernel size can't be greater than actual input size"),
    ("conv2d", (1, 2, 5, 5), (4, 2, 3, 3), dict(stride=2, padding="same"), r"padding='same' is not supported for "
                                                                            r"strided convolutions"),
    ("conv2d", (1, 2, 5, 5), (4, 2, 3, 3), dict(padding=-1), r"negative padding is not supported"),
    ("conv1d", (1, 2, 5), (4, 2, 3), dict(stride=0), r"non-positive stride is not supported"),
    ("conv1d", (1, 4, 5), (3, 2, 3), dict(groups=2), r"expected weight to be divisible by 2 at dimension 0"),
    ("conv2d", (1, 2, 5, 5), (4, 2, 3), {}, r"Expected 4-dimensional weight"),
    ("conv_transpose2d", (1, 2, 5, 5), (3, 2, 3, 3), {}, r"expected input\[1, 2, 5, 5\] to have 3 channels"),
    ("conv_transpose1d", (1, 2, 5), (2, 2, 3), dict(stride=2, output_padding=2), r"output padding must be smaller "
                                                                                 r"than either stride or dilation"),
]


@pytest.mark.parametrize("fn, x_shape, w_shape, kwargs, message", ERRORS, ids=[f"{e[0]}-{e[4][:30]}" for e in ERRORS])
def test_errors_say_what_pytorch_says(torch, fn, x_shape, w_shape, kwargs, message):
    with pytest.raises(Exception):
        getattr(torch.nn.functional, fn)(torch.zeros(x_shape), torch.zeros(w_shape), **kwargs)
    with pytest.raises(ValueError, match=message):
        getattr(F, fn)(tg.zeros(*x_shape), tg.zeros(*w_shape), **kwargs)


def test_dtype_mixes_and_transposed_padding_modes_are_refused():
    with pytest.raises(RuntimeError, match=r"Input type \(float64\) and weight type \(float32\) should be the same"):
        F.conv1d(tg.zeros(1, 2, 5, dtype=tg.float64), tg.zeros(3, 2, 2))
    with pytest.raises(ValueError, match='Only "zeros" padding mode is supported for ConvTranspose2d'):
        nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv3d(3, 6, 2, groups=2)
