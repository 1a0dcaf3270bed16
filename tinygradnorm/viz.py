"""Pictures of the graph behind a tensor: ``draw_graph(y)`` returns a ``graphviz.Digraph``.

    import tinygradnorm as tg
    from tinygradnorm.viz import draw_graph

    g = draw_graph(loss, params=dict(model.named_parameters()))
    save_graph(g, "graph.svg")        # needs Graphviz's `dot` program; writes graph.dot without it

``draw_graphs({"fused": y1, "composite": y2})`` puts several graphs side by side.

Boxes are Functions (the backward graph's nodes, as ``t.grad_fn`` names them). Ellipses are
tensors: the output, the leaves (parameters with their names), the constants a Function was
given, and the intermediate tensors between Functions. Each shows its shape and dtype. After
backward, a leaf's ellipse also shows a summary of its gradient. Forward keeps the intermediate
tensors only until backward frees them; after that, their ellipses show the shape and dtype
the graph remembers, and the values of those that ``retain_grad()`` kept.

A gradient made with ``create_graph=True`` has a graph of its own, drawn the same way: a norm's
backward is then an op (``StandardizeBackwardBackward``, whose outputs are gx, ggamma and gbeta),
and an edge from a Function with several outputs says which output it carries.

It needs the ``graphviz`` Python package (``pip install -e ".[viz]"``). Rendering to SVG or PNG
also needs the ``dot`` program (Debian: ``apt-get install graphviz``). Without ``dot``, the
Digraph still gives its DOT source.
"""
import numpy as np

from .autograd import Function
from .autograd.engine import retained_output
from .tensor import Tensor

_FUNCTION = dict(shape="box", style="filled", fillcolor="#dbe8f5", fontname="Helvetica")
_TENSOR = dict(shape="ellipse", fontname="Helvetica")
_KINDS = {"output": "#f5d9a8", "parameter": "#cfe8c4", "leaf": "#e6e6e6", "constant": "#ffffff",
          "intermediate": "#ffffff"}


def draw_graph(root, params=None, show_grad=True, rankdir="LR"):
    """A graphviz.Digraph of the graph that made ``root`` (a Tensor): its Functions and tensors.

    ``params`` maps names to tensors (``dict(model.named_parameters())``, or a list of (name, tensor) pairs)
    so that parameters, and any other tensor named there, show their names. With ``show_grad``, tensors with a
    ``.grad`` show a summary of it. ``rankdir`` is Graphviz's direction: "LR" (inputs on the left) or "TB" (top
    to bottom).
    """
    try:
        import graphviz
    except ImportError as e:
        raise ImportError("draw_graph needs the graphviz Python package: pip install graphviz (or the project's "
                          "extra, pip install -e \".[viz]\")") from e
    if not isinstance(root, Tensor):
        raise TypeError(f"draw_graph: root must be a Tensor, got {type(root).__name__}")
    names = {id(t): name for name, t in (params.items() if isinstance(params, dict) else params or ())}
    g = graphviz.Digraph("graph", graph_attr=dict(rankdir=rankdir, fontsize="11"), node_attr=dict(fontsize="10"))
    drawn = set()

    def tensor_node(t, kind, label=None):
        key = f"t{id(t)}"
        if key not in drawn:
            drawn.add(key)
            lines = [label or names.get(id(t)) or kind, f"{tuple(t.shape)} {t.dtype}", "data " + _summary(t.data)]
            if show_grad and t.grad is not None:
                lines.append("grad " + _summary(t.grad.data))
            g.node(key, "\n".join(lines), fillcolor=_KINDS[kind], style="filled", **_TENSOR)
        return key

    def function_node(fn):
        key = f"f{id(fn)}"
        if key not in drawn:
            drawn.add(key)
            g.node(key, fn.name(), **_FUNCTION)
        return key

    out = tensor_node(root, "output", names.get(id(root), "output"))
    if root._ctx is None:
        return g
    g.edge(function_node(root._ctx), out)
    stack, seen = [root._ctx], {id(root._ctx)}
    while stack:
        fn = stack.pop()
        here = function_node(fn)
        parents = getattr(fn, "parents", None)
        meta = getattr(fn, "input_meta", None)
        slots = fn.slots or (0,) * len(fn.edges)
        for i, edge in enumerate(fn.edges):
            t = parents[i] if parents is not None else None
            if isinstance(edge, Function):
                g.edge(_between(g, drawn, edge, slots[i], t, meta[i] if meta else None, retained_output(edge, slots[i]),
                                tensor_node, function_node), here)
                if id(edge) not in seen:
                    seen.add(id(edge))
                    stack.append(edge)
            elif isinstance(edge, Tensor):
                g.edge(tensor_node(edge, "parameter" if id(edge) in names else "leaf"), here)
            elif t is not None:
                g.edge(tensor_node(t, "constant"), here, style="dashed")
    return g


