"""Reverse-mode autograd: the Function base class, grad mode, version checks and the backward walk.

Every op is a Function subclass with ``forward`` (raw arrays in, a raw array out) and
``backward`` (the output's gradient in, one gradient or None per input out), side by
side. ``Function.apply`` runs forward and, when a gradient is wanted, links the output
to the Function so that ``backward`` can find its way back.

The graph's edges lead from a Function to the Functions that made its inputs (or, for a
leaf, to the leaf tensor itself), never through the tensors in between. So when an in-place
op gives a tensor a new grad_fn, what earlier uses of that tensor differentiate is unchanged.

Grad mode is per thread, as in PyTorch: one thread's ``no_grad`` never switches off another
thread's graph.
"""
import functools
import threading
import weakref


class _ThreadState(threading.local):
    """Grad mode and inference mode, one copy per thread (class attributes are each new thread's defaults)."""

    grad_enabled = True
    inference = False


_state = _ThreadState()


def is_grad_enabled():
    """Whether new ops record the graph (in this thread)."""
    return _state.grad_enabled


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


class _Version:
    """A tensor's version counter, shared with its views: every in-place op bumps it. ``plain_views`` records
    that a view was made without a graph (see ops/inplace.py)."""

    __slots__ = ("value", "op", "plain_views")

    def __init__(self):
        self.value, self.op, self.plain_views = 0, None, False


def new_version():
    """A counter for a new tensor; None (no counter) makes it an inference tensor."""
    return None if _state.inference else _Version()


class Function:
    """One differentiable op. Subclasses define ``forward`` and ``backward``.

    ``self.xp`` is the array module (numpy or cupy) of the inputs' device, ``self.backend``
    its backend (for the few operations the two libraries spell differently), and
    ``self.needs_input_grad`` says which inputs need a gradient (already known in forward).
    A view op (``is_view``) returns an array sharing its input's memory when it can; its
    output then shares the input's version counter.
    """

    is_view = False
    complex_grad = False            # True for ops whose backward holds for complex values (see link)
    retained = None                 # a weak reference to the output tensor, after retain_grad()

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **kwargs):
        """Run the op on Tensors; the result remembers this Function when it needs a gradient."""
        dev = None
        arrays, needs = [], []
        for t in inputs:
            if not isinstance(t, Tensor):
                i = next(i for i, u in enumerate(inputs) if u is t)
                raise TypeError(f"{cls.__name__}.apply: argument {i} must be a Tensor, not {type(t).__name__}; make "
                                "one with tinygradnorm.tensor(...)")
            if dev is None:
                dev = t._device
            elif t._device is not dev:
                _device_mismatch(cls.__name__, inputs)
            arrays.append(t.data)
            needs.append(t.requires_grad)
        fn = cls()
        fn.backend = backend = dev.backend
        fn.xp = xp = backend.xp
        state = _state
        record = state.grad_enabled and not state.inference and True in needs
        fn.needs_input_grad = tuple(needs) if record else (False,) * len(needs)
        data = fn.forward(*arrays, **kwargs)
        if not isinstance(data, xp.ndarray):
            data = xp.asarray(data)  # NOTE: NumPy returns scalars from 0-d results; keep arrays
        out = Tensor._wrap(data, dev, False, None)
        if cls.is_view:
            share_view(out, inputs[0], record)
        if record:
            fn.link(inputs, out)
        return out

    def link(self, inputs, out):
        """Make ``out`` the output of this Function in the graph, with edges to what made each input.

        The versions of the inputs and the output are recorded, for ``_check_versions`` in backward.
        """
        if out.data.dtype.kind == "c" and not type(self).complex_grad:
            raise NotImplementedError(
                f"{type(self).__name__}: gradients through complex values are not supported (its output is "
                f"{out.data.dtype}); only ops linear with real coefficients, such as where, pass them. Run it under "
                "no_grad, or keep the values real")
        self.parents = inputs
        edges, versions = [], []
        for t in inputs:
            ctx, vc = t._ctx, t._vc
            edges.append(ctx if ctx is not None else (t if t.requires_grad else None))
            versions.append(-1 if vc is None else vc.value)
        self.edges, self.versions = tuple(edges), versions
        self.out_vc = out._vc
        self.out_version = -1 if out._vc is None else out._vc.value
        self.out_root = id(_root(out.data))   # NOTE: an id, not the array: holding it would keep it alive
        self.freed = False
        if -1 in versions or out._vc is None:
            _refuse_saved_inference_tensors(self, out)
        out.requires_grad, out._ctx = True, self

    def release(self):
        """Drop what forward saved (keeping the graph's edges, and the shapes and dtypes of the inputs for
        pictures of the graph); a later backward through this node is an error."""
        edges, needs = self.edges, self.needs_input_grad
        meta = tuple((p.data.shape, p.data.dtype) for p in self.parents)
        self.__dict__.clear()
        self.edges, self.needs_input_grad, self.freed, self.input_meta = edges, needs, True, meta

    # ---- the graph, walked as in PyTorch: t.grad_fn.name(), t.grad_fn.next_functions ----------------------
    def name(self):
        """This node's name in the backward graph, as PyTorch spells it: the op's name plus "Backward"."""
        return f"{type(self).__name__}Backward"

    @property
    def next_functions(self):
        """One (node, 0) pair per input of forward: the Function that made the input, an AccumulateGrad node
        for a leaf that requires grad, or None for an input that needs no gradient."""
        return tuple((AccumulateGrad(e) if isinstance(e, Tensor) else e, 0) for e in self.edges)

    def __repr__(self):
        return f"<{self.name()}>"


