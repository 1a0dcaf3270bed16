"""The ops and arguments PyTorch users reach for, beyond the first set: each gets a float64 gradcheck and a
comparison with PyTorch (values and gradients), on both CPU paths."""
import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn.functional as F

R = np.random.default_rng(7)
pytestmark = [pytest.mark.usefixtures("cpu_path"),
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")]  # PyTorch's own hint


def rnd(*shape):
    return R.standard_normal(shape)


def away(*shape):
    return R.uniform(0.2, 1.5, shape) * R.choice([-1, 1], shape)


def probs(*shape):
    return R.uniform(0, 1, shape)


W, P = probs(4, 3) + 0.5, probs(3) + 0.5          # BCE's weight and pos_weight: constants, as PyTorch requires


# name: (tinygradnorm fn, torch fn taking (torch, F, *tensors), input arrays)
CASES = {
    "leaky_relu": (lambda a: F.leaky_relu(a, 0.2), lambda t, f, a: f.leaky_relu(a, 0.2), [away(3, 4)]),
    "gelu": (lambda a: F.gelu(a), lambda t, f, a: f.gelu(a), [rnd(3, 4) * 2]),
    "gelu_tanh": (lambda a: F.gelu(a, approximate="tanh"), lambda t, f, a: f.gelu(a, approximate="tanh"),
                  [rnd(3, 4) * 2]),
    "silu": (F.silu, lambda t, f, a: f.silu(a), [rnd(2, 5) * 3]),
    "mse_loss": (F.mse_loss, lambda t, f, a, b: f.mse_loss(a, b), [rnd(3, 4), rnd(3, 4)]),
    "mse_loss_none": (lambda a, b: F.mse_loss(a, b, reduction="none"),
                      lambda t, f, a, b: f.mse_loss(a, b, reduction="none"), [rnd(3, 4), rnd(3, 4)]),
    "l1_loss_sum": (lambda a, b: F.l1_loss(a, b, reduction="sum"), lambda t, f, a, b: f.l1_loss(a, b, reduction="sum"),
                    [rnd(3, 4), rnd(3, 4)]),
    "bce_with_logits": (F.binary_cross_entropy_with_logits,
                        lambda t, f, a, b: f.binary_cross_entropy_with_logits(a, b), [rnd(4, 3) * 3, probs(4, 3)]),
    "bce_with_logits_weights": (
        lambda a, b: F.binary_cross_entropy_with_logits(a, b, tg.tensor(W), pos_weight=tg.tensor(P)),
        lambda t, f, a, b: f.binary_cross_entropy_with_logits(a, b, t.tensor(W), pos_weight=t.tensor(P)),
        [rnd(4, 3) * 3, probs(4, 3)]),
    "adaptive_avg_pool2d": (lambda a: F.adaptive_avg_pool2d(a, (3, 2)),
                            lambda t, f, a: f.adaptive_avg_pool2d(a, (3, 2)), [rnd(2, 3, 7, 5)]),
    "avg_pool2d_ceil_no_pad_count": (
        lambda a: F.avg_pool2d(a, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        lambda t, f, a: f.avg_pool2d(a, 3, 2, 1, ceil_mode=True, count_include_pad=False), [rnd(2, 2, 6, 7)]),
    "avg_pool2d_divisor_override": (lambda a: F.avg_pool2d(a, 2, divisor_override=3),
                                    lambda t, f, a: f.avg_pool2d(a, 2, divisor_override=3), [rnd(1, 2, 4, 6)]),
    "max_pool2d_dilation_ceil": (lambda a: F.max_pool2d(a, 2, 2, 1, dilation=2, ceil_mode=True),
                                 lambda t, f, a: f.max_pool2d(a, 2, 2, 1, dilation=2, ceil_mode=True),
                                 [rnd(2, 2, 7, 6)]),
    "conv2d_grouped": (lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2),
                       lambda t, f, x, w, b: f.conv2d(x, w, b, padding=1, groups=2),
                       [rnd(3, 4, 6, 5), rnd(6, 2, 3, 3), rnd(6)]),
    "conv2d_depthwise_multiplier": (lambda x, w: F.conv2d(x, w, stride=2, dilation=(1, 2), groups=3),
                                    lambda t, f, x, w: f.conv2d(x, w, stride=2, dilation=(1, 2), groups=3),
                                    [rnd(2, 3, 7, 8), rnd(6, 1, 3, 2)]),
    "conv2d_same_even_kernel": (lambda x, w: F.conv2d(x, w, padding="same"),
                                lambda t, f, x, w: f.conv2d(x, w, padding="same"), [rnd(2, 2, 5, 6), rnd(3, 2, 2, 4)]),
    "pad_reflect": (lambda a: F.pad(a, (1, 2, 2, 0), mode="reflect"),
                    lambda t, f, a: f.pad(a, (1, 2, 2, 0), mode="reflect"), [rnd(2, 3, 4, 5)]),
    "pad_replicate_negative": (lambda a: F.pad(a, (-1, 2, 1, -1), mode="replicate"),
                               lambda t, f, a: f.pad(a, (-1, 2, 1, -1), mode="replicate"), [rnd(2, 3, 4, 5)]),
    "pad_circular": (lambda a: F.pad(a, (2, 1), mode="circular"), lambda t, f, a: f.pad(a, (2, 1), mode="circular"),
                     [rnd(2, 3, 4)]),
    "clamp_tensor_bounds": (lambda a, lo, hi: tg.clamp(a, lo, hi), lambda t, f, a, lo, hi: t.clamp(a, lo, hi),
                            [rnd(3, 4) * 2, rnd(4) - 0.5, rnd(3, 1) + 0.5]),
    "logsumexp_dims": (lambda a: a.logsumexp((0, 2)), lambda t, f, a: t.logsumexp(a, (0, 2)), [rnd(2, 3, 4)]),
    "softmax_dtype": (lambda a: a.softmax(1, dtype=tg.float64), lambda t, f, a: f.softmax(a, 1, dtype=t.float64),
                      [rnd(2, 5)]),
    "cross_entropy_probs_smoothing": (
        lambda a, p: F.cross_entropy(a, p, label_smoothing=0.1),
        lambda t, f, a, p: f.cross_entropy(a, p, label_smoothing=0.1), [rnd(4, 5), probs(4, 5)]),
    "add_alpha": (lambda a, b: tg.add(a, b, alpha=-2.5), lambda t, f, a, b: t.add(a, b, alpha=-2.5),
                  [rnd(3), rnd(2, 3)]),
}


def _torch_run(torch, case, arrays):
    inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = case[1](torch, torch.nn.functional, *inputs)
    gy = np.random.default_rng(1).standard_normal(tuple(out.shape))
    out.backward(torch.tensor(gy))
    return out.detach().numpy(), [t.grad.numpy() for t in inputs], gy


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck(name):
    fn, _, arrays = CASES[name]
    assert tg.gradcheck(fn, [tg.tensor(a, requires_grad=True) for a in arrays])


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch(torch, name):
    case = CASES[name]
    expected, expected_grads, gy = _torch_run(torch, case, case[2])
    inputs = [tg.tensor(a, requires_grad=True) for a in case[2]]
    out = case[0](*inputs)
    out.backward(tg.tensor(gy))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    for x, g in zip(inputs, expected_grads):
        np.testing.assert_allclose(x.grad.numpy(), g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("groups, shapes", [(2, [(3, 4, 6, 5), (6, 2, 3, 3)]), (4, [(2, 4, 5, 5), (8, 1, 3, 3)])])
def test_grouped_conv_with_its_work_cut_into_many_pieces(monkeypatch, cpu_path, groups, shapes):
    """The compiled path's chunks and partial sums, at test sizes: one-sample chunks split three ways."""
    if cpu_path != "compiled":
        pytest.skip("the chunked path is the compiled one")
    from tinygradnorm.backend.cpu_kernels import conv as cpu_kernels
    kernels = tg.device("cpu").backend.kernels
    monkeypatch.setattr(kernels, "split", lambda fn, n, nbytes, min_bytes=0: [fn(n * i // 3, n * (i + 1) // 3)
                                                                             for i in range(3)])
    monkeypatch.setattr(cpu_kernels, "_CONV_CHUNK_BYTES", 1)
    x, w = (tg.tensor(rnd(*s), requires_grad=True) for s in shapes)
    assert tg.gradcheck(lambda x, w: F.conv2d(x, w, padding=1, groups=groups), (x, w))


def test_max_pool_indices_and_unpool_round_trip(torch):
    a = rnd(2, 3, 6, 7)
    y, idx = F.max_pool2d(tg.tensor(a), 3, 2, 1, ceil_mode=True, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.tensor(a), 3, 2, 1, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    up = F.max_unpool2d(y, idx, 3, 2, 1, output_size=(6, 7))
    tup = torch.nn.functional.max_unpool2d(ty, tidx, 3, 2, 1, output_size=(6, 7))
    np.testing.assert_array_equal(up.numpy(), tup.numpy())
    x = tg.tensor(rnd(1, 2, 4, 4), requires_grad=True)
    values, where = F.max_pool2d(x, 2, return_indices=True)
    assert tg.gradcheck(lambda v: F.max_unpool2d(v, where, 2), (values.detach().requires_grad_(),))


def test_div_rounding_modes_and_their_zero_gradient(torch):
    a, b = np.array([7.5, -7.5, 3.0, -2.0]), np.array([2.0, 2.0, -2.0, 3.0])
    for mode in ("trunc", "floor"):
        x = tg.tensor(a, requires_grad=True)
        y = tg.div(x, tg.tensor(b), rounding_mode=mode)
        np.testing.assert_array_equal(y.numpy(), torch.div(torch.tensor(a), torch.tensor(b), rounding_mode=mode))
        y.sum().backward()
        assert x.grad.tolist() == [0.0] * 4
        ints = tg.div(tg.tensor([7, -7, 6]), tg.tensor([2, 2, -4]), rounding_mode=mode)
        assert ints.dtype == tg.int64
        assert ints.tolist() == torch.div(torch.tensor([7, -7, 6]), torch.tensor([2, 2, -4]),
                                          rounding_mode=mode).tolist()


def test_relu_inplace_in_a_network_matches_torch(torch):
    a, w = rnd(4, 3), rnd(5, 3)
    x, lin = tg.tensor(a, requires_grad=True), tg.nn.Linear(3, 5).double()
    tx, tlin = torch.tensor(a, requires_grad=True), torch.nn.Linear(3, 5).double()
    with tg.no_grad():
        lin.weight.copy_(tg.tensor(w))
    with torch.no_grad():
        tlin.weight.copy_(torch.tensor(w))
        tlin.bias.copy_(torch.tensor(lin.bias.numpy()))
    y, ty = tg.nn.ReLU(inplace=True)(lin(x)), torch.nn.ReLU(inplace=True)(tlin(tx))
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        tg.nn.ReLU(inplace=True)(x)


def test_dropout2d_drops_whole_channels_and_scales_the_rest():
    tg.manual_seed(0)
    x = tg.ones(64, 32, 3, 3)
    y = F.dropout2d(x, 0.25).numpy()
    per_channel = y.reshape(64, 32, -1)
    assert ((per_channel == 0).all(-1) | (per_channel == 1 / 0.75).all(-1)).all()
    assert 0.2 < (per_channel[..., 0] == 0).mean() < 0.3
    assert F.dropout2d(x, 0.25, training=False) is x
