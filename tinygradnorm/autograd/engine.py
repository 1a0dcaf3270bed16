"""The backward walk: ``backward`` and ``grad``, tensor hooks, and callbacks at the end of a walk.

The walk sorts the Functions between the outputs and the leaves topologically (iteratively, so depth
is unlimited) and calls each one's way back once the gradients of all its outputs have arrived. At
first order it calls ``backward`` and adds arrays. With ``create_graph=True`` it calls ``gradient``
with grad mode on and adds Tensors, so the gradients it gives carry a graph of their own. First order
pays nothing for higher order.
"""
import warnings
import weakref

from .function import _FREED, Function, check_versions
from .grad_mode import _state


def _topological_order(roots):
    """The Functions reachable from roots, each after every Function that uses one of its outputs."""
    order, visited = [], set()
    stack = [(roots[0], False)] if len(roots) == 1 else [(root, False) for root in reversed(roots)]
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


# ---- the public calls ---------------------------------------------------------------------------------------
def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate d(tensors)/d(leaf), weighted by ``grad_tensors``, into every leaf's ``.grad``, as
    torch.autograd.backward; with ``inputs``, into those tensors' ``.grad`` only (leaves or not).

    With ``create_graph`` the gradients carry a graph, so they can be differentiated again.
    ``retain_graph`` defaults to ``create_graph``.
    """
    if inputs is None and not create_graph and isinstance(tensors, Tensor):       # (the common call, made short)
        roots = (tensors,)
        _walk(roots, _root_grads(roots, grad_tensors, False, "grad_tensors"), False, bool(retain_graph), None, True)
        return
    if create_graph:
        warnings.warn("backward(create_graph=True) makes each leaf's .grad hold a graph that refers back to the leaf "
                      "(a reference cycle, freed only by the garbage collector). Take the gradient with "
                      "tinygradnorm.autograd.grad(..., create_graph=True) instead, or set .grad to None after use "
                      "(optimizer.zero_grad() does)", UserWarning, stacklevel=3)
    roots = _as_tensors(tensors, "tensors")
    grads = _root_grads(roots, grad_tensors, create_graph, "grad_tensors")
    targets = None
    if inputs is not None:
        targets = _as_tensors(inputs, "inputs")
        if not targets:
            raise RuntimeError("backward: the inputs argument was passed as an empty list; pass the tensors whose "
                               ".grad should receive the gradient, or leave it out for every leaf")
        for i, t in enumerate(targets):
            if not t.requires_grad:
                raise RuntimeError(f"backward: input {i} (shape {tuple(t.shape)}) does not require grad; every "
                                   "tensor in inputs must require grad")
    _walk(roots, grads, create_graph, create_graph if retain_graph is None else retain_graph, targets, True)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=None,
         materialize_grads=False):
    """The gradients of ``outputs`` (weighted by ``grad_outputs``) with respect to each of ``inputs``, returned
    as a tuple and never added into ``.grad``, as torch.autograd.grad.

    With ``create_graph`` they carry a graph, for higher-order derivatives; ``retain_graph`` defaults to it.
    An input the outputs do not depend on is an error unless ``allow_unused``; then its gradient is None, or
    zeros with ``materialize_grads``.
    """
    if materialize_grads and allow_unused is False:
        raise ValueError("grad: Expected allow_unused to be True or not passed when materialize_grads=True, but "
                         "got: allow_unused=False.")
    allow = materialize_grads if allow_unused is None else allow_unused
    outs = _as_tensors(outputs, "outputs")
    targets = _as_tensors(inputs, "inputs")
    if not targets:
        raise RuntimeError("grad requires non-empty inputs: pass the tensors to differentiate with respect to")
    for i, t in enumerate(targets):
        if not t.requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors does not require grad (inputs[{i}], shape "
                               f"{tuple(t.shape)}); create it with requires_grad=True or call .requires_grad_()")
    grads = _root_grads(outs, grad_outputs, create_graph, "grad_outputs")
    results = _walk(outs, grads, create_graph, create_graph if retain_graph is None else retain_graph, targets,
                    False)
    for i, (r, t) in enumerate(zip(results, targets)):
        if r is None:
            if materialize_grads:
                results[i] = Tensor._wrap(t.xp.zeros_like(t.data), t.device, False, None)
            elif not allow:
                raise RuntimeError(f"One of the differentiated Tensors appears to not have been used in the graph "
                                   f"(inputs[{i}], shape {tuple(t.shape)}). Set allow_unused=True if this is the "
                                   "desired behavior.")
    return tuple(results)


def _as_tensors(value, what):
    if isinstance(value, Tensor):
        return (value,)
    items = tuple(value)
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}[{i}] must be a Tensor, not {type(t).__name__}")
    return items


def _root_grads(roots, given, create_graph, what):
    """The gradient each root starts with: ``given`` (a Tensor or array each, or None for a scalar root's 1),
    as arrays, or as Tensors when a graph is recorded."""
    if len(roots) == 1 and not create_graph and isinstance(given, Tensor):       # the common call, made short
        t = roots[0]
        if given.data.shape == t.data.shape and given.data.dtype == t.data.dtype and t.requires_grad \
                and given._device is t._device:
            return [given.data]
    if given is None or isinstance(given, Tensor) or hasattr(given, "shape"):
        given = (given,) * len(roots) if given is None else (given,)
    given = tuple(given)
    if len(given) != len(roots):
        raise RuntimeError(f"{what} has {len(given)} entries but there are {len(roots)} outputs: give one gradient "
                           "(or None) per output")
    out = []
    for i, (t, g) in enumerate(zip(roots, given)):
        if not t.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn "
                               f"(shape {tuple(t.shape)}); create the leaves with requires_grad=True")
        if g is None:
            if t.data.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs (got shape "
                                   f"{tuple(t.shape)}); pass a gradient of that shape")
            g = t.xp.ones(t.data.shape, dtype=t.dtype)
        elif isinstance(g, Tensor):
            if g.shape != t.shape:
                raise RuntimeError(f"Mismatch in shape: {what}[{i}] has a shape of {tuple(g.shape)} and output[{i}] "
                                   f"has a shape of {tuple(t.shape)}")
            if g.device is not t.device:
                raise RuntimeError(f"{what}[{i}] is on {g.device} but output[{i}] is on {t.device}; move it with "
                                   f".to('{t.device}')")
            if create_graph:
                out.append(g if g.dtype == t.dtype else g.to(t.dtype))
                continue
            g = g.data
        else:
            g = t.device.backend.asarray(g)
            if g.shape != t.data.shape:
                raise RuntimeError(f"Mismatch in shape: {what}[{i}] has a shape of {tuple(g.shape)} and output[{i}] "
                                   f"has a shape of {tuple(t.shape)}")
        g = g.astype(t.dtype, copy=False)
        out.append(Tensor._wrap(g, t.device, False, None) if create_graph else g)
    return out


# ---- the walk ----------------------------------------------------------------------------------------------
def _walk(roots, root_grads, create_graph, retain_graph, targets, accumulate):
    """Propagate root_grads from roots back to the leaves.

    ``targets`` None: every leaf that requires grad gets its gradient added into ``.grad``. Otherwise only the
    targets' gradients are computed (the walk runs only the Functions that lead to one): added into their
    ``.grad`` when ``accumulate``, else returned as a list, one per target (None where none arrived).
    """
    previous = _state.grad_enabled
    if previous is not create_graph:
        _state.grad_enabled = create_graph      # the gradient's own ops record a graph only with create_graph
    try:
        grads, leaves, starts = {}, {}, []
        for t, g in zip(roots, root_grads):
            if t._ctx is None:
                _add_leaf(leaves, t, g)
            else:
                _add(grads, t._ctx, t._oi, g)
                if t._ctx not in starts:
                    starts.append(t._ctx)
        order = _topological_order(starts)
        runs = capture = wanted = None
        results = None if targets is None else [None] * len(targets)
        if targets is not None:
            runs, capture, wanted = _plan(order, targets)
        ran = order if runs is None else []
        for fn in order:
            g = grads.pop(id(fn), None)
            if g is None:
                continue
            if fn.freed:
                raise RuntimeError(_FREED)
            check_versions(fn)
            if fn.hooks is not None:
                g = _run_tensor_hooks(fn, g, create_graph)
            if capture is not None:
                for slot, i in capture.get(id(fn), ()):
                    gi = g if fn.n_out == 1 else g[slot]
                    if gi is not None:
                        results[i] = gi if results[i] is None else results[i] + gi
                if id(fn) not in runs:
                    continue
                ran.append(fn)
                needs = fn.needs_input_grad
                fn.needs_input_grad = _leads_to_target(fn, needs, runs, capture, wanted)
                try:
                    input_grads = _call_backward(fn, g, create_graph)
                finally:
                    fn.needs_input_grad = needs
            elif fn.n_out == 1:                                 # (the common case, spelled out)
                input_grads = fn.gradient(g) if create_graph else fn.backward(g)
            else:
                input_grads = fn.gradient(*g) if create_graph else fn.backward(*g)
            edges = fn.edges
            if type(input_grads) is not tuple:
                input_grads = (input_grads,)
            if len(input_grads) != len(edges):
                raise RuntimeError(f"function {type(fn).__name__}Backward returned an incorrect number of gradients "
                                   f"(expected {len(edges)}, got {len(input_grads)}): backward must return one "
                                   "gradient or None per input of forward")
            for i, edge in enumerate(edges):
                pg = input_grads[i]
                if edge is None or pg is None:
                    continue
                pg = _as_input_grad(fn, i, pg, create_graph)
                if isinstance(edge, Function):
                    if runs is None or id(edge) in runs or id(edge) in capture:
                        key = id(edge)
                        if edge.n_out == 1:
                            prev = grads.get(key)
                            grads[key] = pg if prev is None else prev + pg
                        else:
                            _add(grads, edge, fn.slots[i] if fn.slots else 0, pg)
                elif wanted is None or id(edge) in wanted:
                    entry = leaves.get(id(edge))
                    if entry is None:
                        leaves[id(edge)] = [edge, pg]
                    else:
                        entry[1] = entry[1] + pg
        if leaves or results is not None:
            _finish_leaves(leaves, root_grads, create_graph, targets, wanted, accumulate, results)
        if targets is not None and accumulate:
            _accumulate_captured(targets, results, create_graph, root_grads)
        if not retain_graph:
            for fn in ran:
                if not fn.freed:
                    fn.release()
    finally:
        if previous is not create_graph:
            _state.grad_enabled = previous
    if getattr(_state, "callbacks", None):
        _run_callbacks()
    return results


def _call_backward(fn, g, create_graph):
    if fn.n_out == 1:
        return fn.gradient(g) if create_graph else fn.backward(g)
    return fn.gradient(*g) if create_graph else fn.backward(*g)


def _leads_to_target(fn, needs, runs, capture, wanted):
    """fn's needs_input_grad for a walk that wants only some gradients: an input needs one only when its edge
    leads to a target, so that fn computes no gradient the walk would drop (a penalty's grad with respect to x
    computes no weight gradients)."""
    return tuple(need and ((isinstance(edge, Function) and (id(edge) in runs or id(edge) in capture))
                           or (isinstance(edge, Tensor) and id(edge) in wanted))
                 for need, edge in zip(needs, fn.edges))


def _plan(order, targets):
    """For a walk that wants only ``targets``' gradients: which Functions must run (their inputs lead to a
    target), where a non-leaf target's gradient is caught ({id(fn): [(output index, target index)]}), and the
    leaf targets ({id(leaf): target index})."""
    wanted = {id(t): i for i, t in enumerate(targets) if t._ctx is None}
    capture = {}
    for i, t in enumerate(targets):
        if t._ctx is not None:
            capture.setdefault(id(t._ctx), []).append((t._oi, i))
    runs = set()
    for fn in reversed(order):                              # each Function after those that made its inputs
        for edge in fn.edges:
            if (isinstance(edge, Function) and (id(edge) in runs or id(edge) in capture)) or \
                    (isinstance(edge, Tensor) and id(edge) in wanted):
                runs.add(id(fn))
                break
    return runs, capture, wanted


def _add(grads, fn, slot, g):
    """Add g to the gradient arriving at output ``slot`` of fn."""
    key = id(fn)
    if fn.n_out == 1:
        prev = grads.get(key)
        grads[key] = g if prev is None else prev + g
        return
    per = grads.get(key)
    if per is None:
        per = grads[key] = [None] * fn.n_out
    per[slot] = g if per[slot] is None else per[slot] + g


def _add_leaf(leaves, leaf, g):
    entry = leaves.get(id(leaf))
    if entry is None:
        leaves[id(leaf)] = [leaf, g]
    else:
        entry[1] = entry[1] + g


def _finish_leaves(leaves, root_grads, create_graph, targets, wanted, accumulate, results):
    """Each leaf's total gradient, through its hooks, into its ``.grad`` or into ``results``.

    NOTE: a gradient array can become .grad without a copy when nothing else can see it: not the caller's
    gradient, not a view of other memory, and not already handed to another leaf.
    """
    if targets is None and not create_graph and not _LEAF_HOOKS:     # (the first-order call, spelled out)
        adopted = {id(_memory(g)) for g in root_grads} if len(root_grads) > 1 else {id(_memory(root_grads[0]))}
        for leaf, g in leaves.values():
            root = _memory(g)
            owned = id(root) not in adopted and g.flags.writeable and (root is g or _recycled(leaf, g))
            adopted.add(id(root))
            _accumulate(leaf, g, owned, False)
        return
    adopted = set()
    for g in root_grads:
        adopted.add(id(g) if create_graph else id(_memory(g)))
    for leaf, g in leaves.values():
        if _LEAF_HOOKS and id(leaf) in _LEAF_HOOKS:
            g = _call_hooks(_LEAF_HOOKS[id(leaf)][1].values(), g, leaf.device, create_graph)
        if create_graph:
            owned = id(g) not in adopted
            adopted.add(id(g))
        else:
            root = _memory(g)
            owned = id(root) not in adopted and g.flags.writeable and (root is g or _recycled(leaf, g))
            adopted.add(id(root))
        if targets is None or accumulate:
            _accumulate(leaf, g, owned, create_graph)
        else:
            results[wanted[id(leaf)]] = _as_result(g, owned, leaf.device, create_graph)
    if results is not None and not accumulate:
        for i, t in enumerate(targets):
            if t._ctx is not None and results[i] is not None:
                r = results[i]
                owned = (id(r) if create_graph else id(_memory(r))) not in adopted
                results[i] = _as_result(r, owned, t.device, create_graph)


def _accumulate_captured(targets, results, create_graph, root_grads):
    """backward(inputs=...) with non-leaf inputs: their caught gradients go into their .grad, as in PyTorch."""
    for t, r in zip(targets, results):
        if t._ctx is not None and r is not None:
            _accumulate(t, r, False, create_graph)


def _as_result(g, owned, device, create_graph):
    if create_graph:
        return g if owned else g.clone()
    return Tensor._wrap(g if owned else g.copy(), device, False, None)


def _memory(a):
    """The array that owns a's memory (a itself, or the base of a view)."""
    return a if getattr(a, "base", None) is None else a.base


