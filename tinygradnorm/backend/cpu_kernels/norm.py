"""Compiled normalization kernels: the formulas of docs/normalization.md as loops.

Each kernel works on one statistic at a time. It reads that statistic's elements from memory
once, and revisits them from cache for the second and third pass. The array code in
nn/norm/fused.py instead makes one trip to memory per operation.

The comments name the steps of docs/normalization.md, section 1 (forward steps 1-6, the
closed-form backward) and section 7 (how the closed form is rewritten for a loop). In short:

- statistics (mean, var, and the backward's sums) accumulate in float64 whatever the input
  dtype, by the corrected two-pass algorithm: pass 1 sums x in x's own dtype (vectorized
  twice as wide) for a provisional mean, and pass 2 sums c = x - mean and c² in float64; the
  mean and variance come from pass 2's sums, so pass 1's rounding never reaches them;
- the elementwise passes run in the input's dtype, as ``y = (x - centre) * scale + offset`` and
  ``gx = scale * gy + a * (x - centre) + k``, where ``centre`` is the mean rounded to that dtype
  and the per-statistic factors are computed in float64. Subtracting ``centre`` first keeps
  float32 exact when |mean| >> std (x - centre is then exact), where ``x * scale + offset`` would
  cancel. Where a factor would leave float32's range (inputs near 1e30), the backward's
  elementwise pass runs in float64 instead (``_fits``).

A standardization over some axes reaches these kernels in one of four layouts, chosen by
``_layout`` from the shapes alone:

=========  ============  ==================================================  ===============================
layout     x viewed as   statistic s is over                                 weight and bias
=========  ============  ==================================================  ===============================
channels   (P, S, Q)     x[:, s, :]                                          one value per statistic, (S,)
columns    (P, S)        x[:, s] (channels with Q = 1; read row by row)      one value per statistic, (S,)
rows       (S, K)        x[s, :]                                             per element: weight[s % G, k]
groups     (S, K, L)     x[s, :, :], K channels of L elements each           per channel: weight[s % G, k]
=========  ============  ==================================================  ===============================

BatchNorm is channels (N, C, H*W), or columns (N, C) for BatchNorm1d on 2-D input. InstanceNorm
is channels (1, N*C, H*W). LayerNorm is rows (N*..., prod(normalized_shape)) with G = 1. GroupNorm
is groups (N*G, C/G, H*W). LayerNorm and GroupNorm without affine parameters are channels with
P = 1.

Parallelism: every ``prange`` runs over statistics (each computed whole by one thread), over
fixed blocks of columns, over fixed blocks of rows whose partial parameter gradients are added
in block order, or (the software-pipelined kernels, docs section 7) over one block of statistics
per thread, in which every statistic still goes through the same loop; so the bits never depend
on the thread count.
"""
import math

import numpy as np
from numba import njit, prange

from ..norm import TINY, ArrayNorm
from ._jit import pjit

_COLUMNS = 64            # columns per block in the columns layout: the block's sums stay in L1
_BLOCKS = 16             # at most this many partial parameter gradients in the rows layout
_TINY = TINY             # statistics of at most this many elements take the backward's float64 pass (_in_float32)
_AHEAD_BYTES = 4 << 20   # LayerNorm inputs up to this size run _rows_forward's pass 1 ahead (measured: the gain turns
                         # into a loss between 8 and 16 MB on a 2-core EPYC; 4 MB leaves room for smaller caches)


@njit(inline="always", error_model="numpy")
def _provisional(total, m, first):
    """Step 1's mean from pass 1's sum, in x's dtype: only the centre for pass 2, whose float64 sums of
    x - mean correct any error in it (see _finish). Where a float32 sum overflowed, any element is as good a
    centre (the shifted-data algorithm)."""
    mean = np.float64(total) / m
    return mean if np.isfinite(mean) else np.float64(first)


@njit(inline="always", error_model="numpy")
def _finish(mean, sum_c, sum_cc, m, eps):
    """Steps 3-4 from the centred sums Σc and Σc² (c = x - mean): (mean, biased var, inv_std).

    NOTE: corrected two-pass. Σc is 0 in exact arithmetic. Its rounding error, shift, moves into
    the mean, and shift² comes off the variance. This keeps var accurate when |mean| >> std.
    Never E[x²] - E[x]²."""
    shift = sum_c / m
    var = max(sum_cc / m - shift * shift, 0.0)
    return mean + shift, var, 1.0 / np.sqrt(var + eps)


@njit(inline="always", error_model="numpy")
def _fits(a):
    """True when the backward's factor a (about inv_std² times a gradient) lies well inside float32's range, so the
    elementwise pass may run in float32. Not so for inputs near 1e30 (a ~ 1e-60), where it runs in float64.

    NOTE: the compiler may reassociate the elementwise expression (fastmath "reassoc", which the sums need to
    vectorize), so every product of its factors must be representable too; a is the largest such product."""
    return a == 0.0 or 1e-30 < abs(a) < 1e30


@njit(inline="always", error_model="numpy")
def _in_float32(a, m):
    """True when a statistic's backward elementwise pass may run in x's dtype (float32): a fits (see _fits) and
    the statistic has more than _TINY elements. A tiny statistic's gx is a small difference of large terms (for
    one element it is exactly 0; for two it is about eps), and the float32 rewrite scale·gy + ... + k would
    leave rounding noise of scale·|gy|·2^-24 there; so it runs in float64, with gy's mean taken out first."""
    return m > _TINY and _fits(a)


# ---- channels: (P, S, Q), weight and bias per statistic ---------------------------------------------
@pjit
def _channels_forward(x, weight, bias, eps, y, mean, var, inv_std):
    p, n_stats, q = x.shape
    m = p * q
    T = x.dtype.type
    for s in prange(n_stats):
        total = T(0.0)
        for i in range(p):
            for j in range(q):
                total += x[i, s, j]
        mu = _provisional(total, m, x[0, s, 0])                 # step 1: mean (pass 2 makes it exact)
        sum_c = 0.0
        sum_cc = 0.0
        for i in range(p):
            for j in range(q):
                c = x[i, s, j] - mu                             # step 2: centred
                sum_c += c
                sum_cc += c * c
        mu, v, inv = _finish(mu, sum_c, sum_cc, m, eps)         # steps 3-4: var, inv_std
        # steps 5-6: y = x_hat * weight + bias = (x - centre) * scale + offset
        centre = T(mu)
        sc = inv * weight[s]
        scale = T(sc)
        offset = T(bias[s] - (mu - centre) * sc)
        for i in range(p):
            for j in range(q):
                y[i, s, j] = (x[i, s, j] - centre) * scale + offset
        mean[s] = mu
        var[s] = v
        inv_std[s] = inv


