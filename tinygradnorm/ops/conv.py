"""Convolution over 1, 2 or 3 spatial dims (dense, grouped, depthwise), its transpose, and their gradients.

Three Functions, each linear in each of its inputs; the gradient of each is made of the three again, so a
convolution can be differentiated to any order:

- ``Convolution``: y = conv(x, w) + b;
- ``ConvInput``: conv's gradient with respect to x for an output gradient gy, col2im of W^T gy. It is the
  transposed convolution of gy with w, which is what ``conv_transpose`` runs;
- ``ConvWeight``: conv's gradient with respect to w, Σ gy times the windows of x.

<u, ConvInput(gy, w)> = <conv(u, w), gy> and <v, ConvWeight(x, gy)> = <conv(x, v), gy> give their gradients.

The columns (im2col) hold every input channel's windows, channel-major, so the rows of one group of
channels are contiguous: with G groups each GEMM is one batched product over the groups,
(G, O/G, C/G*prod(kernel)) @ (G, C/G*prod(kernel), N*prod(out)). G = 1 is the plain convolution, G = C the
depthwise one. This array code is the reference, which CuPy runs; on the CPU the compiled kernels of
backend/cpu_kernels/conv.py take 3-D convolutions (and 1-D and 2-D ones, as 3-D with a depth and height of 1),
a cache-sized chunk of samples at a time, and 2-D depthwise ones (one input channel per group) as direct loops.
"""
import itertools
import math

from ..autograd.function import Function
from ._util import check_tensor, compiled_kernels
from .movement import pad


def out_size(size, k, s, p, d=1):
    """The number of windows along one dim: (size + 2p - d(k - 1) - 1) // s + 1 (0 if none fits)."""
    span = size + 2 * p - d * (k - 1) - 1
    return span // s + 1 if span >= 0 else 0


class Convolution(Function):
    """y[n, o] = Σ_{c in o's group, offsets} w[o, c, offsets] x_padded[n, c, s·position + d·offsets] (+ b[o]).

    ``geom`` is (stride, padding, dilation, out spatial shape, groups), tuples of one entry per spatial dim.
    The gradient, as ops: gx = ConvInput(gy, w), gw = ConvWeight(x, gy), gb = Σ gy.
    """

    def forward(self, x, w, *b, stride, padding, dilation, groups):
        out = tuple(out_size(n, k, s, p, d) for n, k, s, p, d in zip(x.shape[2:], w.shape[2:], stride, padding,
                                                                      dilation))
        self.geom = (stride, padding, dilation, out, groups)
        self.save_for_backward(x, w)
        bias = b[0] if b else None
        kernels = compiled_kernels(self.backend, x)
        if kernels is not None:
            x3, w3, geom3 = _as_3d(x), _as_3d(w), _geom_3d(self.geom)
            y = kernels.conv_forward(self.xp.ascontiguousarray(x3), self.xp.ascontiguousarray(w3), bias,
                                     geom3[0], geom3[1], geom3[2], geom3[3], groups)
            return y.reshape(y.shape[:2] + out)
        return _conv_from_columns(self.xp, _columns(self.xp, x, w.shape, self.geom), w, bias, x.shape[0], out,
                                  groups)

    def backward(self, gy):
        xp, (x, w) = self.xp, self.saved
        needs = self.needs_input_grad
        need_gb = len(needs) > 2 and needs[2]
        kernels = compiled_kernels(self.backend, x)
        if kernels is not None:
            stride, padding, dilation, _, g = _geom_3d(self.geom)
            gx, gw, gb = kernels.conv_backward(xp.ascontiguousarray(_as_3d(x)), xp.ascontiguousarray(_as_3d(w)),
                                               _as_3d(gy), stride, padding, dilation, g, needs[0], needs[1], need_gb)
            return (None if gx is None else gx.reshape(x.shape), None if gw is None else gw.reshape(w.shape),
                    gb)[:len(needs)]
        gy2 = _grouped_gy(xp, gy, self.geom[4])
        gx = _input_grad(xp, gy2, w, x.shape, self.geom) if needs[0] else None
        gw = _weight_grad(xp, x, gy2, w.shape, self.geom) if needs[1] else None
        gb = gy2.reshape(w.shape[0], -1).sum(axis=1) if need_gb else None
        return (gx, gw, gb)[:len(needs)]

    def gradient(self, gy):
        x, w = self.saved_tensors
        needs = self.needs_input_grad
        geom = _kwargs(self.geom)
        gx = ConvInput.apply(gy, w, x_shape=x.shape, **geom) if needs[0] else None
        gw = ConvWeight.apply(x, gy, w_shape=w.shape, **geom) if needs[1] else None
        gb = gy.sum((0,) + tuple(range(2, gy.ndim))) if len(needs) > 2 and needs[2] else None
        return (gx, gw, gb)[:len(needs)]


