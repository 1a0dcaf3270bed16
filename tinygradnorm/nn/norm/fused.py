"""Hand-derived forward, backward and double backward of the normalization layers.

Read this next to docs/normalization.md: the names are the same. ``m`` is the number of
elements behind each statistic, ``x_hat`` the standardized input, ``inv_std`` 1/sqrt(var + eps),
``gy`` the output's gradient, ``gx``/``ggamma``/``gbeta`` the input's, weight's and bias's; in the
double backward, ``u``, ``v`` and ``w`` are the gradients arriving at gx, ggamma and gbeta.

Each layer is two Functions:

- the layer (``Standardize``, ``FrozenStandardize``, ``RMSNormalize``, ``LocalResponseNormalize``). Its
  forward and first-order backward call the backend's normalization interface (``backend.norm``,
  backend/norm.py): the compiled kernels on the CPU, the docs' formulas as array code elsewhere;
- its backward as an op of its own (``StandardizeBackward``, ...), which the walk uses when it records
  a graph of the gradient (create_graph=True). Its forward is the same first-order backward, and its
  gradient is the hand-derived double backward of docs section 9: the gradients with respect to x, gy
  and the weight of <gx, u> + <ggamma, v> + <gbeta, w>.

The double backward is written in differentiable ops, and when a graph is being recorded it computes
the statistics again from x, with their graph. So the third and every higher derivative are right too.
(PyTorch's hand-written double backwards reuse saved statistics that carry no graph, and its third
derivatives of batch and layer norm are wrong.)

Parameters arrive flat, as the modules hold them, with ``param_shape``, the shape that
broadcasts them against x (BatchNorm's weight as (1, C, 1, 1), GroupNorm's as (1, G, C/G, 1)).
So one Function serves every layer that "standardizes over some axes, then applies a
per-element affine".
"""
import math

from ...autograd.function import Function
from ...autograd.grad_mode import is_grad_enabled
from ...ops._util import sum_to
from ...tensor import Tensor


def _acc(xp, x):
    """x in a dtype of at least float32: float16 input is normalized in float32."""
    return x.astype(xp.float32) if x.dtype.itemsize < 4 else x


def _flat(g, shape):
    """A parameter gradient (array or Tensor, in param_shape) in the parameter's own shape, or None."""
    return None if g is None else g.reshape(shape)


# ---- training mode: standardize over axes, then affine -------------------------------------------------
class Standardize(Function):
    """y = x_hat * weight + bias, with x_hat = (x - mean) * inv_std over ``axes`` (biased variance).

    Used by BatchNorm (axes: all but C), InstanceNorm (the spatial axes), LayerNorm (the trailing
    normalized axes) and GroupNorm (each group's channels and spatial axes, x viewed as ``view``).
    With ``on_stats``, forward hands it the batch mean and biased variance (arrays) and the count of each,
    for the running statistics.

    Backward needs x_hat. Rather than keep it (a full array), it keeps x (which the graph holds anyway)
    and the per-statistic mean and inv_std, and rebuilds x_hat.
    """

    def forward(self, x, *params, axes, eps, has_weight, has_bias, param_shape, view=None, on_stats=None):
        weight = params[0] if has_weight else None
        y, mean, inv_std = standardize_arrays(self.backend, x, weight, params[-1] if has_bias else None, axes, eps,
                                              param_shape, view, on_stats)
        if True in self.needs_input_grad:       # what backward needs (nothing, when no graph is recorded)
            self.save_for_backward(x, weight, mean, inv_std)
            self.axes, self.eps, self.view, self.param_shape = axes, eps, view, param_shape
            self.has_bias, self.param_shapes = has_bias, [p.shape for p in params]
        return y

    def backward(self, gy):
        x, weight, mean, inv_std = self._saved
        grads = _standardize_grads(self.backend, x, gy, weight, mean, inv_std, self.axes, self.param_shape,
                                   self.view, self._needs())
        return self._per_input(grads)

    def gradient(self, gy):
        x, weight = self.saved_tensors[:2]
        mean, inv_std = self.saved[2:]
        grads = StandardizeBackward.apply(x, gy, *([weight] if weight is not None else []), mean=mean,
                                          inv_std=inv_std, axes=self.axes, eps=self.eps, param_shape=self.param_shape,
                                          view=self.view, needs=self._needs())
        return self._per_input(grads)

    def _needs(self):
        """Which of gx, ggamma, gbeta the inputs need."""
        needs = self.needs_input_grad
        return needs[0], self._saved[1] is not None and needs[1], self.has_bias and needs[-1]

    def _per_input(self, grads):
        """(gx, ggamma, gbeta) as one gradient per input of forward: gx, then the weight's and bias's, flat."""
        gx, ggamma, gbeta = grads
        if self._saved[1] is None:
            return (gx, _flat(gbeta, self.param_shapes[-1])) if self.has_bias else gx
        if self.has_bias:
            return gx, _flat(ggamma, self.param_shapes[0]), _flat(gbeta, self.param_shapes[-1])
        return gx, _flat(ggamma, self.param_shapes[0])


