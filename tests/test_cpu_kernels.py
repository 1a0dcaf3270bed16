"""The compiled CPU kernels beyond normalization: sigmoid, average pooling, chunked convolution, the direct
depthwise convolution, recycled output memory and the backend's split matmul.

Each is checked against the NumPy code it replaces (which the rest of the suite checks against
PyTorch and finite differences) and against PyTorch in float32. The convolution's work is cut into
many pieces, so that the code joining pieces (chunks, threads) runs at test sizes too; sigmoid and
pooling compute every element on its own, and give the same bits on any number of threads.
(The normalization kernels have tests/test_norm_kernels.py.)
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn.functional as F
from conftest import leaf

R = np.random.default_rng(11)
BACKEND = tg.device("cpu").backend
KERNELS = BACKEND.kernels
needs_kernels = pytest.mark.skipif(KERNELS is None, reason=f"no compiled CPU kernels: {BACKEND.kernels_missing}")


def _in_three_pieces(fn, n, nbytes, min_bytes=0):
    """A stand-in for parallel_range that always cuts range(n) into three pieces (some may be empty)."""
    for i in range(3):
        fn(n * i // 3, n * (i + 1) // 3)


@pytest.fixture
def many_pieces(monkeypatch):
    """Kernels that cut every job into three pieces and every convolution into one-sample chunks."""
    from tinygradnorm.backend.cpu_kernels import conv as cpu_kernels
    monkeypatch.setattr(KERNELS, "split", _in_three_pieces)
    monkeypatch.setattr(cpu_kernels, "_CONV_CHUNK_BYTES", 1)


def _both_paths(monkeypatch, fn):
    """fn() with the compiled kernels, then with NumPy's code alone."""
    compiled = fn()
    with monkeypatch.context() as m:
        m.setattr(BACKEND, "_kernels", None)
        return compiled, fn()


# ---- sigmoid --------------------------------------------------------------------------
@needs_kernels
def test_float32_sigmoid_is_accurate_over_the_whole_range():
    """Within 3 float32 ulps of the exact result (2.0 measured), subnormal results and saturated ends included."""
    x = np.concatenate([np.linspace(-110, 110, 200_001), [-103.5, -100, -88, -87.5, 0.0, -0.0, 1e-30, -1e-30]])
    x = x.astype(np.float32)
    y = KERNELS.sigmoid_forward(x)
    ref = 1 / (1 + np.exp(-x.astype(np.float64)))
    ulp = np.spacing(ref.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(y - ref) / ulp) <= 3
    assert y[np.argmax(x)] == 1 and y[np.argmin(x)] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.usefixtures("cpu_path")
def test_sigmoid_of_inf_nan_and_far_tails(dtype):
    y = tg.tensor(np.array([np.inf, -np.inf, np.nan, -80.0, 80.0], dtype=dtype)).sigmoid().numpy()
    assert y[0] == 1 and y[1] == 0 and np.isnan(y[2]) and y[4] == 1
    np.testing.assert_allclose(y[3], np.exp(-80.0), rtol=1e-6)      # no cancellation for x << 0


def _float32_matches_torch(torch, a, ours_fn, theirs_fn, rtol, atol):
    """ours_fn on a tinygradnorm tensor against theirs_fn on a torch one: outputs and input gradients."""
    ours, theirs = tg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, ty = ours_fn(ours), theirs_fn(theirs)
    gy = R.standard_normal(y.shape).astype(np.float32)
    y.backward(tg.tensor(gy))
    ty.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=5 * rtol, atol=atol)


@pytest.mark.usefixtures("cpu_path")
def test_float32_sigmoid_matches_torch(torch):
    a = (R.standard_normal((4, 3, 33)) * 6).astype(np.float32)
    _float32_matches_torch(torch, a, lambda t: t.sigmoid(), lambda t: t.sigmoid(), rtol=2e-7, atol=1e-30)


def _same_bits_on_any_thread_count(monkeypatch, fn):
    """fn() on one thread, on the backend's count and on 7: the bytes it returns are equal."""
    seen = set()
    for k in (1, BACKEND.threads, 7):
        monkeypatch.setattr(BACKEND, "threads", k)
        seen.add(fn().tobytes())
    return len(seen) == 1


