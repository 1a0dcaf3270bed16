"""conv2d and 2-D pooling with hand-derived backward passes.

Forward reads every window through a strided view (no copy until the matmul needs one).
Backward scatters window gradients back with one slice-add per kernel offset, so the only
Python loop is over the KH*KW offsets, never over the batch or the pixels.
"""
from ..autograd import Function


def _pair(v, name):
    v = (v, v) if isinstance(v, int) else tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) for i in v):
        raise ValueError(f"{name} must be an int or a pair of ints (got {v!r})")
    return v


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _add_windows(gx, gwin, stride, dilation, out_hw):
    """The adjoint of taking windows: gx[..., i*dh + sh*oh, j*dw + sw*ow] += gwin[..., i, j, oh, ow]."""
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    kh, kw = gwin.shape[-4], gwin.shape[-3]
    for i in range(kh):
        for j in range(kw):
            gx[..., i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw] += gwin[..., i, j, :, :]


class Conv2d(Function):
    """y[n,o] = sum_{c,i,j} w[o,c,i,j] * x_padded[n, c, s*h + d*i, s*w + d*j] (+ b[o])."""

    def forward(self, x, w, *b, stride, padding, dilation):
        xp = self.xp
        (ph, pw), (dh, dw), (sh, sw) = padding, dilation, stride
        n, c, h, wd = x.shape
        o, _, kh, kw = w.shape
        oh, ow = _out_size(h, kh, sh, ph, dh), _out_size(wd, kw, sw, pw, dw)
        if ph or pw:
            x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        win = self.backend.windows(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
        win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]           # (N, C, OH, OW, KH, KW)
        cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, oh * ow)  # im2col (copies)
        w2 = w.reshape(o, c * kh * kw)
        y = w2 @ cols                                                      # (N, O, OH*OW)
        if b:
            y += b[0][:, None]
        self.cols, self.w, self.x_shape = cols, w, x.shape
        self.geom = (stride, padding, dilation, (oh, ow))
        return y.reshape(n, o, oh, ow)

    def backward(self, gy):
        xp, w, cols = self.xp, self.w, self.cols
        stride, (ph, pw), dilation, (oh, ow) = self.geom
        n, o = gy.shape[:2]
        o, c, kh, kw = w.shape
        gy = gy.reshape(n, o, oh * ow)
        gx = gw = gb = None
        if self.needs_input_grad[0]:
            gcols = w.reshape(o, -1).T @ gy                                 # (N, C*KH*KW, OH*OW)
            gxp = xp.zeros(self.x_shape, dtype=gy.dtype)
            _add_windows(gxp, gcols.reshape(n, c, kh, kw, oh, ow), stride, dilation, (oh, ow))
            gx = gxp[:, :, ph: self.x_shape[2] - ph, pw: self.x_shape[3] - pw]
        if self.needs_input_grad[1]:
            gw = xp.tensordot(gy, cols, axes=((0, 2), (0, 2))).reshape(w.shape)
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            gb = gy.sum(axis=(0, 2))
        return gx, gw, gb


class AvgPool2d(Function):
    """y = mean of each (padded) window; the padding counts in the mean, as in PyTorch's default."""

    def forward(self, x, kernel, stride, padding):
        xp = self.xp
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        n, c, h, w = x.shape
        oh, ow = _out_size(h, kh, sh, ph, 1), _out_size(w, kw, sw, pw, 1)
        self.x_shape, self.geom = x.shape, (kernel, stride, padding, (oh, ow))
        if (kh, kw) == (sh, sw) and not (ph or pw):
            # NOTE: non-overlapping windows are a reshape, which is much faster than a strided view.
            return x[:, :, :oh * kh, :ow * kw].reshape(n, c, oh, kh, ow, kw).mean(axis=(3, 5))
        if ph or pw:
            x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        win = self.backend.windows(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
        return win.mean(axis=(4, 5))

    def backward(self, gy):
        xp = self.xp
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = self.geom
        n, c, h, w = self.x_shape
        g = gy / (kh * kw)
        if (kh, kw) == (sh, sw) and not (ph or pw):
            gx = xp.zeros(self.x_shape, dtype=gy.dtype)
            gx[:, :, :oh * kh, :ow * kw].reshape(n, c, oh, kh, ow, kw)[...] = g[:, :, :, None, :, None]
            return gx
        gxp = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
        gwin = xp.broadcast_to(g[:, :, None, None], (n, c, kh, kw, oh, ow))
        _add_windows(gxp, gwin, (sh, sw), (1, 1), (oh, ow))
        return gxp[:, :, ph: ph + h, pw: pw + w]


class MaxPool2d(Function):
    """y = max of each window (padding never wins); the gradient goes to the element that was picked."""

    def forward(self, x, kernel, stride, padding):
        xp = self.xp
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        n, c, h, w = x.shape
        oh, ow = _out_size(h, kh, sh, ph, 1), _out_size(w, kw, sw, pw, 1)
        if ph or pw:
            x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-xp.inf)
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
