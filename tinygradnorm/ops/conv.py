"""conv2d and 2-D pooling with hand-derived backward passes.

Forward reads every window through a strided view (no copy until the matmul needs one).
Backward scatters window gradients back with one slice-add per kernel offset, so the only
Python loop is over the KH*KW offsets, never over the batch or the pixels.
"""
from ..autograd import Function
from ._util import compiled_kernels


def _pair(v, name):
    v = (v, v) if isinstance(v, int) else tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) for i in v):
        raise ValueError(f"{name} must be an int or a pair of ints (got {v!r})")
    return v


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _window(a, i, j, stride, dilation, out_hw):
    """a[..., i*dh + sh*oh, j*dw + sw*ow] for every output position (oh, ow): one kernel offset's view."""
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    return a[..., i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]


def _add_windows(gx, gwin, stride, dilation, out_hw):
    """The adjoint of taking windows: gx[..., i*dh + sh*oh, j*dw + sw*ow] += gwin[..., i, j, :, :]."""
    kh, kw = gwin.shape[-4], gwin.shape[-3]
    for i in range(kh):
        for j in range(kw):
            _window(gx, i, j, stride, dilation, out_hw)[...] += gwin[..., i, j, :, :]


def _padded_channels_first(xp, x, padding):
    """x (N, C, H, W) as a zero-padded (C, N, H + 2ph, W + 2pw) array."""
    (ph, pw), (n, c, h, w) = padding, x.shape
    out = xp.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    out[:, :, ph: ph + h, pw: pw + w] = x.transpose(1, 0, 2, 3)
    return out


class Conv2d(Function):
    """y[n,o] = sum_{c,i,j} w[o,c,i,j] * x_padded[n, c, s*h + d*i, s*w + d*j] (+ b[o]).

    The batch is folded into the matrix product: the columns are laid out (C*KH*KW, N*OH*OW),
    so forward, the weight gradient and the input gradient are each one large GEMM, and
    building or scattering the columns moves contiguous blocks, one kernel offset at a time.

    Where the backend has compiled kernels, ``kernels.conv2d_forward`` and ``conv2d_backward``
    do the same maths a cache-sized chunk of samples at a time (see cpu_kernels.py): backward
    rebuilds each chunk's columns from x (which the graph holds anyway) rather than keeping an
    array KH*KW times the size of x.
    """

    def forward(self, x, w, *b, stride, padding, dilation):
        xp = self.xp
        n, c, h, wd = x.shape
        o, _, kh, kw = w.shape
        oh = _out_size(h, kh, stride[0], padding[0], dilation[0])
        ow = _out_size(wd, kw, stride[1], padding[1], dilation[1])
        self.w, self.x_shape = w, x.shape
        self.geom = (stride, padding, dilation, (oh, ow))
        self.kernels = compiled_kernels(self.backend, x)
        if self.kernels is not None:
            self.x = x = xp.ascontiguousarray(x)
            return self.kernels.conv2d_forward(x, xp.ascontiguousarray(w), b[0] if b else None,
                                               stride, padding, dilation, (oh, ow))
        xt = _padded_channels_first(xp, x, padding)                       # (C, N, Hp, Wp)
        cols = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)            # im2col
        for i in range(kh):
            for j in range(kw):
                cols[:, i, j] = _window(xt, i, j, stride, dilation, (oh, ow))
        self.cols = cols = cols.reshape(c * kh * kw, n * oh * ow)
        y = w.reshape(o, -1) @ cols                                       # (O, N*OH*OW)
        if b:
            y += b[0][:, None]
        return xp.ascontiguousarray(y.reshape(o, n, oh, ow).transpose(1, 0, 2, 3))

    def backward(self, gy):
        xp, w = self.xp, self.w
        stride, (ph, pw), dilation, (oh, ow) = self.geom
        n, c, h, wd = self.x_shape
        o, _, kh, kw = w.shape
        needs = self.needs_input_grad
        need_gb = len(needs) > 2 and needs[2]
        if self.kernels is not None:
            grads = self.kernels.conv2d_backward(self.x, xp.ascontiguousarray(w), gy, stride, (ph, pw), dilation,
                                                 needs[0], needs[1], need_gb)
            return grads[:len(needs)]
        gy2 = xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(o, n * oh * ow)
        gx = gw = gb = None
        if needs[0]:                                                      # col2im
            gcols = (w.reshape(o, -1).T @ gy2).reshape(c, kh, kw, n, oh, ow)
            gxt = xp.zeros((c, n, h + 2 * ph, wd + 2 * pw), dtype=gy.dtype)
            for i in range(kh):
                for j in range(kw):
                    _window(gxt, i, j, stride, dilation, (oh, ow))[...] += gcols[:, i, j]
            gx = xp.ascontiguousarray(gxt[:, :, ph: ph + h, pw: pw + wd].transpose(1, 0, 2, 3))
        if needs[1]:
            gw = (gy2 @ self.cols.T).reshape(w.shape)
        if need_gb:
            gb = gy2.sum(axis=1)
        return (gx, gw, gb)[:len(needs)]


