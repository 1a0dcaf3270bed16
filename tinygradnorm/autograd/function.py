"""Function: one differentiable op, what it saves, and the graph it records.

Every op is a Function subclass with ``forward`` (raw arrays in, a raw array, or a tuple of them, out)
and up to two ways back, side by side:

- ``backward(g)``: arrays in, one array (or None) per input out. The first-order walk calls it, so it
  may be as fast as array code can be: compiled kernels, in-place steps.
- ``gradient(g)``: Tensors in, one Tensor (or None) per input out, built from differentiable ops. The
  walk calls it instead when it records a graph of the gradient (``create_graph=True``), so that the
  gradient can itself be differentiated, to any order.

A Function may define either, or both. With ``gradient`` alone, first order runs it on Tensors under
no_grad. With ``backward`` alone the Function is once-differentiable: its gradient can still be taken
with create_graph=True, but differentiating that gradient again raises an error naming the Function.

What backward needs is saved explicitly, with ``self.save_for_backward(*arrays)`` in forward, and read
back as ``self.saved`` (arrays, in backward) or ``self.saved_tensors`` (Tensors, in gradient). The i-th
saved array stands for forward's i-th argument when it *is* that argument, for an output when it is an
array forward returns, and for a constant otherwise. Only what is saved is protected by the version
check, and ``release()`` frees exactly that.

The graph's edges lead from a Function to the Functions that made its inputs (with the index of the
output each input was), or, for a leaf, to the leaf tensor itself; never through the tensors in
between. So when an in-place op gives a tensor a new grad_fn, what earlier uses of that tensor
differentiate is unchanged.
"""
from .grad_mode import _state, is_grad_enabled, is_recording, no_grad


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
    """One differentiable op. Subclasses define ``forward`` and ``backward`` and/or ``gradient``.

    ``self.xp`` is the array module (numpy or cupy) of the inputs' device, ``self.backend`` its backend
    (for the few operations the two libraries spell differently), ``self.device`` the device, and
    ``self.needs_input_grad`` says which inputs need a gradient (already known in forward). A view op
    (``is_view``) returns an array sharing its input's memory when it can; its output then shares the
    input's version counter.
    """

    is_view = False
    complex_grad = False            # True for ops whose backward holds for complex values (see link)
    n_out = 1                       # outputs of forward (a forward that returns a tuple sets it)
    non_differentiable = ()         # the last outputs, which never get a gradient (a batch's statistics, say)
    hooks = None                    # {output index: [hook, ...]}: register_hook/retain_grad on an output
    freed = False
    slots = ()                      # per input, which output of its Function it is (only where one is not 0)
    _saved = ()

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, *grads):
        """The gradients of the inputs, as arrays, from the outputs' gradients (arrays; None for an output that
        got none). By default: ``gradient`` run on Tensors under no_grad."""
        cls = type(self)
        if cls.gradient is Function.gradient:
            raise NotImplementedError(f"{cls.__name__} defines neither backward (on arrays) nor gradient (on "
                                      "Tensors); define one of them to make it differentiable")
        dev = self.device
        with no_grad():
            out = self.gradient(*[None if g is None else Tensor._wrap(g, dev, False, None) for g in grads])
        if type(out) is not tuple:
            return out.data if isinstance(out, Tensor) else out
        return tuple(t.data if isinstance(t, Tensor) else t for t in out)

    def gradient(self, *grads):
        """The gradients of the inputs, as Tensors built from differentiable ops, from the outputs' gradients
        (Tensors, or None). By default: ``backward`` on the arrays, its results marked once-differentiable."""
        out = self.backward(*[None if g is None else g.data for g in grads])
        single = type(out) is not tuple
        xp, dev = self.xp, self.device
        results = tuple(None if a is None else Tensor._wrap(a if isinstance(a, xp.ndarray) else xp.asarray(a), dev,
                                                            False, None)
                        for a in ((out,) if single else out))
        sources = tuple(t for t in (*grads, *self.parents) if t is not None and t.requires_grad)
        if sources and is_grad_enabled():
            node = OnceDifferentiable._node(dev, (True,) * len(sources))
            node.of, node.n_out = type(self).__name__, len(results)
            node.link(sources, results)
        return results[0] if single else results

    # ---- what backward needs --------------------------------------------------------------------------
    def save_for_backward(self, *arrays):
        """Keep these arrays for backward (``self.saved``) and gradient (``self.saved_tensors``). The i-th stands
        for forward's i-th argument when it is that very array, for an output when forward returns it."""
        self._saved = arrays

    @property
    def saved(self):
        """What forward saved, as arrays."""
        if self._saved is None:
            raise RuntimeError(_FREED)
        return self._saved

    @property
    def saved_tensors(self):
        """What forward saved, as Tensors: the inputs and outputs themselves (with their graph, so that a gradient
        built from them is differentiable again), and every other array as a constant."""
        parents, out_ids, dev = self.parents, self.out_ids, self.device
        tensors = []
        for i, a in enumerate(self.saved):
            if a is None:
                tensors.append(None)
            elif i < len(parents) and a is parents[i].data:
                tensors.append(parents[i])
            elif id(a) in out_ids:
                k = out_ids.index(id(a))
                t = Tensor._wrap(a, dev, True, self)        # the output, rebuilt: holding it would make a cycle
                t._oi, t._vc = k, self.out_vcs[k]
                tensors.append(t)
            else:
                tensors.append(Tensor._wrap(a, dev, False, None))
        return tuple(tensors)

    def saved_for(self, g):
        """What forward saved, as arrays when g is an array and as Tensors when g is a Tensor: for a backward whose
        code is the same on both (an op then sets ``gradient = backward``)."""
        return self.saved_tensors if isinstance(g, Tensor) else self._saved

    # ---- the graph --------------------------------------------------------------------------------------
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
        fn.device = dev
        fn.backend = backend = dev.backend
        fn.xp = xp = backend.xp
        record = True in needs and is_recording()
        fn.needs_input_grad = tuple(needs) if record else (False,) * len(needs)
        data = fn.forward(*arrays, **kwargs)
        if type(data) is tuple:
            return fn._outputs(data, inputs, record)
        if not isinstance(data, xp.ndarray):
            data = fn._as_output_array(data)
        out = Tensor._wrap(data, dev, False, None)
        if cls.is_view:
            share_view(out, inputs[0], record)
        if record:
            fn.link(inputs, (out,))
        return out

    def _as_output_array(self, value):
        """A forward's result as an array. NOTE: NumPy returns scalars from 0-d results; the output must be an
        array, and where forward saved that scalar, the array stands in for it (so that it is the output)."""
        array = self.xp.asarray(value)
        if any(a is value for a in self._saved):
            self._saved = tuple(array if a is value else a for a in self._saved)
        return array

    def _outputs(self, data, inputs, record):
        """The Tensors of a forward that returned a tuple of arrays (None stays None): a tuple of them, or the one."""
        xp, dev = self.xp, self.device
        outs = tuple(None if d is None else Tensor._wrap(d if isinstance(d, xp.ndarray) else self._as_output_array(d),
                                                         dev, False, None) for d in data)
        # NOTE: outputs without a gradient (non_differentiable, the last ones) take no part in the graph
        linked = outs[:len(outs) - len(type(self).non_differentiable)]
        self.n_out = len(linked)
        if type(self).is_view:
            for out in linked:
                if out is not None:
                    share_view(out, inputs[0], record)
        if record:
            self.link(inputs, linked)
        return outs if len(outs) != 1 else outs[0]

    @classmethod
    def _node(cls, device, needs):
        """An instance made without forward, for a node that code links by hand (To, the hooks' boundaries)."""
        fn = cls()
        fn.device, fn.backend, fn.xp, fn.needs_input_grad = device, device.backend, device.backend.xp, needs
        return fn

    def link(self, inputs, outs):
        """Make ``outs`` the outputs of this Function in the graph, with edges to what made each input.

        The versions of the inputs and the outputs are recorded, for ``check_versions`` in backward.
        """
        self.parents = inputs
        edges, versions = [], []
        slots = False
        for t in inputs:
            ctx, vc = t._ctx, t._vc
            edges.append(ctx if ctx is not None else (t if t.requires_grad else None))
            versions.append(-1 if vc is None else vc.value)
            slots = slots or t._oi
        self.edges, self.versions = tuple(edges), versions
        if slots:                           # an input is a later output of a multi-output Function
            self.slots = tuple(t._oi for t in inputs)
        if len(outs) == 1:                  # (the common case, spelled out: this runs for every op)
            out = outs[0]
            data, vc = out.data, out._vc
            if data.dtype.kind == "c" and not type(self).complex_grad:
                _refuse_complex(self, data)
            self.out_vcs, self.out_versions = (vc,), (-1 if vc is None else vc.value,)
            self.out_ids, self.out_roots = (id(data),), (id(data if data.base is None else _root(data)),)
            if vc is None or -1 in versions:
                _refuse_saved_inference_tensors(self, outs)
            out.requires_grad, out._ctx = True, self
            return
        out_vcs, out_versions, out_ids, out_roots = [], [], [], []
        for o in outs:
            if o is None:
                out_vcs.append(None), out_versions.append(-1), out_ids.append(None), out_roots.append(None)
                continue
            data, vc = o.data, o._vc
            if data.dtype.kind == "c" and not type(self).complex_grad:
                _refuse_complex(self, data)
            out_vcs.append(vc)
            out_versions.append(-1 if vc is None else vc.value)
            out_ids.append(id(data))
            # NOTE: ids, not the arrays: holding an output's array would keep it alive after its tensor died
            out_roots.append(id(data if data.base is None else _root(data)))
        self.out_vcs, self.out_versions = out_vcs, out_versions
        self.out_ids, self.out_roots = out_ids, out_roots
        if -1 in versions or None in out_vcs:
            _refuse_saved_inference_tensors(self, outs)
        for k, o in enumerate(outs):
            if o is not None:
                o.requires_grad, o._ctx, o._oi = True, self, k

    def release(self):
        """Drop what forward saved and the inputs (keeping the graph's edges, and the shapes and dtypes of the
        inputs for pictures of the graph); a later backward through this node is an error."""
        self.input_meta = [(p.data.shape, p.data.dtype) for p in self.parents]
        self._saved = self.parents = None
        self.freed = True

    # ---- the graph, walked as in PyTorch: t.grad_fn.name(), t.grad_fn.next_functions ----------------------
    def name(self):
        """This node's name in the backward graph, as PyTorch spells it: the op's name plus "Backward"."""
        return f"{type(self).__name__}Backward"

    @property
    def next_functions(self):
        """One (node, output index) pair per input of forward: the Function that made the input, an
        AccumulateGrad node for a leaf that requires grad, or None for an input that needs no gradient."""
        slots = self.slots or (0,) * len(self.edges)
        return tuple((AccumulateGrad(e), 0) if isinstance(e, Tensor) else (e, k if e is not None else 0)
                     for e, k in zip(self.edges, slots))

    def __repr__(self):
        return f"<{self.name()}>"


