"""Direct convolution on the CPU: each tile of outputs summed in vector registers, with no im2col and no GEMM.

One kernel, ``tiles``, serves the forward and the weight gradient (and the input gradient, below). Both are sums
of products of a vector over L output channels and one input element:

- forward: y[n, o, p] = Σ over the taps k of W[o, k] x_pad[n, pos[p] + tap[k]];
- weight gradient: gw[o, k] = Σ over the samples n and positions p of gy[n, o, p] x_pad[n, pos[p] + tap[k]].

Here a tap k is an input channel of o's group and a kernel offset (q, i, j), tap[k] its offset in the padded input
(c*plane + q*dd*HP*WP + i*dh*WP + j*dw), and pos[p] the offset where output position p = (e, a, b) reads
(e*sd*HP*WP + a*sh*WP + b*sw). So the forward runs over the rows r = k and the columns s = p, the weight gradient
over the rows r = (n, p) and the columns s = k, and each is

    out[l, s] = Σ_r A[r, l] x[row[r] + col[s]],   A = W laid out (K, O) or gy laid out (N, P, O).

A tile is L channels by T columns: T accumulators of L lanes each (16 float32, one AVX-512 register, or two AVX2
ones). Per row it loads the L values of A once, then for each column broadcasts one x and does one vector
multiply-add: T multiply-adds from T + 1 loads, and nothing goes to memory until the tile is done. im2col instead
writes every input KD*KH*KW times, and a GEMM with 16 output rows runs far below the machine's peak.

The input is copied zero padded where there is padding (otherwise read in place). The last tile's columns past
the end read the last column again, and the channels past the group's (A is padded with zeros to a multiple of
L) compute zeros: both are dropped when the tile is stored. Every sum runs over its rows in the same order on every
call, and threads take whole tiles, so no bit depends on the thread count.

The input's gradient is made of the same tiles, one stride phase at a time (``conv_input_grad_direct``).

Where a group has fewer than 16 output channels, most of such a tile would be zeros. At stride 1 those run on the
positions tiles instead (``conv_forward_positions``): the lanes hold 16 neighbouring outputs of one channel, each
tap loads 16 neighbouring inputs as one vector, and a tile is 8 channels (AVX-512) or 4 (AVX2). Their weight
gradient (``conv_weight_grad_positions``) keeps each (channel, tap)'s sum as 16 lanes of neighbouring positions, added
up at the end.

The kernels themselves are in ``_conv_tiles.py``, written out by this module (``write_tiles()`` rewrites it): a
tile's T*L accumulators are T*L scalar variables there, and LLVM's SLP vectorizer packs each column's L into one
register (see ``slp_compiled``).
"""
import functools
import itertools
import math
import os

import llvmlite.binding
import numba
import numpy as np
from numba import prange
from numba.core.compiler_lock import global_compiler_lock

from ._jit import pjit

U = np.uint64

_MIN_ITEMS = 32            # tiles of work, at the least, in a weight gradient (see conv_weight_grad_direct)
MIN_ROWS = 128             # taps per tile, at the least, where the tiles run by default (see the NOTE above runs)
LANES = 16                 # output channels per tile: one AVX-512 register of float32, two of AVX2
COLUMNS = {"avx512": 14, "avx2": 6}      # columns per tile: 14 of the 32 AVX-512 registers, 12 of the 16 AVX2
WEIGHT_GRAD_TILES = {"avx512": (32, 6)}   # (channels, columns) of the weight gradient's tiles where the group's
#                                           channels are a multiple of 32 (see conv_weight_grad_direct)
POSITIONS = 16             # the positions tiles' lanes: output positions along a row
WEIGHT_POSITIONS = {"avx512": (8, 3), "avx2": (2, 3)}   # (channels, taps) of the weight gradient's positions tiles
#                                                         (with AVX2, 2 x 3 ran 0.87-0.91x the time of 2 x 2; 2 x 4,
#                                                         4 x 2, 4 x 1 and 1 x 6 were slower than 2 x 3)
POSITION_CHANNELS = {"avx512": 8, "avx2": 4}    # their channels: 8 AVX-512 registers, or 4 x 2 AVX2 ones
INPUT_GRAD_STRIDE = {"avx512": 2, "avx2": 1}    # the largest stride at which the input gradient's tiles run by
#                                                 default (see the NOTE above runs)


@functools.cache
def _host_features():
    """The host CPU's features where Numba compiles for it; None where NUMBA_CPU_NAME names another CPU (say
    'generic', for a portable cache), whose code may not use them."""
    if numba.config.CPU_NAME not in (None, "host"):
        return None
    return llvmlite.binding.get_host_cpu_features()


@functools.cache
def isa():
    """'avx512' where Numba compiles for this CPU and it has AVX-512 (the tiles' registers are 16 float32 wide),
    else 'avx2'."""
    features = _host_features()
    return "avx512" if features is not None and features.get("avx512f", False) else "avx2"


@functools.cache
def measured_kind():
    """Whether this CPU is of a kind the defaults below were measured on: Numba compiles for it (no NUMBA_CPU_NAME)
    and it has AVX-512 or AVX2. Elsewhere the tiles run only with TINYGRADNORM_CONV_DIRECT=1."""
    features = _host_features()
    return features is not None and bool(features.get("avx512f") or features.get("avx2"))


def slp_compiled(dispatcher):
    """The dispatcher, with LLVM's SLP vectorizer on for its compilations.

    NOTE: Numba turns the SLP vectorizer off by default (it miscompiled some integer code, Numba PR 8852), and has
    no per-function switch. It reads the setting as it builds each compilation's passes, and every compilation
    holds the global compiler lock, so it is switched on here for the length of this dispatcher's compilations
    only. The tiles are float multiply-adds and loads, checked against the array code and torch by the tests."""
    compile_for_args = dispatcher._compile_for_args

    def compile_with_slp(*args, **kwargs):
        with global_compiler_lock:
            before = numba.config.SLP_VECTORIZE
            numba.config.SLP_VECTORIZE = 1
            try:
                return compile_for_args(*args, **kwargs)
            finally:
                numba.config.SLP_VECTORIZE = before
    dispatcher._compile_for_args = compile_with_slp
    return dispatcher


def slp_pjit(fn):
    """pjit with the SLP vectorizer on, and contraction into fused multiply-adds as the only fast-math flag: no
    reassociation, which would let LLVM vectorize along the rows instead, with gathers."""
    return slp_compiled(pjit(fn, fastmath={"contract"}))


