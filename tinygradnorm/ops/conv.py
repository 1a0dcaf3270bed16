"""conv2d, grouped and depthwise included, with a hand-derived backward pass.

The columns (im2col) hold every input channel's windows, channel-major, so the rows of one group
of channels are contiguous: with G groups, each GEMM is one batched product over the groups,
(G, O/G, C/G*KH*KW) @ (G, C/G*KH*KW, P). G = 1 is the plain convolution, G = C the depthwise one.
"""
from ..autograd import Function
from ._util import compiled_kernels
from .pool import out_size, window


def _padded_channels_first(xp, x, padding):
    """x (N, C, H, W) as a zero-padded (C, N, H + 2ph, W + 2pw) array."""
    (ph, pw), (n, c, h, w) = padding, x.shape
    out = xp.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    out[:, :, ph: ph + h, pw: pw + w] = x.transpose(1, 0, 2, 3)
    return out


class Conv2d(Function):
    """y[n,o] = sum_{c in o's group, i, j} w[o,c,i,j] * x_padded[n, c, s*h + d*i, s*w + d*j] (+ b[o]).

    The batch is folded into the matrix product: the columns are laid out (G, C/G*KH*KW, N*OH*OW),
    so forward, the weight gradient and the input gradient are each one batched GEMM, and
    building or scattering the columns moves contiguous blocks, one kernel offset at a time.

    Where the backend has compiled kernels, ``kernels.conv2d_forward`` and ``conv2d_backward``
    do the same maths a cache-sized chunk of samples at a time (see backend/cpu_kernels/conv.py): backward
    rebuilds each chunk's columns from x (which the graph holds anyway) rather than keeping an
    array KH*KW times the size of x.
    """

    def forward(self, x, w, *b, stride, padding, dilation, groups):
        xp = self.xp
        n, c, h, wd = x.shape
        o, cg, kh, kw = w.shape
        oh = out_size(h, kh, stride[0], padding[0], dilation[0])
        ow = out_size(wd, kw, stride[1], padding[1], dilation[1])
        self.w, self.x_shape, self.groups = w, x.shape, groups
        self.geom = (stride, padding, dilation, (oh, ow))
        self.kernels = compiled_kernels(self.backend, x)
        if self.kernels is not None:
            self.x = x = xp.ascontiguousarray(x)
            return self.kernels.conv2d_forward(x, xp.ascontiguousarray(w), b[0] if b else None,
                                               stride, padding, dilation, (oh, ow), groups)
        xt = _padded_channels_first(xp, x, padding)                       # (C, N, Hp, Wp)
        cols = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)            # im2col
        for i in range(kh):
            for j in range(kw):
                cols[:, i, j] = window(xt, i, j, stride, dilation, (oh, ow))
        self.cols = cols = cols.reshape(groups, cg * kh * kw, n * oh * ow)
        y = xp.matmul(w.reshape(groups, o // groups, -1), cols).reshape(o, n * oh * ow)
        if b:
            y += b[0][:, None]
        return xp.ascontiguousarray(y.reshape(o, n, oh, ow).transpose(1, 0, 2, 3))

    def backward(self, gy):
        xp, w, g = self.xp, self.w, self.groups
        stride, (ph, pw), dilation, (oh, ow) = self.geom
        n, c, h, wd = self.x_shape
        o, cg, kh, kw = w.shape
        needs = self.needs_input_grad
        need_gb = len(needs) > 2 and needs[2]
        if self.kernels is not None:
            grads = self.kernels.conv2d_backward(self.x, xp.ascontiguousarray(w), gy, stride, (ph, pw), dilation,
                                                 g, needs[0], needs[1], need_gb)
            return grads[:len(needs)]
        gy2 = xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(g, o // g, n * oh * ow)
        gx = gw = gb = None
        if needs[0]:                                                      # col2im
            w3 = w.reshape(g, o // g, -1)
            gcols = xp.matmul(w3.transpose(0, 2, 1), gy2).reshape(c, kh, kw, n, oh, ow)
            gxt = xp.zeros((c, n, h + 2 * ph, wd + 2 * pw), dtype=gy.dtype)
            for i in range(kh):
                for j in range(kw):
                    window(gxt, i, j, stride, dilation, (oh, ow))[...] += gcols[:, i, j]
            gx = xp.ascontiguousarray(gxt[:, :, ph: ph + h, pw: pw + wd].transpose(1, 0, 2, 3))
        if needs[1]:
            gw = xp.matmul(gy2, self.cols.transpose(0, 2, 1)).reshape(w.shape)
        if need_gb:
            gb = gy2.reshape(o, -1).sum(axis=1)
        return (gx, gw, gb)[:len(needs)]
