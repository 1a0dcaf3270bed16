"""conv2d, grouped and depthwise included, with a hand-derived backward pass.

The columns (im2col) hold every input channel's windows, channel-major, so the rows of one group
of channels are contiguous: with G groups, each GEMM is one batched product over the groups,
(G, O/G, C/G*KH*KW) @ (G, C/G*KH*KW, P). G = 1 is the plain convolution, G = C the depthwise one.
"""
from ..autograd.function import Function
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

    The gradient, as ops: gx = ConvInput(gy, w) (the transposed convolution), gw = ConvWeight(x, gy), and gb the
    sum of gy. The three ops are each linear in each input, and each one's gradient is made of the three again,
    so a convolution can be differentiated to any order.
    """

    def forward(self, x, w, *b, stride, padding, dilation, groups):
        xp = self.xp
        oh = out_size(x.shape[2], w.shape[2], stride[0], padding[0], dilation[0])
        ow = out_size(x.shape[3], w.shape[3], stride[1], padding[1], dilation[1])
        self.x_shape, self.geom = x.shape, (stride, padding, dilation, (oh, ow), groups)
        kernels = compiled_kernels(self.backend, x)
        if kernels is not None:
            self.save_for_backward(x, w)
            return kernels.conv2d_forward(xp.ascontiguousarray(x), xp.ascontiguousarray(w), b[0] if b else None,
                                          stride, padding, dilation, (oh, ow), groups)
        cols = _columns(xp, x, w.shape, self.geom)
        self.save_for_backward(x, w, cols)
        return _conv_from_columns(xp, cols, w, b[0] if b else None, x.shape[0], (oh, ow), groups)

    def backward(self, gy):
        xp, (x, w, *cols) = self.xp, self.saved
        needs = self.needs_input_grad
        need_gb = len(needs) > 2 and needs[2]
        stride, padding, dilation, out_hw, g = self.geom
        kernels = compiled_kernels(self.backend, x)
        if kernels is not None:
            grads = kernels.conv2d_backward(xp.ascontiguousarray(x), xp.ascontiguousarray(w), gy, stride, padding,
                                            dilation, g, needs[0], needs[1], need_gb)
            return grads[:len(needs)]
        gy2 = _grouped_gy(xp, gy, g)
        gx = _input_grad(xp, gy2, w, x.shape, self.geom) if needs[0] else None
        gw = xp.matmul(gy2, cols[0].transpose(0, 2, 1)).reshape(w.shape) if needs[1] else None
        gb = gy2.reshape(w.shape[0], -1).sum(axis=1) if need_gb else None
        return (gx, gw, gb)[:len(needs)]

    def gradient(self, gy):
        x, w = self.saved_tensors[:2]
        needs = self.needs_input_grad
        stride, padding, dilation, out_hw, g = self.geom
        geom = dict(stride=stride, padding=padding, dilation=dilation, groups=g)
        gx = ConvInput.apply(gy, w, x_shape=x.shape, **geom) if needs[0] else None
        gw = ConvWeight.apply(x, gy, w_shape=w.shape, **geom) if needs[1] else None
        gb = gy.sum((0, 2, 3)) if len(needs) > 2 and needs[2] else None
        return (gx, gw, gb)[:len(needs)]


class ConvInput(Function):
    """gx = the gradient of conv2d(x, w) with respect to x, for the output gradient gy: the transposed
    convolution of gy with w (col2im of W^T gy), of shape ``x_shape``.

    Linear in gy and in w: <u, ConvInput(gy, w)> = <conv2d(u, w), gy>, so its gradient is conv2d(u, w) for gy
    and ConvWeight(u, gy) for w.
    """

    def forward(self, gy, w, x_shape, stride, padding, dilation, groups):
        xp = self.xp
        self.save_for_backward(gy, w)
        self.x_shape, self.geom = x_shape, (stride, padding, dilation, gy.shape[2:], groups)
        kernels = compiled_kernels(self.backend, gy)
        if kernels is not None:
            return kernels.conv2d_backward(_placeholder(xp, x_shape, gy.dtype), xp.ascontiguousarray(w), gy, stride,
                                           padding, dilation, groups, True, False, False)[0]
        return _input_grad(xp, _grouped_gy(xp, gy, groups), w, x_shape, self.geom)

    def gradient(self, u):
        gy, w = self.saved_tensors
        stride, padding, dilation, _, g = self.geom
        geom = dict(stride=stride, padding=padding, dilation=dilation, groups=g)
        ggy = Conv2d.apply(u, w, **geom) if self.needs_input_grad[0] else None
        gw = ConvWeight.apply(u, gy, w_shape=w.shape, **geom) if self.needs_input_grad[1] else None
        return ggy, gw


class ConvWeight(Function):
    """gw = the gradient of conv2d(x, w) with respect to w, for the output gradient gy: Σ over samples and
    positions of gy times the windows of x, of shape ``w_shape``.

    Linear in x and in gy: <v, ConvWeight(x, gy)> = <conv2d(x, v), gy>, so its gradient is ConvInput(gy, v) for
    x and conv2d(x, v) for gy.
    """

    def forward(self, x, gy, w_shape, stride, padding, dilation, groups):
        xp = self.xp
        self.save_for_backward(x, gy)
        self.geom = (stride, padding, dilation, gy.shape[2:], groups)
        kernels = compiled_kernels(self.backend, x)
        if kernels is not None:
            return kernels.conv2d_backward(xp.ascontiguousarray(x), _placeholder(xp, w_shape, x.dtype), gy, stride,
                                           padding, dilation, groups, False, True, False)[1]
        cols = _columns(xp, x, w_shape, self.geom)
        return xp.matmul(_grouped_gy(xp, gy, groups), cols.transpose(0, 2, 1)).reshape(w_shape)

    def gradient(self, v):
        x, gy = self.saved_tensors
        stride, padding, dilation, _, g = self.geom
        geom = dict(stride=stride, padding=padding, dilation=dilation, groups=g)
        gx = ConvInput.apply(gy, v, x_shape=x.shape, **geom) if self.needs_input_grad[0] else None
        ggy = Conv2d.apply(x, v, **geom) if self.needs_input_grad[1] else None
        return gx, ggy


def _placeholder(xp, shape, dtype):
    """An array of ``shape`` that is never read (the kernel needs only its shape): zeros with zero strides."""
    return xp.broadcast_to(xp.zeros((), dtype=dtype), tuple(shape))


def _columns(xp, x, w_shape, geom):
    """im2col: x's windows as (G, C/G*KH*KW, N*OH*OW), channel-major."""
    stride, padding, dilation, (oh, ow), groups = geom
    n, c = x.shape[:2]
    kh, kw = w_shape[2:]
    xt = _padded_channels_first(xp, x, padding)                       # (C, N, Hp, Wp)
    cols = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = window(xt, i, j, stride, dilation, (oh, ow))
    return cols.reshape(groups, c // groups * kh * kw, n * oh * ow)


def _conv_from_columns(xp, cols, w, b, n, out_hw, groups):
    """y (N, O, OH, OW) = W @ cols per group, plus b."""
    o = w.shape[0]
    y = xp.matmul(w.reshape(groups, o // groups, -1), cols).reshape(o, n * out_hw[0] * out_hw[1])
    if b is not None:
        y += b[:, None]
    return xp.ascontiguousarray(y.reshape(o, n, *out_hw).transpose(1, 0, 2, 3))


def _grouped_gy(xp, gy, groups):
    """gy (N, O, OH, OW) as (G, O/G, N*OH*OW), the layout of the columns' products."""
    n, o = gy.shape[:2]
    return xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(groups, o // groups, -1)


def _input_grad(xp, gy2, w, x_shape, geom):
    """col2im of W^T gy: every column's gradient added back where its window read x."""
    stride, (ph, pw), dilation, (oh, ow), g = geom
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    gcols = xp.matmul(w.reshape(g, o // g, -1).transpose(0, 2, 1), gy2).reshape(c, kh, kw, n, oh, ow)
    gxt = xp.zeros((c, n, h + 2 * ph, wd + 2 * pw), dtype=gy2.dtype)
    for i in range(kh):
        for j in range(kw):
            window(gxt, i, j, stride, dilation, (oh, ow))[...] += gcols[:, i, j]
    return xp.ascontiguousarray(gxt[:, :, ph: ph + h, pw: pw + wd].transpose(1, 0, 2, 3))