class AccumulateGrad:
    """The node that adds a gradient into a leaf's ``.grad``: the end of every path in the backward graph."""

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "AccumulateGrad"

    next_functions = ()

    def __eq__(self, other):
        return isinstance(other, AccumulateGrad) and other.variable is self.variable

    def __hash__(self):
        return id(self.variable)

    def __repr__(self):
        return "<AccumulateGrad>"


def share_view(out, src, recorded):
    """When ``out``'s array is a view of ``src``'s memory, make ``out`` a view of ``src`` (one version counter)."""
    if _root(out.data) is _root(src.data):
        out._vc = src._vc
        out._base = src if src._base is None else src._base
        if not recorded and out._vc is not None:
            out._vc.plain_views = True


def _root(a):
    """The object that owns an array's memory (an array is a view of its .base, recursively)."""
    while True:
        b = getattr(a, "base", None)
        if b is None:
            return a
        a = b


def _saved(fn, roots):
    """Which of the tensors whose memory owners have these ids (the inputs', then the output's) forward
    kept on ``fn``: a list of bools.

    NOTE: rather than asking every op to declare what it saved, this looks at the arrays forward
    stored as attributes (directly or in a tuple or list): a tensor that shares memory with one of
    them was saved. A view op saves nothing, but its output is its input's memory, so its input
    counts as saved: an in-place change to either would make the view's backward stale.
    """
    array_type = fn.xp.ndarray
    hit = [False] * len(roots)
    for name, v in fn.__dict__.items():
        if name == "parents":
            continue
        arrays = (v,) if isinstance(v, array_type) else v if type(v) in (tuple, list) else ()
        for a in arrays:
            if isinstance(a, array_type):
                r = id(_root(a))
                hit = [h or r == root for h, root in zip(hit, roots)]
    if type(fn).is_view and fn.out_vc is fn.parents[0]._vc:
        hit[0] = True
    return hit