@needs_kernels
def test_sigmoid_gradchecks_and_gives_the_same_bits_on_any_thread_count(monkeypatch):
    assert tg.gradcheck(lambda t: t.sigmoid(), (leaf(R.standard_normal((5, 7)) * 3),))
    x = (R.standard_normal(100_003) * 5).astype(np.float32)
    assert _same_bits_on_any_thread_count(monkeypatch, lambda: KERNELS.sigmoid_forward(x))
    assert _same_bits_on_any_thread_count(monkeypatch, lambda: KERNELS.sigmoid_backward(x, x))


@needs_kernels
def test_sigmoid_double_backward_kernel_is_the_formula_and_gradgradchecks(monkeypatch):
    y, g, u = (R.uniform(0, 1, 1001), R.standard_normal(1001), R.standard_normal(1001))
    g_y, g_g = KERNELS.sigmoid_double_backward(y, g, u)
    np.testing.assert_allclose(g_y, u * g * (1 - 2 * y), rtol=1e-14)
    np.testing.assert_allclose(g_g, u * y * (1 - y), rtol=1e-14)
    assert tg.gradgradcheck(lambda t: t.sigmoid(), (leaf(R.standard_normal((5, 7)) * 3),))
    x = (R.standard_normal(100_003) * 5).astype(np.float32)
    assert _same_bits_on_any_thread_count(monkeypatch, lambda: np.concatenate(KERNELS.sigmoid_double_backward(x, x, x)))


# ---- average pooling ----------------------------------------------------------------
POOLS = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(3, 2), stride=1)]


@pytest.mark.parametrize("kw", POOLS)
@pytest.mark.parametrize("hw", [(8, 6), (9, 7)])      # the second leaves a row and a column out of every window
@pytest.mark.usefixtures("cpu_path")
def test_float32_avg_pool_matches_torch(torch, kw, hw):
    a = R.standard_normal((3, 4, *hw)).astype(np.float32)
    _float32_matches_torch(torch, a, lambda t: F.avg_pool2d(t, **kw), lambda t: torch.nn.functional.avg_pool2d(t, **kw),
                           rtol=1e-6, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize("kw", POOLS)
def test_avg_pool_gradchecks_and_gives_the_same_bits_on_any_thread_count(kw, monkeypatch):
    assert tg.gradcheck(lambda t: F.avg_pool2d(t, **kw), (leaf(R.standard_normal((2, 3, 7, 6))),))
    x = tg.tensor(R.standard_normal((8, 5, 9, 7)).astype(np.float32), requires_grad=True)

    def forward_and_backward():
        x.grad = None
        y = F.avg_pool2d(x, **kw)
        y.backward(tg.tensor(np.ones(y.shape, dtype=np.float32)))
        return np.concatenate([y.numpy().ravel(), x.grad.numpy().ravel()])
    assert _same_bits_on_any_thread_count(monkeypatch, forward_and_backward)


# ---- convolution in chunks ------------------------------------------------------------
# (input shape, weight shape, kwargs): 2-D and 3-D, with whole rows, planes and columns of windows outside x,
# strides of 3 and more, a stride wider than x, kernels as wide as the padded input, groups, and 1-D
CHUNKED = [
    ((5, 3, 8, 7), (4, 3, 3, 2), dict()),
    ((5, 3, 8, 7), (4, 3, 3, 2), dict(stride=2, padding=1)),
    ((5, 3, 8, 7), (4, 3, 3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1))),
    ((5, 3, 8, 7), (4, 3, 3, 2), dict(padding=4, dilation=3)),
    ((5, 3, 8, 7), (4, 3, 3, 2), dict(stride=(4, 3), padding=(2, 1))),
    ((5, 3, 8, 7), (4, 3, 3, 2), dict(stride=(1, 9), padding=(0, 1))),
    ((5, 3, 8, 7), (4, 3, 3, 2), dict(padding=(0, 3), dilation=(1, 5))),
    ((3, 2, 5, 6, 4), (4, 2, 3, 2, 3), dict(padding=1)),
    ((3, 4, 6, 5, 5), (4, 2, 2, 3, 3), dict(stride=(3, 1, 2), padding=(2, 0, 1), dilation=(2, 1, 1), groups=2)),
    ((3, 2, 4, 4, 4), (3, 2, 3, 1, 2), dict(padding=(3, 0, 1), dilation=(2, 1, 3))),
    ((3, 2, 1, 5, 5), (2, 1, 1, 3, 3), dict(padding=(1, 1, 1), groups=2)),
    ((4, 3, 13), (4, 3, 4), dict(stride=3, padding=2, dilation=2)),
]