def standardize_arrays(backend, x, weight, bias, axes, eps, param_shape, view=None, on_stats=None):
    """Standardize's forward on arrays: (y in x's shape and dtype, mean, inv_std), by the backend's
    standardize_forward. It is also the whole layer where no graph is recorded (functional.py calls it with no
    Function: in eval mode and under no_grad, a small input pays mostly for per-call overhead)."""
    xs = _acc(backend.xp, x if view is None else x.reshape(view))
    y, mean, var, inv_std = backend.norm.standardize_forward(xs, weight, bias, axes, eps, param_shape)
    if on_stats is not None:
        on_stats(mean, var, math.prod(xs.shape[a] for a in axes))
    return (y if y.dtype == x.dtype else y.astype(x.dtype)).reshape(x.shape), mean, inv_std


def _standardize_grads(backend, x, gy, weight, mean, inv_std, axes, param_shape, view, needs):
    """(gx, ggamma, gbeta) of Standardize on arrays, by the backend's standardize_backward; None where not needed,
    the parameter gradients in param_shape and x's dtype."""
    xp = backend.xp
    xs = _acc(xp, x if view is None else x.reshape(view))
    gys = (gy if view is None else gy.reshape(view)).astype(xs.dtype, copy=False)
    gx, ggamma, gbeta = backend.norm.standardize_backward(xs, gys, mean, inv_std, weight, axes, param_shape,
                                                          needs[1], needs[2])
    gx = gx.astype(x.dtype, copy=False).reshape(x.shape) if needs[0] else None
    return gx, _cast(ggamma, x.dtype), _cast(gbeta, x.dtype)


def _cast(a, dtype):
    return None if a is None else a.astype(dtype, copy=False)


class StandardizeBackward(Function):
    """Standardize's backward as an op: (x, gy[, weight]) -> (gx, ggamma, gbeta), each None unless ``needs``
    asks for it, ggamma and gbeta in ``param_shape``. Its gradient is the double backward (docs section 9)."""

    def forward(self, x, gy, *weight, mean, inv_std, axes, eps, param_shape, view, needs):
        weight = weight[0] if weight else None
        self.save_for_backward(x, gy, weight, mean, inv_std)
        self.axes, self.eps, self.param_shape, self.view = axes, eps, param_shape, view
        return _standardize_grads(self.backend, x, gy, weight, mean, inv_std, axes, param_shape, view, needs)

    def backward(self, u, v, w):
        x, gy, weight, mean, inv_std = self.saved
        return _double_backward_arrays(self, x, gy, weight, u, v, w, mean, inv_std, centred=True)

    def gradient(self, u, v, w):
        x, gy, weight = self.saved_tensors[:3]
        mean, inv_std = self.saved[3:]
        return _double_backward(self, x, gy, weight, u, v, w, mean, inv_std, centred=True)


