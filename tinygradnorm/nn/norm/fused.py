"""Hand-derived forward and backward passes of the normalization layers.

Read this next to docs/normalization.md: the names are the same. ``m`` is the number of
elements behind each statistic, ``x_hat`` the standardized input, ``inv_std`` 1/sqrt(var + eps),
``gy`` the output's gradient, ``gx``/``ggamma``/``gbeta`` the input's, weight's and bias's.

Parameters arrive already shaped to broadcast against ``x`` (BatchNorm's weight as
(1, C, 1, 1), GroupNorm's as (1, G, C/G, 1)), so one Function serves every layer that
"standardizes over some axes, then applies a per-element affine".
"""
import math

from ...autograd import Function
from ...ops._util import sum_to


# ---- reductions -------------------------------------------------------------------
def _is_channel_pattern(a, axes):
    """True when axes are every axis but 1 of a C-contiguous array with rows worth a BLAS call (BatchNorm's
    reduction over N, H, W, with H*W of at least 16)."""
    return (a.ndim >= 3 and axes == tuple(i for i in range(a.ndim) if i != 1) and a.flags.c_contiguous
            and a.size >= 16 * a.shape[0] * a.shape[1])


def reduce_sum(xp, a, axes):
    """Σ a over axes, keeping dims."""
    if _is_channel_pattern(a, axes):
        # NOTE: per-channel sums of an (N, C, L) array as one matrix-vector product run
        # through BLAS, several times faster than a.sum(axis=(0, 2, 3)).
        n, c = a.shape[:2]
        rows = a.reshape(n * c, -1)
        s = (rows @ xp.ones(rows.shape[1], dtype=a.dtype)).reshape(n, c).sum(axis=0)
        return s.reshape((1, c) + (1,) * (a.ndim - 2))
    return a.sum(axis=axes, keepdims=True)


def reduce_dot(xp, a, b, axes):
    """Σ a*b over axes, keeping dims, without building a*b where the layout allows."""
    if _is_channel_pattern(a, axes) and b.flags.c_contiguous:
        # NOTE: one row-by-row dot product per (n, c) as a batched matmul: BLAS again.
        n, c = a.shape[:2]
        s = (a.reshape(n, c, 1, -1) @ b.reshape(n, c, -1, 1)).reshape(n, c).sum(axis=0)
        return s.reshape((1, c) + (1,) * (a.ndim - 2))
    return (a * b).sum(axis=axes, keepdims=True)


def param_sum(xp, a, shape):
    """Σ a down to a parameter's broadcast shape (the adjoint of broadcasting the parameter)."""
    axes = tuple(i for i, n in enumerate(shape) if n == 1)
    if len(shape) == a.ndim and _is_channel_pattern(a, axes):
        return reduce_sum(xp, a, axes)
    return sum_to(a, shape)


def _acc(xp, x):
    """x in a dtype of at least float32: statistics of float16 input are accumulated in float32."""
    return x.astype(xp.float32) if x.dtype.itemsize < 4 else x


def _f64(xp, a):
    """a block in float64, for sums: as in the compiled kernels, squares of large float32 values (1e30, say)
    would overflow float32, and float64 sums keep the statistics exact to float32's precision."""
    return a if a.dtype == xp.float64 else a.astype(xp.float64)


def _sums(xp, centred, other, axes):
    """(Σ other, Σ other * centred) over axes, keeping dims, accumulated in float64."""
    other64 = _f64(xp, other)
    return reduce_sum(xp, other64, axes), reduce_dot(xp, other64, _f64(xp, centred), axes)