class ConvInput(Function):
    """gx of conv(x, w) for the output gradient gy: the transposed convolution of gy with w, of shape ``x_shape``
    (plus b[c] on channel c, where a third input b is given: a transposed convolution's bias).

    Linear in gy and in w; its gradient is conv(u, w) for gy, ConvWeight(u, gy) for w, and Σ u for b.
    """

    def forward(self, gy, w, *b, x_shape, stride, padding, dilation, groups):
        gx = self._transposed(gy, w, x_shape, stride, padding, dilation, groups)
        if b:
            # NOTE: added in place, to the fresh gx: as an op of its own, the sum made one more array as large as
            # the output (a transposed 2-D convolution's forward spent 0.23 of 1.3 ms on it)
            gx += b[0].reshape((1, -1) + (1,) * (gx.ndim - 2))
        return gx

    def _transposed(self, gy, w, x_shape, stride, padding, dilation, groups):
        self.save_for_backward(gy, w)
        self.x_shape, self.geom = tuple(x_shape), (stride, padding, dilation, gy.shape[2:], groups)
        kernels = compiled_kernels(self.backend, gy)
        full = _full_out(x_shape, w.shape, stride, padding, dilation)
        if kernels is not None and full != gy.shape[2:]:
            # NOTE: an output_padding of a stride or more (a transposed convolution with a larger dilation) makes x
            # hold windows past gy's last position: the kernel, which derives the positions from x's size, gets gy
            # padded with zeros, which add nothing.
            gy = self.xp.pad(gy, ((0, 0), (0, 0)) + tuple((0, f - n) for f, n in zip(full, gy.shape[2:])))
        if kernels is not None:
            s3, p3, d3, _, g = _geom_3d(self.geom)
            gx = kernels.conv_backward(_placeholder(self.xp, _shape_3d(x_shape), gy.dtype),
                                       self.xp.ascontiguousarray(_as_3d(w)), _as_3d(gy), s3, p3, d3, g, True, False,
                                       False)[0]
            return gx.reshape(x_shape)
        return _input_grad(self.xp, _grouped_gy(self.xp, gy, groups), w, x_shape, self.geom)

    def backward(self, u):
        gy, w = self.saved
        kernels = compiled_kernels(self.backend, u)
        if (kernels is not None and all(self.needs_input_grad[:2])
                and _full_out(u.shape, w.shape, *self.geom[:3]) == tuple(gy.shape[2:])):
            # a transposed convolution's backward: conv(u, w) and ConvWeight(u, gy) from one im2col of u per chunk
            xp = self.xp
            s3, p3, d3, _, g = _geom_3d(self.geom)
            ggy, gw = kernels.conv_and_weight_grad(xp.ascontiguousarray(_as_3d(u)), xp.ascontiguousarray(_as_3d(w)),
                                                   _as_3d(gy), s3, p3, d3, g)
            return (ggy.reshape(gy.shape), gw.reshape(w.shape)) + _bias_grad(self, u)
        return _conv_input_grads(self, u, gy, w, lambda *a, **k: _array(Convolution, self, *a, **k),
                                 lambda *a, **k: _array(ConvWeight, self, *a, **k))

    def gradient(self, u):
        gy, w = self.saved_tensors
        return _conv_input_grads(self, u, gy, w, Convolution.apply, ConvWeight.apply)


