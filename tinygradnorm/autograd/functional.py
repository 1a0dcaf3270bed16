"""Derivatives of whole functions, as torch.autograd.functional: ``vjp``, ``jvp``, ``jacobian``, ``hessian``,
``hvp`` and ``vhp``.

Each takes ``func`` (Tensors in, a Tensor or a tuple of Tensors out) and ``inputs`` (a Tensor or a tuple of
them), and returns Tensors in the same structure. All are built on ``autograd.grad``: a vector-Jacobian
product is one backward; a Jacobian-vector product uses the double-backward trick (the vjp is linear in its
vector u, so the gradient of <vjp(u), v> with respect to u is J v); a Hessian-vector product is the gradient
of <grad f, v>. With ``create_graph=True`` the results can be differentiated again.
"""
from .engine import grad
from .grad_mode import enable_grad

__all__ = ["vjp", "jvp", "jacobian", "hessian", "hvp", "vhp"]


def _tuple(x, what, fn_name):
    is_tuple = isinstance(x, (tuple, list))
    items = tuple(x) if is_tuple else (x,)
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn_name}: the {what} must be a Tensor or a tuple of Tensors, but {what}[{i}] is "
                            f"{type(t).__name__}")
    return is_tuple, items


def _fresh(inputs, create_graph):
    """The inputs as tensors that require grad: the same ones with create_graph (so the result's graph reaches
    them), else detached copies (so the caller's tensors get no graph)."""
    return tuple(t if create_graph and t.requires_grad else t.detach().requires_grad_() for t in inputs)


def _grads(outputs, inputs, grad_outputs, create_graph, strict, fn_name, retain_graph=None):
    """grad of outputs with respect to inputs, zeros where an input is unused (an error when strict)."""
    outs = [o for o in outputs if o.requires_grad]
    gos = [g for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if not outs:
        results = [None] * len(inputs)
    else:
        results = list(grad(outs, inputs, gos, retain_graph=retain_graph, create_graph=create_graph,
                            allow_unused=True))
    for i, (r, x) in enumerate(zip(results, inputs)):
        if r is None:
            if strict:
                raise RuntimeError(f"{fn_name}: the output of the user-provided function is independent of input {i}. "
                                   "This is not allowed in strict mode.")
            results[i] = zeros_like(x)
    return tuple(results)


def _check_v(v, like, fn_name, what="v"):
    is_tuple, vs = _tuple(v, what, fn_name)
    if len(vs) != len(like):
        raise RuntimeError(f"{fn_name}: {what} has {len(vs)} tensors but {len(like)} are expected")
    for i, (a, b) in enumerate(zip(vs, like)):
        if a.shape != b.shape:
            raise RuntimeError(f"{fn_name}: {what}[{i}] has shape {tuple(a.shape)} but the matching tensor has shape "
                               f"{tuple(b.shape)}")
    return vs


def _outputs(func, inputs, fn_name):
    with enable_grad():
        out = func(*inputs)
    return _tuple(out, "outputs", fn_name)


def _shape(is_tuple, items):
    return tuple(items) if is_tuple else items[0]


def _detach(items, create_graph):
    return tuple(t if create_graph else t.detach() for t in items)


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T J): the outputs and the vector-Jacobian product, v one Tensor per output (it may be
    None for a single scalar output)."""
    in_tuple, xs = _tuple(inputs, "inputs", "vjp")
    xs = _fresh(xs, create_graph)
    out_tuple, ys = _outputs(func, xs, "vjp")
    if v is None:
        if len(ys) != 1 or ys[0].numel() != 1:
            raise RuntimeError("vjp: the vector v can only be None if the user-provided function returns a single "
                               "Tensor with a single element")
        vs = (ones_like(ys[0]),)
    else:
        vs = _check_v(v, ys, "vjp")
    g = _grads(ys, xs, vs, create_graph, strict, "vjp")
    return _shape(out_tuple, _detach(ys, create_graph)), _shape(in_tuple, _detach(g, create_graph))


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), J v): the Jacobian-vector product by the double-backward trick, v one Tensor per input (it
    may be None for a single input with a single element)."""
    in_tuple, xs = _tuple(inputs, "inputs", "jvp")
    xs = _fresh(xs, create_graph)
    if v is None:
        if len(xs) != 1 or xs[0].numel() != 1:
            raise RuntimeError("jvp: the vector v can only be None if the input to the user-provided function is a "
                               "single Tensor with a single element")
        vs = (ones_like(xs[0]),)
    else:
        vs = _check_v(v, xs, "jvp")
    out_tuple, ys = _outputs(func, xs, "jvp")
    # u -> J^T u is linear in u, so d<J^T u, v>/du = J v whatever u is: zeros will do.
    us = tuple(zeros_like(y).requires_grad_() for y in ys)
    with enable_grad():
        g = _grads(ys, xs, us, True, strict, "jvp")
        pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi.requires_grad]
        if pairs:
            jv = grad([p for p, _ in pairs], us, [q for _, q in pairs], create_graph=create_graph, allow_unused=True)
        else:
            jv = (None,) * len(us)
    jv = tuple(zeros_like(y) if j is None else j for j, y in zip(jv, ys))
    return _shape(out_tuple, _detach(ys, create_graph)), _shape(out_tuple, _detach(jv, create_graph))