# ---- standardize over axes, then affine -------------------------------------------
class Standardize(Function):
    """y = x_hat * weight + bias, with x_hat = (x - mean) * inv_std over ``axes`` (biased variance).

    Used by BatchNorm (axes: all but C), InstanceNorm (the spatial axes), LayerNorm (the
    trailing normalized axes) and GroupNorm (each group's channels and spatial axes).
    ``stats`` receives the batch mean and biased variance for the running statistics.

    Backward needs x_hat. Rather than keep it (a full array), it keeps x (which the graph
    holds anyway) and the per-statistic mean and inv_std, and rebuilds x_hat in the very
    buffer that becomes gx. Each pass makes one new full-size array and updates it in place,
    split across the cores by ``backend.parallel`` (partial sums are joined by ``_join``).

    Where the backend has compiled kernels (``backend.kernels``: Numba on the CPU) and weight is
    constant within each statistic, forward and backward each run as one kernel over a (P, S, Q)
    view of x instead (see backend/cpu_kernels.py): the same formulas, one channel at a time.
    """

    def forward(self, x, *params, axes, eps, has_weight, has_bias, stats):
        xp = self.xp
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        x_in, x = x, _acc(xp, x)
        m = 1
        for a in axes:
            m *= x.shape[a]
        # NOTE: when weight and bias are constant within each statistic (BatchNorm, InstanceNorm) they
        # fold into per-statistic factors, forward and backward.
        per_stat = all(p is None or all(p.shape[a] == 1 for a in axes) for p in (weight, bias))
        kernels = self.backend.kernels if per_stat else None
        layout = _stat_layout(x.shape, axes) if kernels is not None else None
        if layout is not None and layout[2] == 1 and layout[0] > 1:
            # NOTE: statistics down columns (BatchNorm1d on (N, C)) would make the kernel read with stride C;
            # the array path's BLAS reductions do better there.
            layout = None
        if layout is not None:
            y, mean, var, inv_std = self._forward_kernel(kernels, x, weight, bias, axes, eps, layout)
        else:
            y, mean, var, inv_std = self._forward_xp(x, weight, bias, axes, eps, m, per_stat)
        stats["mean"], stats["var"], stats["m"] = mean.astype(x.dtype, copy=False), var.astype(x.dtype, copy=False), m
        self.x, self.mean, self.inv_std, self.weight, self.axes, self.m = x_in, mean, inv_std, weight, axes, m
        self.per_stat, self.layout = per_stat, layout
        self.bias_shape = None if bias is None else bias.shape
        return y.astype(x_in.dtype, copy=False)

    def _forward_xp(self, x, weight, bias, axes, eps, m, per_stat):
        """Forward in array ops; each pass makes no new full-size array but y and runs split across the cores."""
        xp, parallel = self.xp, self.backend.parallel
        mean = _join(xp, parallel(lambda xb: (reduce_sum(xp, _f64(xp, xb), axes),), x), axes)[0] / m
        centred = xp.empty_like(x)                      # the one new full-size array; it becomes y

        def centre_and_sum(xb, cb, mb):
            xp.subtract(xb, mb, out=cb)
            return _sums(xp, cb, cb, axes)

        mean = mean.astype(x.dtype)                     # the centre, in x's dtype
        sum_c, sum_cc = _join(xp, parallel(centre_and_sum, x, centred, mean), axes)
        # NOTE: corrected two-pass variance. Σ(x - mean) is 0 in exact arithmetic but not in
        # float32 when |mean| >> std; removing it keeps x_hat accurate (e.g. mean 1e4, std 1).
        shift = sum_c / m
        var = xp.maximum(sum_cc / m - shift * shift, 0)
        mean = _f64(xp, mean) + shift
        inv_std = 1 / xp.sqrt(var + eps)
        y = centred
        dt = x.dtype
        if per_stat:
            # y = (centred - shift) * inv_std * weight + bias, with per-statistic factors folded
            scale = inv_std if weight is None else inv_std * weight
            offset = -shift * scale if bias is None else bias - shift * scale
            parallel(_scale_shift, y, scale.astype(dt), offset.astype(dt))
        else:
            parallel(_standardize_affine, y, shift.astype(dt), inv_std.astype(dt), 1 if weight is None else weight,
                     0 if bias is None else bias)
        return y, mean, var, inv_std

    def _forward_kernel(self, kernels, x, weight, bias, axes, eps, layout):
        """Forward by the backend's compiled kernel over the (P, S, Q) view; statistics kept in float64."""
        xp = self.xp
        stat_shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
        self.weight_vec = _per_stat_vector(xp, weight, stat_shape, 1, x.dtype)
        y, mean, var, inv_std = kernels.standardize_forward(xp.ascontiguousarray(x).reshape(layout), self.weight_vec,
                                                            _per_stat_vector(xp, bias, stat_shape, 0, x.dtype), eps)
        return (y.reshape(x.shape), *(a.reshape(stat_shape) for a in (mean, var, inv_std)))

    def backward(self, gy):
        xp = self.xp
        x = _acc(xp, self.x)
        gy = gy.astype(x.dtype, copy=False)
        if self.layout is not None:
            kernels = self.backend.kernels
            gx, sum_gy, sum_gy_xhat = kernels.standardize_backward(
                xp.ascontiguousarray(x).reshape(self.layout), xp.ascontiguousarray(gy).reshape(self.layout),
                self.mean.reshape(-1), self.inv_std.reshape(-1), self.weight_vec)
            gx = gx.reshape(x.shape)
            sum_gy = sum_gy.reshape(self.mean.shape).astype(x.dtype)
            sum_gy_xhat = sum_gy_xhat.reshape(self.mean.shape).astype(x.dtype)
            grads = self._param_grads(sum_gy, sum_gy_xhat)
        elif self.per_stat:
            gx, grads = self._backward_per_stat(x, gy)
        else:
            gx, grads = self._backward_general(x, gy)
        return (gx.astype(self.x.dtype, copy=False), *grads)

    def _param_grads(self, sum_gy, sum_gy_xhat):
        """ggamma = Σ(gy * x_hat) and gbeta = Σgy, from the per-statistic sums, down to the parameters' shapes."""
        grads = []
        if self.weight is not None:
            grads.append(param_sum(self.xp, sum_gy_xhat, self.weight.shape) if self.needs_input_grad[1] else None)
        if self.bias_shape is not None:
            grads.append(param_sum(self.xp, sum_gy, self.bias_shape) if self.needs_input_grad[-1] else None)
        return grads

    def _backward_per_stat(self, x, gy):
        xp, parallel = self.xp, self.backend.parallel
        mean, inv_std, weight, axes, m = self.mean, self.inv_std, self.weight, self.axes, self.m
        centred = xp.empty_like(x)                      # the one new full-size array; it becomes gx
        # NOTE: weight is constant within each statistic (BatchNorm, InstanceNorm), so with
        # g_hat = weight * gy the sums factor: Σg_hat = weight·Σgy, Σ(g_hat·x_hat) = weight·Σ(gy·x_hat),
        # and those two sums of gy are reused for gbeta and ggamma.

        def centre_and_sum(xb, cb, gb, mb):
            xp.subtract(xb, mb, out=cb)
            return _sums(xp, cb, gb, axes)

        dt = x.dtype
        # NOTE: x is centred on the mean rounded to x's dtype; delta, the rounding, is put back in the sums.
        delta = mean - mean.astype(dt)
        sum_gy, sum_gy_c = _join(xp, parallel(centre_and_sum, x, centred, gy, mean.astype(dt)), axes)
        sum_gy_xhat = (sum_gy_c - sum_gy * delta) * inv_std             # x_hat = (x - mean) * inv_std
        scale = inv_std if weight is None else inv_std * weight
        # gx = scale * (gy - (Σgy + x_hat * Σ(gy*x_hat)) / m), computed in centred's buffer
        gx = centred
        a = -inv_std * sum_gy_xhat / m
        parallel(_combine, gx, gy, a.astype(dt), (sum_gy / m + a * delta).astype(dt), scale.astype(dt))
        return gx, self._param_grads(sum_gy.astype(dt), sum_gy_xhat.astype(dt))

    def _backward_general(self, x, gy):
        xp, parallel = self.xp, self.backend.parallel
        mean, inv_std, weight, axes, m = self.mean, self.inv_std, self.weight, self.axes, self.m
        centred = xp.empty_like(x)
        grads = []
        dt = x.dtype
        # The closed form: gx = (inv_std / m) * (m*g_hat - Σg_hat - x_hat * Σ(g_hat*x_hat)).
        # NOTE: x_hat = (x - mean_dt - delta) * inv_std, with delta the rounding of the float64 mean to x's dtype.
        parallel(lambda xb, cb, mb, db, ib: _standardize_affine(xp.subtract(xb, mb, out=cb), db, ib, 1, 0), x, centred,
                 mean.astype(dt), (mean - mean.astype(dt)).astype(dt), inv_std.astype(dt))
        x_hat = centred
        if weight is not None:
            grads.append(sum_to(gy * x_hat, weight.shape) if self.needs_input_grad[1] else None)
        if self.bias_shape is not None:
            grads.append(sum_to(gy, self.bias_shape) if self.needs_input_grad[-1] else None)
        g_hat = gy * weight if weight is not None else gy
        sum_g_hat, sum_g_hat_xhat = _sums(xp, x_hat, g_hat, axes)
        gx = x_hat
        parallel(_combine, gx, g_hat, (-sum_g_hat_xhat / m).astype(dt), (sum_g_hat / m).astype(dt), inv_std.astype(dt))
        return gx, grads