def _refuse_saved_inference_tensors(fn, out):
    tensors = fn.parents + (out,)
    for t, saved in zip(tensors, _saved(fn, [id(_root(t.data)) for t in tensors])):
        if saved and t._vc is None:
            raise RuntimeError(
                "Inference tensors cannot be saved for backward: a tensor made under inference_mode "
                f"(shape {tuple(t.shape)}) is used by {type(fn).__name__}, which needs it for the gradient. "
                "clone() it to get a normal tensor, or use no_grad() instead of inference_mode()")


def _check_versions(fn):
    """Raise when an in-place op changed a tensor that ``fn`` saved for backward.

    Forward recorded every input's and the output's version; only when one has moved does this
    look at whether ``fn`` actually kept that tensor (most ops keep only some of their inputs).
    """
    for t, v in zip(fn.parents, fn.versions):
        if t._vc is not None and t._vc.value != v:
            return _refuse_changed(fn)
    if fn.out_vc is not None and fn.out_vc.value != fn.out_version:
        return _refuse_changed(fn)


def _refuse_changed(fn):
    parents = fn.parents
    moved = [i for i, (t, v) in enumerate(zip(parents, fn.versions)) if t._vc is not None and t._vc.value != v]
    if fn.out_vc is not None and fn.out_vc.value != fn.out_version:
        moved.append(len(parents))
    saved = _saved(fn, [id(_root(t.data)) for t in parents] + [fn.out_root])
    for i in moved:
        if not saved[i]:
            continue
        if i == len(parents):
            vc, version, what = fn.out_vc, fn.out_version, "its output"
        else:
            t = parents[i]
            vc, version, what = t._vc, fn.versions[i], f"input {i} ({t.dtype}, shape {tuple(t.shape)})"
        op = f" (last changed by {vc.op})" if vc.op else ""
        raise RuntimeError(
            f"one of the variables needed for gradient computation has been modified by an inplace operation: "
            f"{what} of {type(fn).__name__}Backward is at version {vc.value}{op}; expected version {version} "
            "instead. Make the in-place change after backward(), or apply it to a clone()")


def _device_mismatch(name, inputs):
    devices = ", ".join(f"{tuple(t.shape)} on {t.device}" for t in inputs)
    gpu = next((str(t.device) for t in inputs if t.device.type == "cuda"), "cuda")
    raise RuntimeError(
        f"{name.lower()}: expected all tensors on the same device, got {devices}. "
        f"Move them to one device first, e.g. t.to({gpu!r}) or t.to('cpu')"
    )


def _topological_order(root):
    """The Functions reachable from root, each after every Function that uses its output.

    Iterative depth-first search, so a graph of any depth needs no recursion.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        fn, children_done = stack.pop()
        if children_done:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        stack.append((fn, True))
        for edge in fn.edges:
            if isinstance(edge, Function) and id(edge) not in visited:
                stack.append((edge, False))
    order.reverse()
    return order


def backward(root, grad, retain_graph=False):
    """Propagate ``grad`` from ``root`` to every leaf that requires a gradient."""
    if root._ctx is None:
        _accumulate(root, grad, owned=False)
        _run_callbacks()
        return
    grads = {id(root._ctx): grad}
    leaves = {}
    order = _topological_order(root._ctx)
    for fn in order:
        g = grads.pop(id(fn), None)
        if g is None:
            continue
        if fn.freed:
            raise RuntimeError(
                "Trying to backward through the graph a second time: its saved values were freed "
                "by the first backward. Call .backward(retain_graph=True) the first time if you "
                "need to backward twice."
            )
        _check_versions(fn)
        kept = fn.retained() if fn.retained is not None else None
        if kept is not None:
            _accumulate(kept, g, owned=False)
        input_grads = fn.backward(g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(fn.edges):
            raise RuntimeError(f"function {type(fn).__name__}Backward returned an incorrect number of gradients "
                               f"(expected {len(fn.edges)}, got {len(input_grads)}): backward must return one "
                               "gradient or None per input of forward")
        for i, (edge, pg) in enumerate(zip(fn.edges, input_grads)):
            if edge is None or pg is None:
                continue
            pg = _as_input_grad(fn, i, pg)
            if isinstance(edge, Function):
                prev = grads.get(id(edge))
                grads[id(edge)] = pg if prev is None else prev + pg
            else:
                entry = leaves.get(id(edge))
                if entry is None:
                    leaves[id(edge)] = [edge, pg]
                else:
                    entry[1] = entry[1] + pg
    adopted = {id(_memory(grad))}
    for leaf, g in leaves.values():
        # NOTE: a gradient array can become .grad without a copy when nothing else can see it: not the
        # caller's gradient, not a view of other memory, and not already handed to another leaf.
        root = _memory(g)
        owned = id(root) not in adopted and g.flags.writeable and (root is g or _recycled(leaf, g))
        adopted.add(id(root))
        _accumulate(leaf, g, owned)
    if not retain_graph:
        for fn in order:
            if not fn.freed:
                fn.release()
    _run_callbacks()


def queue_callback(fn):
    """Run fn() once, at the end of the next backward in this thread, after every gradient has reached its
    leaf. (DistributedDataParallel averages the gradients there.)"""
    if getattr(_state, "callbacks", None) is None:
        _state.callbacks = []
    _state.callbacks.append(fn)


def _run_callbacks():
    callbacks = getattr(_state, "callbacks", None)
    while callbacks:
        callbacks.pop(0)()


def _memory(a):
    """The array that owns a's memory (a itself, or the base of a view)."""
    return a if getattr(a, "base", None) is None else a.base


