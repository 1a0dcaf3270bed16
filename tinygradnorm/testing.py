"""Checking a gradient worked out by hand against a reference, one intermediate at a time.

    from tinygradnorm.testing import compare, check_steps

    compare("dx_hat", mine, reference)      # prints: dx_hat | exact: False | approximate: True | max diff 2.2e-16
    check_steps({"dvar": dvar, "dmean": dmean}, reference)   # each in order; raises naming the first wrong one

``mine`` and ``reference`` may be Tensors (their ``.grad`` is not taken: pass ``t.grad`` for that),
NumPy arrays or numbers.
"""
import numpy as np

__all__ = ["compare", "check_steps", "StepMismatch"]


class StepMismatch(AssertionError):
    """The first intermediate of a worked-out backward pass that disagrees with the reference."""


def _array(a, what, name):
    if a is None:
        raise StepMismatch(f"{name}: {what} is None; compute it first (a cell left unfilled?)")
    if hasattr(a, "numpy") and callable(a.numpy):
        a = a.numpy()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise StepMismatch(f"{name}: {what} is a {type(a).__name__}, not numbers ({e})") from None


def compare(name, mine, reference, rtol=1e-7, atol=1e-10, quiet=False):
    """Print whether ``mine`` equals ``reference`` exactly, approximately (np.allclose with rtol and atol), and the
    largest absolute difference; return True when approximately equal. A shape mismatch prints as such."""
    a, b = _array(mine, "your value", name), _array(reference, "the reference", name)
    if a.shape != b.shape:
        line = f"{name:<15} | shape {a.shape} where the reference has {b.shape}"
        ok = False
    else:
        exact = bool(np.array_equal(a, b))
        ok = bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        line = f"{name:<15} | exact: {str(exact):<5} | approximate: {str(ok):<5} | max diff: {diff:.2e}"
    if not quiet:
        print(line)
    return ok


def check_steps(mine, reference, rtol=1e-7, atol=1e-10):
    """compare() each of ``mine`` (a dict, name -> value, in the order the steps were computed) against
    ``reference[name]``; raise StepMismatch naming the first that disagrees, with a hint where to look."""
    first_wrong = None
    for name, value in mine.items():
        if name not in reference:
            raise StepMismatch(f"{name}: the checker has no reference for this name; expected one of "
                               f"{', '.join(reference)}")
        if value is None:
            print(f"{name:<15} | not computed yet")
            ok = False
        else:
            ok = compare(name, value, reference[name], rtol, atol)
        if not ok and first_wrong is None:
            first_wrong = name
    if first_wrong is not None:
        raise StepMismatch(f"{first_wrong} is the first intermediate that disagrees with autograd; the steps before it "
                           "are right, so the mistake is in the step that computes it")
    print("all steps agree")
