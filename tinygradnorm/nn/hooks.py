"""Module hooks, as in PyTorch: forward pre-hooks, forward hooks, and full backward (pre-)hooks.

A full backward hook sees the gradients with respect to the module's inputs and outputs. The call is
wrapped in two identity nodes: one over the tensors that go in, one over the tensors that come out.
The outer node's backward catches grad_output (and runs the backward pre-hooks, which may replace it);
the inner one's catches grad_input, runs the hooks, and passes on what they return. Where no input
needs a gradient, the hooks run at the outer node with grad_input all None, as in PyTorch.
"""
from ..autograd.function import Function, share_view
from ..autograd.grad_mode import is_grad_enabled
from ..tensor import Tensor


class ModuleHooks:
    """A module's hooks, by kind, each a dict handle id -> hook (registration order)."""

    __slots__ = ("forward_pre", "forward", "backward", "backward_pre")

    def __init__(self):
        from ..autograd.engine import _Hooks
        self.forward_pre, self.forward, self.backward, self.backward_pre = _Hooks(), _Hooks(), _Hooks(), _Hooks()

    def __bool__(self):
        return bool(self.forward_pre or self.forward or self.backward or self.backward_pre)


def add_hook(module, kind, hook):
    """Register hook under ``kind`` on module; returns its RemovableHandle."""
    from ..autograd.engine import RemovableHandle
    if not callable(hook):
        raise TypeError(f"register_{kind}_hook: hook must be callable (got {type(hook).__name__})")
    hooks = module.__dict__.get("_hooks")
    if hooks is None:
        hooks = module.__dict__["_hooks"] = ModuleHooks()
    store = getattr(hooks, kind)
    handle = RemovableHandle(store)
    store[handle.id] = hook
    return handle


def call_with_hooks(module, args, kwargs):
    """module.forward(*args, **kwargs) with its hooks, in PyTorch's order: pre-hooks, the backward hooks' input
    node, forward, forward hooks, the backward hooks' output node."""
    hooks = module._hooks
    for hook in list(hooks.forward_pre.values()):
        new = hook(module, args)
        if new is not None:
            args = new if isinstance(new, tuple) else (new,)
    state = None
    if (hooks.backward or hooks.backward_pre) and is_grad_enabled():
        state = _BackwardState(module, hooks, len(args))
        args = state.wrap_inputs(args)
    out = module.forward(*args, **kwargs)
    for hook in list(hooks.forward.values()):
        new = hook(module, args, out)
        if new is not None:
            out = new
    if state is not None:
        out = state.wrap_outputs(out)
    return out


class _BackwardState:
    """What the two nodes of one call share: where the tensors sit among the arguments, and grad_output."""

    def __init__(self, module, hooks, n_inputs):
        self.module, self.hooks, self.n_inputs = module, hooks, n_inputs
        self.input_index = None                       # positions of the inputs that require grad
        self.grad_output = None

    def wrap_inputs(self, args):
        index = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
        if not index:
            return args
        self.input_index = index
        new = _boundary([args[i] for i in index], self, "input")
        args = list(args)
        for i, t in zip(index, new):
            args[i] = t
        return tuple(args)

    def wrap_outputs(self, out):
        single = isinstance(out, Tensor)
        items = [out] if single else list(out) if isinstance(out, (tuple, list)) else None
        if items is None:
            return out
        index = [i for i, a in enumerate(items) if isinstance(a, Tensor) and a.requires_grad]
        if not index:
            return out
        self.output_index, self.n_outputs = index, len(items)
        new = _boundary([items[i] for i in index], self, "output")
        for i, t in zip(index, new):
            items[i] = t
        return items[0] if single else type(out)(items)

    def _pack(self, grads, index, n):
        packed = [None] * n
        for i, g in zip(index, grads):
            packed[i] = g
        return tuple(packed)

    def at_output(self, grads):
        """The output node's backward: grad_output through the pre-hooks; the hooks themselves when no input
        needs a gradient."""
        grad_output = self._pack(grads, self.output_index, self.n_outputs)
        for hook in list(self.hooks.backward_pre.values()):
            new = hook(self.module, grad_output)
            if new is not None:
                grad_output = tuple(new) if isinstance(new, (tuple, list)) else (new,)
        self.grad_output = grad_output
        if self.input_index is None:
            for hook in list(self.hooks.backward.values()):
                res = hook(self.module, (None,) * self.n_inputs, grad_output)
                if res is not None and any(r is not None for r in res):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should always "
                                       "return None or None for all gradients.")
        return tuple(grad_output[i] for i in self.output_index)

    def at_input(self, grads):
        """The input node's backward: the hooks, with grad_input and grad_output; what they return flows on."""
        grad_input = self._pack(grads, self.input_index, self.n_inputs)
        for hook in list(self.hooks.backward.values()):
            new = hook(self.module, grad_input, self.grad_output)
            if new is not None:
                new = tuple(new) if isinstance(new, (tuple, list)) else (new,)
                if len(new) != len(grad_input):
                    raise RuntimeError(f"Backward hook returned an invalid number of grad_input, got {len(new)}, but "
                                       f"expected {len(grad_input)}")
                grad_input = new
        return tuple(grad_input[i] for i in self.input_index)


def _boundary(tensors, state, side):
    """The tensors through one identity node (their outputs views of them, one version counter each)."""
    outs = BackwardHookBoundary.apply(*tensors, state=state, side=side)
    outs = outs if isinstance(outs, tuple) else (outs,)
    for out, src in zip(outs, tensors):
        share_view(out, src, True)
    return outs


class BackwardHookBoundary(Function):
    """The identity, whose way back hands the gradients to the module's backward hooks (see the module's doc)."""

    def forward(self, *arrays, state, side):
        self.state, self.side = state, side
        return tuple(a.view() for a in arrays) if len(arrays) > 1 else arrays[0].view()

    def backward(self, *grads):
        dev = self.device
        tensors = [None if g is None else Tensor._wrap(g, dev, False, None) for g in grads]
        out = self._run(tensors)
        arrays = tuple(None if t is None else t.data for t in out)
        return arrays if len(arrays) > 1 else arrays[0]

    def gradient(self, *grads):
        out = self._run(list(grads))
        return tuple(out) if len(out) > 1 else out[0]

    def _run(self, grads):
        return self.state.at_output(grads) if self.side == "output" else self.state.at_input(grads)