@needs_kernels
@pytest.mark.parametrize("x_shape, w_shape, kw", CHUNKED)
@pytest.mark.usefixtures("many_pieces")
def test_conv_in_one_sample_chunks_and_three_pieces_matches_numpy_path(monkeypatch, x_shape, w_shape, kw):
    """Per-chunk and per-thread sums of gw and gb add up to what the one-GEMM NumPy path gives; the columns'
    runs of reads start and end where the windows leave x."""
    arrays = [R.standard_normal(x_shape), R.standard_normal(w_shape), R.standard_normal(w_shape[0])]
    conv = getattr(F, f"conv{len(x_shape) - 2}d")
    gy = None

    def run():
        nonlocal gy
        x, w, b = (leaf(a) for a in arrays)
        y = conv(x, w, b, **kw)
        gy = R.standard_normal(y.shape) if gy is None else gy
        y.backward(tg.tensor(gy))
        return [y.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()]

    compiled, numpy_only = _both_paths(monkeypatch, run)
    for a, b in zip(compiled, numpy_only):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# (transposed convolution, its input's shape, weight shape, kwargs): 1-D, 2-D, 3-D, groups, depthwise, and an
# output_padding past the windows (the backward then runs the two separate passes)
TRANSPOSED_BACKWARD = [
    ("conv_transpose1d", (3, 4, 9), (4, 3, 4), dict(stride=2, padding=1)),
    ("conv_transpose2d", (3, 4, 5, 6), (4, 2, 3, 2), dict(stride=(2, 1), padding=1, groups=2)),
    ("conv_transpose2d", (2, 4, 5, 5), (4, 1, 3, 3), dict(stride=2, padding=1, groups=4)),
    ("conv_transpose2d", (2, 3, 4, 4), (3, 2, 2, 2), dict(stride=1, dilation=3, output_padding=2)),
    ("conv_transpose3d", (2, 2, 3, 4, 3), (2, 3, 2, 3, 2), dict(stride=(1, 2, 2), padding=(0, 1, 1))),
]


@needs_kernels
@pytest.mark.parametrize("fn, x_shape, w_shape, kw", TRANSPOSED_BACKWARD)
@pytest.mark.usefixtures("many_pieces")
def test_transposed_conv_backward_in_one_pass_matches_numpy_path(monkeypatch, fn, x_shape, w_shape, kw):
    """A transposed convolution's backward (conv of the output's gradient, and the weight's gradient, from one
    im2col per chunk) against the NumPy path."""
    arrays = [R.standard_normal(x_shape), R.standard_normal(w_shape)]
    gy = None

    def run():
        nonlocal gy
        x, w = (leaf(a) for a in arrays)
        y = getattr(F, fn)(x, w, **kw)
        gy = R.standard_normal(y.shape) if gy is None else gy
        y.backward(tg.tensor(gy))
        return [y.numpy(), x.grad.numpy(), w.grad.numpy()]

    compiled, numpy_only = _both_paths(monkeypatch, run)
    for a, b in zip(compiled, numpy_only):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@needs_kernels
@pytest.mark.usefixtures("many_pieces")
def test_conv_and_weight_grad_gives_the_bits_of_the_two_separate_passes():
    x, w = R.standard_normal((5, 4, 1, 7, 6)), R.standard_normal((6, 2, 1, 3, 2))
    geom = ((1, 2, 1), (0, 1, 1), (1, 1, 2), 2)
    y = KERNELS.conv_forward(x, w, None, *geom[:3], (1, 4, 6), geom[3])
    gy = R.standard_normal(y.shape)
    y2, gw2 = KERNELS.conv_and_weight_grad(x, w, gy, *geom)
    gw = KERNELS.conv_backward(x, w, gy, *geom, False, True, False)[1]
    assert np.array_equal(y, y2) and np.array_equal(gw, gw2)


@needs_kernels
@pytest.mark.usefixtures("many_pieces")
def test_conv2d_in_chunks_gradchecks():
    x, w, b = leaf(R.standard_normal((4, 2, 6, 5))), leaf(R.standard_normal((3, 2, 3, 3))), leaf(R.standard_normal(3))
    assert tg.gradcheck(lambda *a: F.conv2d(*a, padding=1), (x, w, b))