def _conv_input_grads(fn, u, gy, w, conv, weight_grad):
    geom = _kwargs(fn.geom)
    ggy = _crop(conv(u, w, **geom), gy.shape[2:]) if fn.needs_input_grad[0] else None
    gw = weight_grad(u, gy, w_shape=w.shape, **geom) if fn.needs_input_grad[1] else None
    return (ggy, gw) + _bias_grad(fn, u)


def _bias_grad(fn, u):
    """(gb,) for ConvInput's bias, Σ u over all but the channels (None if not needed), or () where it has none."""
    needs = fn.needs_input_grad
    if len(needs) < 3:
        return ()
    return (u.sum((0,) + tuple(range(2, u.ndim))) if needs[2] else None,)


def _full_out(x_shape, w_shape, stride, padding, dilation):
    """The spatial output shape of a convolution of an input of x_shape."""
    return tuple(out_size(n, k, s, p, d) for n, k, s, p, d in zip(x_shape[2:], w_shape[2:], stride, padding, dilation))


def _crop(y, spatial):
    """y's first positions along each spatial dim, as many as ``spatial`` (all of them, usually): where gy covers
    fewer positions than a convolution of x gives (see ConvInput.forward), the rest are not in the graph."""
    if tuple(y.shape[2:]) == tuple(spatial):
        return y
    return y[(slice(None), slice(None)) + tuple(slice(0, n) for n in spatial)]


class ConvWeight(Function):
    """gw of conv(x, w) for the output gradient gy: Σ over samples and positions of gy times the windows of x,
    of shape ``w_shape``.

    Linear in x and in gy; its gradient is ConvInput(gy, v) for x and conv(x, v) for gy.
    """

    def forward(self, x, gy, w_shape, stride, padding, dilation, groups):
        self.save_for_backward(x, gy)
        self.geom = (stride, padding, dilation, gy.shape[2:], groups)
        kernels = compiled_kernels(self.backend, x)
        if kernels is not None:
            s3, p3, d3, _, g = _geom_3d(self.geom)
            w3 = _placeholder(self.xp, _shape_3d(w_shape), x.dtype)
            gw = kernels.conv_backward(self.xp.ascontiguousarray(_as_3d(x)), w3, _as_3d(gy), s3, p3, d3, g, False, True,
                                       False)[1]
            return gw.reshape(w_shape)
        return _weight_grad(self.xp, x, _grouped_gy(self.xp, gy, groups), w_shape, self.geom)

    def backward(self, v):
        x, gy = self.saved
        return _conv_weight_grads(self, v, x, gy, lambda *a, **k: _array(ConvInput, self, *a, **k),
                                  lambda *a, **k: _array(Convolution, self, *a, **k))

    def gradient(self, v):
        x, gy = self.saved_tensors
        return _conv_weight_grads(self, v, x, gy, ConvInput.apply, Convolution.apply)


def _conv_weight_grads(fn, v, x, gy, input_grad, conv):
    geom = _kwargs(fn.geom)
    gx = input_grad(gy, v, x_shape=x.shape, **geom) if fn.needs_input_grad[0] else None
    ggy = _crop(conv(x, v, **geom), gy.shape[2:]) if fn.needs_input_grad[1] else None
    return gx, ggy


def _array(cls, fn, *arrays, **kwargs):
    """cls's forward on arrays, from inside a backward on arrays (no graph, no Tensors)."""
    op = cls._node(fn.device, (False,) * len(arrays))
    return op.forward(*arrays, **kwargs)


def _kwargs(geom):
    stride, padding, dilation, _, groups = geom
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


# ---- 1-D and 2-D as 3-D, for the compiled kernels ------------------------------------------------------------------
def _shape_3d(shape):
    """A 1-D convolution's (N, C, L) shape as (N, C, 1, 1, L), a 2-D one's (N, C, H, W) as (N, C, 1, H, W)."""
    return tuple(shape[:2]) + (1,) * (5 - len(shape)) + tuple(shape[2:])


