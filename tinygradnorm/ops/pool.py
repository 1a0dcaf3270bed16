"""2-D pooling with hand-derived backward passes: average, max (and its inverse, max_unpool2d), adaptive average.

Windows follow PyTorch's geometry: output size ``(size + 2p - d(k - 1) - 1) / s + 1``, rounded down,
or up with ceil_mode (then the last window must start inside the input or the left padding).
"""
from ..autograd.function import Function
from ._util import compiled_kernels
from .scatter import Gather, ScatterAdd


def out_size(size, k, s, p, d=1, ceil_mode=False):
    """The number of windows along one dim."""
    span = size + 2 * p - d * (k - 1) - 1
    if span < 0:
        return 0
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1                                 # a window may not start in the right padding
    return n


def _counts(size, k, s, p, n):
    """Per window along one dim: (its size within the padded input, its size within the input)."""
    padded, inside = [], []
    for a in range(n):
        start = a * s - p
        end = min(start + k, size + p)
        padded.append(end - start)
        inside.append(max(0, min(end, size) - max(start, 0)))
    return padded, inside


def avg_divisors(xp, hw, kernel, stride, padding, out_hw, count_include_pad, divisor_override):
    """(OH, OW) divisors of the windows' sums, as PyTorch divides them (0 where a window holds no input)."""
    ph_, ih = _counts(hw[0], kernel[0], stride[0], padding[0], out_hw[0])
    pw_, iw = _counts(hw[1], kernel[1], stride[1], padding[1], out_hw[1])
    inside = xp.asarray(ih, dtype=xp.float64)[:, None] * xp.asarray(iw, dtype=xp.float64)[None, :]
    if divisor_override is not None:
        div = xp.full(inside.shape, float(divisor_override))
    elif count_include_pad:
        div = xp.asarray(ph_, dtype=xp.float64)[:, None] * xp.asarray(pw_, dtype=xp.float64)[None, :]
    else:
        div = inside
    return xp.where(inside > 0, div, 0)


def window(a, i, j, stride, dilation, out_hw):
    """a[..., i*dh + sh*oh, j*dw + sw*ow] for every output position (oh, ow): one kernel offset's view."""
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    return a[..., i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]


def _padded(xp, x, padding, extra, value):
    """x (N, C, H, W) padded by padding on both sides and by extra more on the right and bottom."""
    (ph, pw), (eh, ew) = padding, extra
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=value)


def _extra(hw, kernel, stride, padding, dilation, out_hw):
    """How far the last window reaches past the padded input (ceil_mode), per dim."""
    return tuple(max(0, (o - 1) * s + d * (k - 1) + 1 - (n + 2 * p))
                 for n, k, s, p, d, o in zip(hw, kernel, stride, padding, dilation, out_hw))


class AvgPool2d(Function):
    """y = the sum over each window (the part inside x) divided by its divisor (avg_divisors).

    backward: each window's gradient, divided by the same divisor, goes to each element it covered
    (AvgPool2dBackward, linear in g, whose own gradient is this pooling again).
    Integer input gives integer output, the sum divided with truncation toward zero, as in PyTorch.
    """

    def forward(self, x, kernel, stride, padding, out_hw, div):
        xp = self.xp
        self.x_shape, self.geom = x.shape, (kernel, stride, padding, out_hw)
        inv = xp.where(div != 0, 1 / xp.where(div != 0, div, 1), 0)
        self.save_for_backward(inv, div)
        if x.dtype.kind != "f":
            return _avg_pool_integers(xp, x, self.geom, div)
        return avg_pool_array(self.backend, x, self.geom, inv)

    def backward(self, gy):
        return avg_pool_backward_array(self.backend, gy, self.x_shape, self.geom, self.saved[0])

    def gradient(self, gy):
        return AvgPool2dBackward.apply(gy, x_shape=self.x_shape, geom=self.geom, div=self.saved[1])


class AvgPool2dBackward(Function):
    """AvgPool2d's input gradient as an op of its own: each window's g over its divisor, spread over the window.
    Linear in g, with the pooling itself as its gradient."""

    def forward(self, gy, x_shape, geom, div):
        xp = self.xp
        self.geom = geom
        inv = xp.where(div != 0, 1 / xp.where(div != 0, div, 1), 0)
        self.save_for_backward(inv, div)
        return avg_pool_backward_array(self.backend, gy, x_shape, geom, inv)

    def backward(self, u):
        return avg_pool_array(self.backend, u, self.geom, self.saved[0])

    def gradient(self, u):
        kernel, stride, padding, out_hw = self.geom
        return AvgPool2d.apply(u, kernel=kernel, stride=stride, padding=padding, out_hw=out_hw, div=self.saved[1])