def _stat_layout(shape, axes):
    """(P, S, Q) when the axes not reduced form one contiguous run (S statistics, each over P*Q elements), else None."""
    kept = [i for i in range(len(shape)) if i not in axes]
    if not kept or kept != list(range(kept[0], kept[-1] + 1)):
        return None
    if math.prod(shape) == 0:
        return None
    p = q = s = 1
    for i, n in enumerate(shape):
        if i < kept[0]:
            p *= n
        elif i > kept[-1]:
            q *= n
        else:
            s *= n
    return p, s, q


def _per_stat_vector(xp, param, stat_shape, fill, dtype):
    """A per-statistic parameter (broadcastable to stat_shape) as a flat contiguous vector; ``fill`` when absent."""
    if param is None:
        return xp.full(math.prod(stat_shape), fill, dtype=dtype)
    return xp.ascontiguousarray(xp.broadcast_to(param, stat_shape).reshape(-1), dtype=dtype)


def _join(xp, parts, axes):
    """Join per-piece partial sums: added up when the batch axis is reduced, else stacked."""
    if len(parts) == 1:
        return parts[0]
    if 0 in axes:
        return [sum(p[i] for p in parts[1:]) + parts[0][i] for i in range(len(parts[0]))]
    return [xp.concatenate([p[i] for p in parts], axis=0) for i in range(len(parts[0]))]