def _recycled(leaf, g):
    """True when g is a whole block of the CPU kernels' recycled memory (a fresh output, as good as new)."""
    kernels = getattr(leaf.device.backend, "kernels", None)
    return kernels is not None and kernels.recycled(g)


def _as_input_grad(fn, i, g, create_graph):
    """Check the gradient that fn's way back returned for input i, and give it the input's shape and dtype.

    As in PyTorch, a gradient that the input's shape broadcasts to is summed down to it.
    """
    x = fn.parents[i].data
    if create_graph:
        if not isinstance(g, Tensor):
            g = Tensor._wrap(fn.xp.asarray(g, dtype=x.dtype), fn.device, False, None)
        elif g.data.shape == x.shape and g.data.dtype == x.dtype:
            return g
        shape = g.data.shape
    else:
        if not isinstance(g, fn.xp.ndarray):
            g = fn.xp.asarray(g, dtype=x.dtype)
        elif g.shape == x.shape and g.dtype == x.dtype:
            return g
        shape = g.shape
    if shape != x.shape:
        if not _expandable(x.shape, shape):
            raise RuntimeError(f"function {type(fn).__name__}Backward returned an invalid gradient at index {i}: "
                               f"got shape {tuple(shape)} but expected shape compatible with {tuple(x.shape)} "
                               "(the shape of that input)")
        g = sum_to(g, x.shape)
    dtype = g.data.dtype if create_graph else g.dtype
    if dtype != x.dtype:
        if create_graph:
            g = g.to(x.dtype)
        else:
            g = (g.real if g.dtype.kind == "c" and x.dtype.kind != "c" else g).astype(x.dtype)
    return g