def avg_pool_array(backend, x, geom, inv):
    """The windows' sums times inv (one divisor's inverse per window) of a floating-point x, on arrays."""
    xp = backend.xp
    kernel, stride, padding, out_hw = geom
    kernels = compiled_kernels(backend, x)
    if kernels is not None:
        return kernels.avg_pool2d_forward(xp.ascontiguousarray(x), kernel, stride, padding, inv)
    return _window_sums(xp, x, geom, x.dtype) * inv.astype(x.dtype)


def _window_sums(xp, x, geom, dtype):
    """Each pooling window's sum of x (zero padded), in dtype."""
    kernel, stride, padding, out_hw = geom
    extra = _extra(x.shape[2:], kernel, stride, padding, (1, 1), out_hw)
    xpad = _padded(xp, x, padding, extra, 0)
    total = window(xpad, 0, 0, stride, (1, 1), out_hw).astype(dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if i or j:
                total += window(xpad, i, j, stride, (1, 1), out_hw)
    return total


def _avg_pool_integers(xp, x, geom, div):
    """Average pooling of integers: the sums divided with truncation toward zero, as in PyTorch."""
    total = _window_sums(xp, x, geom, xp.int64)
    d = div.astype(xp.int64)
    q = xp.abs(total) // xp.abs(xp.where(d != 0, d, 1))
    return xp.where(d != 0, xp.sign(total) * xp.sign(d) * q, 0).astype(x.dtype)


def avg_pool_backward_array(backend, gy, x_shape, geom, inv):
    """The input gradient of avg_pool_array for the output gradient gy, on arrays."""
    xp = backend.xp
    kernel, stride, padding, out_hw = geom
    n, c, h, w = x_shape
    kernels = compiled_kernels(backend, gy)
    if kernels is not None:
        return kernels.avg_pool2d_backward(xp.ascontiguousarray(gy), x_shape, kernel, stride, padding, inv)
    g = gy * inv.astype(gy.dtype)
    (ph, pw), extra = padding, _extra((h, w), kernel, stride, padding, (1, 1), out_hw)
    gxp = xp.zeros((n, c, h + 2 * ph + extra[0], w + 2 * pw + extra[1]), dtype=gy.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            window(gxp, i, j, stride, (1, 1), out_hw)[...] += g
    return gxp[:, :, ph: ph + h, pw: pw + w]


class MaxPool2d(Function):
    """y = the max over each window (padding never wins); the gradient goes to the element that was picked (the
    first of equal ones, in row-major window order). ``indices`` holds where each max was, as a flat index into
    its (H, W) plane, as PyTorch's return_indices gives it. The gradient adds g at those indices (ScatterAdd over
    each plane), whose own gradient reads them back (Gather): max pooling's backward and unpooling are adjoint."""

    def forward(self, x, kernel, stride, padding, dilation, out_hw, found):
        xp = self.xp
        n, c, h, w = x.shape
        (kh, kw), (ph, pw) = kernel, padding
        lowest = -xp.inf if x.dtype.kind == "f" else xp.iinfo(x.dtype).min
        xpad = _padded(xp, x, padding, _extra((h, w), kernel, stride, padding, dilation, out_hw), lowest)
        windows = xp.stack([window(xpad, i, j, stride, dilation, out_hw) for i in range(kh) for j in range(kw)])
        pick = windows.argmax(axis=0)                                       # (N, C, OH, OW) offsets i * kw + j
        y = xp.take_along_axis(windows, pick[None], axis=0)[0]
        a = xp.arange(out_hw[0])[:, None]
        b = xp.arange(out_hw[1])[None, :]
        rows = a * stride[0] - ph + (pick // kw) * dilation[0]
        cols = b * stride[1] - pw + (pick % kw) * dilation[1]
        indices = found["indices"] = (rows * w + cols).astype(xp.int64)
        self.save_for_backward(indices)
        self.x_shape = x.shape
        return y

    def backward(self, gy):
        return _scatter_to_planes(self.xp, self.backend, gy, self.saved[0], self.x_shape)

    def gradient(self, gy):
        n, c, h, w = self.x_shape
        indices = self.saved[0]
        planes = ScatterAdd.apply(gy.reshape(n * c, -1), index=indices.reshape(n * c, -1), axis=1, shape=(n * c, h * w))
        return planes.reshape(self.x_shape)


def _scatter_to_planes(xp, backend, values, indices, shape):
    """An array of shape (N, C, H, W) of zeros, with values[n, c, ...] added at flat plane indices[n, c, ...]."""
    n, c = shape[:2]
    out = xp.zeros((n * c, shape[2] * shape[3]), dtype=values.dtype)
    planes = xp.arange(n * c)[:, None]
    backend.scatter_add(out, (planes, indices.reshape(n * c, -1)), values.reshape(n * c, -1))
    return out.reshape(shape)


class MaxUnpool2d(Function):
    """The inverse of max_pool2d: each value goes back to where its max came from (flat plane indices), zeros
    elsewhere; backward reads the gradient back from those places (Gather)."""

    def forward(self, x, indices, out_shape):
        xp = self.xp
        n, c = x.shape[:2]
        flat = indices.reshape(n * c, -1)
        self.save_for_backward(flat)
        self.in_shape = x.shape
        y = xp.zeros((n * c, out_shape[2] * out_shape[3]), dtype=x.dtype)
        xp.put_along_axis(y, flat, x.reshape(n * c, -1), axis=1)
        return y.reshape(out_shape)

    def backward(self, gy):
        n, c = self.in_shape[:2]
        g = gy.reshape(n * c, -1)
        return self.xp.take_along_axis(g, self.saved[0], axis=1).reshape(self.in_shape)

    def gradient(self, gy):
        n, c = self.in_shape[:2]
        return Gather.apply(gy.reshape(n * c, -1), index=self.saved[0], axis=1).reshape(self.in_shape)


def adaptive_bins(size, out):
    """PyTorch's bins of adaptive pooling along one dim: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


class AdaptiveAvgPool2d(Function):
    """y = the mean over each adaptive bin; separable, so y = A_h x A_w^T per plane, with A the (out, in)
    averaging matrix of one dim (row i holds 1/len over bin i), and gx = A_h^T g A_w."""

    def forward(self, x, out_hw):
        xp = self.xp
        a_h, a_w = (_averaging(xp, n, o, x.dtype) for n, o in zip(x.shape[2:], out_hw))
        self.save_for_backward(a_h, a_w)
        return xp.matmul(xp.matmul(a_h, x), a_w.T)

    def backward(self, gy):
        xp, (a_h, a_w) = self.xp, self.saved
        return xp.matmul(xp.matmul(a_h.T, gy), a_w)

    def gradient(self, gy):
        a_h, a_w = self.saved_tensors
        return a_h.t() @ gy @ a_w


def _averaging(xp, size, out, dtype):
    a = xp.zeros((out, size), dtype=dtype)
    for i, (lo, hi) in enumerate(adaptive_bins(size, out)):
        a[i, lo:hi] = 1 / (hi - lo)
    return a


def check_window(op, x_hw, kernel, stride, padding, dilation, ceil_mode):
    """The (OH, OW) of a pooling, or PyTorch's error for a window that does not fit."""
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"{op}: kernel_size, stride and dilation must be positive (got kernel_size {kernel}, stride "
                         f"{stride}, dilation {dilation})")
    if padding[0] < 0 or padding[1] < 0 or padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: pad should be at most half of effective kernel size, but got pad={padding} and "
                         f"kernel_size={kernel}")
    out_hw = tuple(out_size(n, k, s, p, d, ceil_mode) for n, k, s, p, d in zip(x_hw, kernel, stride, padding, dilation))
    if min(out_hw) < 1:
        raise ValueError(f"{op}: input of size {tuple(x_hw)} gives output size {out_hw} for kernel {kernel}, stride "
                         f"{stride}, padding {padding}, dilation {dilation}: output size is too small; use a larger "
                         "input or more padding")
    return out_hw


def unpool_size(in_hw, kernel, stride, padding):
    """max_unpool2d's default output size: (in - 1) * stride - 2 * padding + kernel."""
    return tuple((n - 1) * s - 2 * p + k for n, k, s, p in zip(in_hw, kernel, stride, padding))

