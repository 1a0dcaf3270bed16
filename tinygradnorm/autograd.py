"""Reverse-mode autograd: the Function base class, grad mode and the backward walk.

Every op is a Function subclass with ``forward`` (raw arrays in, a raw array out) and
``backward`` (the output's gradient in, one gradient or None per input out), side by
side. ``Function.apply`` runs forward and, when a gradient is wanted, links the output
to the Function so that ``backward`` can find its way back.
"""
import functools

_GRAD_ENABLED = [True]


def is_grad_enabled():
    """Whether new ops record the graph."""
    return _GRAD_ENABLED[0]


class _GradMode:
    """Context manager and decorator that sets grad mode and restores it on exit."""

    mode = True

    def __enter__(self):
        self.prev = _GRAD_ENABLED[0]
        _GRAD_ENABLED[0] = self.mode

    def __exit__(self, *exc):
        _GRAD_ENABLED[0] = self.prev

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Ops run inside record no graph: ``with no_grad():`` or ``@no_grad()``."""

    mode = False


class enable_grad(_GradMode):
    """Re-enables graph recording inside a ``no_grad`` block."""

    mode = True


class Function:
    """One differentiable op. Subclasses define ``forward`` and ``backward``.

    ``self.xp`` is the array module (numpy or cupy) of the inputs' device, ``self.backend``
    its backend (for the few operations the two libraries spell differently).
    """

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **kwargs):
        """Run the op on Tensors; the result remembers this Function when it needs a gradient."""
        dev = inputs[0].device
        for t in inputs:
            if t.device is not dev:
                _device_mismatch(cls.__name__, inputs)
        fn = cls()
        fn.backend = dev.backend
        fn.xp = dev.backend.xp
        data = fn.forward(*[t.data for t in inputs], **kwargs)
        if not isinstance(data, fn.xp.ndarray):
            data = fn.xp.asarray(data)  # NOTE: NumPy returns scalars from 0-d results; keep arrays
        if _GRAD_ENABLED[0] and any(t.requires_grad for t in inputs):
            fn.parents = inputs
            fn.needs_input_grad = tuple(t.requires_grad for t in inputs)
            fn.freed = False
            return Tensor._wrap(data, dev, True, fn)
        return Tensor._wrap(data, dev, False, None)

    def release(self):
        """Drop what forward saved (keeping the graph's edges); a later backward through this node is an error."""
        parents, needs = self.parents, self.needs_input_grad
        self.__dict__.clear()
        self.parents, self.needs_input_grad, self.freed = parents, needs, True


def _device_mismatch(name, inputs):
    devices = ", ".join(f"{tuple(t.shape)} on {t.device}" for t in inputs)
    gpu = next((str(t.device) for t in inputs if t.device.type == "cuda"), "cuda")
    raise RuntimeError(
        f"{name.lower()}: expected all tensors on the same device, got {devices}. "
        f"Move them to one device first, e.g. t.to({gpu!r}) or t.to('cpu')"
    )


def _topological_order(root):
    """Non-leaf tensors reachable from root, each after every tensor that uses it.

    Iterative depth-first search, so a graph of any depth needs no recursion.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in node._ctx.parents:
            if parent._ctx is not None and id(parent) not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


def backward(root, grad, retain_graph=False):
    """Propagate ``grad`` from ``root`` to every leaf that requires a gradient."""
    if root._ctx is None:
        _accumulate(root, grad, owned=False)
        return
    grads = {id(root): grad}
    leaves = {}
    array_type = root.device.backend.xp.ndarray
    order = _topological_order(root)
    for node in order:
        g = grads.pop(id(node), None)
        fn = node._ctx
        if g is None:
            continue
        if fn.freed:
            raise RuntimeError(
                "Trying to backward through the graph a second time: its saved values were freed "
                "by the first backward. Call .backward(retain_graph=True) the first time if you "
                "need to backward twice."
            )
        if node._retains_grad:
            _accumulate(node, g, owned=False)
        input_grads = fn.backward(g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for parent, needs, pg in zip(fn.parents, fn.needs_input_grad, input_grads):
            if not needs or pg is None:
                continue
            if not isinstance(pg, array_type):
                pg = parent.device.backend.xp.asarray(pg, dtype=parent.dtype)
            if parent._ctx is None:
                entry = leaves.get(id(parent))
                if entry is None:
                    leaves[id(parent)] = [parent, pg]
                else:
                    entry[1] = entry[1] + pg
            else:
                prev = grads.get(id(parent))
                grads[id(parent)] = pg if prev is None else prev + pg
    adopted = {id(grad)}
    for leaf, g in leaves.values():
        # NOTE: a gradient array can become .grad without a copy when nothing else can see it:
        # not the caller's gradient, not a view, and not already handed to another leaf.
        owned = id(g) not in adopted and g.base is None and g.flags.writeable
        adopted.add(id(g))
        _accumulate(leaf, g, owned)
    if not retain_graph:
        for node in order:
            if not node._ctx.freed:
                node._ctx.release()


def _accumulate(tensor, grad, owned):
    """tensor.grad += grad, creating .grad on first use (taking ``grad`` itself only when ``owned``)."""
    if grad.shape != tensor.data.shape:
        raise RuntimeError(f"internal error: gradient of shape {grad.shape} for a tensor of shape {tensor.data.shape}")
    if tensor.grad is None:
        data = grad if owned and grad.dtype == tensor.data.dtype else grad.astype(tensor.data.dtype, copy=True)
        tensor.grad = Tensor._wrap(data, tensor.device, False, None)
    else:
        tensor.grad.data += grad


from .tensor import Tensor  # noqa: E402  (Tensor needs Function first; see tinygradnorm/__init__.py)
