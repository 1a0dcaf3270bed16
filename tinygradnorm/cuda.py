"""tinygradnorm.cuda: whether a GPU is usable, how many there are, and waiting for one, as torch.cuda.

    device = "cuda" if tinygradnorm.cuda.is_available() else "cpu"

``unavailable_reason()`` says why not (CuPy missing, no driver, no GPU); the first use of a "cuda"
device raises an error with the same reason.
"""
from .backend import CupyBackend, device

__all__ = ["is_available", "unavailable_reason", "device_count", "synchronize"]


def unavailable_reason(index=0):
    """Why cuda:index cannot be used, or "" when it can."""
    ok, why = CupyBackend(index).available()
    return "" if ok else why


def is_available():
    """True when CuPy imports and sees at least one GPU."""
    return unavailable_reason() == ""


def device_count():
    """How many GPUs CuPy sees (0 without CuPy or a driver)."""
    return CupyBackend.device_count()


def synchronize(dev=None):
    """Wait until every queued kernel on the GPU (default cuda:0) has finished."""
    device(dev if dev is not None else "cuda").backend.synchronize()