def _double_backward_arrays(fn, x, gy, weight, u, v, w, mean, inv_std, centred):
    """_double_backward on arrays, by the backend's standardize_double_backward: what a plain backward through the
    backward runs (a gradient penalty's update, a Hessian-vector product)."""
    xp, view, needs = fn.xp, fn.view, fn.needs_input_grad

    def viewed(a):
        return None if a is None else _acc(xp, a if view is None else a.reshape(view))

    gx, ggy, gw = fn.backend.norm.standardize_double_backward(
        viewed(x), viewed(gy), weight, viewed(u), v, w, mean, inv_std, fn.axes, fn.param_shape, centred,
        (needs[0], needs[1], weight is not None and needs[2]))
    gx = None if gx is None else gx.reshape(x.shape).astype(x.dtype, copy=False)
    ggy = None if ggy is None else ggy.reshape(gy.shape).astype(gy.dtype, copy=False)
    gw = None if gw is None else gw.reshape(weight.shape).astype(weight.dtype, copy=False)
    return (gx, ggy, gw) if weight is not None else (gx, ggy)


def _double_backward(fn, x, gy, weight, u, v, w, mean, inv_std, centred):
    """The gradients with respect to x, gy and the weight of <gx, u> + <ggamma, v> + <gbeta, w>, in Tensor ops
    (docs section 9). ``centred`` False is RMSNorm's: no mean is subtracted, and mean is None.

    With P(a) = a - mean(a) - x_hat mean(a x_hat) (RMSNorm: a - x_hat mean(a x_hat)), g_hat = weight gy and
    every mean over the statistic's m elements:

        d/dx      = -inv_std^2 [x_hat k + P(g_hat) mean(u x_hat) + P(u) mean(g_hat x_hat)] + inv_std P(gy v)
        d/dgy     = weight inv_std P(u) + x_hat v + w
        d/dweight = Σ gy inv_std P(u)

    with k = mean(g_hat u) - mean(g_hat) mean(u) - mean(g_hat x_hat) mean(u x_hat) (RMSNorm: without the middle
    term). The statistics come from x again when a graph is recorded (so that higher orders see how they depend
    on x), else from the values forward saved.
    """
    axes, view, param_shape = fn.axes, fn.view, fn.param_shape
    needs = fn.needs_input_grad
    shape, dtype = x.shape, x.dtype

    def viewed(t):
        t = t if view is None else t.reshape(view)
        return t if t.dtype.itemsize >= 4 else t.float()

    xs, gys = viewed(x), viewed(gy)

    average = getattr(fn, "average", None)      # SyncBatchNorm's: over every rank's examples

    def avg(a):
        return a.mean(axes, keepdim=True) if average is None else average(a)

    if is_grad_enabled():
        xc = xs - avg(xs) if centred else xs
        inv_std = (avg(xc * xc) + fn.eps).rsqrt()
    else:
        dt = xs.dtype
        xc = xs - Tensor._wrap(mean.astype(dt), xs.device, False, None) if centred else xs
        inv_std = Tensor._wrap(inv_std.astype(dt), xs.device, False, None)
    x_hat = xc * inv_std
    gamma = None if weight is None else weight.reshape(param_shape)
    if gamma is not None and gamma.dtype != xs.dtype:
        gamma = gamma.to(xs.dtype)
    g_hat = gys if gamma is None else gys * gamma

    def project(a):                                     # P(a)
        p = a - x_hat * avg(a * x_hat)
        return p - avg(a) if centred else p

    gx = ggy = gw = None
    if u is not None:
        us = viewed(u)
        mean_u_xhat, mean_g_xhat = avg(us * x_hat), avg(g_hat * x_hat)
        k = avg(g_hat * us) - mean_g_xhat * mean_u_xhat
        if centred:
            k = k - avg(g_hat) * avg(us)
        p_u = project(us)
        gx = -(inv_std * inv_std) * (x_hat * k + project(g_hat) * mean_u_xhat + p_u * mean_g_xhat)
        s_p_u = inv_std * p_u
        ggy = s_p_u if gamma is None else s_p_u * gamma
        if weight is not None and needs[2]:
            gw = sum_to(gys * s_p_u, param_shape)
    if v is not None:
        vs = v.reshape(param_shape).to(xs.dtype)
        term = inv_std * project(gys * vs)
        gx = term if gx is None else gx + term
        ggy = x_hat * vs if ggy is None else ggy + x_hat * vs
    if w is not None:
        ws = w.reshape(param_shape).to(xs.dtype)
        ggy = ws.expand(gys.shape) if ggy is None else ggy + ws
    gx = None if gx is None or not needs[0] else gx.reshape(shape).to(dtype)
    ggy = None if ggy is None or not needs[1] else ggy.reshape(shape).to(dtype)
    gw = None if gw is None else gw.reshape(weight.shape).to(weight.dtype)
    return (gx, ggy, gw) if weight is not None else (gx, ggy)


