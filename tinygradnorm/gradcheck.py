"""Finite-difference gradient checking: autograd's gradients against central differences.

For a random upstream gradient ``gy`` the scalar ``f(x) = sum(fn(x) * gy)`` has gradient
``d f / d x``, which backward computes as a vector-Jacobian product. Each element of that is
compared with ``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``. With ``fast=True`` a single
random direction ``v`` over all inputs is used instead: ``<grad, v>`` against
``(f(x + eps v) - f(x - eps v)) / (2 eps)``, which costs two evaluations whatever the size.

``gradgradcheck`` checks second derivatives the same way: it runs gradcheck on the function
``(x, gy) -> d<fn(x), gy>/dx``, whose own gradient is the double backward.
"""
import warnings

import numpy as np

from .autograd.grad_mode import enable_grad, no_grad
from .dtypes import float64
from .tensor import Tensor

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, fast=False, *, _names=None):
    """True when the backward of ``fn`` matches central finite differences for every input that requires grad.

    ``inputs`` is a Tensor or a tuple of arguments for ``fn``; only Tensors with
    ``requires_grad`` are checked, in float64. On failure raises GradcheckError naming
    the input, the worst element and both values, or returns False when
    ``raise_exception`` is False. ``fn`` must be deterministic: gradcheck calls it many times.
    """
    args = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    checked = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad; create the inputs with requires_grad=True")
    for i in checked:
        if args[i].dtype != float64:
            warnings.warn(f"gradcheck: input {i} is {args[i].dtype}, not float64; it is checked as a float64 copy, "
                          "but the function may still compute in lower precision", stacklevel=2)
    # Fresh float64 leaves, so that the caller's tensors and their .grad are never touched.
    args = [Tensor(a.data.astype(float64, copy=True)).requires_grad_() if i in checked else a for i, a in enumerate(args)]
    xp = args[checked[0]].xp

    out = _outputs(fn(*args))
    rng = _host_rng()
    gys = [xp.asarray(rng.standard_normal(o.shape)).astype(o.dtype) for o in out]
    total = None
    for o, gy in zip(out, gys):
        if o.requires_grad:
            term = (o * Tensor(gy, device=o.device)).sum()
            total = term if total is None else total + term
    if total is None:
        raise ValueError("gradcheck: no output of fn depends on the inputs that require grad")
    total.backward()
    analytic = [args[i].grad.data if args[i].grad is not None else xp.zeros_like(args[i].data) for i in checked]

    def f():
        with no_grad():
            res = _outputs(fn(*args))
        return sum(float((r.data.astype(float64) * gy).sum()) for r, gy in zip(res, gys))

    if fast:
        return _check_direction(f, args, checked, analytic, rng, eps, atol, rtol, raise_exception)
    for i, a in zip(checked, analytic):
        numeric = _numeric_grad(f, args[i].data, eps)
        ok, report = _compare(a, numeric, atol, rtol, xp)
        if not ok:
            name = _names(i) if _names else f"gradcheck failed for input {i}"
            return _fail(f"{name} (shape {tuple(args[i].shape)}): {report}", raise_exception)
    return True


def _outputs(out):
    if isinstance(out, Tensor):
        return [out]
    if not isinstance(out, (tuple, list)):
        raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors (got {type(out).__name__}); "
                        "build the result from the inputs with tinygradnorm ops")
    out = [o for o in out if isinstance(o, Tensor)]
    if not out:
        raise TypeError("gradcheck: fn must return a Tensor or a tuple of Tensors (got none among its results)")
    return out


def _host_rng():
    """A generator of its own, so that checks repeat and never move the global seed."""
    return np.random.default_rng(1234)


def _numeric_grad(f, x, eps):
    """Central differences of f with respect to every element of x, perturbing x in place."""
    flat = x.reshape(-1)
    values = []
    for k in range(flat.size):
        orig = flat[k].item()
        flat[k] = orig + eps
        plus = f()
        flat[k] = orig - eps
        minus = f()
        flat[k] = orig
        values.append((plus - minus) / (2 * eps))
    return values


