"""Compiled CPU kernels for the hot paths that NumPy can only spell as many passes over memory.

Each kernel is a plain loop over the maths, compiled by Numba, releasing the GIL, run on
ranges [lo, hi) spread over the cores by the backend's thread pool:

- standardization (batch norm and its kin): statistics, then x_hat, then the closed-form
  gradient, one channel at a time, as in docs/normalization.md, so a channel's data is read
  from memory once and revisited from cache. Statistics accumulate in float64 whatever the
  input dtype. Layout: a standardization over some axes is viewed as (P, S, Q), S statistics,
  each over the P*Q elements x[:, s, :] (BatchNorm: (N, C, H*W); InstanceNorm: (1, N*C, H*W);
  LayerNorm: (1, rows, normalized size));
- sigmoid and its backward, one pass each;
- average pooling over (N*C) planes, with the common 2x2 stride-2 case written out;
- convolution: im2col, the GEMMs (NumPy's BLAS) and col2im for a cache-sized chunk of samples
  at a time.

The NumPy backend uses them when Numba imports (``NumpyBackend.kernels``); without Numba, or
with TINYGRADNORM_JIT=0, every op falls back to its NumPy code, which the tests check against.
"""
import math
import sys
import threading

import numpy as np
from numba import njit

# NOTE: reassociation lets the compiler vectorize the sums (it changes only their rounding, as
# NumPy's pairwise sums do); no other fast-math flag, so inf and nan propagate as they should.
_FAST = {"reassoc", "contract"}


@njit(nogil=True, fastmath=_FAST, cache=True)
def _standardize_forward(x, weight, bias, eps, y, mean, var, inv_std, lo, hi):
    p, s, q = x.shape
    m = p * q
    for c in range(lo, hi):
        total = 0.0
        for i in range(p):
            for j in range(q):
                total += x[i, c, j]
        mu = total / m
        # NOTE: corrected two-pass variance: Σ(x - mu) is 0 in exact arithmetic; subtracting
        # its square keeps var accurate when |mu| >> std. Never E[x^2] - E[x]^2.
        sum_c = 0.0
        sum_cc = 0.0
        for i in range(p):
            for j in range(q):
                d = x[i, c, j] - mu
                sum_c += d
                sum_cc += d * d
        shift = sum_c / m
        v = max(sum_cc / m - shift * shift, 0.0)
        mu += shift
        inv = 1.0 / np.sqrt(v + eps)
        scale = inv * weight[c]
        offset = bias[c] - mu * scale
        for i in range(p):
            for j in range(q):
                y[i, c, j] = x[i, c, j] * scale + offset   # (x - mu) * inv_std * weight + bias
        mean[c] = mu
        var[c] = v
        inv_std[c] = inv


@njit(nogil=True, fastmath=_FAST, cache=True)
def _standardize_backward(x, gy, mean, inv_std, weight, gx, sum_gy, sum_gy_xhat, lo, hi):
    p, s, q = x.shape
    m = p * q
    for c in range(lo, hi):
        mu = mean[c]
        inv = inv_std[c]
        sg = 0.0
        sgc = 0.0
        for i in range(p):
            for j in range(q):
                g = gy[i, c, j]
                sg += g
                sgc += g * (x[i, c, j] - mu)
        sgx = sgc * inv                                    # Σ gy * x_hat
        sum_gy[c] = sg
        sum_gy_xhat[c] = sgx
        # gx = scale * (gy - (Σgy + x_hat * Σ(gy*x_hat)) / m), with x_hat = (x - mu) * inv
        scale = inv * weight[c]
        a = -scale * inv * sgx / m
        k = -scale * sg / m - a * mu
        for i in range(p):
            for j in range(q):
                gx[i, c, j] = scale * gy[i, c, j] + a * x[i, c, j] + k