# ---- depthwise convolution: the direct kernel ---------------------------------------------------------------------
# (x shape, weight shape, kwargs): multiplier 1 and 3, stride, dilation, padding, 1-D, a plane narrower than the
# stride, more planes than the kernel's blocks, and kernels the size of the padded input
DEPTHWISE = [
    ((2, 3, 7, 9), (3, 1, 3, 3), dict(padding=1)),
    ((2, 4, 8, 8), (8, 1, 3, 3), dict(stride=2, padding=1)),
    ((3, 2, 5, 11), (6, 1, 2, 4), dict(stride=(2, 3), padding=(0, 2), dilation=(2, 1))),
    ((2, 3, 5, 2), (6, 1, 3, 1), dict(stride=3, padding=1)),
    ((1, 2, 4, 1), (2, 1, 2, 1), dict(stride=(2, 3), padding=(2, 1))),
    ((5, 16, 6, 6), (16, 1, 5, 5), dict(padding=4)),
    ((2, 2, 3, 3), (2, 1, 3, 3), dict(padding=3, dilation=2)),
    ((2, 3, 17), (6, 1, 5), dict(stride=3, padding=2, dilation=2)),
]


@pytest.fixture
def depthwise_calls(monkeypatch):
    """How many times the direct depthwise kernels ran (forward, backward)."""
    from tinygradnorm.backend.cpu_kernels import conv as cpu_kernels
    calls = {"forward": 0, "backward": 0}
    for name, key in (("_depthwise_forward", "forward"), ("_depthwise_backward", "backward")):
        def counted(*args, _kernel=getattr(cpu_kernels, name), _key=key):
            calls[_key] += 1
            return _kernel(*args)
        monkeypatch.setattr(cpu_kernels, name, counted)
    return calls


def _depthwise_run(x0, w0, kw, gy0=None, dtype=np.float64):
    """y and the three gradients of a depthwise convolution (bias 0.5), as arrays, and the gy used."""
    x, w, b = (tg.tensor(np.asarray(a, dtype=dtype), requires_grad=True) for a in (x0, w0, np.full(len(w0), 0.5)))
    conv = F.conv1d if len(x0.shape) == 3 else F.conv2d
    y = conv(x, w, b, groups=x0.shape[1], **kw)
    gy0 = R.standard_normal(y.shape) if gy0 is None else gy0
    y.backward(tg.tensor(np.asarray(gy0, dtype=dtype)))
    return [y.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()], gy0


@needs_kernels
@pytest.mark.parametrize("x_shape, w_shape, kw", DEPTHWISE, ids=[str(c[2]) + str(c[1]) for c in DEPTHWISE])
def test_depthwise_kernel_matches_numpy_path(monkeypatch, depthwise_calls, x_shape, w_shape, kw):
    x0, w0 = R.standard_normal(x_shape), R.standard_normal(w_shape)
    gy = []

    def run():
        out, g = _depthwise_run(x0, w0, kw, gy[0] if gy else None)
        gy.append(g)
        return out

    compiled, numpy_only = _both_paths(monkeypatch, run)
    assert depthwise_calls == {"forward": 1, "backward": 1}
    for name, a, b in zip(("y", "gx", "gw", "gb"), compiled, numpy_only):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)


@needs_kernels
def test_depthwise_kernel_matches_torch_in_float32(torch, depthwise_calls):
    """The benchmark's shape, float32, forward and backward, against torch's."""
    x0 = R.standard_normal((8, 32, 28, 28)).astype(np.float32)
    w0 = R.standard_normal((32, 1, 3, 3)).astype(np.float32)
    for kw in (dict(padding=1), dict(stride=2, padding=1)):
        ours, gy = _depthwise_run(x0, w0, kw, dtype=np.float32)
        tx, tw = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True)
        tb = torch.full((32,), 0.5, requires_grad=True)
        ty = torch.nn.functional.conv2d(tx, tw, tb, groups=32, **kw)
        ty.backward(torch.tensor(np.asarray(gy, np.float32)))
        for name, a, b in zip(("y", "gx", "gw", "gb"), ours, (ty.detach(), tx.grad, tw.grad, tb.grad)):
            b = b.numpy()
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(), err_msg=name)
    assert depthwise_calls == {"forward": 2, "backward": 2}


