"""The loss Hessian of the example's LeNet on Fashion-MNIST, with and without batch norm, during training.

    python examples/hessian_study.py                        # defaults: 10 epochs, 7 checkpoints, minutes
    python examples/hessian_study.py --epochs 1 --checkpoints 0,50,200 --lanczos 16

Ghorbani, Krishnan and Xiao (2019), "An Investigation into Neural Net Optimization via Hessian Eigenvalue
Density", report that without batch norm large isolated eigenvalues appear early in training and the
gradient concentrates in their eigenspace; that with batch norm (in training mode) both are nearly absent;
and that they come back when batch norm uses its population statistics. Santurkar et al. (2018) report that
batch norm makes the gradient more predictive along its own direction.

At each checkpoint this measures, on a fixed set of training images (--measure of them, in batches as
training sees them), the Hessian of the mean loss with respect to every parameter, through
Hessian-vector products (the gradient's gradient, create_graph=True):

- the top eigenvalues, by Lanczos with full reorthogonalization (--lanczos steps);
- the eigenvalue density, by stochastic Lanczos quadrature (--slq random starts);
- the share of the gradient's squared norm in the top-k eigenspace, |P_k g|² / |g|² (--top-k);
- the gradient's predictiveness along itself: |∇L(w - η g/|g|) - ∇L(w)| / |∇L(w)| and the change of the loss,
  for steps η (Santurkar et al.);

for batch norm both in training mode (batch statistics) and with its population statistics. Writes
hessian_study.png (eigenvalues, densities, gradient share), results.json and results.md into --out.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import tinygradnorm as tg  # noqa: E402
from tinygradnorm import nn, optim  # noqa: E402
from tinygradnorm.atomic import atomic_write  # noqa: E402
from tinygradnorm.data import DataLoader, DatasetError, FashionMNIST  # noqa: E402
from lenet import lenet  # noqa: E402

STEPS = (0.05, 0.1, 0.2, 0.4)          # the distances along the normalized gradient for the predictiveness


# ---- the Hessian through Hessian-vector products ---------------------------------------------------------------
class Curvature:
    """The mean loss over fixed batches, its gradient and Hessian-vector products, for one model and mode.

    ``mode`` is "train" (batch norm with each batch's statistics, as in training) or "eval" (its population
    statistics). In training mode a forward updates batch norm's running statistics: they are put back after
    each product, so that measuring leaves the model as it was.
    """

    def __init__(self, model, batches, mode):
        self.model, self.batches, self.mode = model, batches, mode
        self.params = [p for p in model.parameters()]
        self.shapes = [p.shape for p in self.params]
        self.dim = sum(int(np.prod(s)) for s in self.shapes)
        self.products = 0

    def _loss(self, x, y):
        return nn.functional.cross_entropy(self.model(x), y)

    def _run(self, fn):
        saved = {k: b.data.copy() for k, b in self.model.named_buffers() if b is not None}
        self.model.train(self.mode == "train")
        try:
            return fn()
        finally:
            for k, b in self.model.named_buffers():
                if b is not None:
                    b.data[...] = saved[k]

    def flat(self, tensors):
        return np.concatenate([t.numpy().astype(np.float64).ravel() for t in tensors])

    def split(self, vector):
        out, start = [], 0
        for s in self.shapes:
            n = int(np.prod(s))
            out.append(tg.tensor(vector[start:start + n].reshape(s).astype(np.float32)))
            start += n
        return out

    def loss_and_grad(self):
        def run():
            total, grads = 0.0, None
            for x, y in self.batches:
                loss = self._loss(x, y)
                g = tg.autograd.grad(loss, self.params)
                total += float(loss.item())
                grads = [a.numpy().copy() for a in g] if grads is None else [a + b.numpy() for a, b in zip(grads, g)]
            k = len(self.batches)
            return total / k, np.concatenate([a.astype(np.float64).ravel() for a in grads]) / k
        return self._run(run)

    def hvp(self, vector):
        """H v for the mean loss over the batches."""
        vs = self.split(vector)

        def run():
            out = None
            for x, y in self.batches:
                g = tg.autograd.grad(self._loss(x, y), self.params, create_graph=True)
                dot = (g[0] * vs[0]).sum()
                for a, b in zip(g[1:], vs[1:]):
                    dot = dot + (a * b).sum()
                hv = self.flat(tg.autograd.grad(dot, self.params))
                out = hv if out is None else out + hv
            return out / len(self.batches)
        self.products += 1
        return self._run(run)

    def shifted(self, direction, eta):
        """(loss, gradient) at w + eta·direction (then w again)."""
        ws = [p.data.copy() for p in self.params]
        step = self.split(direction)
        with tg.no_grad():
            for p, s in zip(self.params, step):
                p.data[...] += eta * s.data
        try:
            return self.loss_and_grad()
        finally:
            for p, w0 in zip(self.params, ws):
                p.data[...] = w0


def lanczos(hvp, dim, steps, rng, start=None):
    """(Ritz values, Ritz vectors as rows, first components of the tridiagonal's eigenvectors): Lanczos with full
    reorthogonalization from a random (or the given) unit vector."""
    v = rng.standard_normal(dim) if start is None else start.copy()
    v /= np.linalg.norm(v)
    basis, alphas, betas = [], [], []
    for j in range(min(steps, dim)):
        basis.append(v)
        w = hvp(v)
        alpha = float(w @ v)
        w = w - alpha * v - (betas[-1] * basis[-2] if j else 0)
        vs = np.array(basis)
        w -= vs.T @ (vs @ w)                       # full reorthogonalization (twice is enough)
        w -= vs.T @ (vs @ w)
        alphas.append(alpha)
        beta = float(np.linalg.norm(w))
        if beta < 1e-10 or j == steps - 1:
            break
        betas.append(beta)
        v = w / beta
    t = np.diag(alphas) + np.diag(betas[:len(alphas) - 1], 1) + np.diag(betas[:len(alphas) - 1], -1)
    values, vectors = np.linalg.eigh(t)
    return values, vectors.T @ np.array(basis), vectors[0]


def density(nodes, weights, grid, sigma):
    """Stochastic Lanczos quadrature: Gaussians of width sigma at the Ritz values, weighted by the squared first
    components, averaged over the random starts."""
    out = np.zeros_like(grid)
    for theta, tau in zip(nodes, weights):
        out += (tau[None, :] * np.exp(-(grid[:, None] - theta[None, :]) ** 2 / (2 * sigma ** 2))).sum(1)
    return out / (len(nodes) * sigma * math.sqrt(2 * math.pi))


def measure(model, batches, mode, args, rng):
    """Every figure of the study for one model, mode and checkpoint."""
    t0 = time.perf_counter()
    curv = Curvature(model, batches, mode)
    loss, g = curv.loss_and_grad()
    values, vectors, _ = lanczos(curv.hvp, curv.dim, args.lanczos, rng)
    order = np.argsort(values)[::-1]
    top = values[order][:args.top_k]
    top_vectors = vectors[order][:args.top_k]
    share = float(np.sum((top_vectors @ g) ** 2) / max(g @ g, 1e-30))
    nodes, weights = [], []
    for _ in range(args.slq):
        theta, _, first = lanczos(curv.hvp, curv.dim, args.lanczos, rng)
        nodes.append(theta)
        weights.append(first ** 2)
    predictiveness = []
    unit = g / max(np.linalg.norm(g), 1e-30)
    for eta in STEPS:
        loss_eta, g_eta = curv.shifted(-unit, eta)
        change = float(np.linalg.norm(g_eta - g))
        predictiveness.append({"eta": eta, "grad_change": change,
                               "relative_grad_change": change / max(float(np.linalg.norm(g)), 1e-30),
                               "loss_change": loss_eta - loss})
    return {"mode": mode, "loss": loss, "grad_norm": float(np.linalg.norm(g)), "top_eigenvalues": top.tolist(),
            "top_k_gradient_share": share, "slq_nodes": [n.tolist() for n in nodes],
            "slq_weights": [w.tolist() for w in weights], "predictiveness": predictiveness,
            "hessian_vector_products": curv.products, "seconds": round(time.perf_counter() - t0, 1)}


# ---- training, with measurements at the checkpoints ---------------------------------------------------------------
def run(norm, args, train_set, measure_batches, progress_factory):
    tg.manual_seed(args.seed)
    model = lenet(norm)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loader = DataLoader(train_set, args.batch_size, shuffle=True, seed=args.seed)
    total = args.epochs * len(loader)
    checkpoints = sorted({min(c, total) for c in args.checkpoints} | ({total} if args.at_end else set()))
    modes = ("train", "eval") if norm == "batch" else ("train",)
    results, step = [], 0
    rng = np.random.default_rng(args.seed)
    bar = progress_factory(total, f"LeNet, {norm} norm")

    def checkpoint():
        for mode in modes:
            r = measure(model, measure_batches, mode, args, rng)
            r["step"] = step
            results.append(r)
            line = (f"  {norm} norm, step {step}, {mode} statistics: top eigenvalues "
                    f"{', '.join(f'{v:.3g}' for v in r['top_eigenvalues'][:3])}, top-{args.top_k} gradient "
                    f"share {r['top_k_gradient_share']:.2f} ({r['seconds']} s)")
            (bar.write if bar is not None else print)(line)
    if 0 in checkpoints:
        checkpoint()
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        for x, y in loader:
            model.train()
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            step += 1
            if bar is not None:
                bar.update(1)
            if step in checkpoints:
                checkpoint()
    if bar is not None:
        bar.close()
    return results


def plot(results, path, top_k):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [(norm, mode) for norm in results for mode in sorted({r["mode"] for r in results[norm]})]
    labels = {run: f"{run[0]} norm" + (f", {'batch' if run[1] == 'train' else 'population'} statistics"
                                       if run[0] == "batch" else "") for run in runs}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for norm, mode in runs:
        rs = [r for r in results[norm] if r["mode"] == mode]
        label = labels[norm, mode]
        steps = [r["step"] for r in rs]
        axes[0].plot(steps, [r["top_eigenvalues"][0] for r in rs], marker="o", label=label)
        axes[1].plot(steps, [r["top_k_gradient_share"] for r in rs], marker="o", label=label)
    axes[0].set(xlabel="training step", ylabel="largest Hessian eigenvalue", yscale="log",
                title="the top of the spectrum")
    axes[1].set(xlabel="training step", ylabel=f"|P_{top_k} g|² / |g|²", ylim=(0, 1),
                title=f"gradient share in the top-{top_k} eigenspace")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    # each density over its own scale (eigenvalue / the largest), so that outliers show as bumps apart from the
    # bulk near 0 whatever the network's overall curvature
    grid = np.linspace(-0.3, 1.1, 700)
    for norm, mode in runs:
        r = [r for r in results[norm] if r["mode"] == mode][-1]
        scale = max(max(abs(v) for v in n) for n in r["slq_nodes"])
        d = density([np.array(n) / scale for n in r["slq_nodes"]], [np.array(w) for w in r["slq_weights"]], grid,
                    sigma=0.01)
        axes[2].semilogy(grid, np.maximum(d, 1e-8), label=f"{labels[norm, mode]} (step {r['step']}, "
                                                          f"largest {scale:.3g})")
    axes[2].set(xlabel="eigenvalue / largest eigenvalue", ylabel="density (SLQ)",
                title="eigenvalue density, last checkpoint")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def table(results, top_k):
    lines = [f"| norm | statistics | step | loss | top eigenvalues | top-{top_k} gradient share | relative gradient "
             f"change at eta={STEPS[1]} | s |", "|---|---|---|---|---|---|---|---|"]
    for norm, rs in results.items():
        for r in rs:
            stats = {"train": "batch", "eval": "population"}[r["mode"]] if norm == "batch" else "-"
            top = ", ".join(f"{v:.3g}" for v in r["top_eigenvalues"][:3])
            lines.append(f"| {norm} | {stats} | {r['step']} | {r['loss']:.3f} | {top} | "
                         f"{r['top_k_gradient_share']:.2f} | {r['predictiveness'][1]['relative_grad_change']:.2f} | "
                         f"{r['seconds']} |")
    return "\n".join(lines) + "\n"


def _ints(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"checkpoints must be non-negative steps, got {text!r}")
    return values


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--norms", default="none,batch", help="the networks' normalizations: none and/or batch")
    ap.add_argument("--epochs", type=int, default=10, help="enough for the network without batch norm to leave "
                                                                 "its initial plateau (near step 1400)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.1, help="SGD with momentum 0.9, as the example")
    ap.add_argument("--checkpoints", type=_ints, default=[0, 100, 500, 1000, 1500, 2000],
                    help="training steps to measure at (and the last step)")
    ap.add_argument("--measure", type=int, default=512, help="training images the Hessian is measured on")
    ap.add_argument("--lanczos", type=int, default=24, help="Lanczos steps")
    ap.add_argument("--slq", type=int, default=2, help="random starts of stochastic Lanczos quadrature")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--limit-train", type=int, default=0, help="train on the first N images only (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="runs/hessian_study")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    if not norms or any(n not in ("none", "batch") for n in norms):
        ap.error(f"--norms must be none and/or batch (got {args.norms!r})")
    for name in ("epochs", "batch_size", "measure", "lanczos", "slq", "top_k"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.top_k > args.lanczos:
        ap.error("--top-k cannot exceed --lanczos (the Ritz values are the eigenvalue estimates)")
    args.at_end = True
    try:
        train_set = FashionMNIST(args.data_dir, train=True)
    except DatasetError as e:
        raise SystemExit(f"hessian_study.py: error: {e}") from None
    images, labels = train_set.arrays()
    if args.limit_train:
        from tinygradnorm.data import TensorDataset
        train_set = TensorDataset(images[:args.limit_train], labels[:args.limit_train])
    n = min(args.measure, len(images))
    measure_batches = [(tg.tensor(images[i:i + args.batch_size]), tg.tensor(labels[i:i + args.batch_size]))
                       for i in range(0, n, args.batch_size)]
    progress = None
    if not args.no_progress:
        try:
            from tqdm import tqdm
            progress = lambda total, desc: tqdm(total=total, desc=desc, leave=False)  # noqa: E731
        except ImportError:
            pass
    progress = progress or (lambda total, desc: None)
    os.makedirs(args.out, exist_ok=True)
    results, t0 = {}, time.perf_counter()
    for norm in norms:
        results[norm] = run(norm, args, train_set, measure_batches, progress)
    config = {k: v for k, v in vars(args).items() if k not in ("out", "no_progress", "data_dir")}
    with atomic_write(os.path.join(args.out, "results.json")) as f:
        f.write(json.dumps({"config": config, "results": results, "seconds": round(time.perf_counter() - t0, 1)},
                           indent=1).encode())
    md = table(results, args.top_k)
    with atomic_write(os.path.join(args.out, "results.md")) as f:
        f.write(md.encode())
    plot(results, os.path.join(args.out, "hessian_study.png"), args.top_k)
    print(md)
    print(f"wrote hessian_study.png, results.json and results.md into {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
