"""The normalization maths on arrays: the one interface every backend gives the normalization layers.

``backend.norm`` has the first-order forward and backward of the three normalizations
(docs/normalization.md, sections 1-3), and the running statistics' update:

- ``standardize_forward`` / ``standardize_backward``: x standardized over some axes, then a per-element
  affine (BatchNorm, InstanceNorm, LayerNorm, GroupNorm), in training mode;
- ``frozen_forward`` / ``frozen_backward``: the same with given statistics (eval mode);
- ``rms_forward`` / ``rms_backward``: RMSNorm;
- ``update_running``: running = (1 - momentum) running + momentum batch, in place.

``ArrayNorm`` below is the reference: the docs' formulas line by line, on NumPy or CuPy arrays (``xp``).
CuPy runs it, and so does the CPU without Numba (or with TINYGRADNORM_JIT=0). The CPU's compiled kernels
(cpu_kernels/norm.py) override each method where a kernel fits the input's layout and fall back to this
code where none does. Either way the results come back in the same shapes: statistics float64 and shaped
to broadcast against x, parameter gradients reduced to ``param_shape`` (the shape that broadcasts the
parameters against x; the caller gives them back their own shape).

The parameters arrive flat, as the modules hold them (BatchNorm's weight (C,)), with ``param_shape`` (for
BatchNorm2d (1, C, 1, 1); for GroupNorm, whose x is viewed as (N, G, C/G, S), (1, G, C/G, 1)).
"""


TINY = 2        # a statistic of at most this many elements has its backward's elementwise pass in float64


