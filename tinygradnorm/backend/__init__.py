"""Backend selection: a device name ("cpu", "cuda", "cuda:N") maps to one backend object.

Only this package knows which array library is underneath. Everything else asks a
tensor for its device and uses ``device.backend.xp``.
"""
import os
import threading

from .numpy_backend import NumpyBackend
from .cupy_backend import CupyBackend

__all__ = ["Device", "device", "default_device", "manual_seed", "cuda_available", "is_array", "transfer"]

_NUMPY = NumpyBackend()
_DEVICES = {}
_DEVICES_LOCK = threading.Lock()
_SEED = [None]


class Device:
    """A place where arrays live. Interned: ``device("cuda") is device("cuda:0")``."""

    __slots__ = ("type", "index", "backend")

    def __init__(self, type, index, backend):
        self.type, self.index, self.backend = type, index, backend

    def __repr__(self):
        return f"device(type='{self.type}'" + ("" if self.index is None else f", index={self.index}") + ")"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except ValueError:
                return False
        return self is other

    def __hash__(self):
        return hash(str(self))

    def __reduce__(self):
        # NOTE: a device pickles (and deep-copies) as its name, so that nothing the backend holds
        # (thread pools, per-thread scratch arrays) is reachable from a pickled tensor.
        return device, (str(self),)


def _parse(name):
    if isinstance(name, Device):
        return name.type, name.index
    if not isinstance(name, str):
        raise TypeError(f"device must be a str like 'cpu', 'cuda' or 'cuda:0' (got {type(name).__name__} {name!r})")
    name = name.strip().lower()
    if name == "cpu":
        return "cpu", None
    if name == "cuda":
        return "cuda", 0
    if name.startswith("cuda:") and name[5:].isdigit():
        return "cuda", int(name[5:])
    raise ValueError(f"unknown device {name!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def device(name):
    """The Device for a name such as "cpu", "cuda" or "cuda:1"."""
    if isinstance(name, Device):
        return name
    key = _parse(name)
    dev = _DEVICES.get(key)
    if dev is None:
        with _DEVICES_LOCK:                 # two threads asking at once must get the same Device
            dev = _DEVICES.get(key)
            if dev is None:
                backend = _NUMPY if key[0] == "cpu" else CupyBackend(key[1])
                if key[0] == "cuda" and _SEED[0] is not None:
                    backend._pending_seed = _SEED[0]
                dev = _DEVICES[key] = Device(key[0], key[1], backend)
    if dev.type == "cuda" and dev.backend._xp is None:
        _ = dev.backend.xp  # raises a clear error when CuPy or the GPU is missing
        pending = getattr(dev.backend, "_pending_seed", None)
        if pending is not None:
            dev.backend.seed(pending)
    return dev


def default_device():
    """The device named by $TINYGRADNORM_DEVICE, or "cpu" when it is unset."""
    return device(os.environ.get("TINYGRADNORM_DEVICE") or "cpu")


def cuda_available():
    """Whether CuPy and a GPU are usable (``tinygradnorm.cuda.unavailable_reason()`` says why not)."""
    return CupyBackend(0).available()[0]


def device_of_array(array):
    """The Device that owns a raw NumPy or CuPy array."""
    if hasattr(array, "__cuda_array_interface__"):
        return device(f"cuda:{array.device.id}")
    return device("cpu")


def transfer(array, src, dst):
    """``array`` (living on Device src) as an array on Device dst; the same array when src is dst."""
    if src is dst:
        return array
    return dst.backend.asarray(src.backend.to_host(array) if dst.type == "cuda" else array)


def is_array(obj):
    """True for a NumPy or CuPy ndarray."""
    return isinstance(obj, _NUMPY.xp.ndarray) or hasattr(obj, "__cuda_array_interface__")


def manual_seed(seed):
    """Seed the random generator of every backend, including GPUs started later."""
    seed = int(seed)
    _SEED[0] = seed
    _NUMPY.seed(seed)
    for dev in _DEVICES.values():
        if dev.type == "cuda" and dev.backend._xp is not None:
            dev.backend.seed(seed)
        elif dev.type == "cuda":
            dev.backend._pending_seed = seed