class CpuKernels:
    """The compiled kernels, called with C-contiguous float32 or float64 arrays.

    Each kernel works on a range [lo, hi) (of statistics, elements, planes or samples) and
    releases the GIL, so ``split``
    (the backend's ``parallel_range``) runs the ranges on the backend's own threads: one pool
    for NumPy work and kernels alike, and no second pool spinning against it.
    """

    def __init__(self, split):
        self.split = split
        self._scratch = threading.local()
        self.empty = _Recycler().empty

    def standardize_forward(self, x, weight, bias, eps):
        """x (P, S, Q) -> y = (x - mean) * inv_std * weight + bias, and the float64 mean, var, inv_std (S,)."""
        s = x.shape[1]
        y = self.empty(x.shape, x.dtype)
        mean, var, inv_std = np.empty(s), np.empty(s), np.empty(s)
        self.split(lambda lo, hi: _standardize_forward(x, weight, bias, float(eps), y, mean, var, inv_std, lo, hi),
                   s, x.nbytes)
        return y, mean, var, inv_std

    def standardize_backward(self, x, gy, mean, inv_std, weight):
        """gx of standardize_forward, with Σgy and Σ(gy * x_hat) per statistic (float64, (S,))."""
        s = x.shape[1]
        gx = self.empty(x.shape, x.dtype)
        sum_gy, sum_gy_xhat = np.empty(s), np.empty(s)
        self.split(lambda lo, hi: _standardize_backward(x, gy, mean, inv_std, weight, gx, sum_gy, sum_gy_xhat, lo, hi),
                   s, x.nbytes)
        return gx, sum_gy, sum_gy_xhat

    def scratch(self, name, shape, dtype):
        """A reusable array for a temporary that dies inside one op call (im2col's columns, say), one per
        name and thread. Reusing it spares a fresh allocation, and its page faults, on every call."""
        nbytes = _nbytes(shape, dtype)
        buffers = self._scratch.__dict__
        buf = buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            buf = buffers[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
        return _view(buf, nbytes, shape, dtype)

    def erf(self, x):
        """The error function of a float32 or float64 array (computed in float64)."""
        flat = np.ascontiguousarray(x).reshape(-1)
        y = np.empty(flat.size, dtype=x.dtype)
        self.split(lambda lo, hi: _erf(flat, y, lo, hi), flat.size, flat.nbytes)
        return y.reshape(x.shape)

    # ---- sigmoid and average pooling ----------------------------------------------------------

    def sigmoid_forward(self, x):
        """1 / (1 + exp(-x)) of a contiguous float32 or float64 array."""
        y = self.empty(x.shape, x.dtype)
        kernel = _sigmoid_f32 if x.dtype == np.float32 else _sigmoid_f64
        xf, yf = x.reshape(-1), y.reshape(-1)
        self.split(lambda lo, hi: kernel(xf, yf, lo, hi), xf.size, x.nbytes)
        return y

    def sigmoid_backward(self, y, gy):
        """gy * y * (1 - y), for y = sigmoid(x)."""
        gx = self.empty(y.shape, y.dtype)
        yf, gf, gxf = y.reshape(-1), gy.reshape(-1), gx.reshape(-1)
        self.split(lambda lo, hi: _sigmoid_backward(yf, gf, gxf, lo, hi), yf.size, y.nbytes)
        return gx

    def avg_pool2d_forward(self, x, kernel, stride, padding, inv):
        """Each window's sum of x (N, C, H, W), the part inside x, times inv[a, b] (1 / its divisor):
        y (N, C, OH, OW) with (OH, OW) = inv.shape."""
        n, c, h, w = x.shape
        y = self.empty((n, c, *inv.shape), x.dtype)
        self._over_planes(_avg_pool_2x2_forward, _avg_pool_forward, x.reshape(n * c, h, w),
                          y.reshape(n * c, *inv.shape), kernel, stride, padding, inv)
        return y

    def avg_pool2d_backward(self, gy, x_shape, kernel, stride, padding, inv):
        """gx (N, C, H, W) of avg_pool2d_forward: each window's gradient times inv, shared out over its elements."""
        n, c, h, w = x_shape
        gx = self.empty(x_shape, gy.dtype)
        self._over_planes(_avg_pool_2x2_backward, _avg_pool_backward, gy.reshape(n * c, *gy.shape[2:]),
                          gx.reshape(n * c, h, w), kernel, stride, padding, inv)
        return gx

    def _over_planes(self, kernel_2x2, kernel_any, src, dst, kernel, stride, padding, inv):
        """Run a pooling kernel from src to dst, (planes, H, W) each, with the planes split over the pool."""
        if (tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) and tuple(padding) == (0, 0)
                and bool((inv == 0.25).all())):
            run = lambda lo, hi: kernel_2x2(src, dst, lo, hi)                                   # noqa: E731
        else:
            run = lambda lo, hi: kernel_any(src, dst, *kernel, *stride, *padding, inv, lo, hi)  # noqa: E731
        self.split(run, src.shape[0], max(src.nbytes, dst.nbytes))

    # ---- convolution ----------------------------------------------------------------------
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
        self.step = max(1, _CONV_CHUNK_BYTES // (k * self.p * x.itemsize))
        self.count = -(-x.shape[0] // self.step)

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


def _nbytes(shape, dtype):
    return math.prod(shape) * np.dtype(dtype).itemsize


def _view(block, nbytes, shape, dtype):
    """The first nbytes of a uint8 block as an array of this shape and dtype (a view: it keeps block alive)."""
    return block[:nbytes].view(dtype).reshape(shape)


class _Recycler:
    """Hands out arrays whose memory is used again once no array refers to it any more.

    Every large fresh NumPy array is fresh pages from the operating system, and the first write to
    each page faults: about 4500 faults, some 7 ms, in one LeNet training step. A training step
    makes arrays of the same sizes every time, so the kernels' outputs come from here instead.
    Each array handed out is a view of a block kept here, and each view (and each view of a
    view) holds a reference to its block, so a block is free exactly when only this object
    refers to it. Blocks are kept per size; when the kept total passes ``limit``, a new
    allocation first lets go of the free ones.
    """

    def __init__(self, min_bytes=1 << 17, limit=1 << 30):
        self.min_bytes, self.limit = min_bytes, limit
        self.blocks = {}                   # nbytes -> [uint8 block, ...]
        self.total = 0
        self._lock = threading.Lock()

    def empty(self, shape, dtype):
        """np.empty(shape, dtype), on recycled memory when the array is large."""
        nbytes = _nbytes(shape, dtype)
        if nbytes < self.min_bytes:
            return np.empty(shape, dtype)
        with self._lock:
            block = self._free_block(nbytes)
            if block is None:
                if self.total + nbytes > self.limit:
                    self._release_free()
                block = np.empty(nbytes, dtype=np.uint8)
                self.blocks.setdefault(nbytes, []).append(block)
                self.total += nbytes
        return _view(block, nbytes, shape, dtype)

    def _free_block(self, nbytes):
        for block in self.blocks.get(nbytes, ()):
            # NOTE: three references when free: the list's, the loop variable's, getrefcount's argument.
            if sys.getrefcount(block) == 3:
                return block
        return None

    def _release_free(self):
        for nbytes, blocks in self.blocks.items():
            kept = [b for b in blocks if sys.getrefcount(b) > 3]   # the list, the comprehension, the argument
            self.total -= nbytes * (len(blocks) - len(kept))
            blocks[:] = kept


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


@njit(nogil=True, cache=True)
def _erf(x, y, lo, hi):
    for k in range(lo, hi):
        y[k] = math.erf(x[k])


# ---- sigmoid ------------------------------------------------------------------------
# sigmoid(x) = 1/(1 + t) for x >= 0 and t/(1 + t) for x < 0, where t = exp(-|x|): t is never
# above 1, so nothing overflows for any x, and for x << 0 the result keeps its relative
# accuracy down to the smallest subnormal (1/(1 + exp(-x)) would too, but 0.5*tanh(x/2) + 0.5
# loses it to cancellation).
#
# Numba calls the C library's expf one element at a time, which cannot be vectorized. The
# float32 kernel computes exp itself from arithmetic the compiler vectorizes: write
# v = n*ln2 + r with |r| <= ln2/2, so exp(v) = 2^n * exp(r); exp(r) is a degree-7 polynomial
# (Cephes's expf coefficients, within about 1 ulp), and 2^n is built from its exponent bits,
# in two halves so that results down to 2^-149 (subnormal) come out right.
@njit(nogil=True, cache=True, fastmath=_FAST, error_model="numpy")
def _sigmoid_f32(x, y, lo, hi):
    one = np.float32(1.0)
    for k in range(lo, hi):
        v = x[k]
        a = -abs(v)
        a = a if a > -104.0 else np.float32(-104.0)                       # exp(-104) is 0 in float32
        n = np.floor(a * np.float32(1.44269504) + np.float32(0.5))       # round(a / ln2)
        r = a - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)   # a - n*ln2, ln2 in two parts
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        e = p * r * r + r + one                                          # exp(r)
        ni = np.int32(n)
        half = ni >> 1
        t = e * _pow2_f32(half) * _pow2_f32(ni - half)                   # exp(a) = exp(r) * 2^n
        out = (one if v >= 0 else t) / (one + t)
        y[k] = out if v == v else v                                      # nan stays nan


@njit(inline="always")
def _pow2_f32(k):
    """2.0**k as float32, for -126 <= k <= 127: the exponent field is k + 127."""
    return np.int32((k + 127) << 23).view(np.float32)


@njit(nogil=True, cache=True, fastmath=_FAST)
def _sigmoid_f64(x, y, lo, hi):
    for k in range(lo, hi):
        v = x[k]
        t = math.exp(-abs(v))
        y[k] = (1.0 if v >= 0 else t) / (1.0 + t)


@njit(nogil=True, cache=True, fastmath=_FAST)
def _sigmoid_backward(y, gy, gx, lo, hi):
    for k in range(lo, hi):
        gx[k] = gy[k] * y[k] * (1 - y[k])


# ---- average pooling over (planes, H, W): each window's sum times 1 / its divisor -----------------
# NOTE: the general kernels' window loops have trip counts known only at run time, which keeps
# the compiler from vectorizing; the common 2x2, stride-2, unpadded case, written out, ran 10x faster.
@njit(nogil=True, cache=True, fastmath=_FAST)
def _avg_pool_2x2_forward(x, y, lo, hi):
    _, oh, ow = y.shape
    for m in range(lo, hi):
        for a in range(oh):
            for b in range(ow):
                y[m, a, b] = (x[m, 2 * a, 2 * b] + x[m, 2 * a, 2 * b + 1]
                              + x[m, 2 * a + 1, 2 * b] + x[m, 2 * a + 1, 2 * b + 1]) * np.float32(0.25)


@njit(nogil=True, cache=True, fastmath=_FAST)
def _avg_pool_2x2_backward(gy, gx, lo, hi):
    _, oh, ow = gy.shape
    _, h, w = gx.shape
    for m in range(lo, hi):
        if h != 2 * oh or w != 2 * ow:
            gx[m] = 0                          # an odd last row or column is in no window
        for a in range(oh):
            for b in range(ow):
                g = gy[m, a, b] * np.float32(0.25)
                gx[m, 2 * a, 2 * b] = g
                gx[m, 2 * a, 2 * b + 1] = g
                gx[m, 2 * a + 1, 2 * b] = g
                gx[m, 2 * a + 1, 2 * b + 1] = g


@njit(nogil=True, cache=True, fastmath=_FAST)
def _avg_pool_forward(x, y, kh, kw, sh, sw, ph, pw, inv, lo, hi):
    _, h, w = x.shape
    _, oh, ow = y.shape
    for m in range(lo, hi):
        for a in range(oh):
            r0 = a * sh - ph
            for b in range(ow):
                s0 = b * sw - pw
                total = 0.0
                for i in range(max(0, -r0), min(kh, h - r0)):            # the window's rows inside x
                    for j in range(max(0, -s0), min(kw, w - s0)):
                        total += x[m, r0 + i, s0 + j]
                y[m, a, b] = total * inv[a, b]


@njit(nogil=True, cache=True, fastmath=_FAST)
def _avg_pool_backward(gy, gx, kh, kw, sh, sw, ph, pw, inv, lo, hi):
    _, h, w = gx.shape
    _, oh, ow = gy.shape
    for m in range(lo, hi):                    # each plane's gx belongs to one call: no races
        gx[m] = 0
        for a in range(oh):
            r0 = a * sh - ph
            for b in range(ow):
                s0 = b * sw - pw
                g = gy[m, a, b] * inv[a, b]
                for i in range(max(0, -r0), min(kh, h - r0)):
                    for j in range(max(0, -s0), min(kw, w - s0)):
                        gx[m, r0 + i, s0 + j] += g