# NOTE: where the tiles run, measured on a 2-core AMD EPYC (Zen 4, AVX-512) against the im2col + GEMM path, float32,
# benchmarks/conv.py's shapes, in ms, GEMM path -> tiles. Forward: LeNet's conv2 2.19 -> 0.68, 3x3 same 4.05 ->
# 3.52, dilated 4.03 -> 3.11, the 7x7 stem 4.47 -> 3.61, 3-D 2.80 -> 1.55, 1-D 0.75 -> 0.66. Weight gradient:
# 2.28 -> 0.87, 4.89 -> 3.63, 4.99 -> 3.65, 3-D 2.26 -> 2.05, 1-D 0.82 -> 0.70. A transposed 2-D convolution's
# backward (its forward and weight gradient) 2.5 -> 2.0. Input gradient at stride 1: 3x3 same 4.10 -> 3.15,
# dilated 4.00 -> 3.29 (equal at busier moments). The GEMM won where a group has fewer than 16 output channels (most
# of each tile wasted: grouped g=4 forward 1.48 -> 1.86, LeNet's conv2's input gradient, 6 channels, 1.38 -> 3.33),
# and where a tile has few taps to sum, so that its own costs (the columns' offsets, 14 x 16 sums to start and to
# store) weigh: a 1x1 kernel's 64 (1.77 -> 3.06), a transposed 1-D convolution's backward, 64 (0.55 -> 0.70). So
# the tiles run by default with 16 or more channels and MIN_ROWS or more taps. The input's gradient at stride 2, by
# phase, lost too while every tile was stored through the out_col table (3x3 stride 2: 2.3 -> 3.0; a transposed 2-D
# convolution's forward 1.41 -> 1.52). Stored by fixed loops to every other output (see tiles_source), it won: 2.36
# -> 2.32 and 2.33 -> 2.20, 1.46 -> 1.31 and 1.69 -> 1.31, in two runs of six rounds; a transposed 1-D
# convolution's forward, 64 taps to a phase, still lost (0.26 -> 0.33). So by default the input's gradient runs on
# the tiles at strides of 1 or 2, with MIN_ROWS taps or more to each phase.
#
# The positions tiles (16 neighbouring outputs in the lanes, 8 channels) take the stride-1 cases of fewer than 16
# channels per group. Measured the same way: grouped g=4 (8 channels) forward 2.38 -> 1.65 and input gradient
# 1.40 -> 0.95; the 3-D case's input gradient (8 channels) 2.88 -> 1.58; LeNet's conv1 forward (6 channels) 0.65
# -> 0.65. LeNet's conv2's input gradient (6 channels, a wide grid of 16 columns for 12) lost, 0.95 -> 1.70, so by
# default the input gradient runs on them only with a whole number of 8-channel blocks. The weight gradient on
# positions tiles of 8 channels by 3 taps: grouped g=4 (8 channels), with the bias's, 2.72 -> 1.75 and 2.99 -> 2.06
# (six rounds each; its layout pass of gy is 0.26-0.43 of that); LeNet's conv1 (6 channels, in a block of 8) 1.51
# -> 1.24 [0.63-1.27 per round]. That 0.27 ms of a 10 ms training step was not worth the kernel's compile time on
# the example's first run (87 s without it, 111 s with it, on two cores; cached after): so by default it runs with a
# whole number of 8-channel blocks, as the input gradient does.
#
# On a 2-core AMD EPYC with AVX2 and no AVX-512 (the AVX2 tiles: 16 channels by 6 columns, positions tiles of 4
# channels), the same comparison, median of five alternating rounds, GEMM path -> tiles, in ms. Forward: LeNet's
# conv1 1.35 -> 1.04, conv2 1.48 -> 0.61, 3x3 same 4.30 -> 3.31, stride 2 1.91 -> 1.64, dilated 4.16 -> 3.20, grouped
# 2.31 -> 1.44, the stem 4.87 -> 3.39, 1-D 0.86 -> 0.75, 3-D 3.27 -> 2.01; a 1x1 kernel (64 taps) lost, 2.25 -> 2.92.
# Weight gradient, with the bias's: conv2 1.79 -> 0.80, same 4.44 -> 3.35, stride 2 2.29 -> 1.95, dilated 4.37 ->
# 3.52, grouped (positions) 2.83 -> 2.67, stem 5.45 -> 4.27, 1-D 1.20 -> 0.87, 3-D 2.88 -> 1.73. A transposed 2-D
# convolution's backward 2.14 -> 1.73. The input gradient won at stride 1: same 4.09 -> 3.34, dilated 4.05 -> 3.66,
# 1-D 0.85 -> 0.80, and on the positions tiles grouped 2.50 -> 1.53 and 3-D 3.07 -> 2.45; by stride phase it lost:
# stride 2 2.01 -> 2.36, a transposed 2-D convolution's forward 1.35 -> 1.48. So with AVX2 the defaults are
# AVX-512's, except that the input's gradient runs on the tiles at stride 1 only (INPUT_GRAD_STRIDE).
MODE = os.environ.get("TINYGRADNORM_CONV_DIRECT", "auto")       # "auto", "1" (wherever they can) or "0" (never)


def runs(dtype, lanes, rows):
    """Whether the tiles run a convolution whose tiles have this many channels (output channels per group) and rows
    (taps: input channels per group times the kernel's size)."""
    if MODE == "0":
        return False
    if MODE == "1":
        return lanes >= 1
    if MODE != "auto":
        raise ValueError(f"TINYGRADNORM_CONV_DIRECT is {MODE!r}; expected 'auto' (the default), '1' (the direct "
                         f"convolution wherever it can run) or '0' (never)")
    return measured_kind() and dtype == np.float32 and lanes >= LANES and rows >= MIN_ROWS


