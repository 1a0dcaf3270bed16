"""Convolution on the CPU: im2col, the GEMMs (NumPy's BLAS) and col2im, a cache-sized chunk of samples
at a time, the chunks spread over the backend's thread pool."""
import numpy as np
from numba import njit


class ConvKernels:
    """conv2d_forward and conv2d_backward, as methods of CpuKernels."""

    # The batch is cut into chunks whose columns fit in a core's cache. For each chunk: im2col,
    # the GEMMs, then col2im, while the columns are still in cache. One sample's columns are
    # laid out (C*KH*KW, OH*OW), so W @ cols lands straight in y's (N, O, OH*OW) layout and gy
    # is read in its own: no transpose on the way in or out. The chunks split over the cores.
    #
    # NOTE: the chunks, and the groups of chunks whose weight gradients are summed together, depend
    # on the shapes only, never on the thread count, and the groups' sums are added in group order:
    # so the result is the same to the bit for any TINYGRADNORM_NUM_THREADS.

    def conv2d_forward(self, x, w, b, stride, padding, dilation, out_hw, groups=1):
        """y (N, O, OH, OW) of a 2-D convolution of x (N, C, H, W) with w (O, C/G, KH, KW) in G groups, plus b (O,)
        unless None. One chunk's product is batched over the groups: (G, O/G, K) @ (m, G, K, P), K = C/G*KH*KW.
        Depthwise (G = C) is the same product with K = KH*KW."""
        n, o, (oh, ow) = x.shape[0], w.shape[0], out_hw
        w3 = w.reshape(groups, o // groups, -1)
        k = w3.shape[2]
        y = self.empty((n, o, oh * ow), x.dtype)
        chunks = _ConvChunks(x, groups * k, out_hw, _conv_geometry(w.shape, stride, padding, dilation), self.scratch)
        bias = None if b is None else b.reshape(groups, o // groups, 1)

        def run(lo, hi):
            for c in range(lo, hi):
                n0, n1, cols = chunks.columns(c)
                out = np.matmul(w3, cols.reshape(n1 - n0, groups, k, -1),
                                out=y[n0:n1].reshape(n1 - n0, groups, o // groups, -1))
                if bias is not None:
                    out += bias
        self.split(run, chunks.count, y.nbytes * k)
        return y.reshape(n, o, oh, ow)

    def conv2d_backward(self, x, w, gy, stride, padding, dilation, groups, need_gx, need_gw, need_gb):
        """gx, gw and gb of conv2d_forward for the output gradient gy (N, O, OH, OW); None where not needed."""
        n, o, (oh, ow) = x.shape[0], w.shape[0], gy.shape[2:]
        og = o // groups
        w3 = w.reshape(groups, og, -1)
        k = w3.shape[2]
        gy = np.ascontiguousarray(gy).reshape(n, groups, og, oh * ow)
        gx = self.empty(x.shape, x.dtype) if need_gx else None
        chunks = _ConvChunks(x, groups * k, (oh, ow), _conv_geometry(w.shape, stride, padding, dilation),
                             self.scratch)
        parts = chunks.groups(o * k * x.itemsize)
        gw_parts = np.zeros((parts, groups, og, k), dtype=x.dtype) if need_gw else None
        gb_parts = np.zeros((parts, o), dtype=x.dtype) if need_gb else None

        def run(lo, hi):
            for part in range(lo, hi):
                for c in chunks.of_group(part, parts):
                    n0, n1, cols = chunks.columns(c, build=need_gw)
                    cols = cols.reshape(n1 - n0, groups, k, -1)
                    g = gy[n0:n1]
                    if need_gw:            # gw = sum over the chunk's samples of gy[n] @ cols[n].T, per group
                        per_sample = self.scratch("gw", (n1 - n0, groups, og, k), x.dtype)
                        gw_parts[part] += np.matmul(g, cols.transpose(0, 1, 3, 2), out=per_sample).sum(axis=0)
                    if need_gb:
                        gb_parts[part] += g.sum(axis=(0, 3)).reshape(o)
                    if need_gx:            # the columns' gradient W.T @ gy, added back where each column was read
                        gcols = np.matmul(w3.transpose(0, 2, 1), g, out=cols)
                        _col2im(gcols.reshape(n1 - n0, groups * k, -1), gx, n0, *chunks.geom)
        self.split(run, parts, gy.nbytes * k)
        return gx, _in_order(gw_parts, w.shape), _in_order(gb_parts, (o,))



# NOTE: about 1 MB of columns per chunk, half a core's L2 cache, leaving room for the GEMM's
# own blocks. Measured on LeNet's two convs, 256 KB chunks ran 1.5-3x slower; 1-4 MB alike.
_CONV_CHUNK_BYTES = 1 << 20
_CONV_GROUPS = 16                  # at most this many partial weight gradients, whatever the thread count
_CONV_PARTIALS_BYTES = 1 << 26     # and at most this much memory for them


class _ConvChunks:
    """The batch cut into chunks of samples whose im2col columns take about _CONV_CHUNK_BYTES."""

    def __init__(self, x, k, out_hw, geom, scratch):
        self.x, self.k, self.out_hw, self.geom, self.scratch = x, k, out_hw, geom, scratch
        self.p = out_hw[0] * out_hw[1]
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
        """(n0, n1, cols) for chunk c: samples [n0, n1) and this thread's scratch array (n1 - n0, K, OH*OW),
        holding the chunk's columns when build is true."""
        n0 = c * self.step
        n1 = min(n0 + self.step, self.x.shape[0])
        cols = self.scratch("cols", (n1 - n0, self.k, self.p), self.x.dtype)
        if build:
            _im2col(self.x, cols.reshape(n1 - n0, self.x.shape[1], -1, *self.out_hw), n0, *self.geom)
        return n0, n1, cols


def _in_order(parts, shape):
    """parts[0] + parts[1] + ..., always in that order, reshaped; None when parts is None."""
    if parts is None:
        return None
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total.reshape(shape)


def _conv_geometry(w_shape, stride, padding, dilation):
    """The integers _im2col and _col2im take after their first three arguments."""
    return (w_shape[2], w_shape[3], *stride, *padding, *dilation)


# ---- convolution: building and scattering the columns -------------------------------
@njit(nogil=True, cache=True)
def _im2col(x, cols, n0, kh, kw, sh, sw, ph, pw, dh, dw):
    """cols[m, c, i*kw + j, a, b] = x[n0 + m, c, a*sh + i*dh - ph, b*sw + j*dw - pw], zero outside x."""
    chunk, c_, _, oh, ow = cols.shape
    h, w = x.shape[2], x.shape[3]
    for m in range(chunk):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    for a in range(oh):
                        r = a * sh + i * dh - ph
                        for b in range(ow):
                            s = b * sw + j * dw - pw
                            cols[m, c, i * kw + j, a, b] = x[n0 + m, c, r, s] if 0 <= r < h and 0 <= s < w else 0


@njit(nogil=True, cache=True)
def _col2im(gcols, gx, n0, kh, kw, sh, sw, ph, pw, dh, dw):
    """The adjoint of _im2col: gx[n0 + m] gets every column entry of sample m added back where it was read."""
    chunk, _, p = gcols.shape
    c_, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    g = gcols.reshape(chunk, c_, kh * kw, p // ow, ow)
    for m in range(chunk):
        for c in range(c_):
            gx[n0 + m, c] = 0
            for i in range(kh):
                for j in range(kw):
                    for a in range(p // ow):
                        r = a * sh + i * dh - ph
                        if 0 <= r < h:
                            for b in range(ow):
                                s = b * sw + j * dw - pw
                                if 0 <= s < w:
                                    gx[n0 + m, c, r, s] += g[m, c, i * kw + j, a, b]