@needs_kernels
@pytest.mark.parametrize("where", ["input", "weight"])
def test_depthwise_kernel_keeps_non_finite_values_inside_their_windows(monkeypatch, where):
    """An inf or nan reaches exactly the gradients the windows give (the NumPy path's im2col reads only them):
    the wide grid's columns that are not outputs never multiply one (0 * inf would be nan)."""
    x0, w0 = R.standard_normal((2, 3, 7, 8)), R.standard_normal((3, 1, 3, 3))
    if where == "input":
        x0[0, 1, 6, 7], x0[1, 2, 0, 0], x0[1, 0, 3, 0] = np.inf, np.nan, -np.inf
    else:
        w0[1, 0, 2, 2], w0[2, 0, 0, 1] = np.inf, np.nan
    for kw in (dict(stride=2), dict(padding=1), dict(stride=(1, 2), padding=(0, 1))):
        gy = R.standard_normal((2, 3) + tuple(F.conv2d(tg.tensor(x0), tg.tensor(w0), groups=3, **kw).shape[2:]))
        compiled, numpy_only = _both_paths(monkeypatch, lambda: _depthwise_run(x0, w0, kw, gy)[0])
        for name, a, b in zip(("y", "gx", "gw", "gb"), compiled, numpy_only):
            assert np.array_equal(np.isnan(a), np.isnan(b)), (name, kw)
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"{name} {kw}")


@needs_kernels
def test_depthwise_gradgradchecks(depthwise_calls):
    """The direct kernels behind every convolution Function of the second order (ConvInput and ConvWeight
    reach them with a placeholder for the array they do not read)."""
    x, w = leaf(R.standard_normal((2, 3, 5, 6))), leaf(R.standard_normal((6, 1, 3, 2)))
    assert tg.gradgradcheck(lambda a, b: F.conv2d(a, b, stride=(2, 1), padding=1, groups=3), (x, w))
    assert depthwise_calls["forward"] > 0 and depthwise_calls["backward"] > 0


# ---- recycled memory -----------------------------------------------------------------
def _recycler(**kw):
    from tinygradnorm.backend.cpu_kernels.memory import _Recycler
    return _Recycler(min_bytes=64, **kw)


@needs_kernels
def test_recycled_memory_is_reused_only_once_no_array_uses_it():
    r = _recycler()
    a = r.empty((8, 10), np.float32)
    view = a[2:].T                                    # a view of a view keeps the memory in use
    del a
    b = r.empty((8, 10), np.float32)
    assert not np.shares_memory(b, view)
    del view
    c = r.empty((10, 8), np.float32)                  # same size, other shape: the freed block
    assert not np.shares_memory(c, b) and len(r.blocks[320]) == 2
    assert r.empty((4, 5), np.float64).shape == (4, 5) and c.dtype == np.float32


@needs_kernels
def test_recycler_lets_free_blocks_go_past_its_limit():
    r = _recycler(limit=1000)
    keep = r.empty((100,), np.float32)               # 400 bytes, in use
    r.empty((120,), np.float32)                      # 480 bytes, free at once
    r.empty((150,), np.float32)                      # 600 more would pass 1000: the free 480 go first
    assert r.total == 1000 and 480 not in [n for n, blocks in r.blocks.items() if blocks]
    assert keep.shape == (100,)


@needs_kernels
def test_recycled_arrays_start_on_a_cache_line_and_count_as_whole_only_whole():
    r = _recycler()
    a = r.empty((7, 11), np.float32)
    b = r.empty((7, 11), np.float64)
    assert a.ctypes.data % 64 == 0 and b.ctypes.data % 64 == 0
    assert r.owns(a) and r.owns(a.reshape(-1)) and not r.owns(a[1:]) and not r.owns(a.T) and not r.owns(np.ones(77))


@needs_kernels
def test_small_arrays_bypass_the_recycler():
    r = _recycler()
    assert r.empty((3,), np.float32).base is None and not r.blocks


# ---- matmul split over the pool --------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 4, 2), (64, 33, 17)])
def test_split_matmul_matches_numpy(monkeypatch, shape):
    from tinygradnorm.backend import numpy_backend
    monkeypatch.setattr(numpy_backend, "_SPLIT_MATMUL_MACS", 0)
    monkeypatch.setattr(BACKEND, "split_matmul", True)
    m, k, n = shape
    a, b = R.standard_normal((m, k)), R.standard_normal((k, n))
    # NOTE: not bit-equal to one unsplit product: BLAS may take another kernel for fewer rows. What the
    # split guarantees, the same bits for any thread count, tests/test_determinism.py checks.
    np.testing.assert_allclose(BACKEND.matmul(a, b), a @ b, rtol=1e-13, atol=1e-14)


def test_linear_with_split_matmul_gradchecks(monkeypatch):
    from tinygradnorm.backend import numpy_backend
    monkeypatch.setattr(numpy_backend, "_SPLIT_MATMUL_MACS", 0)
    monkeypatch.setattr(BACKEND, "split_matmul", True)
    x, w, b = leaf(R.standard_normal((6, 5))), leaf(R.standard_normal((4, 5))), leaf(R.standard_normal(4))
    assert tg.gradcheck(F.linear, (x, w, b))
    assert tg.gradcheck(lambda x, w: x @ w.T, (x, w))