@pjit
def _channels_backward(x, gy, mean, inv_std, weight, gx, sum_gy, sum_gy_xhat):
    p, n_stats, q = x.shape
    m = p * q
    T = x.dtype.type
    for s in prange(n_stats):
        mu = mean[s]
        inv = inv_std[s]
        sg = 0.0
        sgc = 0.0
        for i in range(p):
            for j in range(q):
                g = gy[i, s, j]
                sg += g                                         # Σgy                  (= gbeta)
                sgc += g * (x[i, s, j] - mu)                    # Σgy·(x - mean)
        sum_gy[s] = sg
        sum_gy_xhat[s] = sgc * inv                              # Σgy·x_hat            (= ggamma)
        # gx = inv_std·weight·(gy - (Σgy + x_hat·Σ(gy·x_hat)) / m)   (weight constant: Σg_hat = weight·Σgy)
        #    = scale·gy + a·(x - mean) + k                           (docs section 7)
        sc = inv * weight[s]
        a = -sc * inv * inv * sgc / m
        k = -sc * sg / m
        if _in_float32(a, m):
            centre = T(mu)
            scale, a_t, k_t = T(sc), T(a), T(k - a * (mu - centre))
            for i in range(p):
                for j in range(q):
                    gx[i, s, j] = scale * gy[i, s, j] + a_t * (x[i, s, j] - centre) + k_t
        else:                                                   # float64, with gy's mean taken out first
            g_mean = sg / m
            for i in range(p):
                for j in range(q):
                    gx[i, s, j] = sc * (gy[i, s, j] - g_mean) + a * (x[i, s, j] - mu)