def jacobian(func, inputs, create_graph=False, strict=False):
    """d func(inputs) / d inputs, one row of vector-Jacobian products per output element: a Tensor of shape
    output.shape + input.shape for one input and one output, tuples (of tuples) otherwise."""
    in_tuple, xs = _tuple(inputs, "inputs", "jacobian")
    xs = _fresh(xs, create_graph)
    out_tuple, ys = _outputs(func, xs, "jacobian")
    per_output = []
    for y in ys:
        rows = [[] for _ in xs]
        flat = y.reshape(-1)
        for k in range(flat.numel()):
            g = _grads((flat[k],), xs, (None,), create_graph, strict, "jacobian", retain_graph=True) \
                if y.requires_grad else tuple(zeros_like(x) for x in xs)
            for j, gj in enumerate(g):
                rows[j].append(gj)
        per_output.append(tuple(_assemble(rows[j], y.shape, x.shape, x) for j, x in enumerate(xs)))
    if not in_tuple and not out_tuple:
        return per_output[0][0]
    if not out_tuple:
        return per_output[0]
    if not in_tuple:
        return tuple(p[0] for p in per_output)
    return tuple(per_output)


def _assemble(rows, out_shape, in_shape, like):
    if not rows:
        return zeros(tuple(out_shape) + tuple(in_shape), dtype=like.dtype, device=like.device)
    return stack(rows).reshape(tuple(out_shape) + tuple(in_shape))


def hessian(func, inputs, create_graph=False, strict=False):
    """The Hessian of a function with one scalar output: the jacobian of its gradient."""
    in_tuple, xs = _tuple(inputs, "inputs", "hessian")

    def gradient(*values):
        out_tuple, ys = _outputs(func, values, "hessian")
        if len(ys) != 1 or ys[0].numel() != 1:
            raise RuntimeError("hessian: the function given to hessian should return a single Tensor with a single "
                               f"element (got {len(ys)} outputs of shapes {[tuple(y.shape) for y in ys]})")
        g = _grads(ys, values, (None,), True, strict, "hessian")
        return g if in_tuple else g[0]

    return jacobian(gradient, inputs if in_tuple else xs[0], create_graph, strict)


def _second_order(func, inputs, v, create_graph, strict, fn_name):
    in_tuple, xs = _tuple(inputs, "inputs", fn_name)
    xs = _fresh(xs, create_graph)
    vs = _check_v(v, xs, fn_name) if v is not None else None
    out_tuple, ys = _outputs(func, xs, fn_name)
    if len(ys) != 1 or ys[0].numel() != 1:
        raise RuntimeError(f"{fn_name}: the function given to {fn_name} should return a single Tensor with a single "
                           "element")
    if vs is None:
        if len(xs) != 1 or xs[0].numel() != 1:
            raise RuntimeError(f"{fn_name}: the vector v can only be None if the input to the user-provided function "
                               "is a single Tensor with a single element")
        vs = (ones_like(xs[0]),)
    with enable_grad():
        g = _grads(ys, xs, (None,), True, strict, fn_name)
        pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi.requires_grad]
        hv = _grads([p for p, _ in pairs], xs, [q for _, q in pairs], create_graph, strict, fn_name) if pairs else \
            tuple(zeros_like(x) for x in xs)
    return _shape(out_tuple, _detach(ys, create_graph)), _shape(in_tuple, _detach(hv, create_graph))


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T H): the vector-Hessian product of a scalar function."""
    return _second_order(func, inputs, v, create_graph, strict, "vhp")


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), H v): the Hessian-vector product of a scalar function (H is symmetric, so it equals vhp for
    twice continuously differentiable functions)."""
    return _second_order(func, inputs, v, create_graph, strict, "hvp")


from ..creation import ones_like, zeros, zeros_like  # noqa: E402
from ..ops import stack  # noqa: E402
from ..tensor import Tensor  # noqa: E402
