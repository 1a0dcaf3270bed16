"""Normalization layers, forward+backward: fused (hand-derived) against composite (autograd), and
BatchNorm2d against PyTorch on the CPU, all measured in the same run.

Usage: python benchmarks/norm_layers.py [--repeat 10] [--threads N]
Reports milliseconds per forward+backward (median of --repeat), the ratios, and the bytes each
implementation keeps alive for backward.
"""
import argparse
import numpy as np

import tinygradnorm as tg
from tinygradnorm import nn
from timing import time_ms

BN_SHAPES = [(256, 16, 8, 8), (256, 6, 24, 24), (64, 64, 56, 56)]


def median_ms(fn, repeat):
    return time_ms(fn, repeat, warmup=1)[0]


def saved_bytes(out):
    """Bytes of the arrays the graph behind ``out`` keeps for backward (each array counted once)."""
    seen, total, stack, nodes = set(), 0, [out], set()
    while stack:
        t = stack.pop()
        fn = t._ctx
        if fn is None or id(fn) in nodes:
            continue
        nodes.add(id(fn))
        for v in vars(fn).values():
            if hasattr(v, "nbytes") and hasattr(v, "shape") and v.ndim > 0:
                base = v if v.base is None else v.base
                if id(base) not in seen:
                    seen.add(id(base))
                    total += base.nbytes
        stack.extend(fn.parents)
    return total


def ours_step(layer, x, gy):
    def step():
        x.grad = None
        layer(x).backward(gy)
    return step


def compare_fused_composite(name, make, shape, repeat, rows):
    rng = np.random.default_rng(0)
    x = tg.Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    fused, comp = make("fused"), make("composite")
    gy = tg.Tensor(rng.standard_normal(fused(x).shape).astype(np.float32))
    tf = median_ms(ours_step(fused, x, gy), repeat)
    tc = median_ms(ours_step(comp, x, gy), repeat)
    rows.append((name, shape, tf, tc, saved_bytes(fused(x)), saved_bytes(comp(x))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = ap.parse_args()

    try:
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
    except ImportError:
        torch = None

    print("BatchNorm2d train-mode forward+backward, float32, NCHW (ms, median)")
    print(f"{'shape':<20}{'fused':>9}{'composite':>11}{'torch':>9}{'fused/torch':>13}{'comp/fused':>12}")
    for shape in BN_SHAPES:
        rng = np.random.default_rng(0)
        xa = rng.standard_normal(shape).astype(np.float32)
        ga = rng.standard_normal(shape).astype(np.float32)
        x, gy = tg.Tensor(xa, requires_grad=True), tg.Tensor(ga)
        tf = median_ms(ours_step(nn.BatchNorm2d(shape[1]), x, gy), args.repeat)
        tc = median_ms(ours_step(nn.BatchNorm2d(shape[1], impl="composite"), x, gy), args.repeat)
        line = f"{str(shape):<20}{tf:>9.2f}{tc:>11.2f}"
        if torch is not None:
            tx, tgy, bn = torch.tensor(xa, requires_grad=True), torch.tensor(ga), torch.nn.BatchNorm2d(shape[1])

            def torch_step():
                tx.grad = None
                bn(tx).backward(tgy)
            tt = median_ms(torch_step, args.repeat)
            line += f"{tt:>9.2f}{tf / tt:>12.2f}x"
        else:
            line += f"{'n/a':>9}{'n/a':>13}"
        print(line + f"{tc / tf:>11.2f}x")

    rows = []
    shape4 = (64, 32, 16, 16)
    compare_fused_composite("BatchNorm2d", lambda i: nn.BatchNorm2d(32, impl=i), shape4, args.repeat, rows)
    compare_fused_composite("BatchNorm1d", lambda i: nn.BatchNorm1d(256, impl=i), (256, 256), args.repeat, rows)
    compare_fused_composite("BatchNorm3d", lambda i: nn.BatchNorm3d(8, impl=i), (16, 8, 8, 16, 16), args.repeat, rows)
    compare_fused_composite("LayerNorm", lambda i: nn.LayerNorm(512, impl=i), (64, 64, 512), args.repeat, rows)
    compare_fused_composite("GroupNorm", lambda i: nn.GroupNorm(8, 32, impl=i), shape4, args.repeat, rows)
    compare_fused_composite("InstanceNorm2d", lambda i: nn.InstanceNorm2d(32, affine=True, impl=i), shape4,
                            args.repeat, rows)
    compare_fused_composite("RMSNorm", lambda i: nn.RMSNorm(512, impl=i), (64, 64, 512), args.repeat, rows)
    compare_fused_composite("LocalResponseNorm", lambda i: nn.LocalResponseNorm(5, impl=i), shape4, args.repeat,
                            rows)
    print("\nEvery layer, forward+backward, float32: fused (hand-derived) vs composite (autograd)")
    print(f"{'layer':<19}{'shape':<20}{'fused ms':>9}{'comp ms':>9}{'speedup':>9}{'fused MB kept':>15}"
          f"{'comp MB kept':>14}")
    for name, shape, tf, tc, bf, bc in rows:
        print(f"{name:<19}{str(shape):<20}{tf:>9.2f}{tc:>9.2f}{tc / tf:>8.2f}x{bf / 2**20:>15.2f}{bc / 2**20:>14.2f}")


if __name__ == "__main__":
    main()