_FREED = ("Trying to backward through the graph a second time (or directly access saved tensors after they "
          "have already been freed): its saved values were freed by the first backward. Call "
          ".backward(retain_graph=True) the first time if you need to backward twice.")


class OnceDifferentiable(Function):
    """The node behind a gradient that a once-differentiable Function (one with ``backward`` on arrays but no
    ``gradient``) computed with create_graph=True: differentiating that gradient again raises, naming it."""

    of = "Function"

    def name(self):
        return f"{self.of}BackwardOnceDifferentiable"

    def backward(self, *grads):
        raise RuntimeError(
            f"{self.of} is once-differentiable: its backward works on arrays, so the gradient it gave with "
            f"create_graph=True cannot be differentiated again. To differentiate through {self.of} twice, define "
            f"{self.of}.gradient(self, grad), which gets Tensors and builds the inputs' gradients from tinygradnorm "
            "ops on self.saved_tensors (docs/ARCHITECTURE.md, 'A differentiable backward')")

    gradient = backward


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


def _saved_mask(fn, roots):
    """Which of the tensors whose memory owners have these ids (the inputs', then the outputs') ``fn`` saved:
    a list of bools. A saved array that shares memory with a tensor counts as that tensor.

    NOTE: a view op saves nothing, but its output is its input's memory, so its input counts as saved:
    an in-place change to either would make the view's backward stale.
    """
    saved = {id(_root(a)) for a in fn._saved or () if a is not None and hasattr(a, "base")}
    hit = [r in saved for r in roots]
    if type(fn).is_view and fn.out_vcs and fn.out_vcs[0] is fn.parents[0]._vc:
        hit[0] = True
    return hit


