"""Direct convolution on the CPU: each tile of outputs summed in vector registers, with no im2col and no GEMM.

One kernel, ``tiles``, serves the forward and the weight gradient. Both are sums of products of a vector over L
output channels and one input element:

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

The kernels themselves are in ``_conv_tiles.py``, written out by this module (``python -m
tinygradnorm.backend.cpu_kernels.conv_direct`` rewrites it): a tile's T*L accumulators are T*L scalar
variables there, and LLVM's SLP vectorizer packs each column's L into one register (see ``slp_compiled``).
"""
import functools
import math
import os

import llvmlite.binding
import numba
import numpy as np
from numba import prange
from numba.core.compiler_lock import global_compiler_lock

from ._jit import pjit

U = np.uint64

LANES = 16                 # output channels per tile: one AVX-512 register of float32, two of AVX2
COLUMNS = {"avx512": 14, "avx2": 6}      # columns per tile: 14 of the 32 AVX-512 registers, 12 of the 16 AVX2


@functools.cache
def isa():
    """'avx512' where the CPU has AVX-512 (the tiles' registers are 16 float32 wide), else 'avx2'."""
    return "avx512" if llvmlite.binding.get_host_cpu_features().get("avx512f", False) else "avx2"


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


# NOTE: where the tiles run, measured on a 2-core AMD EPYC (Zen 4, AVX-512) against the im2col + GEMM path and
# torch, float32, benchmarks/conv.py's shapes, in ms, GEMM path -> tiles. Forward: LeNet's conv2 2.19 -> 0.68,
# 3x3 same 4.05 -> 3.52, dilated 4.03 -> 3.11, the 7x7 stem 4.47 -> 3.61, 3-D 2.80 -> 1.55. Weight gradient:
# 2.28 -> 0.87, 4.89 -> 3.63, 4.99 -> 3.65, 3-D 2.26 -> 2.05. Input gradient (stride 1, as the convolution of gy
# with the flipped weights): 3x3 same 4.10 -> 3.15, dilated 4.00 -> 3.29. The GEMM won where a group has fewer
# than 16 output channels (most of each tile wasted: grouped g=4 forward 1.48 -> 1.86, LeNet's conv2's input
# gradient, 6 channels, 1.38 -> 3.33), for a 1x1 kernel (whose columns are the input itself: 1.77 -> 3.06) and in
# 1-D (0.73 -> 0.81; one row, short of taps).
MODE = os.environ.get("TINYGRADNORM_CONV_DIRECT", "auto")       # "auto", "1" (wherever they can) or "0" (never)


def runs(dtype, og, kernel):
    """Whether the tiles run a convolution of og output channels per group with this kernel shape."""
    if MODE == "0":
        return False
    if MODE == "1":
        return og >= 1
    return (isa() == "avx512" and dtype == np.float32 and og >= LANES and math.prod(kernel) > 1
            and tuple(kernel[:2]) != (1, 1))


# ---- the two uses --------------------------------------------------------------------------------------------------
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

    def padded(self, x, scratch):
        """x zero padded, flat: in a scratch array where there is padding, x itself where there is none."""
        pd, ph, pw = self.padding
        if not (pd or ph or pw):
            return x.reshape(-1)
        n, c, d, h, w = x.shape
        xp = scratch("tiles_x", (n * c * self.chan,), x.dtype)
        _pad(x.reshape(-1), xp, n * c, d, h, w, pd, ph, pw, self.hp, self.wp)
        return xp


@pjit
def _pad(x, xp, planes, d, h, w, pd, ph, pw, hp, wp):
    """xp[plane, e, r, u] = x[plane, e - pd, r - ph, u - pw], zero outside x (planes of (d + 2pd, hp, wp))."""
    dp = d + 2 * pd
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
def _channels_last(gy, a, samples, groups, og, p, ogp):
    """a[n, g, t, l] = gy[n, g*og + l, t] for l < og, and 0 for og <= l < ogp."""
    for ng in prange(samples * groups):
        at = U(ng * p * ogp)
        for t in range(U(p)):
            for l in range(U(og), U(ogp)):
                a[at + t * U(ogp) + l] = 0
        for l in range(U(og)):
            src = U((ng * og + l) * p)
            for t in range(U(p)):
                a[at + t * U(ogp) + l] = gy[src + t]


def _kernel():
    from . import _conv_tiles
    return _conv_tiles.KERNELS[isa()], COLUMNS[isa()]