@pytest.mark.parametrize("jit", ["1", "0"])
def test_the_compiled_kernels_put_blas_on_one_thread_and_only_they_do(jit):
    pytest.importorskip("threadpoolctl")
    code = ("import tinygradnorm as tg; from threadpoolctl import threadpool_info as info\n"
            "backend = tg.device('cpu').backend; backend.kernels\n"
            "print(sorted({i['num_threads'] for i in info() if i['user_api'] == 'blas'}), backend.split_matmul)")
    env = {**os.environ, "TINYGRADNORM_JIT": jit, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    if jit == "1" and KERNELS is None:
        pytest.skip("no compiled CPU kernels")
    assert out.split() == (["[1]", "True"] if jit == "1" else ["[2]", "False"]), out


# ---- convolution: the direct tiles (conv_direct.py) ----------------------------------------------------------------
# (x shape, weight shape, kwargs): output channels per group below, at and past a tile's 16, groups, strides,
# dilation, padding, 1-D and 3-D, positions and taps not a multiple of a tile's columns, an empty batch, a stride
# past the kernel (input positions that no window reads: a stride phase with no taps), padding past the windows,
# and dilation and 3-D at stride 1 with few channels (the positions tiles)
TILED = [
    ((3, 5, 9, 7), (21, 5, 3, 2), dict(padding=(1, 0), stride=(2, 1), dilation=(1, 2))),
    ((3, 6, 9, 7), (34, 3, 3, 2), dict(padding=(2, 1), groups=2)),
    ((2, 4, 6, 6), (16, 4, 3, 3), dict(padding=1)),
    ((2, 3, 5, 5), (5, 3, 3, 3), dict()),
    ((2, 3, 13), (17, 3, 4), dict(stride=3, padding=2, dilation=2)),
    ((2, 2, 4, 5, 4), (18, 2, 3, 2, 3), dict(padding=(1, 0, 1), stride=(1, 2, 1))),
    ((0, 3, 5, 5), (16, 3, 3, 3), dict()),
    ((2, 3, 8, 9), (16, 3, 2, 2), dict(stride=3)),
    ((2, 3, 5, 5), (16, 3, 3, 3), dict(padding=3)),
    ((2, 4, 7, 8), (6, 2, 3, 3), dict(dilation=2, padding=(2, 1), groups=2)),
    ((2, 2, 4, 5, 6), (3, 2, 2, 3, 2), dict(padding=(1, 0, 1))),
    # rows of outputs longer than a tile: tiles whose columns (and outputs) are neighbours, or every other input
    ((2, 3, 3, 30), (16, 3, 2, 3), dict(padding=(0, 1))),
    ((2, 3, 6, 29), (17, 3, 3, 3), dict(stride=(1, 2), padding=(0, 1))),
    # groups of 32 channels: the weight gradient's 32-channel tiles
    ((2, 4, 6, 6), (64, 2, 3, 3), dict(padding=1, groups=2)),
    ((3, 3, 11), (32, 3, 3), dict(stride=2)),
    # groups of 8 channels, on the positions tiles: more taps than one tile
    ((3, 16, 6, 20), (16, 8, 3, 3), dict(padding=1, groups=2)),
]


@pytest.fixture(params=["avx512", "avx2"])
def tiles(monkeypatch, request):
    """The direct tiles, of each ISA's shape (both run on any x86 CPU), for every convolution they can run
    (whatever the dtype); counts their calls. (At stride 1, a group of fewer than 16 channels runs on the positions
    tiles, any other on the channel tiles.)"""
    from tinygradnorm.backend.cpu_kernels import conv_direct
    monkeypatch.setattr(conv_direct, "MODE", "1")
    monkeypatch.setattr(conv_direct, "isa", lambda: request.param)
    calls = dict.fromkeys(("conv_forward_direct", "conv_forward_positions", "conv_weight_grad_direct",
                           "conv_weight_grad_positions", "conv_input_grad_direct", "conv_input_grad_positions"), 0)
    for name in calls:
        def counted(*args, _fn=getattr(conv_direct, name), _name=name, **kwargs):
            calls[_name] += 1
            return _fn(*args, **kwargs)
        monkeypatch.setattr(conv_direct, name, counted)
    return calls


def _one_pass_each(calls):
    """Whether the forward, the weight gradient and the input gradient each ran once on one kind of tile."""
    return (calls["conv_forward_direct"] + calls["conv_forward_positions"] == 1
            and calls["conv_weight_grad_direct"] + calls["conv_weight_grad_positions"] == 1
            and calls["conv_input_grad_direct"] + calls["conv_input_grad_positions"] == 1)


def _conv_run(fn, arrays, kw, gy0=None, dtype=np.float64):
    """y and the gradients of x, w (and b) of F.<fn>, as arrays, and the gy used."""
    ts = [tg.tensor(np.asarray(a, dtype=dtype), requires_grad=True) for a in arrays]
    y = getattr(F, fn)(*ts, **kw)
    gy0 = R.standard_normal(y.shape) if gy0 is None else gy0
    y.backward(tg.tensor(np.asarray(gy0, dtype=dtype)))
    return [y.numpy()] + [t.grad.numpy() for t in ts], gy0


@needs_kernels
@pytest.mark.parametrize("x_shape, w_shape, kw", TILED)
def test_direct_tiles_match_numpy_path(monkeypatch, tiles, x_shape, w_shape, kw):
    arrays = [R.standard_normal(x_shape), R.standard_normal(w_shape), R.standard_normal(w_shape[0])]
    _tiles_match_numpy_path(monkeypatch, tiles, f"conv{len(x_shape) - 2}d", arrays, kw, ("y", "gx", "gw", "gb"))


def _tiles_match_numpy_path(monkeypatch, tiles, fn, arrays, kw, names):
    """F.<fn>'s output and gradients, float64, on the tiles (each pass once) and on the NumPy path alone."""
    gy = []

    def run():
        out, g = _conv_run(fn, arrays, kw, gy[0] if gy else None)
        gy.append(g)
        return out

    compiled, numpy_only = _both_paths(monkeypatch, run)
    assert _one_pass_each(tiles), tiles
    for name, a, b in zip(names, compiled, numpy_only):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)