def _refuse_complex(fn, data):
    raise NotImplementedError(
        f"{type(fn).__name__}: gradients through complex values are not supported (its output is {data.dtype}); only "
        "ops linear with real coefficients, such as where, pass them. Run it under no_grad, or keep the values real")


def _refuse_saved_inference_tensors(fn, outs):
    tensors = fn.parents + tuple(o for o in outs if o is not None)
    for t, saved in zip(tensors, _saved_mask(fn, [id(_root(t.data)) for t in tensors])):
        if saved and t._vc is None:
            raise RuntimeError(
                "Inference tensors cannot be saved for backward: a tensor made under inference_mode "
                f"(shape {tuple(t.shape)}) is used by {type(fn).__name__}, which needs it for the gradient. "
                "clone() it to get a normal tensor, or use no_grad() instead of inference_mode()")


def check_versions(fn):
    """Raise when an in-place op changed a tensor that ``fn`` saved for backward.

    Forward recorded every input's and output's version; only when one has moved does this look at
    whether ``fn`` actually saved that tensor (most ops save only some of their inputs).
    """
    for t, v in zip(fn.parents, fn.versions):
        if t._vc is not None and t._vc.value != v:
            return _refuse_changed(fn)
    if fn.n_out == 1:
        vc = fn.out_vcs[0]
        if vc is not None and vc.value != fn.out_versions[0]:
            _refuse_changed(fn)
        return
    for vc, v in zip(fn.out_vcs, fn.out_versions):
        if vc is not None and vc.value != v:
            return _refuse_changed(fn)


def _refuse_changed(fn):
    parents = fn.parents
    moved = [i for i, (t, v) in enumerate(zip(parents, fn.versions)) if t._vc is not None and t._vc.value != v]
    moved += [len(parents) + k for k, (vc, v) in enumerate(zip(fn.out_vcs, fn.out_versions))
              if vc is not None and vc.value != v]
    saved = _saved_mask(fn, [id(_root(t.data)) for t in parents] + list(fn.out_roots))
    for i in moved:
        if not saved[i]:
            continue
        if i >= len(parents):
            k = i - len(parents)
            vc, version = fn.out_vcs[k], fn.out_versions[k]
            what = "its output" if fn.n_out == 1 else f"its output {k}"
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


from ..tensor import Tensor  # noqa: E402  (Tensor needs Function first; see autograd/__init__.py)
