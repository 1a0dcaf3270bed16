"""WGAN-GP on a mixture of 8 Gaussians, with the critic normalized by batch norm, layer norm or nothing.

    python examples/gradient_penalty.py                      # all three critics, about a minute each on 2 cores
    python examples/gradient_penalty.py --norm batch --iters 500

The gradient penalty of Gulrajani et al. (2017) pushes |∂D(x)/∂x| towards 1 at points x between real and
generated samples, one example at a time. Their section 4 warns that batch norm in the critic breaks this:
in training mode it normalizes each example with the batch's statistics, so D(x_i) depends on every x_j and
the per-example gradient is no longer the gradient the penalty means. They recommend layer norm instead.
This trains the same generator against each critic and writes, into --out:

- ``gradient_penalty.png``: per critic, the real and generated samples over the critic's contours;
- ``metrics.json``: per critic, the share of generated samples near a mode, how many of the 8 modes they
  cover, the critic's Wasserstein estimate, the mean |∂D/∂x| the penalty sees, and the largest cross-example
  gradient |∂D(x_i)/∂x_j| (j ≠ i) at the end: zero unless the critic mixes examples.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tinygradnorm as tg  # noqa: E402
from tinygradnorm import nn, optim  # noqa: E402
from tinygradnorm.atomic import atomic_write  # noqa: E402

NORMS = ("batch", "layer", "none")
TITLES = {"batch": "batch norm", "layer": "layer norm", "none": "no normalization"}
MODES = np.array([(2 * math.cos(a), 2 * math.sin(a)) for a in np.arange(8) * math.pi / 4])
STD = 0.02


def sample_real(rng, n):
    """n points of the 8-Gaussian mixture: a mode at random, plus noise of std 0.02."""
    return (MODES[rng.integers(0, 8, n)] + rng.standard_normal((n, 2)) * STD).astype(np.float32)


def norm(kind, width):
    return {"batch": lambda: nn.BatchNorm1d(width), "layer": lambda: nn.LayerNorm(width),
            "none": lambda: nn.Identity()}[kind]()


def critic(kind, width=128):
    return nn.Sequential(nn.Linear(2, width), norm(kind, width), nn.ReLU(), nn.Linear(width, width),
                         norm(kind, width), nn.ReLU(), nn.Linear(width, 1))


def generator(width=128):
    return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))


def penalty(d, real, fake, rng):
    """Gulrajani et al.'s penalty: (|∂D(x)/∂x| - 1)² at random points x between real and fake, per example; and
    the mean gradient norm it saw."""
    alpha = tg.tensor(rng.random((real.shape[0], 1)).astype(np.float32))
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_()
    g, = tg.autograd.grad(d(mixed).sum(), mixed, create_graph=True)
    norms = ((g * g).sum(1) + 1e-12).sqrt()
    return ((norms - 1) * (norms - 1)).mean(), float(norms.mean().item())


def train(kind, iters, batch, seed, progress=None, n_critic=5, lam=10.0):
    """Train a generator against a critic normalized by ``kind``; returns (generator, critic, history)."""
    rng = np.random.default_rng(seed)
    tg.manual_seed(seed)
    g_net, d_net = generator(), critic(kind)
    opt_g = optim.Adam(g_net.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = optim.Adam(d_net.parameters(), lr=1e-4, betas=(0.5, 0.9))
    history = []
    for it in range(iters):
        for _ in range(n_critic):
            real = tg.tensor(sample_real(rng, batch))
            with tg.no_grad():
                fake = g_net(tg.tensor(rng.standard_normal((batch, 2)).astype(np.float32)))
            opt_d.zero_grad()
            gp, grad_norm = penalty(d_net, real, fake, rng)
            w_estimate = d_net(real).mean() - d_net(fake).mean()
            (lam * gp - w_estimate).backward()
            opt_d.step()
        opt_g.zero_grad()
        z = tg.tensor(rng.standard_normal((batch, 2)).astype(np.float32))
        (-d_net(g_net(z)).mean()).backward()
        opt_g.step()
        if it % 50 == 0 or it == iters - 1:
            history.append({"iter": it, "wasserstein": float(w_estimate.item()), "penalty": float(gp.item()),
                            "grad_norm": grad_norm})
        if progress is not None:
            progress.update(1)
            progress.set_postfix(W=f"{w_estimate.item():.3f}", gp=f"{gp.item():.3f}")
    return g_net, d_net, history


def cross_example_gradient(d_net, rng, n=64):
    """The largest |∂D(x_0)/∂x_j| over j ≠ 0, in training mode, at real samples: 0 unless D mixes examples."""
    d_net.train()
    x = tg.tensor(sample_real(rng, n), requires_grad=True)
    g, = tg.autograd.grad(d_net(x)[0, 0], x)
    return float(np.abs(g.numpy()[1:]).max())


def evaluate(g_net, d_net, rng, n=2000):
    """The metrics of one trained pair (see the module's docstring)."""
    with tg.no_grad():
        fake = g_net(tg.tensor(rng.standard_normal((n, 2)).astype(np.float32))).numpy()
    dist = np.linalg.norm(fake[:, None, :] - MODES[None], axis=2)
    near = dist.min(1) < 3 * STD * 5                      # within 0.3 of a mode (the modes are 1.53 apart)
    covered = int(len(set(dist.argmin(1)[near].tolist())))
    real = tg.tensor(sample_real(rng, n))
    d_net.train()
    _, grad_norm = penalty(d_net, real, tg.tensor(fake), rng)
    with tg.no_grad():
        w = float((d_net(real).mean() - d_net(tg.tensor(fake)).mean()).item())
    return {"near_a_mode": float(near.mean()), "modes_covered": covered, "wasserstein_estimate": w,
            "mean_grad_norm": grad_norm, "cross_example_gradient": cross_example_gradient(d_net, rng)}


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.2), squeeze=False)
    grid = np.linspace(-3, 3, 121, dtype=np.float32)
    xx, yy = np.meshgrid(grid, grid)
    points = tg.tensor(np.stack([xx.ravel(), yy.ravel()], 1))
    rng = np.random.default_rng(123)
    for ax, (kind, (g_net, d_net, metrics)) in zip(axes[0], results.items()):
        d_net.eval()                                       # the critic with its population statistics
        with tg.no_grad():
            levels = d_net(points).numpy().reshape(xx.shape)
            fake = g_net(tg.tensor(rng.standard_normal((1000, 2)).astype(np.float32))).numpy()
        ax.contourf(xx, yy, levels, levels=20, cmap="viridis", alpha=0.8)
        real = sample_real(rng, 1000)
        ax.scatter(real[:, 0], real[:, 1], s=2, c="white", label="real")
        ax.scatter(fake[:, 0], fake[:, 1], s=2, c="orange", label="generated")
        ax.set_title(f"critic: {TITLES[kind]}\n{metrics['near_a_mode']:.0%} near a mode, "
                     f"{metrics['modes_covered']}/8 modes", fontsize=10)
        ax.set_xlim(-3, 3), ax.set_ylim(-3, 3), ax.set_aspect("equal"), ax.set_xticks([]), ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--norm", default="batch,layer,none", help="the critics' normalizations, comma-separated, of "
                                                              f"{', '.join(NORMS)}")
    ap.add_argument("--iters", type=int, default=1500, help="generator steps (each after 5 critic steps)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/gradient_penalty")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.norm.split(",") if k.strip()]
    bad = [k for k in kinds if k not in NORMS]
    if bad or not kinds:
        ap.error(f"--norm: {bad or kinds} not among {NORMS}")
    if args.iters < 1 or args.batch < 2:
        ap.error("--iters must be at least 1 and --batch at least 2 (batch norm needs two examples)")
    os.makedirs(args.out, exist_ok=True)
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    results, report = {}, {}
    for kind in kinds:
        t0 = time.perf_counter()
        bar = tqdm(total=args.iters, desc=f"critic: {TITLES[kind]}", leave=False) if tqdm else None
        g_net, d_net, history = train(kind, args.iters, args.batch, args.seed, bar)
        if bar is not None:
            bar.close()
        metrics = evaluate(g_net, d_net, np.random.default_rng(args.seed + 1))
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        results[kind] = (g_net, d_net, metrics)
        report[kind] = dict(metrics, history=history)
        print(f"critic with {TITLES[kind]}: {metrics['near_a_mode']:.0%} of samples near a mode, "
              f"{metrics['modes_covered']}/8 modes, W estimate {metrics['wasserstein_estimate']:.3f}, "
              f"mean |dD/dx| {metrics['mean_grad_norm']:.2f}, cross-example gradient "
              f"{metrics['cross_example_gradient']:.2e} ({metrics['seconds']} s)", flush=True)
    config = {"iters": args.iters, "batch": args.batch, "seed": args.seed, "n_critic": 5, "lambda": 10.0}
    with atomic_write(os.path.join(args.out, "metrics.json")) as f:
        f.write(json.dumps({"config": config, "critics": report}, indent=1).encode())
    plot(results, os.path.join(args.out, "gradient_penalty.png"))
    print(f"wrote {os.path.join(args.out, 'gradient_penalty.png')} and metrics.json")


if __name__ == "__main__":
    main()
