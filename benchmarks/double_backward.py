"""Second-order steps on the LeNet of examples/lenet.py on the CPU, against the same in PyTorch in the same run:

- a WGAN-GP critic step: the critic's score on a batch, plus 10 x the gradient penalty (|d score / d x| - 1)^2 on
  interpolated inputs (a gradient taken with create_graph=True, then differentiated again), then an Adam update;
  with batch norm, group norm and layer norm in the critic;
- a Hessian-vector product of LeNet-BN's cross-entropy loss with respect to all its parameters.

Reports milliseconds per step (median of --repeat, the libraries timed in alternation over --rounds) and the ratio.

Usage: python benchmarks/double_backward.py [--repeat 10] [--rounds 5] [--batch 64] [--case all]
"""
import argparse
import statistics

import numpy as np

import tinygradnorm as tg
from lenet_step import build
from timing import time_ms

CASES = ("gp-batch", "gp-group", "gp-layer", "hvp-batch")


def gp_step(lib, norm, real, fake, alpha):
    """One WGAN-GP critic update as an argument-less function, in tinygradnorm or torch."""
    nn = lib.nn
    critic = build(nn, norm)
    opt = lib.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
    real, fake, alpha = lib.tensor(real), lib.tensor(fake), lib.tensor(alpha)

    def step():
        opt.zero_grad()
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_()
        score = critic(mixed)[:, 0]
        g, = lib.autograd.grad(score.sum(), mixed, create_graph=True)
        norms = (g * g).reshape(g.shape[0], -1).sum(1).sqrt()
        penalty = ((norms - 1) * (norms - 1)).mean()
        loss = critic(fake)[:, 0].mean() - critic(real)[:, 0].mean() + 10 * penalty
        loss.backward()
        opt.step()
    return step


def hvp_step(lib, x, y, vs):
    """A Hessian-vector product of the LeNet-BN loss with respect to its parameters."""
    model = build(lib.nn, "batch")
    params = list(model.parameters())
    x, y = lib.tensor(x), lib.tensor(y)
    vs = [lib.tensor(v) for v in vs]
    loss_fn = lib.nn.CrossEntropyLoss()

    def step():
        loss = loss_fn(model(x), y)
        g = lib.autograd.grad(loss, params, create_graph=True)
        dot = sum((a * v).sum() for a, v in zip(g, vs))
        lib.autograd.grad(dot, params)
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--case", choices=CASES + ("all",), default="all")
    args = ap.parse_args()
    import torch
    rng = np.random.default_rng(0)
    n = args.batch
    real = rng.random((n, 1, 28, 28), dtype=np.float32)
    fake = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    alpha = rng.random((n, 1, 1, 1), dtype=np.float32)
    y = rng.integers(0, 10, n)
    shapes = [tuple(p.shape) for p in build(tg.nn, "batch").parameters()]
    vs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    print(f"Second-order steps on LeNet, batch {n}, float32, CPU: tinygradnorm against torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    print(f"ms per step, median of {args.repeat} steps over {args.rounds} alternating rounds; ratio ours/torch of "
          "the medians, and its range over the rounds\n")
    print(f"{'case':<12}{'ours':>9}{'torch':>9}{'ratio':>8}   range")
    for case in CASES if args.case == "all" else (args.case,):
        kind, norm = case.split("-")
        if kind == "gp":
            ours, theirs = gp_step(tg, norm, real, fake, alpha), gp_step(torch, norm, real, fake, alpha)
        else:
            ours, theirs = hvp_step(tg, real, y, vs), hvp_step(torch, real, y, vs)
        mine, other = [], []
        for _ in range(args.rounds):
            mine.append(time_ms(ours, args.repeat, warmup=2)[0])
            other.append(time_ms(theirs, args.repeat, warmup=2)[0])
        ratios = [a / b for a, b in zip(mine, other)]
        a, b = statistics.median(mine), statistics.median(other)
        print(f"{case:<12}{a:>9.2f}{b:>9.2f}{a / b:>7.2f}x   {min(ratios):.2f}-{max(ratios):.2f}", flush=True)


if __name__ == "__main__":
    main()