def _expandable(shape, to):
    """True when an array of ``shape`` broadcasts to ``to``."""
    if len(shape) > len(to):
        return False
    return all(a == b or a == 1 for a, b in zip(reversed(shape), reversed(to)))


def _accumulate(tensor, grad, owned, create_graph):
    """tensor.grad += grad, creating .grad on first use (taking ``grad`` itself only when ``owned``). With a
    graph, the sum is out of place, so that .grad carries the graph of both terms."""
    if create_graph:
        if tensor.grad is None:
            tensor.grad = grad if owned else grad.clone()
        else:
            tensor.grad = tensor.grad + grad
        return
    if grad.shape != tensor.data.shape:
        raise RuntimeError(f"internal error: gradient of shape {grad.shape} for a tensor of shape {tensor.data.shape}")
    if tensor.grad is None:
        data = grad if owned and grad.dtype == tensor.data.dtype else grad.astype(tensor.data.dtype, copy=True)
        tensor.grad = Tensor._wrap(data, tensor.device, False, None)
    else:
        tensor.grad.data += grad


# ---- hooks ---------------------------------------------------------------------------------------------------
class RemovableHandle:
    """What register_*hook returns: ``handle.remove()`` takes the hook off again (a second call does nothing)."""

    _next_id = 0

    def __init__(self, hooks):
        self._hooks = weakref.ref(hooks) if hasattr(hooks, "__weakref__") else (lambda: hooks)
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        hooks = self._hooks()
        if hooks is not None:
            hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class _Hooks(dict):
    """handle id -> hook, in registration order (a dict subclass, so that a handle can refer to it weakly)."""


