"""Walk one small batch through batch norm, forward and backward, step by step.

Prints the staged forward graph (mean, centred x, variance, inv_std, x_hat, y), the
gradient of every intermediate on the way back, then the input gradient three ways: the
hand-derived closed form, autograd through the composite layer, and finite differences.
Read it next to docs/normalization.md section 1. With --graph, it also draws the graph of one
BatchNorm1d call both ways, fused (one hand-derived Function) and composite (the primitive ops
autograd differentiates), side by side. With --double-graph, it draws the graph of a loss plus a
gradient penalty on the same call: the gradient made with create_graph=True has a graph of its
own, whose node is batch norm's backward as an op (docs/normalization.md, section 9).

    python examples/bn_backprop.py
    python examples/bn_backprop.py --graph bn_graphs.svg     # needs: pip install graphviz; dot renders it
    python examples/bn_backprop.py --double-graph bn_double_backward.svg
"""
import argparse

import numpy as np

import tinygradnorm as tg
from tinygradnorm import nn


def show(name, t, note=""):
    print(f"  {name:<10} shape {str(tuple(t.shape)):<8} {note}")
    print("    " + np.array2string(t.numpy(), precision=4, suppress_small=True).replace("\n", "\n    "))


def staged_forward(x, gamma, beta, eps):
    """Batch norm as six named steps of primitive ops; each keeps its gradient for printing."""
    mean = x.mean(dim=0, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=0, keepdim=True)
    inv_std = (var + eps).rsqrt()
    x_hat = centred * inv_std
    y = x_hat * gamma + beta
    stages = [("mean", mean, "Σx/m"), ("centred", centred, "x - mean"), ("var", var, "Σcentred²/m (biased)"),
              ("inv_std", inv_std, "1/sqrt(var + eps)"), ("x_hat", x_hat, "centred * inv_std"),
              ("y", y, "gamma * x_hat + beta")]
    for _, t, _ in stages:
        t.retain_grad()
    return y, stages


def finite_differences(f, x, eps=1e-6):
    """d f / d x by central differences, one element at a time."""
    grad = np.zeros(x.shape)
    flat, out = x.data.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        plus = f()
        flat[i] = orig - eps
        minus = f()
        flat[i] = orig
        out[i] = (plus - minus) / (2 * eps)
    return grad


def draw_double_backward(x_np, gamma_np, beta_np, gy_np, eps, path):
    """Draw loss + |∂loss/∂x|² for one fused BatchNorm1d call, loss = Σ y·gy: the forward's node
    (StandardizeBackward) and, beside it, the node of the gradient's own graph (StandardizeBackwardBackward,
    the hand-derived backward as an op with outputs gx, ggamma, gbeta), both reading x and the weight."""
    from tinygradnorm.viz import draw_graph, save_graph
    layer = nn.BatchNorm1d(x_np.shape[1], eps=eps).double()
    layer.weight.data[...] = gamma_np
    layer.bias.data[...] = beta_np
    x = tg.tensor(x_np, requires_grad=True)
    loss = (layer(x) * tg.tensor(gy_np)).sum()
    gx, = tg.autograd.grad(loss, x, create_graph=True)
    total = loss + (gx * gx).sum()
    names = [("x", x), ("loss + |gx|²", total)] + list(layer.named_parameters())
    written = save_graph(draw_graph(total, params=names, rankdir="TB"), path)
    print(f"\nThe graph of loss + |gx|², gx made with create_graph=True: {written}"
          + ("" if written == path else " (Graphviz's dot program is missing: DOT source only)"))