def conv_forward_direct(x, w, b, stride, padding, dilation, out, groups, empty, scratch):
    """y (N, O, OD, OH, OW) of the 3-D convolution of x (N, C, D, H, W) with w (O, C/G, KD, KH, KW), plus b (O,)
    unless None."""
    geo = _Geometry(x.shape, w.shape, stride, padding, dilation, out, groups)
    kernel, columns = _kernel()
    k, og = geo.taps.size, geo.og
    ogp = -(-og // LANES) * LANES
    a = np.zeros((groups, k, ogp), dtype=x.dtype)             # W laid out (G, K, OGP), zeros past the group's
    a[:, :, :og] = w.reshape(groups, og, k).transpose(0, 2, 1)
    p = geo.pos.size
    y = empty((x.shape[0], w.shape[0]) + tuple(out), x.dtype)
    kernel(a.reshape(-1), geo.padded(x, scratch), y.reshape(-1), _or_empty(b, x.dtype), b is not None, geo.taps, geo.pos,
           x.shape[0], groups, ogp // LANES, -(-p // columns), 1,
           0, k * ogp, ogp, geo.c * geo.chan, x.shape[1] // groups * geo.chan,
           w.shape[0] * p, p, og, p)
    return y


def conv_weight_grad_direct(x, gy, w_shape, stride, padding, dilation, groups, scratch):
    """gw (O, C/G, KD, KH, KW) of the convolution of x for the output gradient gy (N, O, OD, OH, OW)."""
    geo = _Geometry(x.shape, w_shape, stride, padding, dilation, gy.shape[2:], groups)
    kernel, columns = _kernel()
    k, og, n = geo.taps.size, geo.og, x.shape[0]
    ogp = -(-og // LANES) * LANES
    p = geo.pos.size
    a = scratch("tiles_gy", (n * groups * p * ogp,), x.dtype)      # gy laid out (N, G, P, OGP)
    _channels_last(gy.reshape(-1), a, n, groups, og, p, ogp)
    gw = np.empty(w_shape, dtype=x.dtype)
    kernel(a, geo.padded(x, scratch), gw.reshape(-1), _or_empty(None, x.dtype), False, geo.pos, geo.taps,
           1, groups, ogp // LANES, -(-k // columns), n,
           groups * p * ogp, p * ogp, ogp, geo.c * geo.chan, x.shape[1] // groups * geo.chan,
           0, k, og, k)
    return gw


def _or_empty(a, dtype):
    return np.zeros(0, dtype=dtype) if a is None else a.reshape(-1)


# ---- writing out the kernels ---------------------------------------------------------------------------------------
_HEADER = '''"""The tile kernels of conv_direct.py, one per tile shape. Written out by conv_direct.py; do not edit.

    python -m tinygradnorm.backend.cpu_kernels.conv_direct

rewrites this file, and tests/test_conv.py checks that it is current. See conv_direct.py for the maths.
"""
import numpy as np
from numba import prange

from .conv_direct import slp_pjit

U = np.uint64
'''

_SIGNATURE = '''

@slp_pjit
def tiles_{lanes}x{columns}(a, x, out, bias, has_bias, row, col, outer, groups, blocks, tiles, inner,
            a_outer, a_group, lda, x_outer, x_group, out_outer, out_lane, og, s_count):
    """out[o*out_outer + (g*og + l)*out_lane + s] = Σ over m < inner and r < row.size of
    A[(o + m)*a_outer + g*a_group + r*lda + blk*{lanes} + l] x[(o + m)*x_outer + g*x_group + row[r] + col[s]]
    (+ bias[g*og + l]), for every outer index o, group g, block of {lanes} channels and tile of {columns} columns s."""
    zero = x.dtype.type(0.0)
    for item in prange(outer * groups * blocks * tiles):
        t = item % tiles
        blk = item // tiles % blocks
        g = item // (tiles * blocks) % groups
        o = item // (tiles * blocks * groups)
        s0 = t * {columns}
        o0 = g * og + blk * {lanes}                    # the tile's first output channel
        tile = np.empty({size}, dtype=x.dtype)
'''

_BODY = '''{columns_at}
{zeros}
        for m in range(inner):
            a_at = U((o + m) * a_outer + g * a_group + blk * {lanes})
            x_at = U((o + m) * x_outer + g * x_group)
            for r in range(row.size):
                ar = a_at + U(r * lda)
                xr = x_at + row[r]
{a_loads}
{columns_body}
{tile_stores}
        for l in range(min({lanes}, og - blk * {lanes})):
            add = bias[o0 + l] if has_bias else zero
            at = U(o * out_outer + (o0 + l) * out_lane + s0)
            for s in range(min({columns}, s_count - s0)):
                out[at + U(s)] = tile[s * {lanes} + l] + add
'''


def tiles_source(lanes, columns):
    """The source of tiles_{lanes}x{columns}: the tile's accumulators acc{s}_{l} written out as scalars."""
    acc = [[f"acc{s}_{l}" for l in range(lanes)] for s in range(columns)]
    columns_at = "\n".join(f"        c{s} = col[min(s0 + {s}, s_count - 1)]" for s in range(columns))
    zeros = "\n".join("        " + " = ".join(acc[s]) + " = zero" for s in range(columns))
    a_loads = "\n".join(f"                lane{l} = a[ar + U({l})]" for l in range(lanes))
    body = []
    for s in range(columns):
        body.append(f"                v{s} = x[xr + c{s}]")
        body.extend(f"                {acc[s][l]} += v{s} * lane{l}" for l in range(lanes))
    tile_stores = "\n".join(f"        tile[{s * lanes + l}] = {acc[s][l]}" for s in range(columns) for l in range(lanes))
    return (_SIGNATURE.format(lanes=lanes, columns=columns, size=lanes * columns)
            + _BODY.format(lanes=lanes, columns=columns, columns_at=columns_at, zeros=zeros, a_loads=a_loads,
                           columns_body="\n".join(body), tile_stores=tile_stores))


def tiles_module():
    """The text of _conv_tiles.py."""
    kernels = "".join(tiles_source(LANES, columns) for columns in sorted(set(COLUMNS.values())))
    table = "\n\nKERNELS = {" + ", ".join(f'"{isa}": tiles_{LANES}x{columns}' for isa, columns in COLUMNS.items()) + "}\n"
    return _HEADER + kernels + table


TILES_PATH = os.path.join(os.path.dirname(__file__), "_conv_tiles.py")

if __name__ == "__main__":
    from ...atomic import atomic_write
    with atomic_write(TILES_PATH) as f:
        f.write(tiles_module().encode())