_LEAF_HOOKS = {}                 # id(leaf) -> (weak reference to it, _Hooks)


def register_hook(tensor, hook):
    """Call hook(grad) with the gradient of ``tensor`` each time one is computed; a Tensor it returns replaces the
    gradient that flows on (or, for a leaf, that goes into .grad). Returns a handle whose remove() undoes it."""
    if not callable(hook):
        raise TypeError(f"register_hook: hook must be callable (got {type(hook).__name__})")
    if not tensor.requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient; call "
                           ".requires_grad_() on a leaf first")
    fn = tensor._ctx
    if fn is None:
        entry = _LEAF_HOOKS.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            key = id(tensor)
            entry = _LEAF_HOOKS[key] = (weakref.ref(tensor, lambda _, key=key: _LEAF_HOOKS.pop(key, None)), _Hooks())
        hooks = entry[1]
    else:
        if fn.hooks is None:
            fn.hooks = {}
        hooks = fn.hooks.setdefault(tensor._oi, _Hooks())
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    return handle


class _Retain:
    """The hook behind retain_grad(): the gradient of a non-leaf tensor is added into its .grad."""

    def __init__(self, tensor):
        self.ref = weakref.ref(tensor)

    def __call__(self, grad):
        t = self.ref()
        if t is not None:
            if grad.requires_grad:
                t.grad = grad if t.grad is None else t.grad + grad
            elif t.grad is None:
                t.grad = Tensor._wrap(grad.data.copy(), grad.device, False, None)
            else:
                t.grad.data += grad.data