# ---- eval mode: given statistics -------------------------------------------------------------------------------
class FrozenStandardize(Function):
    """Eval mode with running statistics: y = (x - mean) * inv_std * weight + bias, an affine map of x.

    mean and var are constants here, so gx = gy * inv_std * weight, with no terms through the
    statistics (docs section 3). ``mean`` and ``var`` are flat arrays, one value per channel, like the
    parameters; ``param_shape`` broadcasts them all against x.
    """

    def forward(self, x, *params, mean, var, eps, has_weight, has_bias, param_shape):
        weight = params[0] if has_weight else None
        y, mean, inv_std = frozen_arrays(self.backend, x, weight, params[-1] if has_bias else None, mean, var, eps,
                                         param_shape)
        if True in self.needs_input_grad:
            self.save_for_backward(x, weight, mean, inv_std)
            self.param_shape, self.param_shapes, self.has_bias = param_shape, [p.shape for p in params], has_bias
        return y

    def backward(self, gy):
        x, weight, mean, inv_std = self.saved
        return self._per_input(_frozen_grads(self.backend, x, gy, weight, mean, inv_std, self.param_shape,
                                             self._needs()))

    def gradient(self, gy):
        x, weight = self.saved_tensors[:2]
        mean, inv_std = self.saved[2:]
        grads = FrozenStandardizeBackward.apply(x, gy, *([weight] if weight is not None else []), mean=mean,
                                                inv_std=inv_std, param_shape=self.param_shape, needs=self._needs())
        return self._per_input(grads)

    _needs = Standardize._needs
    _per_input = Standardize._per_input


def frozen_arrays(backend, x, weight, bias, mean, var, eps, param_shape):
    """FrozenStandardize's forward on arrays: (y in x's dtype, mean, inv_std); the whole layer where no graph is
    recorded, as standardize_arrays."""
    y, mean, inv_std = backend.norm.frozen_forward(_acc(backend.xp, x), mean, var, weight, bias, eps, param_shape)
    return y.astype(x.dtype, copy=False), mean, inv_std


def _frozen_grads(backend, x, gy, weight, mean, inv_std, param_shape, needs):
    xa = _acc(backend.xp, x)
    gx, ggamma, gbeta = backend.norm.frozen_backward(xa, gy.astype(xa.dtype, copy=False), mean, inv_std, weight,
                                                     param_shape, needs[1], needs[2])
    return (gx.astype(x.dtype, copy=False) if needs[0] else None), _cast(ggamma, x.dtype), _cast(gbeta, x.dtype)