def _as_3d(a):
    return a.reshape(_shape_3d(a.shape))


def _geom_3d(geom):
    """geom with a leading depth (and height) of one position: stride 1, no padding, dilation 1."""
    stride, padding, dilation, out, groups = geom
    lead = 3 - len(stride)
    return ((1,) * lead + tuple(stride), (0,) * lead + tuple(padding), (1,) * lead + tuple(dilation),
            (1,) * lead + tuple(out), groups)


def _placeholder(xp, shape, dtype):
    """An array of ``shape`` that is never read (the kernel needs only its shape): zeros with zero strides."""
    return xp.broadcast_to(xp.zeros((), dtype=dtype), tuple(shape))


# ---- the array code: im2col, the GEMMs, col2im -----------------------------------------------------------------------
def _window(a, offset, stride, dilation, out):
    """a[..., offset·dilation + stride·position] for every output position: one kernel offset's strided view."""
    return a[(Ellipsis,) + tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                                 for o, s, d, n in zip(offset, stride, dilation, out))]


def _padded_channels_first(xp, x, padding):
    """x (N, C, *spatial) as a zero-padded (C, N, *padded spatial) array."""
    n, c = x.shape[:2]
    out = xp.zeros((c, n) + tuple(s + 2 * p for s, p in zip(x.shape[2:], padding)), dtype=x.dtype)
    out[(slice(None), slice(None)) + tuple(slice(p, p + s) for s, p in zip(x.shape[2:], padding))] = \
        x.transpose((1, 0) + tuple(range(2, x.ndim)))
    return out


