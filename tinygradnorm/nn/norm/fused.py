"""Hand-derived forward and backward passes of the normalization layers.

Read this next to docs/normalization.md: the names are the same. ``m`` is the number of
elements behind each statistic, ``x_hat`` the standardized input, ``inv_std`` 1/sqrt(var + eps),
``gy`` the output's gradient, ``gx``/``ggamma``/``gbeta`` the input's, weight's and bias's.

Each Function's array code is the docs' formula, line by line. It is what CuPy runs, and what
the CPU runs without Numba. On the CPU, with Numba, a compiled kernel takes over wherever one fits
(``self.backend.kernels``, whose loops live in backend/cpu_kernels/norm.py): the same formulas,
one statistic at a time. docs/normalization.md, section 7, says which runs when.

Parameters arrive flat, as the modules hold them, with ``param_shape``, the shape that
broadcasts them against x (BatchNorm's weight as (1, C, 1, 1), GroupNorm's as (1, G, C/G, 1)).
So one Function serves every layer that "standardizes over some axes, then applies a
per-element affine".
"""
from ...autograd import Function
from ...ops._util import sum_to


def _acc(xp, x):
    """x in a dtype of at least float32: statistics of float16 input are accumulated in float32."""
    return x.astype(xp.float32) if x.dtype.itemsize < 4 else x


def _params(params, has_weight, has_bias, param_shape):
    """(weight, bias) reshaped to broadcast against x; None where absent."""
    weight = params[0].reshape(param_shape) if has_weight else None
    bias = params[-1].reshape(param_shape) if has_bias else None
    return weight, bias


# ---- standardize over axes, then affine -------------------------------------------
class Standardize(Function):
    """y = x_hat * weight + bias, with x_hat = (x - mean) * inv_std over ``axes`` (biased variance).

    Used by BatchNorm (axes: all but C), InstanceNorm (the spatial axes), LayerNorm (the
    trailing normalized axes) and GroupNorm (each group's channels and spatial axes).
    ``stats``, unless None, receives the batch mean and biased variance for the running statistics.

    Backward needs x_hat. Rather than keep it (a full array), it keeps x (which the graph holds
    anyway) and the per-statistic mean and inv_std, and rebuilds x_hat.
    """

    def forward(self, x, *params, axes, eps, has_weight, has_bias, param_shape, stats, view=None):
        xp = self.xp
        x_in = x
        if view is not None:
            x = x.reshape(view)                         # GroupNorm standardizes (N, G, C/G, S)
        if x.dtype.itemsize < 4:
            x = x.astype(xp.float32)                    # float16 is normalized in float32
        m = 1
        for a in axes:
            m *= x.shape[a]
        kernels = self.backend.kernels
        out = None
        if kernels is not None:                         # (the parameters flat, as the modules hold them)
            out = kernels.standardize_forward(x, params[0] if has_weight else None, params[-1] if has_bias else None,
                                              axes, eps, param_shape)
        weight = None
        if out is not None:
            y, mean, var, inv_std, kernel_saved = out
        else:
            weight, bias = _params(params, has_weight, has_bias, param_shape)
            y, mean, var, inv_std = _standardize(xp, x, weight, bias, axes, eps, m)
            kernel_saved = None
        if stats is not None:                   # the batch statistics, for running statistics (BatchNorm, InstanceNorm)
            stats["mean"], stats["var"], stats["m"] = mean.astype(x.dtype), var.astype(x.dtype), m
        if True in self.needs_input_grad:       # what backward needs (nothing, when no graph is recorded)
            self.x_in, self.view, self.kernel_saved = x_in, view, kernel_saved
            self.mean, self.inv_std, self.weight, self.axes, self.m = mean, inv_std, weight, axes, m
            self.has_weight, self.has_bias = has_weight, has_bias
            self.param_shape, self.param_shapes = param_shape, [p.shape for p in params]
        if y.dtype != x_in.dtype:
            y = y.astype(x_in.dtype)
        return y if view is None else y.reshape(x_in.shape)

    def backward(self, gy):
        xp, view = self.xp, self.view
        x = _acc(xp, self.x_in if view is None else self.x_in.reshape(view))
        gy = gy.astype(x.dtype, copy=False) if view is None else gy.astype(x.dtype, copy=False).reshape(view)
        if self.kernel_saved is not None:
            gx, sum_gy, sum_gy_xhat = self.backend.kernels.standardize_backward(self.kernel_saved, x, gy)
            ggamma = sum_gy_xhat if self.has_weight else None
            gbeta = sum_gy if self.has_bias else None
        else:
            gx, ggamma, gbeta = _standardize_backward(xp, x, gy, self.mean, self.inv_std, self.weight, self.axes,
                                                      self.m, self.has_bias)
        grads = []
        if self.has_weight:
            grads.append(self._param_grad(ggamma, 1, x.dtype))
        if self.has_bias:
            grads.append(self._param_grad(gbeta, len(grads) + 1, x.dtype))
        return (gx.astype(self.x_in.dtype, copy=False).reshape(self.x_in.shape), *grads)

    def _param_grad(self, g, i, dtype):
        """The gradient of the i-th input (a parameter) from g, summed down to its broadcast shape, then flat."""
        if not self.needs_input_grad[i]:
            return None
        return sum_to(g, self.param_shape).astype(dtype).reshape(self.param_shapes[i - 1])