@needs_kernels
@pytest.mark.parametrize("fn, x_shape, w_shape, kw", [c for c in TRANSPOSED_BACKWARD
                                                      if c[3].get("groups", 1) < c[1][1]])      # not depthwise
def test_transposed_conv_backward_from_the_tiles_matches_numpy_path(monkeypatch, tiles, fn, x_shape, w_shape, kw):
    """A transposed convolution's forward is the tiles' input gradient, and its backward their forward and weight
    gradient in place of its one pass."""
    arrays = [R.standard_normal(x_shape), R.standard_normal(w_shape)]
    _tiles_match_numpy_path(monkeypatch, tiles, fn, arrays, kw, ("y", "gx", "gw"))


@needs_kernels
def test_weight_grad_positions_in_parts_and_with_an_inf(monkeypatch, tiles):
    """The positions tiles' weight gradient with each sample a part of its own (the parts added in order), and with
    an inf in x, which those tiles hand back to the chunks: the grid's positions that are not outputs read x too, and
    0 times inf would be nan where the windows never read the inf."""
    from tinygradnorm.backend.cpu_kernels import conv_direct
    monkeypatch.setattr(conv_direct, "_PART_BYTES", 1)
    kw = dict(padding=1, groups=2)
    arrays = [R.standard_normal((3, 4, 5, 6)), R.standard_normal((6, 2, 3, 3)), R.standard_normal(6)]
    _tiles_match_numpy_path(monkeypatch, tiles, "conv2d", arrays, kw, ("y", "gx", "gw", "gb"))
    arrays[0][1, 2, 0, 0] = np.inf          # padded column 1: a tap at column offset 2 never reads it
    tiles["conv_weight_grad_positions"] = 0
    ours, gy = _conv_run("conv2d", arrays, kw)
    assert tiles["conv_weight_grad_positions"] == 1
    assert np.isfinite(ours[2][:, :, :, 2]).all() and not np.isfinite(ours[2][:, :, :, 0]).all()


