"""Compiled CPU kernels for the hot paths that NumPy can only spell as many passes over memory.

Each kernel is a plain loop over the maths, compiled by Numba, run on ranges of statistics
spread over the cores by the backend's thread pool. They read like the formulas in docs/normalization.md: statistics, then x_hat, then
the closed-form gradient, one channel at a time, so a channel's data is read from memory once
and revisited from cache. Statistics are accumulated in float64 whatever the input dtype.

The NumPy backend uses them when Numba imports (``NumpyBackend.kernels``); without Numba, or
with TINYGRADNORM_JIT=0, every op falls back to its NumPy code, which the tests check against.

Layout. A standardization over some axes is viewed as an array (P, S, Q): S statistics, each
over the P*Q elements x[:, s, :] (BatchNorm: (N, C, H*W); InstanceNorm: (1, N*C, H*W);
LayerNorm: (1, rows, normalized size)).
"""
import math
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

    Each kernel works on a range [lo, hi) of statistics and releases the GIL, so ``split``
    (the backend's ``parallel_range``) runs the ranges on the backend's own threads: one pool
    for NumPy work and kernels alike, and no second pool spinning against it.
    """

    def __init__(self, split):
        self.split = split
        self._scratch = threading.local()

    def standardize_forward(self, x, weight, bias, eps):
        """x (P, S, Q) -> y = (x - mean) * inv_std * weight + bias, and the float64 mean, var, inv_std (S,)."""
        s = x.shape[1]
        y = np.empty_like(x)
        mean, var, inv_std = np.empty(s), np.empty(s), np.empty(s)
        self.split(lambda lo, hi: _standardize_forward(x, weight, bias, float(eps), y, mean, var, inv_std, lo, hi),
                   s, x.nbytes)
        return y, mean, var, inv_std

    def standardize_backward(self, x, gy, mean, inv_std, weight):
        """gx of standardize_forward, with Σgy and Σ(gy * x_hat) per statistic (float64, (S,))."""
        s = x.shape[1]
        gx = np.empty_like(x)
        sum_gy, sum_gy_xhat = np.empty(s), np.empty(s)
        self.split(lambda lo, hi: _standardize_backward(x, gy, mean, inv_std, weight, gx, sum_gy, sum_gy_xhat, lo, hi),
                   s, x.nbytes)
        return gx, sum_gy, sum_gy_xhat

    def im2col(self, x, cols, stride, padding, dilation):
        """cols[c, i, j, n, a, b] = x[n, c, a*sh + i*dh - ph, b*sw + j*dw - pw], zero outside x."""
        c, kh, kw = cols.shape[:3]
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        self.split(lambda lo, hi: _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, lo, hi), c * kh * kw, cols.nbytes)

    def scratch(self, name, shape, dtype):
        """A reusable array for a temporary that dies inside one op call (im2col's columns, say), one per
        name and thread. Reusing it spares a fresh allocation, and its page faults, on every call."""
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        buffers = self._scratch.__dict__
        buf = buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            buf = buffers[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)

    def col2im(self, gcols, x_shape, stride, padding, dilation):
        """The adjoint of im2col: gx (N, C, H, W) with every column entry added back where it was read."""
        gx = np.empty(x_shape, dtype=gcols.dtype)
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        self.split(lambda lo, hi: _col2im(gcols, gx, sh, sw, ph, pw, dh, dw, lo, hi), x_shape[0], gcols.nbytes)
        return gx



# ---- convolution: building and scattering the columns -------------------------------
@njit(nogil=True, cache=True)
def _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, lo, hi):
    n_, c_, h, w = x.shape
    oh, ow = cols.shape[4], cols.shape[5]
    for k in range(lo, hi):                        # k = (c, i, j), one kernel offset of one channel
        c, i, j = k // (kh * kw), (k // kw) % kh, k % kw
        for n in range(n_):
            for a in range(oh):
                r = a * sh + i * dh - ph
                for b in range(ow):
                    s = b * sw + j * dw - pw
                    cols[c, i, j, n, a, b] = x[n, c, r, s] if 0 <= r < h and 0 <= s < w else 0


@njit(nogil=True, cache=True)
def _col2im(gcols, gx, sh, sw, ph, pw, dh, dw, lo, hi):
    c_, kh, kw, n_, oh, ow = gcols.shape
    h, w = gx.shape[2], gx.shape[3]
    for n in range(lo, hi):                        # each sample's gx belongs to one call: no races
        for c in range(c_):
            gx[n, c] = 0
            for i in range(kh):
                for j in range(kw):
                    for a in range(oh):
                        r = a * sh + i * dh - ph
                        if 0 <= r < h:
                            for b in range(ow):
                                s = b * sw + j * dw - pw
                                if 0 <= s < w:
                                    gx[n, c, r, s] += gcols[c, i, j, n, a, b]