# ---- columns: (P, S), each statistic a strided column; blocks of _COLUMNS read row by row ----------------
@pjit
def _columns_forward(x, weight, bias, eps, y, mean, var, inv_std):
    p, n_stats = x.shape
    T = x.dtype.type
    for b in prange((n_stats + _COLUMNS - 1) // _COLUMNS):
        lo = b * _COLUMNS
        n = min(_COLUMNS, n_stats - lo)
        total = np.zeros(n, x.dtype)
        for i in range(p):
            row = x[i, lo:lo + n]
            for s in range(n):
                total[s] += row[s]
        mu = np.empty(n)
        for s in range(n):
            mu[s] = _provisional(total[s], p, x[0, lo + s])    # step 1
        sum_c = np.zeros(n)
        sum_cc = np.zeros(n)
        for i in range(p):
            row = x[i, lo:lo + n]
            for s in range(n):
                c = row[s] - mu[s]                              # step 2
                sum_c[s] += c
                sum_cc[s] += c * c
        centre = np.empty(n, x.dtype)
        scale = np.empty(n, x.dtype)
        offset = np.empty(n, x.dtype)
        for s in range(n):
            mean[lo + s], var[lo + s], inv_std[lo + s] = _finish(mu[s], sum_c[s], sum_cc[s], p, eps)   # steps 3-4
            centre[s] = T(mean[lo + s])                         # steps 5-6, as in channels
            sc = inv_std[lo + s] * weight[lo + s]
            scale[s] = T(sc)
            offset[s] = T(bias[lo + s] - (mean[lo + s] - centre[s]) * sc)
        for i in range(p):
            row = x[i, lo:lo + n]
            out = y[i, lo:lo + n]
            for s in range(n):
                out[s] = (row[s] - centre[s]) * scale[s] + offset[s]


@pjit
def _columns_backward(x, gy, mean, inv_std, weight, gx, sum_gy, sum_gy_xhat):
    p, n_stats = x.shape
    T = x.dtype.type
    for b in prange((n_stats + _COLUMNS - 1) // _COLUMNS):
        lo = b * _COLUMNS
        n = min(_COLUMNS, n_stats - lo)
        mu = mean[lo:lo + n]
        sg = np.zeros(n)
        sgc = np.zeros(n)
        for i in range(p):
            row = x[i, lo:lo + n]
            grow = gy[i, lo:lo + n]
            for s in range(n):
                sg[s] += grow[s]                                # Σgy
                sgc[s] += grow[s] * (row[s] - mu[s])            # Σgy·(x - mean)
        sc = np.empty(n)
        a = np.empty(n)
        k = np.empty(n)
        fits = True
        for s in range(n):
            inv = inv_std[lo + s]
            sum_gy[lo + s] = sg[s]
            sum_gy_xhat[lo + s] = sgc[s] * inv                  # Σgy·x_hat
            sc[s] = inv * weight[lo + s]                        # gx = scale·gy + a·(x - mean) + k, as in channels
            a[s] = -sc[s] * inv * inv * sgc[s] / p
            k[s] = -sc[s] * sg[s] / p
            fits = fits and _in_float32(a[s], p)
        if fits:
            centre = np.empty(n, x.dtype)
            scale = np.empty(n, x.dtype)
            a_t = np.empty(n, x.dtype)
            k_t = np.empty(n, x.dtype)
            for s in range(n):
                centre[s] = T(mu[s])
                scale[s] = T(sc[s])
                a_t[s] = T(a[s])
                k_t[s] = T(k[s] - a[s] * (mu[s] - centre[s]))
            for i in range(p):
                row = x[i, lo:lo + n]
                grow = gy[i, lo:lo + n]
                out = gx[i, lo:lo + n]
                for s in range(n):
                    out[s] = scale[s] * grow[s] + a_t[s] * (row[s] - centre[s]) + k_t[s]
        else:                                                   # float64, with gy's mean taken out first
            for i in range(p):
                for s in range(n):
                    gx[i, lo + s] = sc[s] * (gy[i, lo + s] - sg[s] / p) + a[s] * (x[i, lo + s] - mu[s])


# ---- the running statistics ----------------------------------------------------------------------------
@njit(nogil=True, cache=True, error_model="numpy")
def _update_running(running_mean, running_var, mean, var, momentum, unbias):
    """ArrayNorm.update_running's float64 arithmetic in the same order (no fastmath: the same bits)."""
    for c in range(running_mean.shape[0]):
        running_mean[c] = (1 - momentum) * np.float64(running_mean[c]) + momentum * mean[c]
        running_var[c] = (1 - momentum) * np.float64(running_var[c]) + momentum * (var[c] * unbias)


# ---- rows: (S, K), weight and bias per element of a row (LayerNorm) ------------------------------------
@njit(inline="always", error_model="numpy")
def _layer_norm_output(xv, centre, inv_t, shift, w, b):
    """Steps 5-6 for one element: y = x_hat·weight + bias, with x_hat = (x - mean)·inv_std
    = (x - centre)·inv_std - (mean - centre)·inv_std (shift is the last product)."""
    return ((xv - centre) * inv_t - shift) * w + b


@pjit
def _rows_forward(x, weight, bias, eps, y, mean, var, inv_std, n_blocks, ahead):
    """Software-pipelined (docs section 7): step s sums row s (pass 2, arithmetic-bound) in the loop that writes
    row s - 1's output (pass 3, memory-bound), so that the two overlap. Pass 1 (the provisional mean's sum) runs
    over row s just before, as a loop of its own; or, when ``ahead`` (an input that fits in cache), over row
    s + 1 inside that same loop. Measured: ahead is faster from cache (28.7 against 30.8 µs for 1 MB), slower
    from memory (825 against 652 µs for 16 MB)."""
    n_stats, k_ = x.shape
    n_groups = weight.shape[0]
    T = x.dtype.type
    for blk in prange(n_blocks):
        lo, hi = n_stats * blk // n_blocks, n_stats * (blk + 1) // n_blocks
        g, centre, inv_t, shift = 0, T(0.0), T(0.0), T(0.0)   # the output factors of the row written
        total = T(0.0)                                          # ahead: pass 1's sum of the row summed next
        for s in range(lo - 1, hi + 1):
            # NOTE: every row's sums come from the same loop, so the bits never depend on the blocks (that is, on
            # the thread count). The first two steps sum and write rows for nothing (placeholders, which later
            # steps overwrite); the last two sum rows a second time, and their sums are discarded.
            p = min(s + 1, hi - 1)                              # ahead: the row whose pass 1 runs
            r = min(max(s, lo), hi - 1)                         # the row summed (pass 2)
            w = max(s - 1, lo)                                  # the row written (pass 3)
            if not ahead:
                total = T(0.0)
                for k in range(k_):
                    total += x[r, k]
            mu = _provisional(total, k_, x[r, 0])              # step 1
            total = T(0.0)
            sum_c = 0.0
            sum_cc = 0.0
            if ahead:
                for k in range(k_):
                    total += x[p, k]                            # step 1, row s + 1
                    c = x[r, k] - mu                            # step 2, row s
                    sum_c += c
                    sum_cc += c * c
                    y[w, k] = _layer_norm_output(x[w, k], centre, inv_t, shift, weight[g, k], bias[g, k])
            else:
                for k in range(k_):
                    c = x[r, k] - mu                            # step 2, row s
                    sum_c += c
                    sum_cc += c * c
                    y[w, k] = _layer_norm_output(x[w, k], centre, inv_t, shift, weight[g, k], bias[g, k])
            if lo <= s < hi:
                mu, v, inv = _finish(mu, sum_c, sum_cc, k_, eps)    # steps 3-4
                mean[s] = mu
                var[s] = v
                inv_std[s] = inv
                g = s % n_groups
                centre = T(mu)
                inv_t = T(inv)
                shift = T((mu - centre) * inv)


@pjit
def _rows_backward(x, gy, mean, inv_std, weight, gx, sum_gy, sum_gy_xhat):
    """sum_gy and sum_gy_xhat are (B, G, K), uninitialized: block b's partial gbeta and ggamma, over rows
    [S·b/B, S·(b+1)/B).

    NOTE: not software-pipelined like the other row and group kernels: measured, that made it slower (77 vs
    59 µs for LayerNorm((16, 8, 8))), as the partial sums' loads and stores already keep the memory ports busy."""
    n_stats, k_ = x.shape
    n_blocks, n_groups = sum_gy.shape[0], weight.shape[0]
    T = x.dtype.type
    for blk in prange(n_blocks):
        sum_gy[blk] = 0.0
        sum_gy_xhat[blk] = 0.0
        for s in range(n_stats * blk // n_blocks, n_stats * (blk + 1) // n_blocks):
            mu = mean[s]
            inv = inv_std[s]
            g = s % n_groups
            s1 = 0.0
            s2 = 0.0
            for k in range(k_):
                gyk = gy[s, k]
                c = x[s, k] - mu
                g_hat = gyk * weight[g, k]                      # g_hat = weight·gy
                s1 += g_hat                                     # Σg_hat
                s2 += g_hat * c                                 # Σg_hat·(x - mean)
                sum_gy[blk, g, k] += gyk                          # gbeta's partial
                sum_gy_xhat[blk, g, k] += gyk * c * inv           # ggamma's partial: gy·x_hat
            # gx = (inv_std/m)(m·g_hat - Σg_hat - x_hat·Σ(g_hat·x_hat)) = (inv_std·weight)·gy + a·(x - mean) + k
            a = -inv * inv * inv * s2 / k_
            kk = -inv * s1 / k_
            if _in_float32(a, k_):
                centre = T(mu)
                inv_t, a_t, k_t = T(inv), T(a), T(kk - a * (mu - centre))
                for k in range(k_):
                    gx[s, k] = inv_t * weight[g, k] * gy[s, k] + a_t * (x[s, k] - centre) + k_t
            else:                                               # float64, with g_hat's mean taken out first
                g_mean = s1 / k_
                for k in range(k_):
                    gx[s, k] = inv * (weight[g, k] * gy[s, k] - g_mean) + a * (x[s, k] - mu)


# ---- groups: (S, K, L), weight and bias per channel k of a statistic (GroupNorm) -----------------------
@pjit
def _groups_forward(x, weight, bias, eps, y, mean, var, inv_std, n_blocks):
    """Software-pipelined as _rows_forward: pass 2 over statistic s shares a loop with statistic s - 1's output."""
    n_stats, k_, l_ = x.shape
    n_groups = weight.shape[0]
    m = k_ * l_
    T = x.dtype.type
    for blk in prange(n_blocks):
        lo, hi = n_stats * blk // n_blocks, n_stats * (blk + 1) // n_blocks
        g, centre, mu_w, inv_w = 0, T(0.0), 0.0, 0.0          # the mean and inv_std of the statistic written
        for s in range(lo, hi + 1):
            r = min(s, hi - 1)                                  # summed, and written, as in _rows_forward
            w = max(s - 1, lo)
            total = T(0.0)
            for k in range(k_):
                for j in range(l_):
                    total += x[r, k, j]
            mu = _provisional(total, m, x[r, 0, 0])             # step 1
            sum_c = 0.0
            sum_cc = 0.0
            for k in range(k_):
                sc = inv_w * weight[g, k]                       # steps 5-6, per channel k:
                scale = T(sc)                                   #   y = (x - centre) * scale + offset
                offset = T(bias[g, k] - (mu_w - centre) * sc)
                for j in range(l_):
                    c = x[r, k, j] - mu                         # step 2
                    sum_c += c
                    sum_cc += c * c
                    y[w, k, j] = (x[w, k, j] - centre) * scale + offset
            if s < hi:
                mu, v, inv = _finish(mu, sum_c, sum_cc, m, eps)     # steps 3-4
                mean[s] = mu
                var[s] = v
                inv_std[s] = inv
                g = s % n_groups
                centre = T(mu)
                mu_w = mu
                inv_w = inv


@pjit
def _groups_backward(x, gy, mean, inv_std, weight, gx, sum_gy, sum_gy_xhat, n_blocks):
    """sum_gy and sum_gy_xhat are (S, K): each statistic's channel sums, which the caller adds over the batch.

    Software-pipelined as _groups_forward: the sums over statistic s share a loop with statistic s - 1's gx."""
    n_stats, k_, l_ = x.shape
    n_groups = weight.shape[0]
    m = k_ * l_
    T = x.dtype.type
    for blk in prange(n_blocks):
        lo, hi = n_stats * blk // n_blocks, n_stats * (blk + 1) // n_blocks
        g_w, mu_w, inv_w, a_w, k_w, gm_w = 0, 0.0, 0.0, 0.0, 0.0, 0.0   # the statistic written: mean, inv_std, a, k
        for s in range(lo, hi + 1):
            r = min(s, hi - 1)                                  # summed, and written, as in _rows_forward
            w = max(s - 1, lo)
            mu = mean[r]
            inv = inv_std[r]
            g = r % n_groups
            # gx = (inv_std·weight)·gy + a·(x - mean) + k, in x's dtype around centre (docs section 7)
            centre = T(mu_w)
            a_t, k_t = T(a_w), T(k_w - a_w * (mu_w - centre))
            s1 = 0.0
            s2 = 0.0
            for k in range(k_):
                scale = T(inv_w * weight[g_w, k])
                t1 = 0.0
                t2 = 0.0
                for j in range(l_):
                    gyv = gy[r, k, j]
                    t1 += gyv                                   # channel k's Σgy
                    t2 += gyv * (x[r, k, j] - mu)               # and Σgy·(x - mean)
                    gx[w, k, j] = scale * gy[w, k, j] + a_t * (x[w, k, j] - centre) + k_t
                sum_gy[r, k] = t1
                sum_gy_xhat[r, k] = t2 * inv
                s1 += weight[g, k] * t1                         # Σg_hat
                s2 += weight[g, k] * t2                         # Σg_hat·(x - mean)
            if s > lo and not _in_float32(a_w, m):              # gx again, in float64 (and Σg_hat's mean out)
                for k in range(k_):
                    for j in range(l_):
                        gx[w, k, j] = inv_w * (weight[g_w, k] * gy[w, k, j] - gm_w) + a_w * (x[w, k, j] - mu_w)
            g_w, mu_w, inv_w = g, mu, inv
            a_w = -inv * inv * inv * s2 / m
            k_w = -inv * s1 / m
            gm_w = s1 / m


# ---- eval mode: frozen statistics, y = (x - centre) * scale + offset per statistic -----------------------
@njit(inline="always", error_model="numpy")
def _frozen_factors(running_mean, running_var, weight, bias, eps, mean, inv_std, centre, scale, offset):
    """Per statistic: the running mean in float64, inv_std = 1/sqrt(running_var + eps), and the factors of
    y = (x - centre) * scale + offset = (x - mean) * inv_std * weight + bias. The running statistics have x's
    dtype, so centre is the mean exactly."""
    T = centre.dtype.type
    for s in range(mean.shape[0]):
        mu = np.float64(running_mean[s])
        inv = 1.0 / np.sqrt(np.float64(running_var[s]) + eps)
        mean[s] = mu
        inv_std[s] = inv
        centre[s] = T(mu)
        scale[s] = T(inv * weight[s])
        offset[s] = bias[s]


@pjit
def _frozen_forward(x, running_mean, running_var, weight, bias, eps, y, mean, inv_std):
    p, n_stats, q = x.shape
    centre, scale, offset = np.empty(n_stats, x.dtype), np.empty(n_stats, x.dtype), np.empty(n_stats, x.dtype)
    _frozen_factors(running_mean, running_var, weight, bias, eps, mean, inv_std, centre, scale, offset)
    for ps in prange(p * n_stats):
        i = ps // n_stats
        s = ps % n_stats
        c = centre[s]
        a = scale[s]
        b = offset[s]
        for j in range(q):
            y[i, s, j] = (x[i, s, j] - c) * a + b


@pjit
def _frozen_columns_forward(x, running_mean, running_var, weight, bias, eps, y, mean, inv_std):
    p, n_stats = x.shape
    centre, scale, offset = np.empty(n_stats, x.dtype), np.empty(n_stats, x.dtype), np.empty(n_stats, x.dtype)
    _frozen_factors(running_mean, running_var, weight, bias, eps, mean, inv_std, centre, scale, offset)
    for i in prange(p):
        row = x[i]
        out = y[i]
        for s in range(n_stats):
            out[s] = (row[s] - centre[s]) * scale[s] + offset[s]


@pjit
def _frozen_backward(x, gy, mean, scale, gx, sum_gy, sum_gy_xc):
    """gx = gy·scale; per statistic Σgy and Σgy·(x - mean), for gbeta and ggamma (docs section 3)."""
    p, n_stats, q = x.shape
    for s in prange(n_stats):
        a = scale[s]
        mu = mean[s]
        sg = 0.0
        sgc = 0.0
        for i in range(p):
            for j in range(q):
                g = gy[i, s, j]
                gx[i, s, j] = g * a
                sg += g
                sgc += g * (x[i, s, j] - mu)        # centred first: Σgy·x - mean·Σgy would cancel
        sum_gy[s] = sg
        sum_gy_xc[s] = sgc


@pjit
def _frozen_columns_backward(x, gy, mean, scale, gx, sum_gy, sum_gy_xc):
    p, n_stats = x.shape
    for b in prange((n_stats + _COLUMNS - 1) // _COLUMNS):
        lo = b * _COLUMNS
        n = min(_COLUMNS, n_stats - lo)
        sg = np.zeros(n)
        sgc = np.zeros(n)
        for i in range(p):
            row = x[i, lo:lo + n]
            grow = gy[i, lo:lo + n]
            out = gx[i, lo:lo + n]
            for s in range(n):
                g = grow[s]
                out[s] = g * scale[lo + s]
                sg[s] += g
                sgc[s] += g * (row[s] - mean[lo + s])
        for s in range(n):
            sum_gy[lo + s] = sg[s]
            sum_gy_xc[lo + s] = sgc[s]


# ---- RMSNorm: rows (S, K), no centring (docs section 3) ---------------------------------------------
@pjit
def _rms_forward(x, weight, eps, y, inv_rms):
    n_stats, k_ = x.shape
    T = x.dtype.type
    for s in prange(n_stats):
        total = 0.0
        for k in range(k_):
            v = np.float64(x[s, k])
            total += v * v                                      # Σx², squared in float64
        inv = 1.0 / np.sqrt(total / k_ + eps)                   # inv_rms
        inv_t = T(inv)
        for k in range(k_):
            y[s, k] = x[s, k] * inv_t * weight[k]               # y = x_hat·weight, x_hat = x·inv_rms
        inv_rms[s] = inv


@pjit
def _rms_backward(x, gy, inv_rms, weight, gx, sum_gy_xhat):
    """sum_gy_xhat is (B, K), uninitialized: block b's partial ggamma."""
    n_stats, k_ = x.shape
    n_blocks = sum_gy_xhat.shape[0]
    T = x.dtype.type
    for blk in prange(n_blocks):
        sum_gy_xhat[blk] = 0.0
        for s in range(n_stats * blk // n_blocks, n_stats * (blk + 1) // n_blocks):
            inv = inv_rms[s]
            s2 = 0.0
            for k in range(k_):
                gyk = gy[s, k]
                xk = np.float64(x[s, k])
                s2 += gyk * weight[k] * xk                      # Σg_hat·x
                sum_gy_xhat[blk, k] += gyk * xk * inv             # ggamma's partial: gy·x_hat
            # gx = inv_rms·(g_hat - x_hat·Σ(g_hat·x_hat)/m) = (inv_rms·weight)·gy + a·x
            a = -inv * inv * inv * s2 / k_
            if _in_float32(a, k_):
                inv_t, a_t = T(inv), T(a)
                for k in range(k_):
                    gx[s, k] = inv_t * weight[k] * gy[s, k] + a_t * x[s, k]
            else:
                for k in range(k_):
                    gx[s, k] = inv * weight[k] * gy[s, k] + a * x[s, k]


# ---- the double backward: any layout, viewed as (P, S, Q) -------------------------------------------------------
@pjit
def _double_backward(x, gy, u, v, w, weight, mean, inv_std, n_per, centred, has_u, has_v, has_w, gx, ggy, part):
    """docs section 9 for statistic s = x[:, s, :]. The weight (and v, w: the gradients arriving at ggamma and
    gbeta) are (G, K) arrays, element (p, s, q) taking entry [s % G, q // n_per]; part (S, K) receives each
    statistic's Σ over its elements with that k of gy·inv_std·P(u), the weight's gradient before the statistics
    sharing a weight are added up. centred False is RMSNorm's (mean ignored). Every sum is float64.

    NOTE: the inner loops run over the n_per elements that share one weight, so that the weight is a constant
    there and the sums stay in registers: with q // n_per and part[s, k] += ... in the inner loop, it did not
    vectorize (1.8 ms for BatchNorm2d(6) on 64 x 24 x 24; 0.3 ms written this way)."""
    p_, n_stats, q_ = x.shape
    n_groups = weight.shape[0]
    n_k = q_ // n_per
    m = p_ * q_
    for s in prange(n_stats):
        g = s % n_groups
        mu = mean[s] if centred else 0.0
        inv = inv_std[s]
        s_u = 0.0
        s_ux = 0.0
        s_g = 0.0
        s_gx = 0.0
        s_gu = 0.0
        s_c = 0.0
        s_cx = 0.0
        for i in range(p_):
            if n_per == 1:                  # a weight per element (layer norm's): k is j
                for j in range(q_):
                    xh = (x[i, s, j] - mu) * inv
                    yv = np.float64(gy[i, s, j])
                    wk = weight[g, j]
                    vk = v[g, j]
                    s_g += wk * yv
                    s_gx += wk * yv * xh
                    s_c += vk * yv
                    s_cx += vk * yv * xh
                    if has_u:
                        uu = np.float64(u[i, s, j])
                        s_u += uu
                        s_ux += uu * xh
                        s_gu += wk * yv * uu
                continue
            for k in range(n_k):
                wk = weight[g, k]
                vk = v[g, k]
                lo = k * n_per
                a_u = 0.0
                a_ux = 0.0
                a_gu = 0.0
                a_y = 0.0
                a_yx = 0.0
                for jj in range(n_per):
                    j = lo + jj
                    xh = (x[i, s, j] - mu) * inv
                    yv = np.float64(gy[i, s, j])
                    a_y += yv
                    a_yx += yv * xh
                    if has_u:
                        uu = np.float64(u[i, s, j])
                        a_u += uu
                        a_ux += uu * xh
                        a_gu += yv * uu
                s_g += wk * a_y
                s_gx += wk * a_yx
                s_u += a_u
                s_ux += a_ux
                s_gu += wk * a_gu
                s_c += vk * a_y
                s_cx += vk * a_yx
        if not has_v:
            s_c = 0.0
            s_cx = 0.0
        m_u, m_ux, m_g, m_gx, m_gu, m_c, m_cx = s_u / m, s_ux / m, s_g / m, s_gx / m, s_gu / m, s_c / m, s_cx / m
        if not centred:
            m_u = 0.0
            m_g = 0.0
            m_c = 0.0
        kk = m_gu - m_g * m_u - m_gx * m_ux
        # gx = -inv² [x_hat k + P(g_hat) mean(u x_hat) + P(u) mean(g_hat x_hat)] + inv P(gy v)
        #    = a1 g_hat + a2 u + a3 x_hat + a4 + inv (c - mean(c) - x_hat mean(c x_hat))
        s2 = inv * inv
        a1 = -s2 * m_ux
        a2 = -s2 * m_gx
        a3 = -s2 * (kk - 2.0 * m_gx * m_ux) - inv * m_cx
        a4 = s2 * (m_g * m_ux + m_u * m_gx) - inv * m_c
        for k in range(n_k):
            part[s, k] = 0.0
        for i in range(p_):
            if n_per == 1:
                for j in range(q_):
                    xh = (x[i, s, j] - mu) * inv
                    gyv = gy[i, s, j]
                    vk = v[g, j] if has_v else 0.0
                    r = a3 * xh + a4 + inv * vk * gyv
                    t = xh * vk + (w[g, j] if has_w else 0.0)
                    if has_u:
                        uu = u[i, s, j]
                        wk = weight[g, j]
                        r += a1 * (gyv * wk) + a2 * uu
                        pu = inv * (uu - m_u - xh * m_ux)
                        t += wk * pu
                        part[s, j] += gyv * pu
                    gx[i, s, j] = r
                    ggy[i, s, j] = t
                continue
            for k in range(n_k):
                wk = weight[g, k]
                vk = v[g, k] if has_v else 0.0
                wb = w[g, k] if has_w else 0.0
                lo = k * n_per
                acc = 0.0
                for jj in range(n_per):
                    j = lo + jj
                    xh = (x[i, s, j] - mu) * inv
                    gyv = gy[i, s, j]
                    r = a3 * xh + a4 + inv * vk * gyv
                    t = xh * vk + wb
                    if has_u:
                        uu = u[i, s, j]
                        r += a1 * (gyv * wk) + a2 * uu
                        pu = inv * (uu - m_u - xh * m_ux)          # inv_std P(u)
                        t += wk * pu
                        acc += gyv * pu
                    gx[i, s, j] = r
                    ggy[i, s, j] = t
                part[s, k] += acc


@njit(nogil=True, cache=True)
def _join_blocks(parts, out):
    """out = Σ_b parts[b], added in block order (parts is (B, ...), out its trailing shape)."""
    flat = out.reshape(-1)
    flat[:] = parts[0].reshape(-1)
    for b in range(1, parts.shape[0]):
        part = parts[b].reshape(-1)
        for j in range(flat.shape[0]):
            flat[j] += part[j]


# ---- choosing a layout ------------------------------------------------------------------------------
class _Layout:
    """How a standardization of x over ``axes`` maps onto a kernel (see the module's table)."""

    def __init__(self, kind, view, shape, axes, groups=1, span=None):
        self.kind = kind                    # "channels", "columns", "rows" or "groups"
        self.view = view                    # the shape x is viewed as
        self.groups = groups                # G: rows and groups only
        self.span = span                    # rows and groups: the axes [first, last) the parameters vary on
        self.stat_shape = tuple(1 if i in axes else n for i, n in enumerate(shape))   # the statistics, keepdims
        self.n_stats = math.prod(self.stat_shape)
        if kind in ("channels", "columns"):
            self.param_view = (self.n_stats,)           # the kernels' weight and bias
            self.sums_shape = self.stat_shape           # the backward's per-parameter sums
        else:
            first, last = span
            self.param_view = (groups, math.prod(shape[first:last]) // groups)
            if kind == "rows":
                self.sums_shape = (1,) * first + tuple(shape[first:last]) + (1,) * (len(shape) - last)
            else:
                self.sums_shape = tuple(shape[:last]) + (1,) * (len(shape) - last)
        self.param_size = math.prod(self.param_view)


def _layout(shape, axes, params):
    """The kernel layout for x of ``shape`` standardized over ``axes``, with parameters of the given shapes
    (each broadcastable to x, with x's number of dims); None when no kernel fits."""
    kept = [i for i in range(len(shape)) if i not in axes]
    if not kept or kept != list(range(kept[0], kept[-1] + 1)) or math.prod(shape) == 0:
        return None
    p = math.prod(shape[:kept[0]])
    n_stats = math.prod(shape[kept[0]:kept[-1] + 1])
    q = math.prod(shape[kept[-1] + 1:])
    varies = [i for i in range(len(shape)) if any(ps[i] != 1 for ps in params)]
    if not any(i in axes for i in varies):                       # constant within each statistic
        if q == 1 and p > 1:
            return _Layout("columns", (p, n_stats), shape, axes)
        return _Layout("channels", (p, n_stats, q), shape, axes)
    if p != 1:
        return None                                              # varies within a statistic that is not trailing
    r0 = kept[-1] + 1                                            # the first reduced axis
    first, last = min(min(varies), r0), max(varies) + 1          # the parameters vary on axes [first, last)
    n_groups = math.prod(shape[first:r0])                        # G: the kept axes among them
    k = math.prod(shape[r0:last])                                # K: the reduced axes among them
    rest = math.prod(shape[last:])                               # L: reduced axes the parameters are constant on
    if rest == 1:
        return _Layout("rows", (n_stats, k), shape, axes, n_groups, (first, last))
    return _Layout("groups", (n_stats, k, rest), shape, axes, n_groups, (first, last))


class NormKernels(ArrayNorm):
    """The normalization kernels behind ``backend.norm``'s interface (backend/norm.py), as methods of CpuKernels.
    Each method runs a kernel where one fits the input's layout, and the reference array code where none does.
    Arrays in and out are NumPy arrays; x is float32 or float64, any layout (it is made contiguous)."""

    def _start_norm(self):
        ArrayNorm.__init__(self, np)
        self._layouts = {}                  # (shape, axes, parameter shapes) -> _Layout, or False for none
        self._constants = {}                # (value, size, dtype) -> a read-only array: absent weights and biases

    def standardize_forward(self, x, weight, bias, axes, eps, param_shape):
        """(y, mean, var, inv_std) as ArrayNorm.standardize_forward gives them, by a kernel."""
        shapes = [None if t is None else param_shape for t in (weight, bias)]
        layout = self._layout_of(x.shape, axes, *shapes)
        if layout is None:
            return super().standardize_forward(x, weight, bias, axes, eps, param_shape)
        threads = self.thread_count()
        xv = (x if x.flags.c_contiguous else np.ascontiguousarray(x)).reshape(layout.view)
        w = self._param(weight, shapes[0], x, layout, 1.0)
        b = self._param(bias, shapes[1], x, layout, 0.0)
        y = self.empty(layout.view, x.dtype)
        mean, var, inv_std = np.empty(layout.n_stats), np.empty(layout.n_stats), np.empty(layout.n_stats)
        args = (xv, w, b, float(eps), y, mean, var, inv_std)
        if layout.kind == "channels":
            _channels_forward(*args)
        elif layout.kind == "columns":
            _columns_forward(*args)
        elif layout.kind == "rows":             # blocks of statistics: one per thread; pass 1 ahead when small
            _rows_forward(*args, min(threads, layout.n_stats), x.nbytes <= _AHEAD_BYTES)
        else:
            _groups_forward(*args, min(threads, layout.n_stats))
        shape = layout.stat_shape
        return y.reshape(x.shape), mean.reshape(shape), var.reshape(shape), inv_std.reshape(shape)

    def standardize_backward(self, x, gy, mean, inv_std, weight, axes, param_shape, need_weight, need_bias):
        """(gx, ggamma, gbeta) as ArrayNorm.standardize_backward gives them, by a kernel."""
        shapes = (None if weight is None else param_shape, param_shape if need_bias else None)
        layout = self._layout_of(x.shape, axes, *shapes)
        if layout is None:
            return super().standardize_backward(x, gy, mean, inv_std, weight, axes, param_shape, need_weight,
                                                need_bias)
        threads = self.thread_count()
        w = self._param(weight, shapes[0], x, layout, 1.0)
        mean, inv_std = mean.reshape(-1), inv_std.reshape(-1)
        xv = np.ascontiguousarray(x).reshape(layout.view)
        gyv = np.ascontiguousarray(gy, dtype=x.dtype).reshape(layout.view)
        gx = self.empty(layout.view, x.dtype)
        if layout.kind in ("channels", "columns"):
            sum_gy, sum_gy_xhat = np.empty(layout.n_stats), np.empty(layout.n_stats)
            kernel = _channels_backward if layout.kind == "channels" else _columns_backward
            kernel(xv, gyv, mean, inv_std, w, gx, sum_gy, sum_gy_xhat)
        elif layout.kind == "rows":
            blocks = min(layout.n_stats, _BLOCKS)
            parts_gy, parts_gy_xhat = np.empty((blocks, *w.shape)), np.empty((blocks, *w.shape))
            _rows_backward(xv, gyv, mean, inv_std, w, gx, parts_gy, parts_gy_xhat)
            sum_gy, sum_gy_xhat = np.empty(w.shape), np.empty(w.shape)
            _join_blocks(parts_gy, sum_gy)
            _join_blocks(parts_gy_xhat, sum_gy_xhat)
        else:
            sum_gy, sum_gy_xhat = np.empty(layout.view[:2]), np.empty(layout.view[:2])
            _groups_backward(xv, gyv, mean, inv_std, w, gx, sum_gy, sum_gy_xhat, min(threads, layout.n_stats))
        # NOTE: the sums come already summed over some of the axes the parameters do not vary on.
        ggamma = _reduced(sum_gy_xhat, layout.sums_shape, param_shape, x.dtype) if need_weight else None
        gbeta = _reduced(sum_gy, layout.sums_shape, param_shape, x.dtype) if need_bias else None
        return gx.reshape(x.shape), ggamma, gbeta

    def standardize_double_backward(self, x, gy, weight, u, v, w, mean, inv_std, axes, param_shape, centred=True,
                                    need=(True, True, True)):
        """(gx, ggy, gweight) as ArrayNorm.standardize_double_backward gives them, by one kernel for every layout."""
        layout = self._layout_of(x.shape, axes, None if weight is None else param_shape,
                                 param_shape if w is not None or v is not None else None) if centred else None
        if centred and layout is None or x.size == 0:
            return super().standardize_double_backward(x, gy, weight, u, v, w, mean, inv_std, axes, param_shape,
                                                       centred, need)
        self.thread_count()
        if not centred:                             # RMSNorm: rows of the trailing axes, the weight per element
            k = math.prod(x.shape[axes[0]:])
            view, groups, per = (1, x.size // k, k), 1, 1
        elif layout.kind in ("channels", "columns"):
            view = layout.view if layout.kind == "channels" else layout.view + (1,)
            groups, k, per = layout.n_stats, 1, view[2]
        elif layout.kind == "rows":
            view, groups, k, per = (1,) + layout.view, layout.groups, layout.view[1], 1
        else:
            view = (1, layout.view[0], layout.view[1] * layout.view[2])
            groups, k, per = layout.groups, layout.view[1], layout.view[2]
        dt = x.dtype

        def as_view(a):
            return np.ascontiguousarray(a, dtype=dt).reshape(view)

        def as_param(a, fill):
            if a is None:
                return self._constant(fill, groups * k, dt).reshape(groups, k)
            return self._param(a, param_shape, x, layout, fill).reshape(groups, k) if centred else \
                _as(a, dt).reshape(groups, k)
        xv, gyv = as_view(x), as_view(gy)
        uv = as_view(u) if u is not None else xv
        gx, ggy = self.empty(view, dt), self.empty(view, dt)
        part = np.empty((view[1], k))
        mean_flat = mean.reshape(-1) if centred else inv_std.reshape(-1)
        _double_backward(xv, gyv, uv, as_param(v, 0.0), as_param(w, 0.0), as_param(weight, 1.0), mean_flat,
                         inv_std.reshape(-1), per, centred, u is not None, v is not None, w is not None, gx, ggy, part)
        gw = None
        if weight is not None and u is not None and need[2]:
            if not centred:
                gw = part.sum(axis=0).reshape(weight.shape).astype(dt)
            else:
                if layout.kind == "rows":               # rows sharing a weight row: added in row order
                    part = part.reshape(-1, groups, k).sum(axis=0)
                gw = _reduced(part, layout.sums_shape, param_shape, dt)
        return (gx.reshape(x.shape) if need[0] else None), (ggy.reshape(x.shape) if need[1] else None), gw

    def update_running(self, running_mean, running_var, mean, var, momentum, unbias):
        """As ArrayNorm.update_running, by a kernel: one call in place of the array code's eight small ones."""
        if running_mean.dtype.itemsize < 4 or not running_mean.flags.c_contiguous or not \
                running_var.flags.c_contiguous:
            return super().update_running(running_mean, running_var, mean, var, momentum, unbias)
        _update_running(running_mean, running_var, _as(mean, np.float64).reshape(-1), _as(var, np.float64).reshape(-1),
                        float(momentum), float(unbias))

    def frozen_forward(self, x, running_mean, running_var, weight, bias, eps, param_shape):
        """(y, mean, inv_std) as ArrayNorm.frozen_forward gives them, by a kernel where the statistics' axes are one
        contiguous run."""
        layout = self._layout_of(x.shape, None, None, None, param_shape)
        if layout is None or layout.kind not in ("channels", "columns"):
            return super().frozen_forward(x, running_mean, running_var, weight, bias, eps, param_shape)
        self.thread_count()
        xv = np.ascontiguousarray(x).reshape(layout.view)
        y = self.empty(layout.view, x.dtype)
        n = layout.n_stats
        mean, inv_std = np.empty(n), np.empty(n)
        w = self._constant(1.0, n, x.dtype) if weight is None else _as(weight, x.dtype)
        b = self._constant(0.0, n, x.dtype) if bias is None else _as(bias, x.dtype)
        kernel = _frozen_forward if layout.kind == "channels" else _frozen_columns_forward
        # NOTE: a float16 module's running statistics are float16; its input and parameters arrive in float32
        kernel(xv, _as(running_mean, x.dtype), _as(running_var, x.dtype), w, b, float(eps), y, mean, inv_std)
        return y.reshape(x.shape), mean.reshape(param_shape), inv_std.reshape(param_shape)

    def frozen_backward(self, x, gy, mean, inv_std, weight, param_shape, need_weight, need_bias):
        """(gx, ggamma, gbeta) as ArrayNorm.frozen_backward gives them, by a kernel (as frozen_forward)."""
        layout = self._layout_of(x.shape, None, None, None, param_shape)
        if layout is None or layout.kind not in ("channels", "columns"):
            return super().frozen_backward(x, gy, mean, inv_std, weight, param_shape, need_weight, need_bias)
        self.thread_count()
        scale = inv_std if weight is None else inv_std * weight.reshape(param_shape)
        xv = np.ascontiguousarray(x).reshape(layout.view)
        gyv = np.ascontiguousarray(gy, dtype=x.dtype).reshape(layout.view)
        gx = self.empty(layout.view, x.dtype)
        sum_gy, sum_gy_xc = np.empty(layout.n_stats), np.empty(layout.n_stats)
        kernel = _frozen_backward if layout.kind == "channels" else _frozen_columns_backward
        kernel(xv, gyv, mean.reshape(-1), scale.reshape(-1).astype(x.dtype), gx, sum_gy, sum_gy_xc)
        ggamma = (inv_std * sum_gy_xc.reshape(param_shape)).astype(x.dtype) if need_weight else None
        gbeta = sum_gy.reshape(param_shape).astype(x.dtype) if need_bias else None
        return gx.reshape(x.shape), ggamma, gbeta

    def rms_forward(self, x, weight, axes, eps):
        """(y, inv_rms) of RMSNorm over the trailing ``axes``, by a kernel."""
        k = math.prod(x.shape[axes[0]:])
        rows = math.prod(x.shape[:axes[0]])
        if rows == 0 or k == 0:
            return super().rms_forward(x, weight, axes, eps)
        self.thread_count()
        xv = np.ascontiguousarray(x).reshape(rows, k)
        w = self._constant(1.0, k, x.dtype) if weight is None else _as(weight, x.dtype).reshape(k)
        y = self.empty((rows, k), x.dtype)
        inv_rms = np.empty(rows)
        _rms_forward(xv, w, float(eps), y, inv_rms)
        return y.reshape(x.shape), inv_rms.reshape(x.shape[:axes[0]] + (1,) * len(axes))

    def rms_backward(self, x, gy, inv_rms, weight, axes):
        """(gx, ggamma) of rms_forward, by a kernel; ggamma in the weight's shape."""
        k = math.prod(x.shape[axes[0]:])
        rows = math.prod(x.shape[:axes[0]])
        if rows == 0 or k == 0:
            return super().rms_backward(x, gy, inv_rms, weight, axes)
        self.thread_count()
        w = self._constant(1.0, k, x.dtype) if weight is None else _as(weight, x.dtype).reshape(k)
        xv = np.ascontiguousarray(x).reshape(rows, k)
        gyv = np.ascontiguousarray(gy, dtype=x.dtype).reshape(rows, k)
        gx = self.empty((rows, k), x.dtype)
        parts, ggamma = np.empty((min(rows, _BLOCKS), k)), np.empty(k)
        _rms_backward(xv, gyv, inv_rms.reshape(-1), w, gx, parts)
        _join_blocks(parts, ggamma)
        return gx.reshape(x.shape), None if weight is None else ggamma.reshape(weight.shape).astype(x.dtype)

    def _layout_of(self, shape, axes, weight_shape, bias_shape, stat_shape=None):
        """_layout, remembered per shape (a training loop asks the same question every step), given the shapes of
        the weight and bias (None where absent). ``stat_shape`` stands for a parameter that varies on every kept
        axis; with axes None, the reduced axes are its 1s."""
        key = (shape, axes, weight_shape, bias_shape, stat_shape)
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) > 1024:
                self._layouts.clear()
            if axes is None:
                axes = _reduced_axes(stat_shape)
            params = [(1,) * (len(shape) - len(ps)) + tuple(ps) for ps in (weight_shape, bias_shape) if ps is not None]
            params += [stat_shape] if stat_shape is not None else []
            layout = self._layouts[key] = _layout(shape, axes, params) or False
        return layout or None

    def _param(self, t, shape, x, layout, fill):
        """A parameter as the kernel takes it: (S,) per statistic, or (G, K) per element or channel. ``shape`` is
        the one that broadcasts t against x."""
        size = layout.param_size
        if t is None:
            return self._constant(fill, size, x.dtype).reshape(layout.param_view)
        if t.size == size and t.dtype == x.dtype and t.flags.c_contiguous:
            return t.reshape(layout.param_view)                 # already laid out as the kernel reads it
        t = t.reshape((1,) * (x.ndim - len(shape)) + tuple(shape))
        if layout.kind in ("channels", "columns"):
            full = np.broadcast_to(t, layout.stat_shape)
        else:
            first, last = layout.span
            full = np.broadcast_to(t[(0,) * first + (slice(None),) * (last - first) + (0,) * (x.ndim - last)],
                                   x.shape[first:last])
        return np.ascontiguousarray(full, dtype=x.dtype).reshape(layout.param_view)

    def _constant(self, value, size, dtype):
        key = (value, size, dtype)
        a = self._constants.get(key)
        if a is None:
            if len(self._constants) > 256:
                self._constants.clear()
            a = self._constants[key] = np.full(size, value, dtype=dtype)
            a.flags.writeable = False
        return a


def _reduced(sums, sums_shape, param_shape, dtype):
    """A kernel's per-parameter sums (float64, in its layout's sums_shape) summed on to ``param_shape``."""
    if sums.size == math.prod(param_shape):             # already one sum per parameter (BatchNorm's channels)
        return sums.reshape(param_shape).astype(dtype)
    sums = sums.reshape(sums_shape)
    lead = sums.ndim - len(param_shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(param_shape) if n == 1 and sums.shape[lead + i] != 1)
    return (sums.sum(axis=axes) if axes else sums).reshape(param_shape).astype(dtype)


def _as(a, dtype):
    return a if a.dtype == dtype and a.flags.c_contiguous else np.ascontiguousarray(a, dtype=dtype)


def _reduced_axes(stat_shape):
    return tuple(i for i, n in enumerate(stat_shape) if n == 1)