class AvgPool2d(Function):
    """y = mean of each (padded) window; the padding counts in the mean, as in PyTorch's default."""

    def forward(self, x, kernel, stride, padding):
        xp = self.xp
        (kh, kw), (ph, pw) = kernel, padding
        n, c, h, w = x.shape
        oh, ow = _out_size(h, kh, stride[0], ph, 1), _out_size(w, kw, stride[1], pw, 1)
        self.x_shape, self.geom = x.shape, (kernel, stride, padding, (oh, ow))
        self.kernels = compiled_kernels(self.backend, x)
        if self.kernels is not None:
            return self.kernels.avg_pool2d_forward(xp.ascontiguousarray(x), kernel, stride, padding, (oh, ow))
        if ph or pw:
            x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        y = _window(x, 0, 0, stride, (1, 1), (oh, ow)).astype(x.dtype if x.dtype.kind == "f" else xp.int64)
        for i in range(kh):
            for j in range(kw):
                if i or j:
                    y += _window(x, i, j, stride, (1, 1), (oh, ow))
        if x.dtype.kind != "f":
            # NOTE: integer input gives integer output, the sum divided with truncation toward zero, as in PyTorch.
            return (xp.sign(y) * (xp.abs(y) // (kh * kw))).astype(x.dtype)
        y *= 1 / (kh * kw)
        return y

    def backward(self, gy):
        xp = self.xp
        (kh, kw), stride, (ph, pw), (oh, ow) = self.geom
        n, c, h, w = self.x_shape
        if self.kernels is not None:
            return self.kernels.avg_pool2d_backward(xp.ascontiguousarray(gy), self.x_shape, (kh, kw), stride, (ph, pw))
        g = gy * (1 / (kh * kw))
        if (kh, kw) == stride and not (ph or pw) and (h, w) == (oh * kh, ow * kw):
            # NOTE: windows that tile the input exactly: every input element gets its window's g.
            return xp.broadcast_to(g[:, :, :, None, :, None], (n, c, oh, kh, ow, kw)).reshape(n, c, h, w)
        gxp = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
        for i in range(kh):
            for j in range(kw):
                _window(gxp, i, j, stride, (1, 1), (oh, ow))[...] += g
        return gxp[:, :, ph: ph + h, pw: pw + w] if ph or pw else gxp


class MaxPool2d(Function):
    """y = max of each window (padding never wins); the gradient goes to the element that was picked."""

    def forward(self, x, kernel, stride, padding):
        xp = self.xp
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        n, c, h, w = x.shape
        oh, ow = _out_size(h, kh, sh, ph, 1), _out_size(w, kw, sw, pw, 1)
        if ph or pw:
            lowest = -xp.inf if x.dtype.kind == "f" else xp.iinfo(x.dtype).min    # padding never wins
            x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=lowest)
        win = self.backend.windows(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
        win = win.reshape(n, c, oh, ow, kh * kw)
        self.arg = win.argmax(axis=-1)
        self.x_shape, self.geom = (n, c, h, w), (kernel, stride, padding, (oh, ow))
        return xp.take_along_axis(win, self.arg[..., None], axis=-1)[..., 0]

    def backward(self, gy):
        xp = self.xp
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = self.geom
        n, c, h, w = self.x_shape
        picked = self.arg[:, :, None, :, :] == xp.arange(kh * kw).reshape(1, 1, -1, 1, 1)
        gwin = (picked * gy[:, :, None]).reshape(n, c, kh, kw, oh, ow)
        gxp = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
        _add_windows(gxp, gwin, (sh, sw), (1, 1), (oh, ow))
        return gxp[:, :, ph: ph + h, pw: pw + w]