class FrozenStandardizeBackward(Function):
    """FrozenStandardize's backward as an op: (x, gy[, weight]) -> (gx, ggamma, gbeta).

    Its gradient: forward is affine in x and the backward linear in gy, so of the double backward only the
    cross terms remain (docs section 9): d/dx = gy inv_std v, d/dgy = weight inv_std u + (x - mean) inv_std v + w,
    d/dweight = Σ u gy inv_std.
    """

    def forward(self, x, gy, *weight, mean, inv_std, param_shape, needs):
        weight = weight[0] if weight else None
        self.save_for_backward(x, gy, weight, mean, inv_std)
        self.param_shape = param_shape
        return _frozen_grads(self.backend, x, gy, weight, mean, inv_std, param_shape, needs)

    def gradient(self, u, v, w):
        x, gy, weight = self.saved_tensors[:3]
        mean, inv_std = self.saved[3:]
        needs, param_shape = self.needs_input_grad, self.param_shape
        dt = x.dtype if x.dtype.itemsize >= 4 else x.float().dtype
        s = Tensor._wrap(inv_std.astype(dt), x.device, False, None)
        gamma = None if weight is None else weight.reshape(param_shape).to(dt)
        gx = ggy = gw = None
        if u is not None:
            ggy = u * s if gamma is None else u * s * gamma
            if weight is not None and needs[2]:
                gw = sum_to(u * gy * s, param_shape)
        if v is not None:
            vs = v.reshape(param_shape).to(dt)
            gx = gy * s * vs
            centred = (x - Tensor._wrap(mean.astype(dt), x.device, False, None)) * s
            ggy = centred * vs if ggy is None else ggy + centred * vs
        if w is not None:
            ws = w.reshape(param_shape).to(dt)
            ggy = ws.expand(gy.shape) if ggy is None else ggy + ws
        gx = None if gx is None or not needs[0] else gx.to(x.dtype)
        ggy = None if ggy is None or not needs[1] else ggy.to(gy.dtype)
        gw = None if gw is None else gw.reshape(weight.shape).to(weight.dtype)
        return (gx, ggy, gw) if weight is not None else (gx, ggy)


# ---- RMSNorm ----------------------------------------------------------------------
class RMSNormalize(Function):
    """y = x_hat * weight with x_hat = x * inv_rms, inv_rms = 1/sqrt(mean(x^2 over axes) + eps); no centring."""

    def forward(self, x, *params, axes, eps):
        weight = params[0] if params else None
        y, inv_rms = self.backend.norm.rms_forward(_acc(self.xp, x), weight, axes, eps)
        self.save_for_backward(x, weight, inv_rms)
        self.axes, self.eps = axes, eps
        return y.astype(x.dtype, copy=False)

    def backward(self, gy):
        x, weight, inv_rms = self.saved
        gx, ggamma = _rms_grads(self.backend, x, gy, weight, inv_rms, self.axes)
        return gx if weight is None else (gx, ggamma if self.needs_input_grad[1] else None)

    def gradient(self, gy):
        x, weight = self.saved_tensors[:2]
        out = RMSNormalizeBackward.apply(x, gy, *([weight] if weight is not None else []), inv_rms=self.saved[2],
                                         axes=self.axes, eps=self.eps)
        return out if weight is None else (out[0], out[1] if self.needs_input_grad[1] else None)


def _rms_grads(backend, x, gy, weight, inv_rms, axes):
    xa = _acc(backend.xp, x)
    gx, ggamma = backend.norm.rms_backward(xa, gy.astype(xa.dtype, copy=False), inv_rms, weight, axes)
    return gx.astype(x.dtype, copy=False), _cast(ggamma, x.dtype)


class RMSNormalizeBackward(Function):
    """RMSNormalize's backward as an op: (x, gy[, weight]) -> (gx, ggamma). Its gradient is the double backward
    of docs section 9 without the centring."""

    def forward(self, x, gy, *weight, inv_rms, axes, eps):
        weight = weight[0] if weight else None
        self.save_for_backward(x, gy, weight, inv_rms)
        self.axes, self.eps, self.view = axes, eps, None
        self.param_shape = None if weight is None else (1,) * (x.ndim - weight.ndim) + weight.shape
        gx, ggamma = _rms_grads(self.backend, x, gy, weight, inv_rms, axes)
        return (gx, ggamma) if weight is not None else gx

    def backward(self, u, v=None):
        x, gy, weight, inv_rms = self.saved
        return _double_backward_arrays(self, x, gy, weight, u, v, None, None, inv_rms, centred=False)

    def gradient(self, u, v=None):
        x, gy, weight = self.saved_tensors[:3]
        return _double_backward(self, x, gy, weight, u, v, None, None, self.saved[3], centred=False)


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