def _recycled(leaf, g):
    """True when g is a whole block of the CPU kernels' recycled memory (a fresh output, as good as new)."""
    kernels = getattr(leaf.device.backend, "kernels", None)
    return kernels is not None and kernels.recycled(g)


def _as_input_grad(fn, i, g):
    """Check the gradient that ``fn.backward`` returned for input i, and give it the input's shape and dtype.

    As in PyTorch, a gradient that the input's shape broadcasts to is summed down to it.
    """
    x = fn.parents[i].data
    if not isinstance(g, fn.xp.ndarray):
        g = fn.xp.asarray(g, dtype=x.dtype)
    elif g.shape == x.shape and g.dtype == x.dtype:
        return g
    if g.shape != x.shape:
        if not _expandable(x.shape, g.shape):
            raise RuntimeError(f"function {type(fn).__name__}Backward returned an invalid gradient at index {i}: "
                               f"got shape {tuple(g.shape)} but expected shape compatible with {tuple(x.shape)} "
                               "(the shape of that input)")
        g = sum_to(g, x.shape)
    if g.dtype != x.dtype:
        g = (g.real if g.dtype.kind == "c" and x.dtype.kind != "c" else g).astype(x.dtype)
    return g


def _expandable(shape, to):
    """True when an array of ``shape`` broadcasts to ``to``."""
    if len(shape) > len(to):
        return False
    return all(a == b or a == 1 for a, b in zip(reversed(shape), reversed(to)))


def _accumulate(tensor, grad, owned):
    """tensor.grad += grad, creating .grad on first use (taking ``grad`` itself only when ``owned``)."""
    if grad.shape != tensor.data.shape:
        raise RuntimeError(f"internal error: gradient of shape {grad.shape} for a tensor of shape {tensor.data.shape}")
    if tensor.grad is None:
        data = grad if owned and grad.dtype == tensor.data.dtype else grad.astype(tensor.data.dtype, copy=True)
        tensor.grad = Tensor._wrap(data, tensor.device, False, None)
    else:
        tensor.grad.data += grad


def retain(tensor):
    """Make backward store the gradient of a non-leaf ``tensor`` in its ``.grad``."""
    tensor._ctx.retained = weakref.ref(tensor)


from .tensor import Tensor  # noqa: E402  (Tensor needs Function first; see tinygradnorm/__init__.py)
from .ops._util import sum_to  # noqa: E402
