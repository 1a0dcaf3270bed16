"""Convolution on the CPU: im2col, the GEMMs (NumPy's BLAS) and col2im, a cache-sized chunk of samples
at a time, the chunks spread over the backend's thread pool; a direct kernel for depthwise convolution; and, where
they win, the register tiles of conv_direct.py for the forward and the two gradients.
The kernels take 3-D convolutions; a 1-D or 2-D one comes as a 3-D one with a depth (and height) of 1.

NOTE: depthwise (one input channel per group, C/G = 1) has no GEMM worth the name: each group's product is
(O/G, KH*KW) @ (KH*KW, OH*OW), a few rows deep, and im2col copies the input KH*KW times to feed it (3x3
depthwise on 32x32x28x28 took 21 ms forward and backward, 7x torch). The direct loops read each plane in
place, one kernel offset at a time along whole rows, which the compiler vectorizes.
"""
import math

import numpy as np
from numba import njit, prange

from . import conv_direct
from ._jit import pjit


class ConvKernels:
    """conv_forward, conv_backward and conv_and_weight_grad, as methods of CpuKernels."""

    # The batch is cut into chunks whose columns fit in a core's cache. For each chunk: im2col,
    # the GEMMs, then col2im, while the columns are still in cache. One sample's columns are
    # laid out (C*KD*KH*KW, OD*OH*OW), so W @ cols lands straight in y's (N, O, OD*OH*OW) layout and gy
    # is read in its own: no transpose on the way in or out. The chunks split over the cores.
    #
    # NOTE: the chunks, and the groups of chunks whose weight gradients are summed together, depend
    # on the shapes only, never on the thread count, and the groups' sums are added in group order:
    # so the result is the same to the bit for any TINYGRADNORM_NUM_THREADS.

    def conv_forward(self, x, w, b, stride, padding, dilation, out, groups=1):
        """y (N, O, OD, OH, OW) of a 3-D convolution of x (N, C, D, H, W) with w (O, C/G, KD, KH, KW) in G groups,
        plus b (O,) unless None; stride, padding, dilation and out are 3-tuples. One chunk's product is batched
        over the groups: (G, O/G, K) @ (m, G, K, P), K = C/G*KD*KH*KW. Depthwise (one input channel per group, a
        depth of 1) runs the direct loops at the end of this file instead."""
        n, o = x.shape[0], w.shape[0]
        if _is_depthwise(x, w, groups, padding):
            y = self.empty((n, o, 1) + tuple(out[1:]), x.dtype)
            self.thread_count()
            _depthwise_forward(x.reshape(-1), w.reshape(-1), conv_direct.or_empty(b, x.dtype), b is not None,
                               y.reshape(-1),
                               *_depthwise_dims(x.shape, w.shape, out, stride, padding, dilation))
            return y
        if conv_direct.runs_forward_positions(x.dtype, w.shape, groups, stride):
            self.thread_count()
            return conv_direct.conv_forward_positions(x, w, b, padding, dilation, out, groups, self.empty)
        if conv_direct.runs_forward(x.dtype, w.shape, groups):
            self.thread_count()
            return conv_direct.conv_forward_direct(x, w, b, stride, padding, dilation, out, groups, self.empty)
        w3 = w.reshape(groups, o // groups, -1)
        k = w3.shape[2]
        y = self.empty((n, o, out[0] * out[1] * out[2]), x.dtype)
        chunks = _ConvChunks(x, groups * k, out, _conv_geometry(w.shape, stride, padding, dilation), self.scratch)
        bias = None if b is None else b.reshape(groups, o // groups, 1)

        def run(lo, hi):
            for c in range(lo, hi):
                n0, n1, cols = chunks.columns(c)
                out = np.matmul(w3, cols.reshape(n1 - n0, groups, k, -1),
                                out=y[n0:n1].reshape(n1 - n0, groups, o // groups, -1))
                if bias is not None:
                    out += bias
        self.split(run, chunks.count, y.nbytes * k)
        return y.reshape((n, o) + tuple(out))

    def conv_backward(self, x, w, gy, stride, padding, dilation, groups, need_gx, need_gw, need_gb):
        """gx, gw and gb of conv_forward for the output gradient gy (N, O, OD, OH, OW); None where not needed."""
        if _is_depthwise(x, w, groups, padding):
            return self._depthwise_backward(x, w, np.ascontiguousarray(gy), stride, padding, dilation, need_gx,
                                            need_gw, need_gb)
        positions_gw = need_gw and conv_direct.runs_weight_grad_positions(x.dtype, w.shape, groups, stride)
        direct_gw = need_gw and not positions_gw and conv_direct.runs_forward(x.dtype, w.shape, groups)
        positions_gx = need_gx and conv_direct.runs_input_grad_positions(x.dtype, w.shape, groups, stride, padding,
                                                                          dilation)
        direct_gx = positions_gx or (need_gx and conv_direct.runs_input_grad(x.dtype, w.shape, groups, stride))
        if not (direct_gw or positions_gw or direct_gx):
            return self._chunked_pass(x, w, gy, stride, padding, dilation, groups, False, need_gx, need_gw,
                                      need_gb)[1:]
        # the tiles for the weight's gradient and the input's; the chunks, with no im2col where only the
        # input's gradient is left to them (its columns are W^T gy), for the rest
        gy = np.ascontiguousarray(gy)
        self.thread_count()
        gw = gx = gb = None
        if positions_gw:                        # None where x is not all finite: the chunks take it
            gw, gb = conv_direct.conv_weight_grad_positions(x, gy, w.shape, padding, dilation, groups, self.empty,
                                                            need_gb) or (None, None)
        elif direct_gw:
            gw, gb = conv_direct.conv_weight_grad_direct(x, gy, w.shape, stride, padding, dilation, groups, self.empty,
                                                         need_gb=need_gb)
        if positions_gx:
            gx = conv_direct.conv_input_grad_positions(gy, w, x.shape, padding, dilation, groups, self.empty)
        elif direct_gx:
            gx = conv_direct.conv_input_grad_direct(gy, w, x.shape, stride, padding, dilation, groups, self.empty)
        if (need_gx and not direct_gx) or (need_gw and gw is None):
            _, gx_, gw_, _ = self._chunked_pass(x, w, gy, stride, padding, dilation, groups, False,
                                                need_gx and not direct_gx, need_gw and gw is None, False)
            gx, gw = (gx if direct_gx else gx_), (gw if gw is not None else gw_)
        if need_gb and gb is None:
            gb = gy.sum(axis=(0, 2, 3, 4))
        return gx, gw, gb

    def conv_and_weight_grad(self, x, w, gy, stride, padding, dilation, groups):
        """(y, gw): conv_forward(x, w) and conv_backward's gw for gy (whose spatial shape is y's), from one im2col
        of x per chunk (or each from the direct tiles, where they run). A transposed convolution's backward needs
        both, of the same x (its output's gradient)."""
        if (conv_direct.runs_forward(x.dtype, w.shape, groups) and not _is_depthwise(x, w, groups, padding)
                and not conv_direct.runs_forward_positions(x.dtype, w.shape, groups, stride)):
            # both on the channel tiles, from one padded copy of x
            self.thread_count()
            padded = conv_direct.padded_input(x, padding, self.empty)
            return (conv_direct.conv_forward_direct(x, w, None, stride, padding, dilation, gy.shape[2:], groups,
                                                    self.empty, padded),
                    conv_direct.conv_weight_grad_direct(x, np.ascontiguousarray(gy), w.shape, stride, padding,
                                                        dilation, groups, self.empty, padded)[0])
        if _is_depthwise(x, w, groups, padding) or conv_direct.runs_forward(x.dtype, w.shape, groups):
            return (self.conv_forward(x, w, None, stride, padding, dilation, gy.shape[2:], groups),
                    self.conv_backward(x, w, gy, stride, padding, dilation, groups, False, True, False)[1])
        y, _, gw, _ = self._chunked_pass(x, w, gy, stride, padding, dilation, groups, True, False, True, False)
        return y, gw

    def _chunked_pass(self, x, w, gy, stride, padding, dilation, groups, need_y, need_gx, need_gw, need_gb):
        """(y, gx, gw, gb), None where not needed: one pass over the chunks, building each chunk's columns once
        for y = W @ cols and gw, then overwriting them with gx's."""
        n, o, out = x.shape[0], w.shape[0], gy.shape[2:]
        og = o // groups
        w3 = w.reshape(groups, og, -1)
        k = w3.shape[2]
        gy = np.ascontiguousarray(gy).reshape(n, groups, og, math.prod(out))
        y = self.empty(gy.shape, x.dtype) if need_y else None
        gx = self.empty(x.shape, x.dtype) if need_gx else None
        chunks = _ConvChunks(x, groups * k, out, _conv_geometry(w.shape, stride, padding, dilation), self.scratch)
        parts = chunks.groups(o * k * x.itemsize)
        gw_parts = np.zeros((parts, groups, k, og), dtype=x.dtype) if need_gw else None     # gw transposed
        gb_parts = np.zeros((parts, o), dtype=x.dtype) if need_gb else None

        def run(lo, hi):
            for part in range(lo, hi):
                for c in chunks.of_group(part, parts):
                    n0, n1, cols = chunks.columns(c, build=need_gw or need_y)
                    cols = cols.reshape(n1 - n0, groups, k, -1)
                    g = gy[n0:n1]
                    if need_y:
                        np.matmul(w3, cols, out=y[n0:n1])
                    if need_gw:            # gw.T = sum over the chunk's samples of cols[n] @ gy[n].T, per group
                        # NOTE: as cols @ gy.T, not gy @ cols.T: BLAS ran the product with the long operand
                        # transposed 1.3-1.7x slower (LeNet's second conv: 34 GFLOP/s against 57)
                        per_sample = self.scratch("gw", (n1 - n0, groups, k, og), x.dtype)
                        gw_parts[part] += np.matmul(cols, g.transpose(0, 1, 3, 2), out=per_sample).sum(axis=0)
                    if need_gb:
                        gb_parts[part] += g.sum(axis=(0, 3)).reshape(o)
                    if need_gx:            # the columns' gradient W.T @ gy, added back where each column was read
                        gcols = np.matmul(w3.transpose(0, 2, 1), g, out=cols)
                        _col2im(gcols.reshape(n1 - n0, groups * k, -1), gx, n0, *chunks.geom)
        self.split(run, parts, gy.nbytes * k)
        gw = None
        if need_gw:
            gw = np.ascontiguousarray(_in_order(gw_parts, gw_parts.shape[1:]).transpose(0, 2, 1)).reshape(w.shape)
        return (None if y is None else y.reshape((n, o) + tuple(out))), gx, gw, _in_order(gb_parts, (o,))

    def _depthwise_backward(self, x, w, gy, stride, padding, dilation, need_gx, need_gw, need_gb):
        """conv_backward for one input channel per group. Each sample's weight and bias gradients are
        computed on their own and the samples' are summed in order, so no bit depends on the thread count."""
        n, o = gy.shape[:2]
        self.thread_count()
        gx = self.empty(x.shape, gy.dtype) if need_gx else None
        gw = self.scratch("gw", (n, o) + tuple(w.shape[2:]), gy.dtype) if need_gw else None
        gb = self.scratch("gb", (n, o), gy.dtype) if need_gb else None
        flat = [conv_direct.or_empty(a, gy.dtype)
                for a in (x if need_gw else None, w if need_gx else None, gy, gx, gw, gb)]
        _depthwise_backward(*flat, need_gx, need_gw, need_gb,
                            *_depthwise_dims(x.shape, w.shape, gy.shape[2:], stride, padding, dilation))
        return (gx, None if gw is None else gw.sum(axis=0).reshape(w.shape),
                None if gb is None else gb.sum(axis=0))



# NOTE: about 1 MB of columns per chunk, half a core's L2 cache, leaving room for the GEMM's
# own blocks. Measured on LeNet's two convs, 256 KB chunks ran 1.5-3x slower; 1-4 MB alike.
_CONV_CHUNK_BYTES = 1 << 20
_CONV_GROUPS = 16                  # at most this many partial weight gradients, whatever the thread count
_CONV_PARTIALS_BYTES = 1 << 26     # and at most this much memory for them


class _ConvChunks:
    """The batch cut into chunks of samples whose im2col columns take about _CONV_CHUNK_BYTES."""

    def __init__(self, x, k, out, geom, scratch):
        self.x, self.k, self.out, self.geom, self.scratch = x, k, tuple(out), geom, scratch
        self.p = out[0] * out[1] * out[2]
        n = x.shape[0]
        count = -(-n // max(1, _CONV_CHUNK_BYTES // (k * self.p * x.itemsize)))
        # NOTE: an even number of chunks of equal size, where there are samples enough: 3 chunks over 2 threads
        # left one thread two chunks' work (LeNet's second conv, 64 samples: 27, 27, 10; now 4 x 16)
        count = min(n, count + count % 2)
        self.step = -(-n // count) if n else 1
        self.count = -(-n // self.step)

    def groups(self, partial_bytes):
        """How many groups of chunks get a partial sum of their own (shapes decide, not threads)."""
        return max(1, min(self.count, _CONV_GROUPS, _CONV_PARTIALS_BYTES // max(partial_bytes, 1)))

    def of_group(self, group, groups):
        return range(self.count * group // groups, self.count * (group + 1) // groups)

    def columns(self, c, build=True):
        """(n0, n1, cols) for chunk c: samples [n0, n1) and this thread's scratch array (n1 - n0, K, OD*OH*OW),
        holding the chunk's columns when build is true."""
        n0 = c * self.step
        n1 = min(n0 + self.step, self.x.shape[0])
        cols = self.scratch("cols", (n1 - n0, self.k, self.p), self.x.dtype)
        if build:
            _im2col(self.x, cols.reshape((n1 - n0, self.x.shape[1], -1) + self.out), n0, *self.geom)
        return n0, n1, cols


def _in_order(parts, shape):
    """parts[0] + parts[1] + ..., always in that order, reshaped; None when parts is None."""
    return None if parts is None else conv_direct.sum_in_order(parts).reshape(shape)


def _conv_geometry(w_shape, stride, padding, dilation):
    """The integers _im2col and _col2im take after their first three arguments."""
    return (*w_shape[2:], *stride, *padding, *dilation)


# ---- convolution: building and scattering the columns -------------------------------
# Kernel offset (q, i, j) reads plane e*sd + q*dd - pd, row a*sh + i*dh - ph and column b*sw + j*dw - pw of x
# for output (e, a, b). The outputs whose read falls inside x are a range along each axis, found once per offset
# (_inside); within it each row of columns is one run of reads (contiguous when sw = 1), outside it zeros. As in
# the depthwise loops below, the arrays are flat and the indices unsigned, so that LLVM vectorizes the runs:
# per-element bounds checks on 5-D indices made im2col and col2im 1.3-2.5x slower.
#
# NOTE: where the rows of columns are as long as x's (stride 1 and "same" width: 3x3 with padding 1, say), one
# offset's runs of reads, row after row, are one contiguous stretch of x: so each is one run (_one_run), and the
# entries it should not have read (the windows past a row's ends) are set to zero after. Per-row runs of 28
# elements were short enough that their loop overhead was half of im2col's time.
@njit(inline="always")
def _inside(n_out, stride, offset, size):
    """[lo, hi): the outputs t in [0, n_out) whose read t*stride + offset lies in [0, size)."""
    lo = min(n_out, 0 if offset >= 0 else (stride - 1 - offset) // stride)
    hi = 0 if offset >= size else min(n_out, (size - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


@njit(inline="always")
def _one_run(sh, sw, ow, w, a_lo, a_hi, b_lo, b_hi):
    """Whether an offset's reads for rows [a_lo, a_hi) can be one run of x (see the note above)."""
    return sh == 1 and sw == 1 and ow == w and a_hi - a_lo > 1 and b_hi > b_lo


@njit(inline="always")
def _zero_margins(a, row0, ow, a_lo, a_hi, b_lo, b_hi):
    """Zero the entries [0, b_lo) and [b_hi, ow) of rows [a_lo, a_hi) of the rows of ow entries from flat a[row0]:
    the windows past the rows' ends."""
    zero = a.dtype.type(0.0)
    for r in range(a_lo, a_hi):
        for t in range(U(row0 + r * ow), U(row0 + r * ow + b_lo)):
            a[t] = zero
        for t in range(U(row0 + r * ow + b_hi), U(row0 + (r + 1) * ow)):
            a[t] = zero


# NOTE: _im2col and _col2im run their loops with a column stride of 1 written as the constant 1 (the body is
# inlined into each branch), so that LLVM compiles the common case's runs with no stride and no test of it in
# the loop: that halved LeNet's second conv's im2col (rows of 8 columns).
@njit(nogil=True, cache=True)
def _im2col(x, cols, n0, kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh, dw):
    """cols[m, c, (q*kh + i)*kw + j, e, a, b] = x[n0 + m, c, e*sd + q*dd - pd, a*sh + i*dh - ph, b*sw + j*dw - pw],
    zero outside x."""
    if sw == 1:
        _im2col_loops(x, cols, n0, kd, kh, kw, sd, sh, 1, pd, ph, pw, dd, dh, dw)
    else:
        _im2col_loops(x, cols, n0, kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh, dw)


@njit(inline="always")
def _im2col_loops(x, cols, n0, kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh, dw):
    chunk, c_, _, od, oh, ow = cols.shape
    d, h, w = x.shape[2], x.shape[3], x.shape[4]
    xf, cf = x.reshape(-1), cols.reshape(-1)
    zero = x.dtype.type(0.0)
    for m in range(chunk):
        for c in range(c_):
            volume = ((n0 + m) * c_ + c) * d * h * w
            for q in range(kd):
                e_lo, e_hi = _inside(od, sd, q * dd - pd, d)
                for i in range(kh):
                    a_lo, a_hi = _inside(oh, sh, i * dh - ph, h)
                    for j in range(kw):
                        b_lo, b_hi = _inside(ow, sw, j * dw - pw, w)
                        run = U(b_hi - b_lo)
                        margins = b_lo > 0 or b_hi < ow
                        at = ((m * c_ + c) * kd * kh * kw + (q * kh + i) * kw + j) * od * oh * ow
                        for e in range(od):
                            row0 = at + e * oh * ow
                            if not e_lo <= e < e_hi:
                                for t in range(U(row0), U(row0 + oh * ow)):
                                    cf[t] = zero
                                continue
                            plane = volume + (e * sd + q * dd - pd) * h * w
                            for t in range(U(row0), U(row0 + a_lo * ow)):
                                cf[t] = zero
                            if _one_run(sh, sw, ow, w, a_lo, a_hi, b_lo, b_hi):
                                dst = U(row0 + a_lo * ow + b_lo)
                                src = U(plane + (a_lo + i * dh - ph) * w + j * dw - pw + b_lo)
                                for t in range(U((a_hi - a_lo - 1) * ow) + run):
                                    cf[dst + t] = xf[src + t]
                            else:
                                for a in range(a_lo, a_hi):
                                    dst = U(row0 + a * ow + b_lo)
                                    src = U(plane + (a * sh + i * dh - ph) * w + (b_lo * sw + j * dw - pw))
                                    for t in range(run):
                                        cf[dst + t] = xf[src + t * U(sw)]
                            if margins:
                                _zero_margins(cf, row0, ow, a_lo, a_hi, b_lo, b_hi)
                            for t in range(U(row0 + a_hi * ow), U(row0 + oh * ow)):
                                cf[t] = zero


@njit(nogil=True, cache=True)
def _col2im(gcols, gx, n0, kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh, dw):
    """The adjoint of _im2col: gx[n0 + m] gets every column entry of sample m added back where it was read,
    offset by offset in (q, i, j) order. gcols is scratch: where one run adds an offset's rows (see the note
    above), its entries for the windows past the rows' ends are set to zero first, so that they add nothing."""
    if sw == 1:
        _col2im_loops(gcols, gx, n0, kd, kh, kw, sd, sh, 1, pd, ph, pw, dd, dh, dw)
    else:
        _col2im_loops(gcols, gx, n0, kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh, dw)


@njit(inline="always")
def _col2im_loops(gcols, gx, n0, kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh, dw):
    chunk, _, p = gcols.shape
    c_, d, h, w = gx.shape[1], gx.shape[2], gx.shape[3], gx.shape[4]
    od = (d + 2 * pd - dd * (kd - 1) - 1) // sd + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    oh = p // (od * ow)
    gf, xf = gcols.reshape(-1), gx.reshape(-1)
    zero = gx.dtype.type(0.0)
    for m in range(chunk):
        for c in range(c_):
            volume = ((n0 + m) * c_ + c) * d * h * w
            for t in range(U(volume), U(volume + d * h * w)):
                xf[t] = zero
            for q in range(kd):
                e_lo, e_hi = _inside(od, sd, q * dd - pd, d)
                for i in range(kh):
                    a_lo, a_hi = _inside(oh, sh, i * dh - ph, h)
                    for j in range(kw):
                        b_lo, b_hi = _inside(ow, sw, j * dw - pw, w)
                        run = U(b_hi - b_lo)
                        at = ((m * c_ + c) * kd * kh * kw + (q * kh + i) * kw + j) * p
                        for e in range(e_lo, e_hi):
                            plane = volume + (e * sd + q * dd - pd) * h * w
                            row0 = at + e * oh * ow
                            if _one_run(sh, sw, ow, w, a_lo, a_hi, b_lo, b_hi):
                                _zero_margins(gf, row0, ow, a_lo, a_hi, b_lo, b_hi)
                                src = U(row0 + a_lo * ow + b_lo)
                                dst = U(plane + (a_lo + i * dh - ph) * w + j * dw - pw + b_lo)
                                for t in range(U((a_hi - a_lo - 1) * ow) + run):
                                    xf[dst + t] += gf[src + t]
                                continue
                            for a in range(a_lo, a_hi):
                                src = U(row0 + a * ow + b_lo)
                                dst = U(plane + (a * sh + i * dh - ph) * w + (b_lo * sw + j * dw - pw))
                                for t in range(run):
                                    xf[dst + t * U(sw)] += gf[src + t]


# ---- depthwise convolution: direct loops over each plane ------------------------------------------------------------
# Output channel o reads input channel o // M, M = O / C the channel multiplier.
#
# Each input plane is first laid out padded and split into its stride phases: phase (p, q) holds the padded
# plane's rows u*sh + p and columns v*sw + q, at [u, v]. Kernel offset (i, j) then reads one phase, that of
# ((i*dh) % sh, (j*dw) % sw), shifted by ((i*dh) // sh, (j*dw) // sw): a stride-1 read. On the "wide grid" of OH
# rows of WQ columns (the phases' width), that shift is one flat offset, so each kernel offset is one contiguous
# multiply-add of OH*WQ elements, which vectorizes, in place of OH short rows. The wide grid's last WQ - OW
# columns of each row are not outputs: the forward drops them, and the backward's wide gy is 0 there.
#
# NOTE: the arrays are flat and every index is unsigned (U): Numba checks a signed index for wrap-around
# (a[-1]), and that check kept LLVM from vectorizing (a multiply-add over a row ran 3x slower). A view per
# row (a[r, :] = ...) made the forward 1.5x slower than these flat loops.
#
# NOTE: 0 times a non-finite number is nan, not 0. Where the columns that are not outputs would multiply an
# inf (an input plane or a weight that is not finite), the backward runs over the real columns only, row by row,
# so its gradients are what the windows give: nothing outside them leaks in.
#
# prange runs over blocks of planes (each block with phase buffers of its own); every plane is computed on its
# own, so how the planes are cut into blocks changes no bit.
_DEPTHWISE_BLOCKS = 64
U = np.uint64


def _is_depthwise(x, w, groups, padding):
    """One input channel per group, and no depth (nor padding along it): the direct loops' case."""
    return (groups > 1 and groups == x.shape[1] and w.shape[1] == 1 and x.shape[2] == 1 and w.shape[2] == 1
            and padding[0] == 0)


def _depthwise_dims(x_shape, w_shape, out, stride, padding, dilation):
    """The integers the depthwise kernels take after their arrays and flags (height and width only: the
    depth is 1)."""
    return (*x_shape[:2], *x_shape[3:], w_shape[0], *w_shape[3:], *out[1:], *stride[1:], *padding[1:],
            *dilation[1:])


@njit(inline="always")
def _phase_shape(h, width, sh, sw, ph, pw):
    """(rows, columns) of each phase of a padded plane: one row more than the plane needs, for the wide grid's
    last row, which reads up to (KW - 1)*dw // sw elements past its end."""
    return -(-(h + 2 * ph) // sh) + 1, -(-(width + 2 * pw) // sw)


@njit(inline="always")
def _move_phases(plane, at, P, h, width, sh, sw, ph, pw, hq, wq, to_phases):
    """Copy the plane (h, width), from flat offset ``at``, into its padded phases P (to_phases), or back.

    NOTE: phase by phase, so that the divisions are per phase and not per row: a 64-bit division takes some
    25 cycles, and four per row were a third of the forward's time."""
    for p in range(sh):
        r0 = (p - ph) % sh                              # the plane's first row in phase p, if it has one
        rows = (h - r0 + sh - 1) // sh
        for q in range(sw):
            c0 = (q - pw) % sw                          # its first column in phase q
            if r0 >= h or c0 >= width:
                continue
            count = U((width - c0 + sw - 1) // sw)
            start = ((p * sw + q) * hq + (r0 + ph) // sh) * wq + (c0 + pw) // sw
            for k in range(rows):
                dst, src = U(start + k * wq), U(at + (r0 + k * sh) * width + c0)
                if sw == 1 and to_phases:             # (the common case, as loops LLVM sees are contiguous)
                    for t in range(count):
                        P[dst + t] = plane[src + t]
                elif sw == 1:
                    for t in range(count):
                        plane[src + t] = P[dst + t]
                elif to_phases:
                    for t in range(count):
                        P[dst + t] = plane[src + t * U(sw)]
                else:
                    for t in range(count):
                        plane[src + t * U(sw)] = P[dst + t]


@njit
def _taps(kh, kw, sh, sw, dh, dw, hq, wq):
    """Where each kernel offset (i, j) reads in the phases, at [i*kw + j]: element a*WQ + b from there is what
    output (a, b) reads."""
    taps = np.empty(kh * kw, dtype=np.uint64)
    for i in range(kh):
        for j in range(kw):
            di, dj = i * dh, j * dw
            taps[i * kw + j] = (((di % sh) * sw + dj % sw) * hq + di // sh) * wq + dj // sw
    return taps


@njit(inline="always")
def _finite(a, at, size):
    """Whether a[at:at + size] is all finite (0 times inf or nan is nan)."""
    total = a.dtype.type(0.0)
    for t in range(U(size)):
        total += a[U(at) + t] * 0
    return total == 0


@pjit
def _depthwise_forward(x, w, bias, has_bias, y, n, c, h, width, o_, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw):
    """y[n, o, a, b] = sum over (i, j) of w[o, i, j] x_padded[n, o // M, a*sh + i*dh, b*sw + j*dw] (+ bias[o])."""
    mult = o_ // c
    hq, wq = _phase_shape(h, width, sh, sw, ph, pw)
    size = oh * wq
    taps = _taps(kh, kw, sh, sw, dh, dw, hq, wq)
    planes = n * c
    blocks = min(planes, _DEPTHWISE_BLOCKS)
    for blk in prange(blocks):
        P = np.zeros(sh * sw * hq * wq, dtype=x.dtype)
        wide = np.empty(size, dtype=x.dtype)
        for plane in range(planes * blk // blocks, planes * (blk + 1) // blocks):
            _move_phases(x, plane * h * width, P, h, width, sh, sw, ph, pw, hq, wq, True)
            for k in range(mult):
                o = plane % c * mult + k
                start = bias[o] if has_bias else x.dtype.type(0.0)
                for t in range(U(size)):
                    wide[t] = start
                for i in range(kh):
                    for j in range(kw):
                        src, wv = taps[i * kw + j], w[o * kh * kw + i * kw + j]
                        for t in range(U(size)):
                            wide[t] += wv * P[src + t]
                out = (plane // c * o_ + o) * oh * ow
                for a in range(oh):
                    dst, src = U(out + a * ow), U(a * wq)
                    for b in range(U(ow)):
                        y[dst + b] = wide[src + b]


@pjit
def _depthwise_backward(x, w, gy, gx, gw, gb, need_gx, need_gw, need_gb, n, c, h, width, o_, kh, kw, oh, ow,
                        sh, sw, ph, pw, dh, dw):
    """gx (the adjoint of _depthwise_forward in x), gw[n] and gb[n] (sample n's weight and bias gradients)."""
    mult = o_ // c
    hq, wq = _phase_shape(h, width, sh, sw, ph, pw)
    size = oh * wq
    taps = _taps(kh, kw, sh, sw, dh, dw, hq, wq)
    planes = n * c
    blocks = min(planes, _DEPTHWISE_BLOCKS)
    for blk in prange(blocks):
        P = np.zeros(sh * sw * hq * wq, dtype=gy.dtype)       # x's phases
        G = np.zeros(sh * sw * hq * wq, dtype=gy.dtype)       # gx's
        wide = np.zeros(size, dtype=gy.dtype)                 # gy on the wide grid, 0 past each row's OW columns
        for plane in range(planes * blk // blocks, planes * (blk + 1) // blocks):
            x_finite = True
            if need_gw:
                _move_phases(x, plane * h * width, P, h, width, sh, sw, ph, pw, hq, wq, True)
                x_finite = _finite(x, plane * h * width, h * width)
            if need_gx:
                for t in range(U(G.size)):
                    G[t] = 0
            for k in range(mult):
                o = plane % c * mult + k
                at = (plane // c * o_ + o) * oh * ow                  # gy[n, o]
                if need_gb:
                    total = gy.dtype.type(0.0)
                    for t in range(U(oh * ow)):
                        total += gy[U(at) + t]
                    gb[plane // c * o_ + o] = total
                if not (need_gx or need_gw):
                    continue
                for a in range(oh):
                    dst, src = U(a * wq), U(at + a * ow)
                    for b in range(U(ow)):
                        wide[dst + b] = gy[src + b]
                w_finite = _finite(w, o * kh * kw, kh * kw) if need_gx else True
                for i in range(kh):
                    for j in range(kw):
                        tap = taps[i * kw + j]
                        if need_gx:            # gx's phases get w[o, i, j] times gy, shifted back
                            wv = w[o * kh * kw + i * kw + j]
                            if w_finite:
                                for t in range(U(size)):
                                    G[tap + t] += wv * wide[t]
                            else:
                                for a in range(oh):
                                    for b in range(U(ow)):
                                        G[tap + U(a * wq) + b] += wv * wide[U(a * wq) + b]
                        if need_gw:            # gw[i, j] = <gy, x's shifted phase>
                            total = gy.dtype.type(0.0)
                            if x_finite:
                                for t in range(U(size)):
                                    total += wide[t] * P[tap + t]
                            else:
                                for a in range(oh):
                                    for b in range(U(ow)):
                                        total += wide[U(a * wq) + b] * P[tap + U(a * wq) + b]
                            gw[(plane // c * o_ + o) * kh * kw + i * kw + j] = total
            if need_gx:
                _move_phases(gx, plane * h * width, G, h, width, sh, sw, ph, pw, hq, wq, False)
