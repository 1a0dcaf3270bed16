"""Pictures of the graph (tinygradnorm.viz) and the graph as PyTorch lets you walk it (grad_fn.name(),
grad_fn.next_functions): the nodes and edges of fused and composite batch norm, before and after backward."""
import re
import shutil

import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm import nn
from tinygradnorm.autograd import AccumulateGrad

graphviz = pytest.importorskip("graphviz", reason="the graphviz package is not installed (pip install -e \".[viz]\")")
from tinygradnorm.viz import draw_graph, draw_graphs, save_graph  # noqa: E402


def _bn(impl, backward=False):
    m = nn.BatchNorm1d(3, impl=impl).double()
    x = tg.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    y = m(x)
    if backward:
        y.backward(tg.ones_like(y))
    return m, x, y


def _structure(g):
    """(nodes: id -> first label line, edges: set of (from, to)) parsed from the DOT source."""
    nodes = {m.group(1): (m.group(2) if m.group(2) is not None else m.group(3)).split("\n")[0]
             for m in re.finditer(r'^\s*(\w+) \[label=(?:"((?:[^"\\]|\\.)*)"|(\w+))', g.source, re.M)}
    edges = set(re.findall(r"^\s*(\w+) -> (\w+)", g.source, re.M))
    return nodes, edges


def _walk(fn):
    """Every Function reachable from fn through next_functions (PyTorch's way to walk the graph)."""
    seen, stack = {}, [fn]
    while stack:
        f = stack.pop()
        if f is None or isinstance(f, AccumulateGrad) or id(f) in seen:
            continue
        seen[id(f)] = f
        stack.extend(n for n, _ in f.next_functions)
    return list(seen.values())


@pytest.mark.parametrize("backward", [False, True], ids=["before-backward", "after-backward"])
def test_fused_batch_norm_is_one_function_with_three_inputs(backward):
    m, x, y = _bn("fused", backward)
    nodes, edges = _structure(draw_graph(y, params=[("x", x)] + list(m.named_parameters())))
    functions = {k: v for k, v in nodes.items() if k.startswith("f")}
    assert list(functions.values()) == ["StandardizeBackward"]
    (f,) = functions
    tensors = {v: k for k, v in nodes.items() if k.startswith("t")}
    assert set(tensors) == {"output", "x", "weight", "bias"}
    assert edges == {(tensors["x"], f), (tensors["weight"], f), (tensors["bias"], f), (f, tensors["output"])}


@pytest.mark.parametrize("backward", [False, True], ids=["before-backward", "after-backward"])
def test_composite_batch_norm_shows_every_primitive_op_and_agrees_with_next_functions(backward):
    m, x, y = _bn("composite", backward)
    g = draw_graph(y, params=[("x", x)] + list(m.named_parameters()))
    nodes, edges = _structure(g)
    functions = sorted(v for k, v in nodes.items() if k.startswith("f"))
    assert functions == sorted(f.name() for f in _walk(y.grad_fn))
    assert {"MeanBackward", "SubBackward", "MulBackward", "RsqrtBackward", "AddBackward"} <= set(functions)
    assert all(a in nodes and b in nodes for a, b in edges)            # no edge to a node that is not drawn
    # every path starts at a leaf or a constant and ends at the output: the output has no outgoing edge,
    # and each Function has at least one edge in and exactly one out (to the tensor it made)
    out = next(k for k, v in nodes.items() if v == "output")
    assert not any(a == out for a, _ in edges)
    for f in (k for k in nodes if k.startswith("f")):
        assert sum(a == f for a, _ in edges) == 1 and any(b == f for _, b in edges)


def test_after_backward_leaves_show_their_gradients():
    m, x, y = _bn("fused", backward=True)
    src = draw_graph(y, params=dict(m.named_parameters())).source
    assert src.count("grad ") == 3                                      # x, weight and bias
    assert "grad " not in draw_graph(y, show_grad=False).source


def test_next_functions_name_accumulate_grad_for_leaves_and_none_for_constants():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    c = tg.tensor([3.0, 4.0])
    y = x * c
    assert y.grad_fn.name() == "MulBackward"
    (first, i), (second, j) = y.grad_fn.next_functions
    assert isinstance(first, AccumulateGrad) and first.variable is x and first.name() == "AccumulateGrad"
    assert second is None and i == j == 0
    assert (y * 2).grad_fn.next_functions[0][0] is y.grad_fn


def test_side_by_side_keeps_each_graph_in_its_own_box():
    _, _, y1 = _bn("fused")
    _, _, y2 = _bn("composite")
    src = draw_graphs({"fused": y1, "composite": y2}).source
    assert src.count("subgraph cluster_") == 2 and 'label=fused' in src and 'label=composite' in src


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
def test_save_graph_renders_svg(tmp_path):
    _, _, y = _bn("fused")
    path = save_graph(draw_graph(y), tmp_path / "g.svg")
    assert str(path).endswith("g.svg") and (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")


def test_without_dot_save_graph_writes_the_dot_source(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))                           # no `dot` on the PATH
    _, _, y = _bn("fused")
    g = draw_graph(y)
    path = save_graph(g, tmp_path / "g.svg")
    assert str(path).endswith("g.dot") and (tmp_path / "g.dot").read_text() == g.source


def test_missing_graphviz_package_says_how_to_install_it(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "graphviz", None)
    _, _, y = _bn("fused")
    with pytest.raises(ImportError, match="pip install graphviz"):
        draw_graph(y)


def test_draw_graph_refuses_what_is_not_a_tensor():
    with pytest.raises(TypeError, match="root must be a Tensor, got ndarray"):
        draw_graph(np.ones(3))


@pytest.mark.parametrize("backward", [False, True], ids=["before-backward", "after-backward"])
def test_a_gradient_made_with_create_graph_draws_the_backward_as_its_own_node(backward):
    """The penalty graph of one batch norm: the backward is an op (StandardizeBackwardBackward) reading x, the
    upstream gradient and the weight; two of its outputs, gx and ggamma, flow on as labelled, separate tensors,
    also after a backward has freed the graph's tensors."""
    m, x, y = _bn("fused")
    gx, ggamma = tg.autograd.grad((y * y).sum(), (x, m.weight), create_graph=True)
    total = (gx * gx).sum() + ggamma.sum()
    if backward:
        total.backward()
    g = draw_graph(total, params=[("x", x)] + list(m.named_parameters()))
    nodes, edges = _structure(g)
    back = [k for k, v in nodes.items() if v == "StandardizeBackwardBackward"]
    assert len(back) == 1 and "StandardizeBackward" in nodes.values()        # the forward's node, feeding gy
    outs = re.findall(rf'^\s*{back[0]} -> (\w+) \[label="output (\d)"', g.source, re.M)
    assert sorted(k for _, k in outs) == ["0", "1"] and len({t for t, _ in outs}) == 2
    tensors = {v: k for k, v in nodes.items() if k.startswith("t")}
    assert (tensors["x"], back[0]) in edges and (tensors["weight"], back[0]) in edges
