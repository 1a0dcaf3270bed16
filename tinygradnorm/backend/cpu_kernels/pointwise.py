"""Elementwise and pooling kernels: erf, sigmoid, its backward and its double backward, average pooling.

Each is a ``prange`` loop over elements or planes, which Numba's threads share out (see _jit.py).
Every element or plane is computed on its own, so the split never changes a bit.

NOTE: a loop index that starts at a variable (``range(lo, hi)``) can be negative as far as Numba
knows, and its wrap-around check for negative indices kept LLVM from vectorizing the sigmoid
(1.27 ms for 884,736 float32 elements on one core; 0.31 ms with an index that starts at 0).
"""
import math

import numpy as np
from numba import njit, prange

from ._jit import pjit


class PointwiseKernels:
    """erf, sigmoid and average pooling, as methods of CpuKernels."""

    def erf(self, x):
        """The error function of a float32 or float64 array (computed in float64)."""
        flat = np.ascontiguousarray(x).reshape(-1)
        y = np.empty(flat.size, dtype=x.dtype)
        self.thread_count()
        _erf(flat, y)
        return y.reshape(x.shape)

    def sigmoid_forward(self, x):
        """1 / (1 + exp(-x)) of a contiguous float32 or float64 array."""
        y = self.empty(x.shape, x.dtype)
        self.thread_count()
        (_sigmoid_f32 if x.dtype == np.float32 else _sigmoid_f64)(x.reshape(-1), y.reshape(-1))
        return y

    def sigmoid_backward(self, y, gy):
        """gy * y * (1 - y), for y = sigmoid(x)."""
        gx = self.empty(y.shape, y.dtype)
        self.thread_count()
        _sigmoid_backward(y.reshape(-1), gy.reshape(-1), gx.reshape(-1))
        return gx

    def sigmoid_double_backward(self, y, gy, u):
        """The gradients of sigmoid_backward's gy * y * (1 - y) for its output gradient u, in one pass:
        (with respect to y: u * gy * (1 - 2 y), with respect to gy: u * y * (1 - y))."""
        g_y, g_gy = self.empty(y.shape, y.dtype), self.empty(y.shape, y.dtype)
        self.thread_count()
        _sigmoid_double_backward(y.reshape(-1), gy.reshape(-1), u.reshape(-1), g_y.reshape(-1), g_gy.reshape(-1))
        return g_y, g_gy

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
        """Run a pooling kernel from src to dst, (planes, H, W) each: the 2x2 stride-2 one where it applies."""
        self.thread_count()
        if (tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) and tuple(padding) == (0, 0)
                and bool((inv == 0.25).all())):
            kernel_2x2(src, dst)
        else:
            kernel_any(src, dst, *kernel, *stride, *padding, inv)


@pjit(fastmath=False)
def _erf(x, y):
    for k in prange(x.size):
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
@pjit(error_model="numpy")
def _sigmoid_f32(x, y):
    one = np.float32(1.0)
    for k in prange(x.size):
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


@njit(inline="always", error_model="numpy")
def _pow2_f32(k):
    """2.0**k as float32, for -126 <= k <= 127: the exponent field is k + 127."""
    return np.int32((k + 127) << 23).view(np.float32)


@pjit
def _sigmoid_f64(x, y):
    for k in prange(x.size):
        v = x[k]
        t = math.exp(-abs(v))
        y[k] = (1.0 if v >= 0 else t) / (1.0 + t)


@pjit
def _sigmoid_backward(y, gy, gx):
    for k in prange(y.size):
        gx[k] = gy[k] * y[k] * (1 - y[k])


@pjit
def _sigmoid_double_backward(y, gy, u, g_y, g_gy):
    for k in prange(y.size):
        yk, uk = y[k], u[k]
        g_y[k] = uk * gy[k] * (1 - 2 * yk)
        g_gy[k] = uk * yk * (1 - yk)


# ---- average pooling over (planes, H, W): each window's sum times 1 / its divisor -----------------
# NOTE: the general kernels' window loops have trip counts known only at run time, which keeps
# the compiler from vectorizing; the common 2x2, stride-2, unpadded case, written out, ran 10x faster.
@pjit
def _avg_pool_2x2_forward(x, y):
    _, oh, ow = y.shape
    for m in prange(y.shape[0]):
        for a in range(oh):
            for b in range(ow):
                y[m, a, b] = (x[m, 2 * a, 2 * b] + x[m, 2 * a, 2 * b + 1]
                              + x[m, 2 * a + 1, 2 * b] + x[m, 2 * a + 1, 2 * b + 1]) * np.float32(0.25)


@pjit
def _avg_pool_2x2_backward(gy, gx):
    _, oh, ow = gy.shape
    _, h, w = gx.shape
    for m in prange(gy.shape[0]):
        if h != 2 * oh or w != 2 * ow:
            gx[m] = 0                          # an odd last row or column is in no window
        for a in range(oh):
            for b in range(ow):
                g = gy[m, a, b] * np.float32(0.25)
                gx[m, 2 * a, 2 * b] = g
                gx[m, 2 * a, 2 * b + 1] = g
                gx[m, 2 * a + 1, 2 * b] = g
                gx[m, 2 * a + 1, 2 * b + 1] = g


@pjit
def _avg_pool_forward(x, y, kh, kw, sh, sw, ph, pw, inv):
    _, h, w = x.shape
    _, oh, ow = y.shape
    for m in prange(y.shape[0]):
        for a in range(oh):
            r0 = a * sh - ph
            for b in range(ow):
                s0 = b * sw - pw
                total = 0.0
                for i in range(max(0, -r0), min(kh, h - r0)):            # the window's rows inside x
                    for j in range(max(0, -s0), min(kw, w - s0)):
                        total += x[m, r0 + i, s0 + j]
                y[m, a, b] = total * inv[a, b]


@pjit
def _avg_pool_backward(gy, gx, kh, kw, sh, sw, ph, pw, inv):
    _, h, w = gx.shape
    _, oh, ow = gy.shape
    for m in prange(gy.shape[0]):                    # each plane's gx belongs to one call: no races
        gx[m] = 0
        for a in range(oh):
            r0 = a * sh - ph
            for b in range(ow):
                s0 = b * sw - pw
                g = gy[m, a, b] * inv[a, b]
                for i in range(max(0, -r0), min(kh, h - r0)):
                    for j in range(max(0, -s0), min(kw, w - s0)):
                        gx[m, r0 + i, s0 + j] += g
