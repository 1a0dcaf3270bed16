"""Grad mode, per thread: ``no_grad``, ``enable_grad``, ``set_grad_enabled`` and ``inference_mode``.

As in PyTorch, one thread's ``no_grad`` never switches off another thread's graph.
"""
import functools
import threading


class _ThreadState(threading.local):
    """Grad mode and inference mode, one copy per thread (class attributes are each new thread's defaults)."""

    grad_enabled = True
    inference = False


_state = _ThreadState()


def is_grad_enabled():
    """Whether new ops record the graph (in this thread)."""
    return _state.grad_enabled


def is_recording():
    """Whether an op on inputs that require grad records the graph (in this thread): grad mode on and inference mode
    off."""
    return _state.grad_enabled and not _state.inference


def is_inference_mode_enabled():
    """Whether this thread is inside ``inference_mode``."""
    return _state.inference


class _Mode:
    """Base of the grad-mode context managers. Each also decorates a function, with or without parentheses."""

    def __new__(cls, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs and cls._decorates_bare:
            return cls()(args[0])                       # @no_grad without parentheses
        return super().__new__(cls)

    _decorates_bare = True

    def _set(self):
        raise NotImplementedError

    def _clone(self):
        return type(self)()

    def __enter__(self):
        self._saved = (_state.grad_enabled, _state.inference)
        self._set()
        return self

    def __exit__(self, *exc):
        _state.grad_enabled, _state.inference = self._saved

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self._clone():                         # a fresh instance per call: safe across threads
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_Mode):
    """Ops run inside record no graph: ``with no_grad():``, ``@no_grad()`` or ``@no_grad``."""

    def _set(self):
        _state.grad_enabled = False


class enable_grad(_Mode):
    """Re-enables graph recording inside a ``no_grad`` block."""

    def _set(self):
        _state.grad_enabled = True


class set_grad_enabled(_Mode):
    """Set grad mode: as a call (``set_grad_enabled(False)``) it takes effect at once; as a context manager it
    also restores the previous mode on exit."""

    _decorates_bare = False

    def __init__(self, mode):
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled: mode must be a bool (got {type(mode).__name__} {mode!r})")
        self.mode = mode
        self._saved = (_state.grad_enabled, _state.inference)
        _state.grad_enabled = mode

    def _clone(self):
        return set_grad_enabled(self.mode)

    def _set(self):
        pass                                            # already set in __init__

    def __enter__(self):
        return self

    def __call__(self, fn):
        _state.grad_enabled, _state.inference = self._saved   # decorating must not change the mode now
        return super().__call__(fn)


class inference_mode(_Mode):
    """no_grad, and tensors made inside are inference tensors: they may never be saved for backward later.

    ``inference_mode(False)`` switches grad mode back on inside, as in PyTorch.
    """

    def __new__(cls, mode=True):
        if callable(mode) and not isinstance(mode, bool):
            return super().__new__(cls)._decorate(mode)      # @inference_mode without parentheses
        return super().__new__(cls)

    def __init__(self, mode=True):
        if callable(mode) and not isinstance(mode, bool):
            return
        self.mode = bool(mode)

    def _decorate(self, fn):
        self.mode = True
        return self(fn)

    def _clone(self):
        return inference_mode(self.mode)

    def _set(self):
        _state.grad_enabled, _state.inference = not self.mode, self.mode
