"""Matrix multiplication, batched and with PyTorch's 1-D rules."""
from ..autograd.function import Function
from ._util import broadcast_shape, check_tensor, sum_to


class MatMul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return self.backend.matmul(a, b)

    def backward(self, g):
        (a, b), mm = self.saved, self.backend.matmul
        # NOTE: treat a 1-D operand as a matrix (a row for a, a column for b), put the
        # dims it removed back into g, then use the 2-D rules and sum over broadcast batches.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:
            g = g[..., None]
        if a.ndim == 1:
            g = g[..., None, :]
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(mm(g, b2.swapaxes(-1, -2)), a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            gb = sum_to(mm(a2.swapaxes(-1, -2), g), b2.shape).reshape(b.shape)
        return ga, gb

    def gradient(self, g):
        a, b = self.saved_tensors
        a2 = a.unsqueeze(0) if a.ndim == 1 else a
        b2 = b.unsqueeze(1) if b.ndim == 1 else b
        if b.ndim == 1:
            g = g.unsqueeze(-1)
        if a.ndim == 1:
            g = g.unsqueeze(-2)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(g @ b2.transpose(-1, -2), a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            gb = sum_to(a2.transpose(-1, -2) @ g, b2.shape).reshape(b.shape)
        return ga, gb


def matmul(a, b):
    """a @ b with NumPy/PyTorch semantics: batched, broadcast, 1-D operands promoted."""
    check_tensor("matmul", a)
    check_tensor("matmul", b, "other", 2)
    if a.dtype != b.dtype:
        raise RuntimeError(f"matmul: expected m1 and m2 to have the same dtype, but got: {a.dtype} != {b.dtype}; "
                           f"convert one of them, e.g. b.to({a.dtype})")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both arguments need to be at least 1D, but they are {a.ndim}D and {b.ndim}D; "
                         "use * for scalar multiplication")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: mat1 and mat2 shapes cannot be multiplied ({tuple(a.shape)} and "
                         f"{tuple(b.shape)}): the inner dimensions {k_a} and {k_b} must match")
    if a.ndim > 2 and b.ndim > 2:
        broadcast_shape(a.shape[:-2], b.shape[:-2], "matmul (batch dims)")
    return MatMul.apply(a, b)


class Linear(Function):
    """y = x @ w.T + b over the last dim of x; one node instead of three."""

    def forward(self, x, w, *b):
        self.save_for_backward(x, w)
        y = self.backend.matmul(x, w.T)
        if b:
            y += b[0]
        return y

    def backward(self, g):
        (x, w), mm = self.saved, self.backend.matmul
        gx = mm(g, w) if self.needs_input_grad[0] else None
        gw = gb = None
        if self.needs_input_grad[1]:
            gw = mm(g.reshape(-1, g.shape[-1]).T, x.reshape(-1, x.shape[-1]))
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            gb = g.reshape(-1, g.shape[-1]).sum(axis=0)
        return (gx, gw, gb)[:len(self.needs_input_grad)]

    def gradient(self, g):
        x, w = self.saved_tensors
        needs = self.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])
        gx = g @ w if needs[0] else None
        gw = g2.t() @ x.reshape(-1, x.shape[-1]) if needs[1] else None
        gb = g2.sum(0) if len(needs) > 2 and needs[2] else None
        return (gx, gw, gb)[:len(needs)]