def _scale_shift(y, scale, offset):
    """y = y * scale + offset, in place."""
    y *= scale
    y += offset


def _standardize_affine(y, shift, inv_std, weight, bias):
    """y = (y - shift) * inv_std * weight + bias, in place."""
    y -= shift
    y *= inv_std
    y *= weight
    y += bias


def _combine(gx, g, a, k, scale):
    """gx = (gx * a - k + g) * scale, in place."""
    gx *= a
    gx -= k
    gx += g
    gx *= scale


class FrozenStandardize(Function):
    """Eval mode with running statistics: y = (x - mean) * inv_std * weight + bias, an affine map of x.

    mean and var are constants here, so gx = gy * inv_std * weight, with no terms through the statistics.
    """

    def forward(self, x, *params, mean, var, eps, has_weight, has_bias):
        xp = self.xp
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        inv_std = 1 / xp.sqrt(var + eps)
        scale = inv_std if weight is None else inv_std * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        y = x * scale.astype(x.dtype, copy=False)
        y += shift.astype(x.dtype, copy=False)
        # NOTE: a copy: the running statistics may change in place before backward (another training
        # forward), and the gradient must belong to the statistics this forward used.
        self.scale, self.inv_std, self.mean = scale, inv_std, mean.copy()
        self.weight_shape = None if weight is None else weight.shape
        self.bias_shape = None if bias is None else bias.shape
        self.x = x if has_weight else None  # a reference to the input, kept for ggamma
        return y

    def backward(self, gy):
        xp = self.xp
        gx = gy * self.scale.astype(gy.dtype, copy=False)
        grads = []
        if self.weight_shape is not None or self.bias_shape is not None:
            axes = tuple(i for i, n in enumerate(self.scale.shape) if n == 1)
            if self.weight_shape is not None:
                # NOTE: ggamma = Σ gy * (x - mean) * inv_std, centred first. The shorter
                # inv_std * (Σgy*x - mean*Σgy) cancels catastrophically when |mean| >> std (float32,
                # mean 1000, std 0.01: 14.572 where the exact value is 14.5432).
                centred = self.x - self.mean.astype(self.x.dtype, copy=False)
                grads.append(param_sum(xp, self.inv_std * reduce_dot(xp, gy, centred, axes), self.weight_shape))
            if self.bias_shape is not None:
                grads.append(param_sum(xp, reduce_sum(xp, gy, axes), self.bias_shape))
        return (gx, *grads)