def _standardize(xp, x, weight, bias, axes, eps, m):
    """Forward steps 1-6 of docs section 1, the statistics accumulated in float64 (docs section 6)."""
    f64 = xp.float64
    mean = x.sum(axis=axes, keepdims=True, dtype=f64) / m                             # step 1
    centre = mean.astype(x.dtype)                                                     # the mean, in x's dtype
    centred = x - centre                                                              # step 2
    # NOTE: corrected two-pass (docs section 6). Σ centred is 0 only in exact arithmetic. What
    # rounding left in it, shift, moves into the mean, and its square comes off the variance.
    # The squares are taken in float64: float32 squares of values near 1e30 would overflow.
    shift = centred.sum(axis=axes, keepdims=True, dtype=f64) / m
    var = xp.square(centred, dtype=f64).sum(axis=axes, keepdims=True) / m - shift * shift   # step 3
    var = xp.maximum(var, 0)
    mean = centre.astype(f64) + shift
    inv_std = 1 / xp.sqrt(var + eps)                                                  # step 4
    x_hat = (centred - shift.astype(x.dtype)) * inv_std.astype(x.dtype)              # step 5
    y = x_hat if weight is None else x_hat * weight                                   # step 6
    if bias is not None:
        y += bias
    return y, mean, var, inv_std


def _standardize_backward(xp, x, gy, mean, inv_std, weight, axes, m, need_gbeta):
    """(gx, ggamma, gbeta) by the closed form of docs section 1; ggamma and gbeta before summing to the
    parameters' shapes (None where there is no such parameter)."""
    f64, dt = xp.float64, x.dtype
    centre = mean.astype(dt)
    x_hat = ((x - centre) - (mean - centre).astype(dt)) * inv_std.astype(dt)         # step 5, rebuilt
    g_hat = gy if weight is None else gy * weight                                     # step 6: g_hat = γ gy
    sum_g_hat = g_hat.sum(axis=axes, keepdims=True, dtype=f64)                        # Σ g_hat
    sum_g_hat_xhat = (g_hat * x_hat).sum(axis=axes, keepdims=True, dtype=f64)         # Σ g_hat x_hat
    # gx = (inv_std / m) (m g_hat - Σ g_hat - x_hat Σ (g_hat x_hat))
    gx = (inv_std / m).astype(dt) * (m * g_hat - sum_g_hat.astype(dt) - x_hat * sum_g_hat_xhat.astype(dt))
    ggamma = gy * x_hat if weight is not None else None                               # ggamma = Σ gy x_hat
    gbeta = gy if need_gbeta else None                                                # gbeta = Σ gy
    return gx, ggamma, gbeta