def draw_graphs(roots, params=None, show_grad=True, rankdir="LR"):
    """Several graphs side by side in one Digraph, each in a labelled box: ``roots`` maps titles to tensors
    (``{"fused": y1, "composite": y2}``)."""
    import graphviz
    g = graphviz.Digraph("graphs", graph_attr=dict(rankdir=rankdir, fontsize="11"))
    for title, root in roots.items():
        sub = draw_graph(root, params, show_grad, rankdir)
        sub.name = f"cluster_{len(g.body)}"
        sub.graph_attr.update(label=title, fontname="Helvetica", style="rounded", color="#999999")
        g.subgraph(sub)
    return g


def save_graph(g, path):
    """Write the Digraph g to path, in the format its extension names (.svg, .png, .pdf; .dot or .gv for the DOT
    source), atomically. Returns the path written: a .dot file beside path when the `dot` program is missing."""
    import os

    import graphviz

    from .atomic import atomic_write
    root, ext = os.path.splitext(os.fspath(path))
    fmt = ext.lstrip(".").lower()
    if fmt not in ("dot", "gv"):
        try:
            data = g.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            path, fmt = root + ".dot", "dot"
        except ValueError as e:
            raise ValueError(f"save_graph: cannot write {path!r}: {e}; use .svg, .png, .pdf or .dot") from e
    if fmt in ("dot", "gv"):
        data = g.source.encode()
    with atomic_write(path) as f:
        f.write(data)
    return path


def _between(g, drawn, producer, slot, t, meta, kept, tensor_node, function_node):
    """The node for the tensor that flows from output ``slot`` of ``producer`` into its consumer: the tensor
    itself while forward's references last (or retain_grad kept it), else an ellipse with the shape and dtype
    the graph remembers. The edge from a Function with several outputs (a norm's backward: gx, ggamma, gbeta)
    says which output it is."""
    src = function_node(producer)
    several = len(getattr(producer, "out_vcs", None) or ()) > 1
    t = t if t is not None else kept
    if t is not None:
        key = tensor_node(t, "intermediate", "")
    else:
        key = f"m{id(producer)}_{slot}"
        if key not in drawn:
            drawn.add(key)
            shape, dtype = meta if meta else ("?", "?")
            g.node(key, f"{tuple(shape) if shape != '?' else '?'} {dtype}", fillcolor=_KINDS["intermediate"],
                   style="filled", **_TENSOR)
    if (src, key) not in drawn:
        drawn.add((src, key))
        g.edge(src, key, **({"label": f"output {slot}", "fontsize": "9"} if several else {}))
    return key


def _summary(a):
    """A short description of an array's values: the value itself when small, else mean, std and the extremes."""
    a = np.asarray(a.get() if hasattr(a, "get") else a)
    if a.size == 0:
        return "(empty)"
    if a.size <= 3:
        return np.array2string(a.reshape(-1), precision=3, separator=", ")
    a = a.astype(np.float64) if a.dtype.kind in "fiub" else np.abs(a)
    return f"mean {a.mean():.3g} std {a.std():.3g} [{a.min():.3g}, {a.max():.3g}]"
