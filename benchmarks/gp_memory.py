"""Memory over many WGAN-GP critic steps (benchmarks/double_backward.py's, LeNet with batch norm, batch 64): the
process's resident memory every 50 steps, and how many autograd Functions are alive. Flat is the target.

Usage: python benchmarks/gp_memory.py [--steps 500] [--every 50] [--norm batch]
"""
import argparse
import gc
import time

import numpy as np

import tinygradnorm as tg
from double_backward import gp_step
from tinygradnorm.autograd import Function


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--norm", default="batch")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.batch
    real = rng.random((n, 1, 28, 28), dtype=np.float32)
    fake = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    alpha = rng.random((n, 1, 1, 1), dtype=np.float32)
    step = gp_step(tg, args.norm, real, fake, alpha)
    print(f"WGAN-GP critic steps, LeNet with {args.norm} norm, batch {n}")
    print(f"{'step':>6}{'RSS MB':>10}{'Functions':>11}{'s':>8}")
    t0 = time.perf_counter()
    for i in range(1, args.steps + 1):
        step()
        if i == 1 or i % args.every == 0:
            alive = sum(1 for o in gc.get_objects() if issubclass(type(o), Function))
            print(f"{i:>6}{rss_mb():>10.1f}{alive:>11}{time.perf_counter() - t0:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