class ChannelWindowSum(Function):
    """out[:, c] = Σ a[:, c - before .. c + after]: linear, with the mirrored window as its gradient."""

    def forward(self, a, before, after):
        self.before, self.after = before, after
        return _channel_window_sum(self.xp, a, before, after)

    def backward(self, g):
        return _channel_window_sum(self.xp, g, self.after, self.before)

    def gradient(self, g):
        return ChannelWindowSum.apply(g, before=self.after, after=self.before)


class LocalResponseNormalize(Function):
    """y_c = x_c * s_c^-beta with s_c = k + alpha/size * Σ x_j^2 over channels j in c's window.

    The window of channel c is [c - size//2, c + (size-1)//2], as in PyTorch.
    """

    def forward(self, x, size, alpha, beta, k):
        s = _channel_window_sum(self.xp, x * x, size // 2, (size - 1) // 2)
        s *= alpha / size
        s += k
        s_pow = s ** -beta
        self.save_for_backward(x, s, s_pow)
        self.hyper = (size, alpha, beta, k)
        return x * s_pow

    def backward(self, gy):
        return _lrn_backward(self.xp, gy, *self.saved, *self.hyper[:3])

    def gradient(self, gy):
        size, alpha, beta, k = self.hyper
        return LocalResponseNormalizeBackward.apply(self.saved_tensors[0], gy, size=size, alpha=alpha, beta=beta, k=k)


def _lrn_backward(xp, gy, x, s, s_pow, size, alpha, beta):
    """gx of LocalResponseNormalize: d y_c / d x_j = [c == j] s_c^-beta - x_c beta s_c^(-beta-1) (2 alpha / size) x_j
    for j in c's window. Channel j is in c's window exactly when c is in j's mirrored window
    [j - (size-1)//2, j + size//2]."""
    t = gy * x * s_pow / s
    gx = gy * s_pow
    gx -= (2 * alpha * beta / size) * x * _channel_window_sum(xp, t, (size - 1) // 2, size // 2)
    return gx


class LocalResponseNormalizeBackward(Function):
    """LocalResponseNormalize's backward as an op: (x, gy) -> gx, linear in gy. Its gradient (docs section 9),
    with p = s^-beta, q = p / s, c = 2 alpha beta / size, W the window sum and W' the mirrored one, z = W(u x):

        d/dgy = p u - c x q z
        d/dx  = -c x W'(q gy u) - c u W'(gy x q) - c z gy q + c (2 alpha (beta + 1) / size) x W'(z gy x q / s)

    s, p and q are computed again from x in differentiable ops, so higher orders are right too.
    """

    def forward(self, x, gy, size, alpha, beta, k):
        xp = self.xp
        self.save_for_backward(x, gy)
        self.hyper = (size, alpha, beta, k)
        s = _channel_window_sum(xp, x * x, size // 2, (size - 1) // 2) * (alpha / size) + k
        return _lrn_backward(xp, gy, x, s, s ** -beta, size, alpha, beta)

    def gradient(self, u):
        x, gy = self.saved_tensors
        size, alpha, beta, k = self.hyper
        before, after = size // 2, (size - 1) // 2

        def window(a):
            return ChannelWindowSum.apply(a, before=before, after=after)

        def mirrored(a):
            return ChannelWindowSum.apply(a, before=after, after=before)

        s = window(x * x) * (alpha / size) + k
        p = s ** -beta
        q = p / s
        c = 2 * alpha * beta / size
        z = window(u * x)
        ggy = p * u - c * x * q * z if self.needs_input_grad[1] else None
        gx = None
        if self.needs_input_grad[0]:
            gx = (-c * x * mirrored(q * gy * u) - c * u * mirrored(gy * x * q) - c * z * gy * q
                  + c * (2 * alpha * (beta + 1) / size) * x * mirrored(z * gy * x * q / s))
        return gx, ggy