def retain(tensor):
    """Make backward store the gradient of a non-leaf ``tensor`` in its ``.grad`` (after its other hooks)."""
    fn = tensor._ctx
    if fn.hooks is None:
        fn.hooks = {}
    hooks = fn.hooks.setdefault(tensor._oi, _Hooks())
    if not any(isinstance(h, _Retain) and h.ref() is tensor for h in hooks.values()):
        hooks[-1 - tensor._oi] = _Retain(tensor)        # NOTE: a negative key no handle has, sorted last below


def retained_output(fn, slot=0):
    """The output ``slot`` of fn when retain_grad() was called on it (and it is still alive), else None."""
    hooks = fn.hooks.get(slot) if fn.hooks else None
    for h in (hooks or {}).values():
        if isinstance(h, _Retain):
            return h.ref()
    return None


def retains_grad(tensor):
    fn = tensor._ctx
    hooks = fn.hooks.get(tensor._oi) if fn is not None and fn.hooks else None
    return bool(hooks) and any(isinstance(h, _Retain) and h.ref() is tensor for h in hooks.values())


def _run_tensor_hooks(fn, g, create_graph):
    """The hooks of fn's outputs, run on the gradients that arrived at them (retain_grad's last)."""
    if fn.n_out == 1:
        hooks = fn.hooks.get(0)
        return _call_hooks(_ordered(hooks), g, fn.device, create_graph) if hooks else g
    g = list(g)
    for slot, hooks in fn.hooks.items():
        if hooks and g[slot] is not None:
            g[slot] = _call_hooks(_ordered(hooks), g[slot], fn.device, create_graph)
    return g


def _ordered(hooks):
    return sorted(hooks.values(), key=lambda h: isinstance(h, _Retain))


def _call_hooks(hooks, g, device, create_graph):
    """g through each hook in turn: each sees a Tensor, and a Tensor it returns replaces g."""
    for hook in list(hooks):
        t = g if create_graph else Tensor._wrap(g, device, False, None)
        new = hook(t)
        if new is None:
            continue
        if not isinstance(new, Tensor):
            raise TypeError(f"a tensor hook must return None or a Tensor (got {type(new).__name__})")
        if new.shape != t.shape:
            raise RuntimeError(f"hook {getattr(hook, '__name__', hook)!r} has changed the size of value: it returned "
                               f"shape {tuple(new.shape)} for a gradient of shape {tuple(t.shape)}")
        g = new if create_graph else new.data
    return g


# ---- callbacks ------------------------------------------------------------------------------------------------
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


from ..tensor import Tensor  # noqa: E402
from ..ops._util import sum_to  # noqa: E402
