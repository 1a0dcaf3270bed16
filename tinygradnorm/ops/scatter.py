"""The adjoint pairs behind every backward that picks or scatters values: each is linear in its input, and its
gradient is the other one, so gradients through them can be taken to any order.

- ``Gather`` (values at indices along an axis, as take_along_axis) and ``ScatterAdd`` (values added into
  zeros at indices along an axis): max over a dim, max pooling and its unpooling, the NLL loss.
- ``GetItem``'s backward, ``IndexPut`` (the gradient put back where x[key] read it, added where an
  integer-array index repeats), whose gradient is x[key] again (movement.py's GetItem).
"""
from ..autograd.function import Function


def _along(xp, index, axis):
    """The full index (one integer array per dim, broadcasting together) that picks index[..] along ``axis``."""
    grids = []
    for d, n in enumerate(index.shape):
        if d == axis:
            grids.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = n
            grids.append(xp.arange(n).reshape(shape))
    return tuple(grids)


class Gather(Function):
    """y = take_along_axis(x, index, axis); the gradient is ScatterAdd of g at the same indices."""

    def forward(self, x, index, axis):
        self.save_for_backward(index)
        self.axis, self.x_shape = axis, x.shape
        return self.xp.take_along_axis(x, index, axis=axis)

    def backward(self, g):
        return scatter_add_array(self.xp, self.backend, g, self.saved[0], self.axis, self.x_shape)

    def gradient(self, g):
        return ScatterAdd.apply(g, index=self.saved[0], axis=self.axis, shape=self.x_shape)


class ScatterAdd(Function):
    """y = zeros(shape) with v added at index along axis (repeats accumulate); the gradient is Gather of g."""

    def forward(self, v, index, axis, shape):
        self.save_for_backward(index)
        self.axis = axis
        return scatter_add_array(self.xp, self.backend, v, index, axis, shape)

    def backward(self, g):
        return self.xp.take_along_axis(g, self.saved[0], axis=self.axis)

    def gradient(self, g):
        return Gather.apply(g, index=self.saved[0], axis=self.axis)


def scatter_add_array(xp, backend, v, index, axis, shape):
    """zeros(shape) with v added at index along axis, on arrays."""
    out = xp.zeros(shape, dtype=v.dtype)
    backend.scatter_add(out, _along(xp, index, axis), v)
    return out


class IndexPut(Function):
    """The gradient of x[key]: zeros of x's shape with g put where x[key] read it (added where an integer-array
    index repeats). Its own gradient is x[key] (GetItem), so the two are each other's adjoint."""

    def forward(self, g, key, advanced, shape):
        self.key, self.advanced = key, advanced
        return index_put_array(self.xp, self.backend, g, key, advanced, shape)

    def backward(self, g):
        return take(g, self.key)

    def gradient(self, g):
        from .movement import GetItem
        return GetItem.apply(g, key=self.key, advanced=self.advanced)


def index_put_array(xp, backend, g, key, advanced, shape):
    """IndexPut's forward on arrays: zeros of ``shape`` with g put at key."""
    gx = xp.zeros(shape, dtype=g.dtype)
    select, rest = key
    target = gx[select] if select is not None else gx
    if advanced:
        backend.scatter_add(target, rest, g)        # NOTE: integer-array indices may repeat; each repeat adds
    else:
        target[rest] = g
    return gx


def take(a, key):
    """a[key] for a key from ``movement.index_key``."""
    select, rest = key
    return (a[select] if select is not None else a)[rest]
