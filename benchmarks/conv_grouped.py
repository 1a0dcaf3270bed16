"""Grouped and depthwise conv2d, forward+backward in float32, against PyTorch on the CPU in the same run.

Usage: python benchmarks/conv_grouped.py [--repeat 10]
Reports milliseconds per forward+backward (median and best of --repeat) and the ratio ours/torch.
"""
import argparse

import numpy as np

import tinygradnorm as tg
import tinygradnorm.nn.functional as F
from timing import print_table, time_ms

# (name, input shape, weight shape, groups, padding, stride)
CASES = [
    ("dense 3x3 (groups=1)", (32, 32, 28, 28), (32, 32, 3, 3), 1, 1, 1),
    ("grouped 3x3 (groups=4)", (32, 32, 28, 28), (32, 8, 3, 3), 4, 1, 1),
    ("depthwise 3x3 (groups=C)", (32, 64, 28, 28), (64, 1, 3, 3), 64, 1, 1),
    ("depthwise 3x3 stride 2", (32, 64, 28, 28), (64, 1, 3, 3), 64, 1, 2),
    ("depthwise 5x5 x2 (groups=C)", (16, 32, 32, 32), (64, 1, 5, 5), 32, 2, 1),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    import torch
    rng = np.random.default_rng(0)
    for name, xs, ws, groups, padding, stride in CASES:
        x0, w0 = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
        gy0 = rng.standard_normal(F.conv2d(tg.tensor(x0), tg.tensor(w0), padding=padding, stride=stride,
                                           groups=groups).shape).astype(np.float32)
        x, w, gy = tg.tensor(x0, requires_grad=True), tg.tensor(w0, requires_grad=True), tg.tensor(gy0)
        tx, tw, tgy = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True), torch.tensor(gy0)

        def ours():
            x.grad = w.grad = None
            F.conv2d(x, w, padding=padding, stride=stride, groups=groups).backward(gy)

        def theirs():
            tx.grad = tw.grad = None
            torch.nn.functional.conv2d(tx, tw, padding=padding, stride=stride, groups=groups).backward(tgy)

        rows = [("tinygradnorm", *time_ms(ours, args.repeat)),
                (f"torch {torch.__version__} ({torch.get_num_threads()} threads)", *time_ms(theirs, args.repeat))]
        print_table(f"{name}: x {xs}, w {ws}, fwd+bwd float32 (ms)", ["median", "best"], rows)
        print()


if __name__ == "__main__":
    main()