class ArrayNorm:
    """The reference implementation, on the arrays of ``xp`` (numpy or cupy)."""

    def __init__(self, xp):
        self.xp = xp

    # ---- training mode: standardize over ``axes``, then affine ---------------------------------------------
    def standardize_forward(self, x, weight, bias, axes, eps, param_shape):
        """y = x_hat * weight + bias, x_hat = (x - mean) * inv_std over ``axes``: (y, mean, biased var, inv_std).

        Forward steps 1-6 of docs section 1, the statistics accumulated in float64 (docs section 6).
        """
        xp = self.xp
        f64 = xp.float64
        m = _count(x.shape, axes)
        mean = x.sum(axis=axes, keepdims=True, dtype=f64) / m                             # step 1
        # the mean, in x's dtype (in float64 for a tiny statistic, whose backward needs every digit of var)
        centre = mean.astype(x.dtype if m > TINY else f64)
        centred = x - centre                                                              # step 2
        # NOTE: corrected two-pass (docs section 6). Σ centred is 0 only in exact arithmetic. What
        # rounding left in it, shift, moves into the mean, and its square comes off the variance.
        # The squares are taken in float64: float32 squares of values near 1e30 would overflow.
        shift = centred.sum(axis=axes, keepdims=True, dtype=f64) / m
        var = xp.square(centred, dtype=f64).sum(axis=axes, keepdims=True) / m - shift * shift   # step 3
        var = xp.maximum(var, 0)
        mean = centre.astype(f64) + shift
        inv_std = 1 / xp.sqrt(var + eps)                                                  # step 4
        x_hat = ((centred - shift.astype(centred.dtype)) * inv_std.astype(centred.dtype)).astype(x.dtype,  # step 5
                                                                                                  copy=False)
        y = x_hat if weight is None else x_hat * weight.reshape(param_shape)              # step 6
        if bias is not None:
            y += bias.reshape(param_shape)
        return y, mean, var, inv_std

    def standardize_backward(self, x, gy, mean, inv_std, weight, axes, param_shape, need_weight, need_bias):
        """(gx, ggamma, gbeta) by the closed form of docs section 1; ggamma and gbeta summed to ``param_shape``
        (None where not needed)."""
        xp = self.xp
        f64, dt = xp.float64, x.dtype
        m = _count(x.shape, axes)
        if m <= TINY:
            # NOTE: a tiny statistic's gx is a small difference of terms of size inv_std·|g_hat| (exactly 0 for
            # one element, about eps for two); in x's dtype it would keep only rounding noise. float64 keeps it.
            dt, x, gy = f64, x.astype(f64), gy.astype(f64)
        centre = mean.astype(dt)
        x_hat = ((x - centre) - (mean - centre).astype(dt)) * inv_std.astype(dt)         # step 5, rebuilt
        g_hat = gy if weight is None else gy * weight.reshape(param_shape)                # step 6: g_hat = γ gy
        sum_g_hat = g_hat.sum(axis=axes, keepdims=True, dtype=f64)                        # Σ g_hat
        sum_g_hat_xhat = (g_hat * x_hat).sum(axis=axes, keepdims=True, dtype=f64)         # Σ g_hat x_hat
        # gx = (inv_std / m) (m g_hat - Σ g_hat - x_hat Σ (g_hat x_hat))
        gx = (inv_std / m).astype(dt) * (m * g_hat - sum_g_hat.astype(dt) - x_hat * sum_g_hat_xhat.astype(dt))
        ggamma = _sum_to(gy * x_hat, param_shape) if need_weight else None                # ggamma = Σ gy x_hat
        gbeta = _sum_to(gy, param_shape) if need_bias else None                           # gbeta = Σ gy
        return gx, ggamma, gbeta

    def standardize_double_backward(self, x, gy, weight, u, v, w, mean, inv_std, axes, param_shape, centred=True,
                                    need=(True, True, True)):
        """(gx, ggy, gweight): the gradients with respect to x, gy and the weight of <gx, u> + <ggamma, v> +
        <gbeta, w> (docs section 9), where u, v, w (any of them None) arrive at standardize_backward's gx, ggamma
        and gbeta. ``centred`` False is RMSNorm's (mean None). ``need`` says which of the three to return; gweight
        in ``param_shape``. The statistics are the saved ones: on arrays, nothing differentiates this again."""
        xp = self.xp
        f64, dt = xp.float64, x.dtype
        m = _count(x.shape, axes)

        def avg(a):
            return (a.sum(axis=axes, keepdims=True, dtype=f64) / m).astype(dt)

        s = inv_std.astype(dt)
        x_hat = (x - mean.astype(dt)) * s if centred else x * s
        gamma = None if weight is None else weight.reshape(param_shape).astype(dt, copy=False)
        g_hat = gy if gamma is None else gy * gamma

        def project(a):                                 # P(a) = a - mean(a) - x_hat mean(a x_hat)
            p = a - x_hat * avg(a * x_hat)
            return p - avg(a) if centred else p

        gx = ggy = gw = None
        if u is not None:
            mean_u_xhat, mean_g_xhat = avg(u * x_hat), avg(g_hat * x_hat)
            k = avg(g_hat * u) - mean_g_xhat * mean_u_xhat
            if centred:
                k -= avg(g_hat) * avg(u)
            p_u = project(u)
            p_u *= s                                    # inv_std P(u)
            if need[0]:
                gx = x_hat * k
                gx += project(g_hat) * mean_u_xhat
                gx += p_u * (mean_g_xhat / s)
                gx *= -(s * s)
            ggy = p_u * gamma if gamma is not None else p_u
            if weight is not None and need[2]:
                gw = _sum_to(gy * p_u, param_shape)
        if v is not None:
            vs = v.reshape(param_shape).astype(dt, copy=False)
            if need[0]:
                term = project(gy * vs) * s
                gx = term if gx is None else gx + term
            ggy = x_hat * vs if ggy is None else ggy + x_hat * vs
        if w is not None:
            ws = w.reshape(param_shape).astype(dt, copy=False)
            ggy = xp.broadcast_to(ws, x.shape).copy() if ggy is None else ggy + ws
        return (gx if need[0] else None), (ggy if need[1] else None), gw

    def update_running(self, running_mean, running_var, mean, var, momentum, unbias):
        """The running statistics, in place, as PyTorch updates them: running = (1 - momentum) running +
        momentum batch, where the batch's variance is var * unbias (unbias = m / (m - 1) makes the biased
        variance unbiased). In float64, each result rounded once to the buffers' dtype. All four arrays are
        flat, one value per channel."""
        f64 = self.xp.float64
        for running, batch in ((running_mean, mean), (running_var, var.astype(f64) * unbias)):
            running[...] = (1 - momentum) * running.astype(f64) + momentum * batch.astype(f64).reshape(running.shape)

    # ---- eval mode: given statistics ------------------------------------------------------------------------
    def frozen_forward(self, x, running_mean, running_var, weight, bias, eps, param_shape):
        """y = (x - mean) * inv_std * weight + bias with the given (flat) statistics: (y, mean, inv_std), the
        last two float64 copies in ``param_shape``.

        NOTE: mean is a float64 copy: the running statistics may change in place before backward (another
        training forward), and the gradient must belong to the statistics this forward used.
        """
        xp = self.xp
        mean = running_mean.reshape(param_shape).astype(xp.float64)
        inv_std = 1 / xp.sqrt(running_var.reshape(param_shape).astype(xp.float64) + eps)
        scale = inv_std if weight is None else inv_std * weight.reshape(param_shape)
        y = (x - mean.astype(x.dtype)) * scale.astype(x.dtype)               # (x - mean) * inv_std * weight
        if bias is not None:
            y += bias.reshape(param_shape)                                    # + bias
        return y, mean, inv_std

    def frozen_backward(self, x, gy, mean, inv_std, weight, param_shape, need_weight, need_bias):
        """(gx, ggamma, gbeta) of frozen_forward, the parameter gradients in ``param_shape``."""
        scale = inv_std if weight is None else inv_std * weight.reshape(param_shape)
        gx = gy * scale.astype(gy.dtype)                                      # gx = gy · inv_std · γ
        # NOTE: ggamma = Σ gy (x - mean) inv_std, centred first. The shorter
        # inv_std (Σ gy x - mean Σ gy) cancels catastrophically when |mean| >> std (float32,
        # mean 1000, std 0.01: 14.572 where the exact value is 14.5432).
        ggamma = _sum_to(gy * ((x - mean.astype(x.dtype)) * inv_std.astype(x.dtype)), param_shape) \
            if need_weight else None
        gbeta = _sum_to(gy, param_shape) if need_bias else None               # gbeta = Σ gy
        return gx, ggamma, gbeta

    # ---- RMSNorm ------------------------------------------------------------------------------------------
    def rms_forward(self, x, weight, axes, eps):
        """y = x_hat * weight with x_hat = x * inv_rms over the trailing ``axes``: (y, inv_rms), inv_rms float64."""
        xp = self.xp
        inv_rms = 1 / xp.sqrt(xp.square(x, dtype=xp.float64).sum(axis=axes, keepdims=True) / _count(x.shape, axes)
                              + eps)
        x_hat = x * inv_rms.astype(x.dtype)
        return (x_hat if weight is None else x_hat * weight), inv_rms

    def rms_backward(self, x, gy, inv_rms, weight, axes):
        """(gx, ggamma): gx = inv_rms (g_hat - x_hat Σ(g_hat x_hat) / m), g_hat = weight gy (docs section 3);
        ggamma in the weight's shape (None without one)."""
        xp = self.xp
        dtype = x.dtype
        if _count(x.shape, axes) <= TINY:                 # (as in standardize_backward)
            x, gy = x.astype(xp.float64), gy.astype(xp.float64)
        inv = inv_rms.astype(x.dtype)
        x_hat = x * inv
        g_hat = gy if weight is None else gy * weight
        sum_g_hat_xhat = (g_hat * x_hat).sum(axis=axes, keepdims=True, dtype=xp.float64)
        gx = inv * (g_hat - x_hat * (sum_g_hat_xhat / _count(x.shape, axes)).astype(x.dtype))
        ggamma = None if weight is None else _sum_to(gy * x_hat, weight.shape)           # ggamma = Σ gy x_hat
        return gx.astype(dtype, copy=False), None if ggamma is None else ggamma.astype(dtype, copy=False)


def _count(shape, axes):
    m = 1
    for a in axes:
        m *= shape[a]
    return m


def _sum_to(a, shape):
    """a summed over the leading axes it has beyond ``shape`` and over the axes where ``shape`` is 1."""
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and a.shape[lead + i] != 1)
    return (a.sum(axis=axes, keepdims=True) if axes else a).reshape(shape)