class FrozenStandardize(Function):
    """Eval mode with running statistics: y = (x - mean) * inv_std * weight + bias, an affine map of x.

    mean and var are constants here, so gx = gy * inv_std * weight, with no terms through the
    statistics (docs section 3). ``mean`` and ``var`` are flat arrays, one value per channel, like the
    parameters; ``param_shape`` broadcasts them all against x.
    """

    def forward(self, x, *params, mean, var, eps, has_weight, has_bias, param_shape):
        xp = self.xp
        kernels = self.backend.kernels
        out = None
        if kernels is not None and x.dtype.itemsize >= 4:
            weight = params[0] if has_weight else None
            bias = params[-1] if has_bias else None
            out = kernels.frozen_forward(x, mean, var, weight, bias, eps, param_shape)
        if out is not None:
            y, mean, inv_std = out
        else:
            weight, bias = _params(params, has_weight, has_bias, param_shape)
            mean = mean.reshape(param_shape).astype(xp.float64)
            inv_std = 1 / xp.sqrt(var.reshape(param_shape).astype(xp.float64) + eps)
            xa = _acc(xp, x)
            scale = inv_std if weight is None else inv_std * weight
            y = (xa - mean.astype(xa.dtype)) * scale.astype(xa.dtype)     # (x - mean) * inv_std * weight
            if bias is not None:
                y += bias                                                 # + bias
        # NOTE: mean is a float64 copy: the running statistics may change in place before backward (another
        # training forward), and the gradient must belong to the statistics this forward used.
        if True in self.needs_input_grad:
            self.mean, self.inv_std, self.x = mean, inv_std, x
            self.weight = params[0].reshape(param_shape) if has_weight else None
            self.param_shape, self.param_shapes = param_shape, [p.shape for p in params]
            self.has_weight, self.has_bias = has_weight, has_bias
        return y.astype(x.dtype, copy=False)

    def backward(self, gy):
        x = self.x
        scale = self.inv_std if self.weight is None else self.inv_std * self.weight
        kernels = self.backend.kernels
        out = kernels.frozen_backward(x, gy, self.mean, scale) if kernels is not None and x.dtype.itemsize >= 4 \
            else None
        if out is not None:
            gx, gbeta, sum_gy_centred = out
            ggamma = self.inv_std * sum_gy_centred
        else:
            gx = gy * scale.astype(gy.dtype)                        # gx = gy · inv_std · γ
            gbeta = gy                                              # gbeta = Σ gy
            # NOTE: ggamma = Σ gy (x - mean) inv_std, centred first. The shorter
            # inv_std (Σ gy x - mean Σ gy) cancels catastrophically when |mean| >> std (float32,
            # mean 1000, std 0.01: 14.572 where the exact value is 14.5432).
            ggamma = gy * ((x - self.mean.astype(x.dtype)) * self.inv_std.astype(x.dtype)) if self.has_weight else None
        grads = []
        if self.has_weight:
            grads.append(self._param_grad(ggamma, 1, gy.dtype))
        if self.has_bias:
            grads.append(self._param_grad(gbeta, len(grads) + 1, gy.dtype))
        return (gx.astype(gy.dtype, copy=False), *grads)

    _param_grad = Standardize._param_grad


# ---- RMSNorm ----------------------------------------------------------------------
class RMSNormalize(Function):
    """y = x_hat * weight with x_hat = x * inv_rms, inv_rms = 1/sqrt(mean(x^2 over axes) + eps); no centring."""

    def forward(self, x, *params, axes, eps):
        xp = self.xp
        weight = params[0] if params else None
        self.x_in, x = x, _acc(xp, x)
        m = 1
        for a in axes:
            m *= x.shape[a]
        kernels = self.backend.kernels
        out = kernels.rms_forward(x, weight, axes, eps) if kernels is not None else None
        if out is not None:
            y, inv_rms, self.kernel_saved = out
        else:
            self.kernel_saved = None
            inv_rms = 1 / xp.sqrt(xp.square(x, dtype=xp.float64).sum(axis=axes, keepdims=True) / m + eps)
            x_hat = x * inv_rms.astype(x.dtype)
            y = x_hat if weight is None else x_hat * weight
        self.inv_rms, self.weight, self.axes, self.m = inv_rms, weight, axes, m
        return y.astype(self.x_in.dtype, copy=False)

    def backward(self, gy):
        xp, weight = self.xp, self.weight
        x = _acc(xp, self.x_in)
        gy = gy.astype(x.dtype, copy=False)
        if self.kernel_saved is not None:
            gx, ggamma = self.backend.kernels.rms_backward(self.kernel_saved, x, gy)
        else:
            # gx = inv_rms (g_hat - x_hat Σ(g_hat x_hat) / m), with g_hat = weight * gy (docs section 3)
            inv_rms = self.inv_rms.astype(x.dtype)
            x_hat = x * inv_rms
            g_hat = gy if weight is None else gy * weight
            sum_g_hat_xhat = (g_hat * x_hat).sum(axis=self.axes, keepdims=True, dtype=xp.float64)
            gx = inv_rms * (g_hat - x_hat * (sum_g_hat_xhat / self.m).astype(x.dtype))
            ggamma = None if weight is None else sum_to(gy * x_hat, weight.shape)          # ggamma = Σ gy x_hat
        gx = gx.astype(self.x_in.dtype, copy=False)
        if weight is None:
            return gx
        return gx, (ggamma.reshape(weight.shape).astype(x.dtype) if self.needs_input_grad[1] else None)


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