def _columns(xp, x, w_shape, geom):
    """im2col: x's windows as (G, C/G*prod(kernel), N*prod(out)), channel-major."""
    stride, padding, dilation, out, groups = geom
    n, c = x.shape[:2]
    kernel = tuple(w_shape[2:])
    xt = _padded_channels_first(xp, x, padding)                            # (C, N, *padded)
    cols = xp.empty((c,) + kernel + (n,) + tuple(out), dtype=x.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        cols[(slice(None),) + offset] = _window(xt, offset, stride, dilation, out)
    return cols.reshape(groups, c // groups * math.prod(kernel), n * math.prod(out))


def _conv_from_columns(xp, cols, w, b, n, out, groups):
    """y (N, O, *out) = W @ cols per group, plus b."""
    o = w.shape[0]
    y = xp.matmul(w.reshape(groups, o // groups, -1), cols).reshape(o, n * math.prod(out))
    if b is not None:
        y += b[:, None]
    return xp.ascontiguousarray(y.reshape((o, n) + tuple(out)).transpose((1, 0) + tuple(range(2, 2 + len(out)))))


def _grouped_gy(xp, gy, groups):
    """gy (N, O, *out) as (G, O/G, N*prod(out)), the layout of the columns' products."""
    n, o = gy.shape[:2]
    return xp.ascontiguousarray(gy.transpose((1, 0) + tuple(range(2, gy.ndim)))).reshape(groups, o // groups, -1)


def _input_grad(xp, gy2, w, x_shape, geom):
    """col2im of W^T gy: every column's gradient added back where its window read x."""
    stride, padding, dilation, out, g = geom
    n, c = x_shape[:2]
    o, kernel = w.shape[0], tuple(w.shape[2:])
    gcols = xp.matmul(w.reshape(g, o // g, -1).transpose(0, 2, 1), gy2).reshape((c,) + kernel + (n,) + tuple(out))
    gxt = xp.zeros((c, n) + tuple(s + 2 * p for s, p in zip(x_shape[2:], padding)), dtype=gy2.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        _window(gxt, offset, stride, dilation, out)[...] += gcols[(slice(None),) + offset]
    inner = gxt[(slice(None), slice(None)) + tuple(slice(p, p + s) for s, p in zip(x_shape[2:], padding))]
    return xp.ascontiguousarray(inner.transpose((1, 0) + tuple(range(2, inner.ndim))))


def _weight_grad(xp, x, gy2, w_shape, geom):
    """Σ gy times the windows of x, per group: gy2 @ cols^T."""
    cols = _columns(xp, x, w_shape, geom)
    return xp.matmul(gy2, cols.transpose(0, 2, 1)).reshape(w_shape)


# ---- the public functions: PyTorch's arguments, checks and errors --------------------------------------------------
def _tuple(v, d, name, op):
    """An int or a sequence of d ints as a d-tuple."""
    t = (v,) * d if isinstance(v, int) and not isinstance(v, bool) else tuple(v)
    if len(t) == 1 and d > 1:
        t = t * d
    if len(t) != d or not all(isinstance(i, int) and not isinstance(i, bool) for i in t):
        raise ValueError(f"{op}: expected {name} to be a single integer value or a list of {d} values to match the "
                         f"convolution dimensions, but got {name}={v!r}")
    return t


def _check_common(op, d, x, weight, bias, transposed):
    """The checks both kinds share; returns (x as batched, whether it was unbatched)."""
    check_tensor(op, x)
    check_tensor(op, weight, "weight", 2)
    if bias is not None:
        check_tensor(op, bias, "bias", 3)
    if x.ndim not in (d + 1, d + 2):
        raise ValueError(f"Expected {d + 1}D (unbatched) or {d + 2}D (batched) input to {op}, but got input of size: "
                         f"{list(x.shape)}")
    for t in (weight, bias):
        if t is not None and t.dtype != x.dtype:
            raise RuntimeError(f"{op}: Input type ({x.dtype}) and weight type ({t.dtype}) should be the same; convert "
                               f"the input with .to({t.dtype}) or the model with .to({x.dtype})")
        if t is not None and t.device is not x.device:
            raise RuntimeError(f"{op}: input is on {x.device} but the weight is on {t.device}; move the model with "
                               f".to('{x.device}')")
    if x.dtype.kind != "f":
        raise RuntimeError(f"{op}: expected a floating-point input, got {x.dtype}; convert it first, e.g. x.float()")
    if weight.ndim != d + 2:
        layout = "(in_channels, out_channels/groups, *kernel)" if transposed else "(out_channels, in_channels/groups, " \
                                                                                  "*kernel)"
        raise ValueError(f"{op}: Expected {d + 2}-dimensional weight {layout} for {d + 2}-dimensional input, but got "
                         f"{weight.ndim}-dimensional weight of size {list(weight.shape)}")
    unbatched = x.ndim == d + 1
    return (x.unsqueeze(0) if unbatched else x), unbatched


def _check_geometry(op, stride, dilation, padding, groups):
    if min(stride) < 1:
        raise ValueError(f"{op}: non-positive stride is not supported (got stride={stride})")
    if min(dilation) < 1:
        raise ValueError(f"{op}: dilation should be greater than zero (got dilation={dilation})")
    if not isinstance(padding, str) and min(padding) < 0:
        raise ValueError(f"{op}: negative padding is not supported (got padding={padding})")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: non-positive groups is not supported (got groups={groups!r})")


def convolution(x, weight, bias, stride, padding, dilation, groups, d, op):
    """torch.nn.functional.conv{d}d: the cross-correlation of x (N, C, *spatial) or (C, *spatial) with weight
    (O, C/groups, *kernel), plus bias (O,). padding is ints, 'valid' (none) or 'same' (the output keeps the input's
    size; stride 1 only; an odd total padding puts the extra row after the input, as in PyTorch)."""
    x, unbatched = _check_common(op, d, x, weight, bias, False)
    stride, dilation = _tuple(stride, d, "stride", op), _tuple(dilation, d, "dilation", op)
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"{op}: Invalid padding string {padding!r}, should be one of ('valid', 'same')")
    else:
        padding = _tuple(padding, d, "padding", op)
    _check_geometry(op, stride, dilation, padding, groups)
    c, o = x.shape[1], weight.shape[0]
    if weight.shape[1] * groups != c:
        raise ValueError(f"{op}: Given groups={groups}, weight of size {list(weight.shape)}, expected input"
                         f"{list(x.shape)} to have {weight.shape[1] * groups} channels, but got {c} channels instead")
    if o % groups:
        raise ValueError(f"{op}: Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                         f"but got weight of size {list(weight.shape)} instead")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"{op}: Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with "
                         f"{o} elements, but got bias of size {list(bias.shape)} instead")
    if padding == "valid":
        padding = (0,) * d
    elif padding == "same":
        if stride != (1,) * d:
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions (got stride {stride})")
        total = [dl * (k - 1) for dl, k in zip(dilation, weight.shape[2:])]
        extra = [t % 2 for t in total]
        if any(extra):
            widths = []
            for e in reversed(extra):
                widths += [0, e]
            x = pad(x, tuple(widths))
        padding = tuple(t // 2 for t in total)
    padded = tuple(n + 2 * p for n, p in zip(x.shape[2:], padding))
    effective = tuple(dl * (k - 1) + 1 for dl, k in zip(dilation, weight.shape[2:]))
    if any(e > n for e, n in zip(effective, padded)):
        raise ValueError(f"{op}: Calculated padded input size per channel: ({' x '.join(map(str, padded))}). Kernel "
                         f"size: ({' x '.join(map(str, effective))}). Kernel size can't be greater than actual input "
                         "size")
    args = (x, weight) if bias is None else (x, weight, bias)
    y = Convolution.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return y.squeeze(0) if unbatched else y


def transposed_output_shape(in_shape, kernel, stride, padding, output_padding, dilation):
    """The spatial output shape of a transposed convolution: (in - 1)·s - 2p + d(k - 1) + output_padding + 1."""
    return tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1
                 for n, k, s, p, op, d in zip(in_shape, kernel, stride, padding, output_padding, dilation))


def transposed_convolution(x, weight, bias, stride, padding, output_padding, groups, dilation, d, op):
    """torch.nn.functional.conv_transpose{d}d: the adjoint of conv{d}d, x (N, C_in, *spatial) with weight
    (C_in, C_out/groups, *kernel), plus bias (C_out,); output_padding adds that many rows after the last
    (it tells apart the input sizes a strided convolution maps to the same output size)."""
    x, unbatched = _check_common(op, d, x, weight, bias, True)
    stride, dilation = _tuple(stride, d, "stride", op), _tuple(dilation, d, "dilation", op)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding={padding!r} is not supported for transposed convolutions; give integers")
    padding, output_padding = _tuple(padding, d, "padding", op), _tuple(output_padding, d, "output_padding", op)
    _check_geometry(op, stride, dilation, padding, groups)
    c = x.shape[1]
    if weight.shape[0] != c:
        raise ValueError(f"{op}: Given transposed=1, weight of size {list(weight.shape)}, expected input"
                         f"{list(x.shape)} to have {weight.shape[0]} channels, but got {c} channels instead")
    if c % groups:
        raise ValueError(f"{op}: Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                         f"but got weight of size {list(weight.shape)} instead")
    if any(p < 0 for p in output_padding) or any(p >= max(s, dl) for p, s, dl in zip(output_padding, stride,
                                                                                      dilation)):
        raise ValueError(f"{op}: output padding must be smaller than either stride or dilation, but got "
                         f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    c_out = weight.shape[1] * groups
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"{op}: Given transposed=1, weight of size {list(weight.shape)}, expected bias to be "
                         f"1-dimensional with {c_out} elements, but got bias of size {list(bias.shape)} instead")
    out = transposed_output_shape(x.shape[2:], weight.shape[2:], stride, padding, output_padding, dilation)
    if min(out) < 1:
        raise ValueError(f"{op}: the output size {list(out)} of input {list(x.shape)} with kernel "
                         f"{list(weight.shape[2:])}, stride {stride}, padding {padding} and dilation {dilation} is "
                         "too small; use less padding")
    y = ConvInput.apply(x, weight, *(() if bias is None else (bias,)), x_shape=(x.shape[0], c_out) + out,
                        stride=stride, padding=padding, dilation=dilation, groups=groups)
    return y.squeeze(0) if unbatched else y