class _Parser(argparse.ArgumentParser):
    """Errors as one line, with no usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None):
    ap = _Parser(description="Batch norm backward, step by step.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--batch", type=int, default=4, help="examples in the batch (m, the values per channel)")
    ap.add_argument("--features", type=int, default=3, help="channels, each normalized on its own")
    ap.add_argument("--seed", type=int, default=0, help="seed for the batch, gamma, beta and gy")
    ap.add_argument("--graph", metavar="FILE", default=None,
                    help="also draw the fused and composite graphs, with their gradients, to FILE (.svg, .png, .pdf "
                         "or .dot; without Graphviz's dot program, the DOT source goes to FILE.dot)")
    ap.add_argument("--double-graph", metavar="FILE", default=None,
                    help="also draw the graph of loss + |dloss/dx|² for the fused layer, where the gradient is "
                         "made with create_graph=True, to FILE")
    args = ap.parse_args(argv)
    for flag, path in (("--graph", args.graph), ("--double-graph", args.double_graph)):
        if path is not None:
            try:
                import graphviz  # noqa: F401
            except ImportError:
                ap.error(f"{flag} {path}: drawing needs the graphviz package: pip install graphviz")
    if args.batch < 2:
        ap.error(f"--batch {args.batch}: batch norm needs at least 2 values per channel to have a variance")
    if args.features < 1:
        ap.error(f"--features {args.features}: needs at least 1 channel")
    rng = np.random.default_rng(args.seed)
    n, c, eps = args.batch, args.features, 1e-5
    x_np = rng.standard_normal((n, c)) * 2 + 1
    gamma_np, beta_np = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    gy_np = rng.standard_normal((n, c))
    gy = tg.tensor(gy_np)
    print(f"BatchNorm1d({c}) on a batch of {n}, float64, m = {n} values per channel\n")

    print("Forward, one step at a time:")
    x = tg.tensor(x_np, requires_grad=True)
    gamma, beta = tg.tensor(gamma_np, requires_grad=True), tg.tensor(beta_np, requires_grad=True)
    y, stages = staged_forward(x, gamma, beta, eps)
    show("x", x)
    for name, t, note in stages:
        show(name, t, note)

    print("\nBackward, from a random upstream gradient gy, in reverse:")
    y.backward(gy)
    for name, t, _ in reversed(stages):
        show("g_" + name, t.grad)
    show("gx", x.grad, "what reaches the input")
    show("ggamma", gamma.grad, "Σ gy * x_hat")
    show("gbeta", beta.grad, "Σ gy")
    staged = x.grad.numpy()

    # The closed form, computed here in NumPy exactly as docs/normalization.md writes it.
    x_hat = stages[4][1].numpy()
    inv_std = stages[3][1].numpy()
    g_hat = gamma_np * gy_np
    closed = (inv_std / n) * (n * g_hat - g_hat.sum(0) - x_hat * (g_hat * x_hat).sum(0))
    print("\nThe closed form  gx = (inv_std/m) (m g_hat - Σ g_hat - x_hat Σ(g_hat x_hat)),  g_hat = gamma * gy:")
    print("    " + np.array2string(closed, precision=4, suppress_small=True).replace("\n", "\n    "))

    results = {"staged graph (autograd)": staged, "closed form (by hand)": closed}
    outputs, names = {}, []
    for impl in ("fused", "composite"):
        layer = nn.BatchNorm1d(c, eps=eps, impl=impl).double()
        layer.weight.data[...] = gamma_np
        layer.bias.data[...] = beta_np
        xi = tg.tensor(x_np, requires_grad=True)
        y_impl = layer(xi)
        y_impl.backward(gy)
        results[f"nn.BatchNorm1d impl={impl}"] = xi.grad.numpy()
        outputs[f"BatchNorm1d({c}, impl={impl!r})"] = y_impl
        names += [("x", xi)] + list(layer.named_parameters())
    if args.graph is not None:
        from tinygradnorm.viz import draw_graphs, save_graph
        g = draw_graphs(outputs, params=names, rankdir="TB")
        written = save_graph(g, args.graph)
        print(f"\nThe two graphs, with their gradients: {written}"
              + ("" if written == args.graph else " (Graphviz's dot program is missing: DOT source only)"))
    if args.double_graph is not None:
        draw_double_backward(x_np, gamma_np, beta_np, gy_np, eps, args.double_graph)
    layer = nn.BatchNorm1d(c, eps=eps).double()
    layer.weight.data[...] = gamma_np
    layer.bias.data[...] = beta_np
    xf = tg.tensor(x_np.copy())
    with tg.no_grad():
        results["finite differences"] = finite_differences(lambda: float((layer(xf).numpy() * gy_np).sum()), xf)

    print("\nMaximum absolute difference between the input gradients:")
    names = list(results)
    width = max(len(k) for k in names)
    print(" " * (width + 2) + "".join(f"{i:>12}" for i in range(len(names))))
    for i, a in enumerate(names):
        row = "".join(f"{np.abs(results[a] - results[b]).max():>12.2e}" for b in names)
        print(f"{a:<{width}}{i:>2}{row}")
    worst = max(np.abs(results[a] - results[b]).max() for a in names for b in names)
    print(f"\nworst disagreement {worst:.2e} (finite differences are accurate to about 1e-9)")


if __name__ == "__main__":
    main()