def _compare(analytic, numeric, atol, rtol, xp):
    a = xp.asarray(analytic, dtype=float64).reshape(-1)
    n = xp.asarray(numeric, dtype=float64).reshape(-1)
    if a.size == 0:
        return True, ""
    excess = xp.abs(a - n) - (atol + rtol * xp.abs(n))
    bad = ~(excess <= 0)  # NaN counts as a failure
    if not bool(bad.any()):
        return True, ""
    k = int(xp.where(bad, xp.nan_to_num(excess, nan=float("inf")), -float("inf")).argmax())
    shape = tuple(analytic.shape)
    index = tuple(int(i) for i in _unravel(k, shape))
    av, nv = float(a[k]), float(n[k])
    abs_err = abs(av - nv)
    rel_err = abs_err / abs(nv) if nv else float("inf")
    return False, (f"worst element {index}: analytic {av:.10g} vs numeric {nv:.10g}, abs error {abs_err:.3g}, "
                   f"rel error {rel_err:.3g} (atol={atol:g}, rtol={rtol:g}; {int(bad.sum())} of {a.size} "
                   "elements out of tolerance)")


def _unravel(k, shape):
    index = []
    for n in reversed(shape):
        index.append(k % n)
        k //= n
    return reversed(index)


def _check_direction(f, args, checked, analytic, rng, eps, atol, rtol, raise_exception):
    xp = args[checked[0]].xp
    directions = [xp.asarray(rng.standard_normal(args[i].shape)) for i in checked]
    predicted = sum(float((a.astype(float64) * v).sum()) for a, v in zip(analytic, directions))
    originals = [args[i].data.copy() for i in checked]
    for i, v, x0 in zip(checked, directions, originals):
        args[i].data[...] = x0 + eps * v
    plus = f()
    for i, v, x0 in zip(checked, directions, originals):
        args[i].data[...] = x0 - eps * v
    minus = f()
    for i, x0 in zip(checked, originals):
        args[i].data[...] = x0
    numeric = (plus - minus) / (2 * eps)
    abs_err = abs(predicted - numeric)
    if abs_err <= atol + rtol * abs(numeric):
        return True
    rel_err = abs_err / abs(numeric) if numeric else float("inf")
    names = ", ".join(str(i) for i in checked)
    return _fail(f"gradcheck (fast) failed for inputs {names} along a random direction: analytic {predicted:.10g} "
                 f"vs numeric {numeric:.10g}, abs error {abs_err:.3g}, rel error {rel_err:.3g} "
                 f"(atol={atol:g}, rtol={rtol:g}); run with fast=False to find the element", raise_exception)


def _fail(message, raise_exception):
    if raise_exception:
        raise GradcheckError(message)
    return False


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, fast=False):
    """True when the second derivatives of ``fn`` match finite differences of its first ones, as
    torch.autograd.gradgradcheck: gradcheck of ``(inputs, gy) -> d<fn(inputs), gy>/d inputs``, with respect to
    the inputs that require grad and to ``gy``.

    ``grad_outputs`` (one Tensor per output of fn) is ``gy``; by default it is random. On failure the
    GradcheckError names the input or grad_output, the worst element and both values.
    """
    args = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    checked = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
    if not checked:
        raise ValueError("gradgradcheck: no input requires grad; create the inputs with requires_grad=True")
    args = [Tensor(a.data.astype(float64, copy=True)).requires_grad_() if i in checked else a for i, a in enumerate(args)]
    with enable_grad():
        outs = _outputs(fn(*args))
    if grad_outputs is None:
        rng = np.random.default_rng(4321)
        gys = [Tensor(o.xp.asarray(rng.standard_normal(o.shape)), dtype=float64, device=o.device) for o in outs]
    else:
        gys = list(grad_outputs) if isinstance(grad_outputs, (tuple, list)) else [grad_outputs]
        if len(gys) != len(outs):
            raise ValueError(f"gradgradcheck: {len(gys)} grad_outputs for {len(outs)} outputs of fn; give one per "
                             "output")
        gys = [Tensor(g.data.astype(float64, copy=True), device=g.device) for g in gys]
    gys = [g.requires_grad_() for g in gys]
    n = len(args)

    def first_derivatives(*values):
        from .autograd.engine import grad
        xs, gs = list(values[:n]), values[n:]
        with enable_grad():
            ys = _outputs(fn(*xs))
            pairs = [(y, g) for y, g in zip(ys, gs) if y.requires_grad]
            grads = grad([y for y, _ in pairs], [xs[i] for i in checked], [g for _, g in pairs], create_graph=True,
                         allow_unused=True, materialize_grads=True)
        return tuple(grads)

    def name(i):
        if i < n:
            return f"gradgradcheck failed for input {i}"
        return f"gradgradcheck failed for grad_outputs[{i - n}]"

    return gradcheck(first_derivatives, tuple(args) + tuple(gys), eps, atol, rtol, raise_exception, fast,
                     _names=name)
