"""One training step (forward, backward, SGD update) of the LeNet of examples/lenet.py at batch 256 on the CPU,
against the same network in PyTorch in the same run, for each normalization the example offers.
Reports milliseconds per step (median and best of --repeat, the two libraries timed in alternation) and the ratios.

Usage: python benchmarks/lenet_step.py [--repeat 30] [--batch 256] [--norm batch|layer|group|instance|none|all]

tinygradnorm is imported before torch, so both libraries' OpenMP runtimes start with the GOMP_SPINCOUNT it
sets (see backend/numpy_backend.py); torch's own speed is the same either way (11.4 and 11.3 ms measured
alone for --norm batch).
"""
import argparse
import statistics

import numpy as np

import tinygradnorm as tg
from tinygradnorm import nn, optim
from timing import time_ms

NORMS = ("batch", "layer", "group", "instance", "none")


def norm_layer(lib, kind, channels, spatial=None):
    """The example's normalization after a conv (spatial = its output H, W) or a linear layer (spatial None)."""
    if kind == "batch":
        return (lib.BatchNorm2d if spatial else lib.BatchNorm1d)(channels)
    if kind == "layer":
        return lib.LayerNorm((channels, *spatial) if spatial else channels)
    if kind == "group":
        return lib.GroupNorm(2 if channels % 4 else 4, channels)
    if kind == "instance" and spatial:
        return lib.InstanceNorm2d(channels, affine=True)
    return lib.Identity()


def build(lib, norm="batch"):
    """The network of examples/lenet.py, from tinygradnorm.nn or torch.nn."""
    layer = lambda c, spatial=None: norm_layer(lib, norm, c, spatial)  # noqa: E731
    return lib.Sequential(
        lib.Conv2d(1, 6, kernel_size=5), layer(6, (24, 24)), lib.Sigmoid(), lib.AvgPool2d(2, 2),
        lib.Conv2d(6, 16, kernel_size=5), layer(16, (8, 8)), lib.Sigmoid(), lib.AvgPool2d(2, 2), lib.Flatten(),
        lib.Linear(256, 120), layer(120), lib.Sigmoid(), lib.Linear(120, 84), layer(84),
        lib.Sigmoid(), lib.Linear(84, 10))


def steps(norm, x, y):
    """(ours, theirs): one training step of each library's network, as argument-less functions."""
    import torch
    model = build(nn, norm)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    X, Y = tg.tensor(x), tg.tensor(y)

    def ours():
        opt.zero_grad()
        loss_fn(model(X), Y).backward()
        opt.step()

    tmodel = build(torch.nn, norm)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
    tloss = torch.nn.CrossEntropyLoss()
    tX, tY = torch.tensor(x), torch.tensor(y)

    def theirs():
        topt.zero_grad()
        tloss(tmodel(tX), tY).backward()
        topt.step()
    return ours, theirs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5, help="alternations of the two libraries")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--norm", choices=NORMS + ("all",), default="all")
    args = ap.parse_args()
    import torch
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    print(f"LeNet training step, batch {args.batch}, float32, CPU: tinygradnorm against torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    print(f"ms per step, median of {args.repeat} steps, {args.rounds} alternating rounds; ratio ours/torch of the "
          "medians, and its range over the rounds\n")
    print(f"{'--norm':<10}{'ours':>8}{'torch':>8}{'ratio':>8}   range")
    for norm in NORMS if args.norm == "all" else (args.norm,):
        ours, theirs = steps(norm, x, y)
        mine, other = [], []
        for _ in range(args.rounds):
            mine.append(time_ms(ours, args.repeat)[0])
            other.append(time_ms(theirs, args.repeat)[0])
        ratios = [a / b for a, b in zip(mine, other)]
        a, b = statistics.median(mine), statistics.median(other)
        print(f"{norm:<10}{a:>8.2f}{b:>8.2f}{a / b:>7.2f}x   {min(ratios):.2f}-{max(ratios):.2f}", flush=True)


if __name__ == "__main__":
    main()