def runs_forward(dtype, w_shape, groups):
    """Whether the tiles run the forward, and the weight's gradient, of a convolution with weights of this shape."""
    return runs(dtype, w_shape[0] // groups, math.prod(w_shape[1:]))


def runs_input_grad(dtype, w_shape, groups, stride):
    """Whether the tiles run the input's gradient, by stride phase: its tiles have C/G channels and, in each phase,
    O/G times the kernel's size over the stride's rows (taps). By default the stride is at most INPUT_GRAD_STRIDE
    along each dim (2 with AVX-512, 1 with AVX2)."""
    taps = w_shape[0] // groups * math.prod(w_shape[2:]) // math.prod(stride)
    return runs(dtype, w_shape[1], taps) and (MODE == "1" or all(s <= INPUT_GRAD_STRIDE[isa()] for s in stride))


def _positions_can(dtype, stride):
    """Whether the setting, the stride (1) and, by default, the CPU and dtype let the positions tiles run."""
    if MODE == "0":
        return False
    if MODE not in ("1", "auto"):
        runs(dtype, 0, 0)                                 # the error that names the setting
    return all(s == 1 for s in stride) and (MODE == "1" or (measured_kind() and dtype == np.float32))


def runs_forward_positions(dtype, w_shape, groups, stride):
    """Whether the positions tiles run the forward: stride 1, and fewer than 16 output channels per group (where the
    channel tiles waste most of each tile)."""
    return w_shape[0] // groups < LANES and _positions_can(dtype, stride)


def runs_weight_grad_positions(dtype, w_shape, groups, stride):
    """Whether the positions tiles run the weight's gradient: stride 1, and fewer than 16 output channels per group
    (by default only a whole number of 8-channel blocks of them)."""
    og = w_shape[0] // groups
    return og < LANES and (MODE == "1" or og % 8 == 0) and _positions_can(dtype, stride)


def runs_input_grad_positions(dtype, w_shape, groups, stride, padding, dilation):
    """Whether the positions tiles run the input's gradient: stride 1, fewer than 16 input channels per group (by
    default only a whole number of tiles of them), and gy's padding d(k - 1) - p not negative."""
    cg = w_shape[1]
    return (cg < LANES and (MODE == "1" or cg % POSITION_CHANNELS[isa()] == 0) and _positions_can(dtype, stride)
            and all(p <= d * (k - 1) for k, p, d in zip(w_shape[2:], padding, dilation)))


# ---- the three uses ------------------------------------------------------------------------------------------------
class _Geometry:
    """The padded input's layout and the tap and position offsets of a 3-D convolution."""

    def __init__(self, x_shape, w_shape, stride, padding, dilation, out, groups):
        n, c, d, h, width = x_shape
        o, cg, kd, kh, kw = w_shape
        (sd, sh, sw), (pd, ph, pw), (dd, dh, dw) = stride, padding, dilation
        self.padding = padding
        self.dp, self.hp, self.wp = d + 2 * pd, h + 2 * ph, width + 2 * pw
        self.chan = self.dp * self.hp * self.wp
        plane, row = self.hp * self.wp, self.wp
        q, i, j = np.ix_(np.arange(kd), np.arange(kh), np.arange(kw))
        one_channel = (q * dd * plane + i * dh * row + j * dw).reshape(-1)
        self.taps = (np.arange(cg)[:, None] * self.chan + one_channel).reshape(-1).astype(np.uint64)
        e, a, b = np.ix_(np.arange(out[0]), np.arange(out[1]), np.arange(out[2]))
        self.pos = (e * sd * plane + a * sh * row + b * sw).reshape(-1).astype(np.uint64)
        self.n, self.c, self.o, self.groups = n, c, o, groups
        self.og = o // groups

    def padded(self, x, empty):
        """x zero padded, flat: a copy where there is padding, x itself where there is none."""
        return padded_input(x, self.padding, empty)


def padded_input(x, padding, empty):
    """x zero padded as the channel tiles read it, flat: conv_forward_direct's and conv_weight_grad_direct's
    ``padded``."""
    return _padded(x, padding, padding, empty)


def _padded(a, lo, hi, empty, tail=0):
    """a (N, C, D, H, W) with lo[i] zeros before and hi[i] after along spatial dim i, flat, and ``tail`` zeros after
    it all (a itself, flat, where there are none). ``empty`` is the kernels' recycled memory: a training step pads
    arrays of the same sizes."""
    if not any(lo) and not any(hi) and not tail:
        return a.reshape(-1)
    n, c, d, h, w = a.shape
    dp, hp, wp = (size + l + r for size, l, r in zip(a.shape[2:], lo, hi))
    size = n * c * dp * hp * wp
    out = empty((size + tail,), a.dtype)
    out[size:] = 0
    _pad(a.reshape(-1), out, n * c, d, h, w, *lo, dp, hp, wp)
    return out


def _lanes_last(w, groups, padded):
    """w (O, C/G, ...) laid out (G, C/G*prod(kernel), padded): each tap's output channels contiguous, zeros past
    the group's O/G."""
    og = w.shape[0] // groups
    a = np.zeros((groups, math.prod(w.shape[1:]), padded), dtype=w.dtype)
    a[:, :, :og] = w.reshape(groups, og, -1).transpose(0, 2, 1)
    return a


@pjit
def _pad(x, xp, planes, d, h, w, pd, ph, pw, dp, hp, wp):
    """xp[plane, e, r, u] = x[plane, e - pd, r - ph, u - pw], zero outside x (planes of (dp, hp, wp))."""
    for p in prange(planes):
        at = U(p * dp * hp * wp)
        for e in range(dp):
            for r in range(hp):
                row = at + U((e * hp + r) * wp)
                if pd <= e < pd + d and ph <= r < ph + h:
                    src = U(((p * d + e - pd) * h + r - ph) * w)
                    for u in range(U(pw)):
                        xp[row + u] = 0
                    for u in range(U(w)):
                        xp[row + U(pw) + u] = x[src + u]
                    for u in range(U(pw + w), U(wp)):
                        xp[row + u] = 0
                else:
                    for u in range(U(wp)):
                        xp[row + u] = 0


@pjit
def _channels_last(gy, a, sums, need_sums, samples, groups, og, p, ogp):
    """a[n, g, t, l] = gy[n, g*og + l, t] for l < og, and 0 for og <= l < ogp; and, if need_sums, sums[n, g*og + l] =
    Σ_t gy[n, g*og + l, t], in t's order (the bias's gradient, per sample, from the same pass over gy).

    NOTE: the sums in this pass added 0.02-0.04 ms to it, where NumPy's own sum of gy took 0.06-0.14 (measured on
    32 x 32 x 784, 256 x 16 x 64, 32 x 64 x 196 and 32 x 32 x 256 float32 gy)."""
    for ng in prange(samples * groups):
        at = U(ng * p * ogp)
        for t in range(U(p)):
            for l in range(U(og), U(ogp)):
                a[at + t * U(ogp) + l] = 0
        for l in range(U(og)):
            src = U((ng * og + l) * p)
            total = gy.dtype.type(0.0)
            for t in range(U(p)):
                v = gy[src + t]
                a[at + t * U(ogp) + l] = v
                total += v
            if need_sums:
                sums[ng * og + l] = total


def _kernel():
    from . import _conv_tiles
    return _conv_tiles.KERNELS[isa()], COLUMNS[isa()]


def _weight_grad_kernel(og):
    """(kernel, channels, columns) of the tiles for a weight gradient with og channels to a group.

    NOTE: a weight gradient's columns are its taps, which are rarely neighbours, so its 16 x 14 tiles run the general
    row loop, whose 14 column offsets do not all fit in registers (see tiles_source). Where og is a multiple of 32,
    tiles of 32 channels by 6 taps keep theirs in registers and load 8 values for 12 multiply-adds where the 16 x 14
    loaded 15 (and the spilled offsets) for 14. Measured against 16 x 14 on two cores, in alternation, six rounds
    each, in two runs: 3x3 32 -> 32 channels on 28 x 28 0.88x and 0.88x, dilated 0.90x and 0.92x, 3x3 stride 2 to 64
    channels 0.94x and 0.98x, 1-D k=5 0.98x and 0.95x, a transposed 2-D 4x4 convolution's backward 0.73x."""
    from . import _conv_tiles
    shape = WEIGHT_GRAD_TILES.get(isa())
    if shape is not None and og % shape[0] == 0:
        return (_conv_tiles.WEIGHT_GRAD_KERNELS[isa()],) + shape
    return _conv_tiles.KERNELS[isa()], LANES, COLUMNS[isa()]


def conv_forward_direct(x, w, b, stride, padding, dilation, out, groups, empty, padded=None):
    """y (N, O, OD, OH, OW) of the 3-D convolution of x (N, C, D, H, W) with w (O, C/G, KD, KH, KW), plus b (O,)
    unless None. ``padded``: x as _Geometry.padded gives it, where the caller has it already."""
    geo = _Geometry(x.shape, w.shape, stride, padding, dilation, out, groups)
    kernel, columns = _kernel()
    k, og = geo.taps.size, geo.og
    ogp = -(-og // LANES) * LANES
    a = _lanes_last(w, groups, ogp)
    p = geo.pos.size
    y = empty((x.shape[0], w.shape[0]) + tuple(out), x.dtype)
    kernel(a.reshape(-1), geo.padded(x, empty) if padded is None else padded, y.reshape(-1), or_empty(b, x.dtype),
           b is not None, geo.taps,
           geo.pos, _counting(p),
           x.shape[0], groups, ogp // LANES, -(-p // columns), 1, x.shape[0],
           0, k * ogp, ogp, geo.c * geo.chan, x.shape[1] // groups * geo.chan,
           w.shape[0] * p, p, og, p)
    return y


def conv_weight_grad_direct(x, gy, w_shape, stride, padding, dilation, groups, empty, padded=None, need_gb=False):
    """(gw, gb): gw (O, C/G, KD, KH, KW) of the convolution of x for the output gradient gy (N, O, OD, OH, OW), and
    the bias's gradient gb (O,) if need_gb (else None), the samples' sums added in order; ``padded`` as in
    conv_forward_direct."""
    geo = _Geometry(x.shape, w_shape, stride, padding, dilation, gy.shape[2:], groups)
    k, og, n = geo.taps.size, geo.og, x.shape[0]
    kernel, lanes, columns = _weight_grad_kernel(og)
    ogp = -(-og // lanes) * lanes
    p = geo.pos.size
    a = empty((n * groups * p * ogp,), x.dtype)                    # gy laid out (N, G, P, OGP)
    sums = np.empty((n, w_shape[0]) if need_gb else 0, x.dtype)
    _channels_last(gy.reshape(-1), a, sums.reshape(-1), need_gb, n, groups, og, p, ogp)
    # NOTE: the samples are cut into parts, each summed into a partial gw of its own and the parts added in order, so
    # that there are tiles enough for every thread: LeNet's second convolution has 11 tiles of 14 taps, 6 and 5 for
    # two threads. The parts depend on the shapes only.
    tiles = groups * (ogp // lanes) * -(-k // columns)
    step = -(-n // max(1, min(n, -(-_MIN_ITEMS // tiles))))
    parts = -(-n // step) if n else 1
    partial = np.zeros((parts,) + tuple(w_shape), dtype=x.dtype)
    kernel(a, geo.padded(x, empty) if padded is None else padded, partial.reshape(-1), or_empty(None, x.dtype),
           False, geo.pos, geo.taps,
           _counting(k), parts, groups, ogp // lanes, -(-k // columns), step, n,
           groups * p * ogp, p * ogp, ogp, geo.c * geo.chan, x.shape[1] // groups * geo.chan,
           w_shape[0] * k, k, og, k)
    gb = (sum_in_order(sums) if n else np.zeros(w_shape[0], x.dtype)) if need_gb else None
    return sum_in_order(partial), gb


def sum_in_order(parts):
    """parts[0] + parts[1] + ..., in that order (parts has at least one): partial sums of a reduction split by shape,
    added the same way whatever the thread count."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


def conv_input_grad_direct(gy, w, x_shape, stride, padding, dilation, groups, empty):
    """gx (x_shape) of the 3-D convolution of x with w (O, C/G, KD, KH, KW) for the output gradient gy, by stride phase.

    gx[n, c, s*m + r] = Σ over o in c's group and the taps k with (r + p - d*k) divisible by s of
    w[o, c, k] gy[n, o, m + (r + p - d*k) / s] (per spatial dim; r < s is the phase). So each phase is a convolution
    of gy with some of the taps, at stride 1, with L = C/G channels to a tile; with stride 1 there is one phase, all
    the taps, and gx is the convolution of gy with the flipped weights."""
    n, o = gy.shape[:2]
    c, cg = x_shape[1], w.shape[1]
    og = o // groups
    cgp = -(-cg // LANES) * LANES
    dims = [_phases(size, k, s, p, d) for size, k, s, p, d in zip(x_shape[2:], w.shape[2:], stride, padding, dilation)]
    lo = [max([0] + [-off for _, _, taps in phases for _, off in taps]) for phases in dims]
    hi = [max([0] + [m - 1 + off - (size - 1) for _, m, taps in phases for _, off in taps])
          for phases, size in zip(dims, gy.shape[2:])]
    gp = _padded(gy, lo, hi, empty)
    dp, hp, wp = (size + l + r for size, l, r in zip(gy.shape[2:], lo, hi))
    chan = dp * hp * wp
    kernel, columns = _kernel()
    gx = empty(tuple(x_shape), gy.dtype)
    w6 = w.reshape((groups, og, cg) + w.shape[2:])
    for (rd, md, td), (rh, mh, th), (rw, mw, tw) in itertools.product(*dims):
        phase = (slice(None), slice(None), slice(rd, None, stride[0]), slice(rh, None, stride[1]),
                 slice(rw, None, stride[2]))
        if not (td and th and tw) or 0 in (md, mh, mw):
            gx[phase] = 0
            continue
        taps = [(kd, kh, kw, ((od + lo[0]) * hp + oh + lo[1]) * wp + ow + lo[2])
                for (kd, od), (kh, oh), (kw, ow) in itertools.product(td, th, tw)]
        rows = (np.arange(og)[:, None] * chan + np.array([t[3] for t in taps])).reshape(-1).astype(np.uint64)
        e, a, b = np.ix_(np.arange(md), np.arange(mh), np.arange(mw))
        cols = ((e * hp + a) * wp + b).reshape(-1).astype(np.uint64)
        picked = w6[:, :, :, [t[0] for t in taps], [t[1] for t in taps], [t[2] for t in taps]]   # (G, OG, CG, R)
        lanes = np.zeros((groups, og, len(taps), cgp), dtype=gy.dtype)                 # (G, OG*R, CGP)
        lanes[..., :cg] = picked.transpose(0, 1, 3, 2)
        # the phase's positions s*m + r, where the tiles store them in gx
        e, a, b = np.ix_(rd + stride[0] * np.arange(md), rh + stride[1] * np.arange(mh), rw + stride[2] * np.arange(mw))
        at = ((e * x_shape[3] + a) * x_shape[4] + b).reshape(-1).astype(np.uint64)
        m = md * mh * mw
        kernel(lanes.reshape(-1), gp, gx.reshape(-1), or_empty(None, gy.dtype), False, rows, cols, at,
               n, groups, cgp // LANES, -(-m // columns), 1, n,
               0, og * len(taps) * cgp, cgp, o * chan, og * chan,
               c * math.prod(x_shape[2:]), math.prod(x_shape[2:]), cg, m)
    return gx


def conv_forward_positions(x, w, b, padding, dilation, out, groups, empty):
    """conv_forward_direct at stride 1 with the positions in the lanes: for groups of fewer than 16 channels."""
    return _positions(x, w, b, padding, dilation, out, groups, empty)


def conv_input_grad_positions(gy, w, x_shape, padding, dilation, groups, empty):
    """conv_input_grad_direct at stride 1 on the positions tiles: the convolution of gy, padded by d(k - 1) - p, with
    each group's w flipped along every spatial axis and its two channel axes swapped."""
    o, cg = w.shape[:2]
    flipped = w.reshape((groups, o // groups, cg) + w.shape[2:]).swapaxes(1, 2)[..., ::-1, ::-1, ::-1]
    flipped = np.ascontiguousarray(flipped).reshape((groups * cg, o // groups) + w.shape[2:])
    pad = tuple(d * (k - 1) - p for k, p, d in zip(w.shape[2:], padding, dilation))
    return _positions(gy, flipped, None, pad, dilation, tuple(x_shape[2:]), groups, empty)


_PART_BYTES = 1 << 18       # the weight gradient's positions tiles: a part's samples, x and gy, in about this much


def conv_weight_grad_positions(x, gy, w_shape, padding, dilation, groups, empty, need_gb=False):
    """conv_weight_grad_direct at stride 1 on positions tiles: (gw, gb), or None where x is not all finite.

    gw[o, k] = Σ_n Σ_t gy_wide[n, o, t] x_pad[n, tap[k] + t] over the wide grid's positions t (see _positions), with
    gy_wide zero at the grid's positions that are not outputs. A tile of 8 channels by 3 taps (AVX-512; 2 by 3 with
    AVX2, WEIGHT_POSITIONS) holds each sum as 16 lanes of neighbouring positions, one vector: per 16 positions it
    loads 3 vectors of x and 8 of gy for 24 multiply-adds. The lanes are added up, in order, once per part of the samples; the parts (a few samples each,
    so that their x and gy stay in a core's cache while every tile reads them) are added in order.

    NOTE: the grid's other positions read x too, and 0 times an inf is nan, where the windows would not have read
    that inf at all: so a non-finite x goes back to the caller (None), for the GEMM path."""
    n, c = x.shape[:2]
    o, cg = w_shape[:2]
    og = o // groups
    out = tuple(gy.shape[2:])
    if not _all_finite(x.reshape(-1)):
        return None
    chans, taps = WEIGHT_POSITIONS[isa()]
    from . import _conv_tiles
    kernel = _conv_tiles.WEIGHT_POSITION_KERNELS[isa()]
    ogp = -(-og // chans) * chans
    geo = _Geometry(x.shape, w_shape, (1, 1, 1), padding, dilation, out, groups)
    span = ((out[0] - 1) * geo.hp + out[1]) * geo.wp
    vectors = -(-span // POSITIONS)
    xp = _padded(x, padding, padding, empty, tail=POSITIONS)
    gyw = empty((n * groups * vectors * ogp * POSITIONS,), x.dtype)
    sums = np.empty((n, o) if need_gb else 0, x.dtype)
    _wide_blocked(gy.reshape(-1), gyw, sums.reshape(-1), need_gb, n, groups, og, ogp,
                  _grid_sources(out, geo.hp, geo.wp, vectors), vectors)
    k = geo.taps.size
    per_sample = (c * geo.chan + groups * vectors * ogp * POSITIONS) * x.itemsize
    inner = max(1, min(n, _PART_BYTES // per_sample))
    parts = -(-n // inner) if n else 1
    partial = np.zeros((parts, o, k), dtype=x.dtype)
    kernel(gyw, xp, partial.reshape(-1), geo.taps, parts, groups, ogp // chans, -(-k // taps), inner, n, og, ogp,
           vectors, c * geo.chan, cg * geo.chan)
    gb = (sum_in_order(sums) if n else np.zeros(o, x.dtype)) if need_gb else None
    return sum_in_order(partial).reshape(w_shape), gb


@pjit
def _all_finite(a):
    """Whether every element of a is finite (0 times inf or nan is nan)."""
    total = a.dtype.type(0.0)
    for t in prange(a.size):
        total += a[t] * 0
    return total == 0


@pjit
def _wide_blocked(gy, gyw, sums, need_sums, samples, groups, og, ogp, source, vectors):
    """gyw[n, g, t // 16, l, t % 16] = gy[n, g*og + l, source[t]] at the wide grid's positions t that are outputs
    (source[t], the output's flat index, is -1 at the others: there gyw is zero), and zero for og <= l < ogp; and,
    if need_sums, sums[n, g*og + l] = Σ gy[n, g*og + l], in the grid's order."""
    p = gy.size // max(samples * groups * og, 1)
    zero = gy.dtype.type(0.0)
    for ng in prange(samples * groups):
        at = U(ng * vectors * ogp * 16)
        for l in range(og):
            src = ng * og + l
            total = zero
            for v in range(vectors):
                dst = at + U((v * ogp + l) * 16)
                for lane in range(16):
                    s = source[v * 16 + lane]
                    value = gy[U(src * p + s)] if s >= 0 else zero
                    gyw[dst + U(lane)] = value
                    total += value
            if need_sums:
                sums[src] = total
        for l in range(og, ogp):
            for v in range(vectors):
                dst = at + U((v * ogp + l) * 16)
                for lane in range(16):
                    gyw[dst + U(lane)] = zero


def _grid_sources(out, hp, wp, vectors):
    """For each of the wide grid's vectors * 16 positions t = (e*hp + a)*wp + b, the flat index (e*OH + a)*OW + b of
    the output there, or -1 where there is none."""
    source = np.full(vectors * POSITIONS, -1, dtype=np.int64)
    e, a, b = np.ix_(*(np.arange(size) for size in out))
    source[((e * hp + a) * wp + b).reshape(-1)] = np.arange(math.prod(out))
    return source


def _positions(x, w, b, padding, dilation, out, groups, empty):
    """The positions tiles' convolution (stride 1).

    At stride 1, output (e, a, b) reads the padded input from its offset (e*HP + a)*WP + b, so the outputs are one
    "wide grid" of (OD - 1)*HP + OH rows of WP: a tile of 16 neighbours on it reads 16 neighbouring inputs for each
    tap, one vector. The grid's positions past a row's OW (and the rows between planes) are computed and dropped."""
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    og = o // groups
    chans, kernel = POSITION_CHANNELS[isa()], _position_kernel()
    ogp = -(-og // chans) * chans
    geo = _Geometry(x.shape, w.shape, (1, 1, 1), padding, dilation, out, groups)
    hp, wp, chan = geo.hp, geo.wp, geo.chan
    span = ((out[0] - 1) * hp + out[1]) * wp                 # the wide grid
    tiles = -(-span // POSITIONS)
    # the padded input, with room after it for the last tile's reads past the grid
    xp = _padded(x, padding, padding, empty, tail=(tiles + 1) * POSITIONS)
    a = _lanes_last(w, groups, ogp)
    out_sample = tiles * POSITIONS
    wide = empty((n, o, out_sample), x.dtype)
    kernel(a.reshape(-1), xp, wide.reshape(-1), or_empty(b, x.dtype), b is not None, geo.taps, n, groups,
           ogp // chans, tiles, og, ogp, c * chan, cg * chan, out_sample)
    grid = np.lib.stride_tricks.as_strided(wide, (n, o) + tuple(out),
                                           wide.strides[:2] + tuple(s * wide.itemsize for s in (hp * wp, wp, 1)))
    y = empty((n, o) + tuple(out), x.dtype)
    y[...] = grid
    return y


def _position_kernel():
    from . import _conv_tiles
    return _conv_tiles.POSITION_KERNELS[isa()]


def _phases(size, k, s, p, d):
    """Along one dim of an input of this size: (r, how many positions s*m + r there are, [(tap, gy offset)]) for
    each phase r < s."""
    phases = []
    for r in range(s):
        count = -(-(size - r) // s) if size > r else 0
        # NOTE: the taps in descending order, so that their offsets into gy ascend: in ascending order the input
        # gradient of a 3x3 convolution ran 30% slower (4.6 against 3.4 ms), every tile reading its rows backwards
        taps = [(j, (r + p - d * j) // s) for j in reversed(range(k)) if (r + p - d * j) % s == 0]
        phases.append((r, count, taps))
    return phases


@functools.lru_cache(maxsize=64)
def _counting(count):
    """0, 1, ..., count - 1 as the kernels' offsets (uint64): where a tile's columns go when they are contiguous."""
    return np.arange(count, dtype=np.uint64)


def or_empty(a, dtype):
    """a flattened, or an empty array where a kernel's argument is unused (Numba needs an array's type)."""
    return np.zeros(0, dtype=dtype) if a is None else a.reshape(-1)


# ---- writing out the kernels ---------------------------------------------------------------------------------------
_HEADER = '''"""The tile kernels of conv_direct.py, one per tile shape. Written out by conv_direct.py; do not edit.

    python -c "from tinygradnorm.backend.cpu_kernels import conv_direct; conv_direct.write_tiles()"

rewrites this file, and tests/test_cpu_kernels.py checks that it is current. See conv_direct.py for the maths.
"""
import numpy as np
from numba import prange

from .conv_direct import slp_pjit

U = np.uint64
'''

# The loop over a kernel's tiles, shared by the three templates below: every (outer index, group, block of channels,
# tile) is one item, the tiles of one block next to each other.
_ITEMS = """    for item in prange({outer} * groups * blocks * tiles):
        t = item % tiles
        blk = item // tiles % blocks
        g = item // (tiles * blocks) % groups
        {index} = item // (tiles * blocks * groups)
"""


_SIGNATURE = '''

@slp_pjit
def tiles_{lanes}x{columns}(a, x, out, bias, has_bias, row, col, out_col, outer, groups, blocks, tiles, inner,
            samples, a_outer, a_group, lda, x_outer, x_group, out_outer, out_lane, og, s_count):
    """out[o*out_outer + (g*og + l)*out_lane + out_col[s]] = Σ over the samples n = o*inner + m < samples (m < inner)
    and r < row.size of A[n*a_outer + g*a_group + r*lda + blk*{lanes} + l] x[n*x_outer + g*x_group + row[r] + col[s]]
    (+ bias[g*og + l]), for every outer index o, group g, block of {lanes} channels and tile of {columns} columns s."""
    zero = x.dtype.type(0.0)
{items}        s0 = t * {columns}
        o0 = g * og + blk * {lanes}                    # the tile's first output channel
        tile = np.empty({size}, dtype=x.dtype)
'''

_BODY = '''{columns_at}
{zeros}
{row_loops}
{tile_stores}
        oc0 = out_col[s0]
        if {out_neighbours}:          # the tile's outputs are neighbours too: a loop of fixed length, no lookups
            for l in range(min({lanes}, og - blk * {lanes})):
                add = bias[o0 + l] if has_bias else zero
                at = U(o * out_outer + (o0 + l) * out_lane) + oc0
                for s in range({columns}):
                    out[at + U(s)] = tile[s * {lanes} + l] + add
        elif {out_every_other}:       # or every other one (an input gradient's phase, at stride 2)
            for l in range(min({lanes}, og - blk * {lanes})):
                add = bias[o0 + l] if has_bias else zero
                at = U(o * out_outer + (o0 + l) * out_lane) + oc0
                for s in range({columns}):
                    out[at + U(2 * s)] = tile[s * {lanes} + l] + add
        else:
            for l in range(min({lanes}, og - blk * {lanes})):
                add = bias[o0 + l] if has_bias else zero
                at = U(o * out_outer + (o0 + l) * out_lane)
                for s in range(min({columns}, s_count - s0)):
                    out[at + out_col[s0 + s]] = tile[s * {lanes} + l] + add
'''

_SAMPLES = '''for sample in range(o * inner, min(o * inner + inner, samples)):
    a_at = U(sample * a_outer + g * a_group + blk * {lanes})
    x_at = U(sample * x_outer + g * x_group){x_from}
    for r in range(row.size):
        ar = a_at + U(r * lda)
        xr = x_at + row[r]
{a_loads}
{columns_body}'''


# NOTE: a tile's columns are neighbours in most tiles of a stride-1 forward or input gradient (all of them where a row
# of outputs is a whole number of tiles), and every other input in most of a stride-2 forward's. The row loop for
# those reads x at fixed offsets from one index, where the general loop keeps each column's offset in an integer
# register: 14 of them and the loop's own are more than the CPU's 16, and the spilled ones are reloaded every row.
# Likewise a tile whose outputs are neighbours (or every other output, as in a phase of a stride-2 input gradient)
# is stored by loops of fixed length, with no lookups in out_col: the
# general store was a quarter of a 3x3 forward's time (32 -> 32 channels, 288 taps to a tile; with no store at all
# it ran at 86-93 GFLOP/s on one core, with the general store at 68-79, with the fixed one at 80-92). Measured on two
# cores against the general loops (each also with the fixed store), the copies for neighbours and every other
# input made the 3x3 forward 0.81x as long, its input gradient 0.81x, the stride-2 forward 0.80x. Each copy costs
# compile time: the AVX-512 kernel compiles in 38 s with all three (7 s with the general loop alone), once, into
# Numba's cache.
_ROW_LOOPS = """        if {neighbours}:              # the columns are neighbours: x at fixed offsets from one index
{samples_neighbours}
        elif {every_other}:           # every other element (a forward at stride 2)
{samples_every_other}
        else:
{samples}"""


def tiles_source(lanes, columns, copies=True):
    """The source of tiles_{lanes}x{columns}: the tile's accumulators acc{s}_{l} written out as scalars, summed by one
    of three copies of the loop over the rows: for columns that are neighbours, every other element, or any (only
    the last, unless copies)."""
    acc = [[f"acc{s}_{l}" for l in range(lanes)] for s in range(columns)]
    columns_at = "\n".join(f"        c{s} = col[min(s0 + {s}, s_count - 1)]" for s in range(columns))
    zeros = "\n".join("        " + " = ".join(acc[s]) + " = zero" for s in range(columns))
    def spaced(step, name="c", first="c0"):
        return " and ".join([f"s0 + {columns - 1} < s_count"] +
                            [f"{name(s) if callable(name) else name + str(s)} == {first} + {step * s}"
                             for s in range(1, columns)])
    a_loads = "\n".join(f"        lane{l} = a[ar + U({l})]" for l in range(lanes))

    def samples(x_from, column):
        body = []
        for s in range(columns):
            body.append(f"        v{s} = x[xr + {column(s)}]")
            body.extend(f"        {acc[s][l]} += v{s} * lane{l}" for l in range(lanes))
        text = _SAMPLES.format(lanes=lanes, x_from=x_from, a_loads=a_loads, columns_body="\n".join(body))
        return "\n".join(" " * 12 + line for line in text.split("\n"))
    tile_stores = "\n".join(f"        tile[{s * lanes + l}] = {acc[s][l]}"
                            for s in range(columns) for l in range(lanes))
    if copies:
        row_loops = _ROW_LOOPS.format(neighbours=spaced(1), samples_neighbours=samples(" + c0", lambda s: f"U({s})"),
                                      every_other=spaced(2),
                                      samples_every_other=samples(" + c0", lambda s: f"U({2 * s})"),
                                      samples=samples("", lambda s: f"c{s}"))
    else:
        row_loops = "\n".join(line[4:] for line in samples("", lambda s: f"c{s}").split("\n"))
    return (_SIGNATURE.format(lanes=lanes, columns=columns, size=lanes * columns,
                              items=_ITEMS.format(outer="outer", index="o"))
            + _BODY.format(lanes=lanes, columns=columns, columns_at=columns_at, zeros=zeros, row_loops=row_loops,
                           tile_stores=tile_stores, out_neighbours=spaced(1, lambda s: f"out_col[s0 + {s}]", "oc0"),
                           out_every_other=spaced(2, lambda s: f"out_col[s0 + {s}]", "oc0")))


_POSITIONS = '''

@slp_pjit
def positions_{width}x{chans}(w, x, wide, bias, has_bias, row, samples, groups, blocks, tiles, og, ogp, x_sample,
            x_group, out_sample):
    """wide[(n*G*og + g*og + blk*{chans} + c)*out_sample + t] = Σ_r w[(g*row.size + r)*ogp + blk*{chans} + c]
    x[n*x_sample + g*x_group + row[r] + t] (+ bias), for every sample n, group g, block of {chans} channels c and
    tile of {width} positions t."""
    zero = x.dtype.type(0.0)
    k_ = row.size
{items}        t0 = U(t * {width})
        x_at = U(n * x_sample + g * x_group) + t0
        w_at = U(g * k_ * ogp + blk * {chans})
        valid = min({chans}, og - blk * {chans})        # the block's channels that are the group's
{biases}
{zeros}
        for r in range(k_):
            xr = x_at + row[r]
            wr = w_at + U(r * ogp)
{loads}
{body}
        out = U((n * groups * og + g * og + blk * {chans}) * out_sample) + t0
{stores}
'''


def positions_source(width, chans):
    """The source of positions_{width}x{chans}: a tile of {chans} channels by {width} neighbouring positions, each
    channel's {width} sums one vector register (the positions in the lanes, for groups of few channels)."""
    acc = [[f"acc{c}_{t}" for t in range(width)] for c in range(chans)]
    pad = " " * 8
    biases = "\n".join(f"{pad}b{c} = bias[g * og + blk * {chans} + {c}] if has_bias and {c} < valid else zero"
                       for c in range(chans))
    zeros = "\n".join(pad + " = ".join(row) + " = zero" for row in acc)
    loads = "\n".join(f"{pad}    v{t} = x[xr + U({t})]" for t in range(width))
    body = []
    for c in range(chans):
        body.append(f"{pad}    w{c} = w[wr + U({c})]")
        body.extend(f"{pad}    {acc[c][t]} += w{c} * v{t}" for t in range(width))
    stores = []
    for c in range(chans):
        stores.append(f"{pad}if {c} < valid:")
        stores.extend(f"{pad}    wide[out + U({c} * out_sample + {t})] = {acc[c][t]} + b{c}" for t in range(width))
    return _POSITIONS.format(width=width, chans=chans, biases=biases, zeros=zeros, loads=loads, body="\n".join(body),
                             stores="\n".join(stores), items=_ITEMS.format(outer="samples", index="n"))


_WEIGHT_POSITIONS = """

@slp_pjit
def weight_positions_{width}x{chans}x{taps}(gyw, x, out, row, parts, groups, blocks, tiles, inner, samples, og, ogp,
            vectors, x_sample, x_group):
    \"\"\"out[part, g*og + blk*{chans} + c, k] = Σ over the samples n = part*inner + m < samples (m < inner) and the
    wide grid's positions t < vectors*{width} of gyw[n, g, t // {width}, blk*{chans} + c, t % {width}]
    x[n*x_sample + g*x_group + row[k] + t], for every part, group g, block of {chans} channels c and tile of {taps}
    taps k: each (c, k)'s {width} lanes summed over the positions, then added up lane by lane.\"\"\"
    zero = x.dtype.type(0.0)
    k_ = row.size
{items}        k0 = t * {taps}
{rows}
{zeros}
        for n in range(part * inner, min(part * inner + inner, samples)):
            gy_at = U(((n * groups + g) * vectors * ogp + blk * {chans}) * {width})
            x_at = U(n * x_sample + g * x_group)
            for v in range(vectors):
                gv = gy_at + U(v * ogp * {width})
                xv = x_at + U(v * {width})
{body}
        tile = np.empty({size}, dtype=x.dtype)
{stores}
        at = (part * groups * og + g * og + blk * {chans}) * k_ + k0
        for c in range(min({chans}, og - blk * {chans})):
            for k in range(min({taps}, k_ - k0)):
                total = zero
                for t in range({width}):
                    total += tile[(c * {taps} + k) * {width} + t]
                out[at + c * k_ + k] = total
"""


def weight_positions_source(width, chans, taps):
    """The source of weight_positions_{width}x{chans}x{taps}: a weight gradient's tile of {chans} channels by {taps}
    taps, each (channel, tap)'s sum a vector of {width} neighbouring positions (for groups of few channels)."""
    pad = " " * 8
    acc = [[[f"acc{c}_{k}_{t}" for t in range(width)] for k in range(taps)] for c in range(chans)]
    rows = "\n".join(f"{pad}r{k} = row[min(k0 + {k}, k_ - 1)]" for k in range(taps))
    zeros = "\n".join(pad + " = ".join(acc[c][k]) + " = zero" for c in range(chans) for k in range(taps))
    body = []
    for k in range(taps):
        body.extend(f"{pad}        x{k}_{t} = x[xv + r{k} + U({t})]" for t in range(width))
    for c in range(chans):
        body.extend(f"{pad}        g{t} = gyw[gv + U({c * width + t})]" for t in range(width))
        for k in range(taps):
            body.extend(f"{pad}        {acc[c][k][t]} += g{t} * x{k}_{t}" for t in range(width))
    # NOTE: each vector of sums goes to memory whole, and its lanes are added up from there: stores of whole vectors
    # are where LLVM's SLP vectorizer starts, and with each lane's sum written out as a scalar it vectorized nothing
    # (19 ms for a weight gradient the GEMM took 2.7 for)
    stores = "\n".join(f"{pad}tile[{(c * taps + k) * width + t}] = {acc[c][k][t]}"
                        for c in range(chans) for k in range(taps) for t in range(width))
    return _WEIGHT_POSITIONS.format(width=width, chans=chans, taps=taps, rows=rows, zeros=zeros,
                                    body="\n".join(body), stores=stores, size=chans * taps * width,
                                    items=_ITEMS.format(outer="parts", index="part"))


def tiles_module():
    """The text of _conv_tiles.py."""
    kernels = "".join(tiles_source(LANES, columns) for columns in sorted(set(COLUMNS.values())))
    kernels += "".join(tiles_source(lanes, columns, copies=False)
                       for lanes, columns in sorted(set(WEIGHT_GRAD_TILES.values())))
    kernels += "".join(positions_source(POSITIONS, chans) for chans in sorted(set(POSITION_CHANNELS.values())))
    kernels += "".join(weight_positions_source(POSITIONS, chans, taps)
                       for chans, taps in sorted(set(WEIGHT_POSITIONS.values())))
    table = ", ".join(f'"{isa}": tiles_{LANES}x{columns}' for isa, columns in COLUMNS.items())
    table = "\n\nKERNELS = {" + table + "}\n"
    positions = ", ".join(f'"{isa}": positions_{POSITIONS}x{chans}' for isa, chans in POSITION_CHANNELS.items())
    table += "POSITION_KERNELS = {" + positions + "}\n"
    weight = ", ".join(f'"{isa}": tiles_{lanes}x{columns}' for isa, (lanes, columns) in WEIGHT_GRAD_TILES.items())
    table += "WEIGHT_GRAD_KERNELS = {" + weight + "}\n"
    weight = ", ".join(f'"{isa}": weight_positions_{POSITIONS}x{chans}x{taps}'
                       for isa, (chans, taps) in WEIGHT_POSITIONS.items())
    table += "WEIGHT_POSITION_KERNELS = {" + weight + "}\n"
    return _HEADER + kernels + table


TILES_PATH = os.path.join(os.path.dirname(__file__), "_conv_tiles.py")


def write_tiles():
    """Rewrite _conv_tiles.py from tiles_module()."""
    from ...atomic import atomic_write
    with atomic_write(TILES_PATH) as f:
        f.write(tiles_module().encode())