# ---- RMSNorm ----------------------------------------------------------------------
class RMSNormalize(Function):
    """y = x * inv_rms * weight with inv_rms = 1/sqrt(mean(x^2 over axes) + eps); no centring."""

    def forward(self, x, *params, axes, eps):
        xp = self.xp
        weight = params[0] if params else None
        self.out_dtype = x.dtype
        x = _acc(xp, x)
        m = 1
        for a in axes:
            m *= x.shape[a]
        parallel = self.backend.parallel
        sum_sq = _join(xp, parallel(lambda xb: (reduce_dot(xp, _f64(xp, xb), _f64(xp, xb), axes),), x), axes)[0]
        inv_rms = (1 / xp.sqrt(sum_sq / m + eps)).astype(x.dtype)
        x_hat = x * inv_rms
        y = x_hat * weight if weight is not None else x_hat.copy()
        self.x_hat, self.inv_rms, self.weight, self.axes, self.m = x_hat, inv_rms, weight, axes, m
        return y.astype(self.out_dtype, copy=False)

    def backward(self, gy):
        x_hat, inv_rms, weight, axes, m = self.x_hat, self.inv_rms, self.weight, self.axes, self.m
        gy = gy.astype(x_hat.dtype, copy=False)
        # gx = inv_rms * (g_hat - x_hat * Σ(g_hat*x_hat) / m), with g_hat = weight * gy
        g_hat = gy * weight if weight is not None else gy
        gx = inv_rms * (g_hat - x_hat * ((g_hat * x_hat).sum(axis=axes, keepdims=True) / m))
        gx = gx.astype(self.out_dtype, copy=False)
        if weight is None:
            return gx
        return gx, (sum_to(gy * x_hat, weight.shape) if self.needs_input_grad[1] else None)


# ---- LocalResponseNorm ------------------------------------------------------------
def _channel_window_sum(xp, a, before, after):
    """out[:, c] = Σ a[:, c - before .. c + after] along the channel axis, zero outside."""
    widths = [(0, 0), (before, after)] + [(0, 0)] * (a.ndim - 2)
    padded = xp.pad(a, widths)
    c = a.shape[1]
    out = padded[:, 0:c].copy()
    for k in range(1, before + after + 1):
        out += padded[:, k:k + c]
    return out


class LocalResponseNormalize(Function):
    """y_c = x_c * s_c^-beta with s_c = k + alpha/size * Σ x_j^2 over channels j in c's window.

    The window of channel c is [c - size//2, c + (size-1)//2], as in PyTorch.
    """

    def forward(self, x, size, alpha, beta, k):
        xp = self.xp
        s = _channel_window_sum(xp, x * x, size // 2, (size - 1) // 2)
        s *= alpha / size
        s += k
        s_pow = s ** -beta
        self.x, self.s, self.s_pow, self.hyper = x, s, s_pow, (size, alpha, beta)
        return x * s_pow

    def backward(self, gy):
        xp, x, s, s_pow = self.xp, self.x, self.s, self.s_pow
        size, alpha, beta = self.hyper
        # d y_c / d x_j = [c == j] s_c^-beta - x_c * beta * s_c^(-beta-1) * (2 alpha / size) x_j  (j in c's window)
        # Channel j is in c's window exactly when c is in j's mirrored window [j - (size-1)//2, j + size//2].
        t = gy * x * s_pow / s
        gx = gy * s_pow
        gx -= (2 * alpha * beta / size) * x * _channel_window_sum(xp, t, (size - 1) // 2, size // 2)
        return gx