@needs_kernels
def test_direct_tiles_match_torch_in_float32(torch, tiles):
    """LeNet's second convolution and a padded 3x3 one of 32 channels, float32, against torch's; a stride-2 one, whose
    input gradient runs by stride phase; and a grouped one of 8 channels a group (on the positions tiles)."""
    for x_shape, w_shape, kw in (((16, 6, 12, 12), (16, 6, 5, 5), {}),
                                 ((4, 32, 14, 14), (32, 32, 3, 3), dict(padding=1)),
                                 ((4, 32, 14, 14), (32, 32, 3, 3), dict(stride=2, padding=1)),
                                 ((4, 16, 14, 14), (16, 8, 3, 3), dict(padding=1, groups=2))):
        arrays = [R.standard_normal(s).astype(np.float32) for s in (x_shape, w_shape, w_shape[:1])]
        ours, gy = _conv_run("conv2d", arrays, kw, dtype=np.float32)
        ts = [torch.tensor(a, requires_grad=True) for a in arrays]
        ty = torch.nn.functional.conv2d(*ts, **kw)
        ty.backward(torch.tensor(np.asarray(gy, dtype=np.float32)))
        for name, a, b in zip(("y", "gx", "gw", "gb"), ours, [ty] + [t.grad for t in ts]):
            b = b.detach().numpy()
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=name)


@needs_kernels
def test_direct_tiles_give_the_same_bits_on_any_thread_count(monkeypatch, tiles):
    """Three convolutions: on the channel tiles with the input gradient on the positions ones, at stride 2 (the input
    gradient by phase), and grouped with 4 channels a group (all three passes on the positions tiles)."""
    x = R.standard_normal((6, 8, 9, 8)).astype(np.float32)
    gys = {}
    convs = ((R.standard_normal((20, 8, 3, 3)), {}), (R.standard_normal((20, 8, 3, 3)), dict(stride=2)),
             (R.standard_normal((8, 4, 3, 3)), dict(groups=2, padding=1)))
    seen = set()
    for k in (1, 2, 3):
        monkeypatch.setattr(BACKEND, "threads", k)
        out = []
        for i, (w, kw) in enumerate(convs):
            arrays, gy = _conv_run("conv2d", [x, w.astype(np.float32)], kw, gys.get(i), dtype=np.float32)
            gys[i] = gy
            out += arrays
        seen.add(b"".join(a.tobytes() for a in out))
    assert len(seen) == 1
    assert tiles == {"conv_forward_direct": 6, "conv_forward_positions": 3, "conv_weight_grad_direct": 6,
                     "conv_weight_grad_positions": 3, "conv_input_grad_direct": 3, "conv_input_grad_positions": 6}


@pytest.mark.parametrize("kind, measured, strides", [("avx512", True, (1, 2)), ("avx2", True, (1,)),
                                                     ("avx2", False, ())], ids=["avx512", "avx2", "unmeasured"])
def test_the_default_runs_the_tiles_where_they_measured_faster(monkeypatch, kind, measured, strides):
    """By default (float32, 16+ channels, 128+ taps) the forward runs on the tiles on either ISA, the input gradient
    by stride phase at strides up to 2 with AVX-512 and 1 with AVX2, and nothing where the CPU is of neither kind
    (NUMBA_CPU_NAME set, or no AVX2)."""
    pytest.importorskip("numba")
    from tinygradnorm.backend.cpu_kernels import conv_direct
    monkeypatch.setattr(conv_direct, "MODE", "auto")
    monkeypatch.setattr(conv_direct, "isa", lambda: kind)
    monkeypatch.setattr(conv_direct, "measured_kind", lambda: measured)
    w_shape = (64, 32, 1, 3, 3)                 # 144 taps to each phase at stride 2
    assert conv_direct.runs_forward(np.float32, w_shape, 1) == measured
    assert not conv_direct.runs_forward(np.float64, w_shape, 1)
    ran = tuple(s for s in (1, 2) if conv_direct.runs_input_grad(np.float32, w_shape, 1, (1, s, s)))
    assert ran == strides
    assert conv_direct.runs_forward_positions(np.float32, (8, 8, 1, 3, 3), 1, (1, 1, 1)) == measured


@needs_kernels
def test_a_bad_conv_direct_setting_is_named(monkeypatch):
    from tinygradnorm.backend.cpu_kernels import conv_direct
    monkeypatch.setattr(conv_direct, "MODE", "yes")
    x, w = tg.tensor(np.ones((1, 16, 5, 5), np.float32)), tg.tensor(np.ones((16, 16, 3, 3), np.float32))
    with pytest.raises(ValueError, match="TINYGRADNORM_CONV_DIRECT is 'yes'; expected 'auto'"):
        F.conv2d(x, w)


def test_the_written_out_tiles_are_current():
    """_conv_tiles.py is what conv_direct.py writes (conv_direct.write_tiles())."""
    pytest.importorskip("numba")
    from tinygradnorm.backend.cpu_kernels import conv_direct
    with open(conv_direct.TILES_PATH) as f:
        assert f.read() == conv_direct.tiles_module()
