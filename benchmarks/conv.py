"""The convolution family against PyTorch on the CPU, in the same run: forward and backward (the input's, weight's
and bias's gradients), float32, for typical shapes of each kind.

Usage: python benchmarks/conv.py [--rounds 5] [--repeat 7] [--only depthwise] [--paths]

The two libraries are timed in alternation, --rounds times, each time the median of --repeat calls; the table
gives our median time, torch's, and the median and range of the per-round ratios ours/torch.

--paths also times our im2col + GEMM path alone (TINYGRADNORM_CONV_DIRECT=0) in the same rounds, and gives the
ratio of the default path (with the direct tiles of backend/cpu_kernels/conv_direct.py where they run) to it: the
comparison that separate runs on a machine whose speed drifts cannot make.
"""
import argparse
import statistics

import numpy as np

import tinygradnorm as tg
from timing import time_ms

# (name, function name, input shape, weight shape, keyword arguments)
CASES = [
    ("LeNet conv1 5x5, 1->6", "conv2d", (256, 1, 28, 28), (6, 1, 5, 5), {}),
    ("LeNet conv2 5x5, 6->16", "conv2d", (256, 6, 12, 12), (16, 6, 5, 5), {}),
    ("3x3 same, 32->32", "conv2d", (32, 32, 28, 28), (32, 32, 3, 3), dict(padding=1)),
    ("3x3 stride 2, 32->64", "conv2d", (32, 32, 28, 28), (64, 32, 3, 3), dict(stride=2, padding=1)),
    ("1x1, 64->64", "conv2d", (32, 64, 28, 28), (64, 64, 1, 1), {}),
    ("3x3 dilated 2, 32->32", "conv2d", (32, 32, 28, 28), (32, 32, 3, 3), dict(padding=2, dilation=2)),
    ("3x3 grouped g=4, 32->32", "conv2d", (32, 32, 28, 28), (32, 8, 3, 3), dict(padding=1, groups=4)),
    ("3x3 depthwise, 32", "conv2d", (32, 32, 28, 28), (32, 1, 3, 3), dict(padding=1, groups=32)),
    ("3x3 depthwise stride 2, 32", "conv2d", (32, 32, 28, 28), (32, 1, 3, 3), dict(stride=2, padding=1, groups=32)),
    ("7x7 stride 2 stem, 3->32", "conv2d", (16, 3, 112, 112), (32, 3, 7, 7), dict(stride=2, padding=3)),
    ("1-D k=5, 32->32", "conv1d", (32, 32, 256), (32, 32, 5), dict(padding=2)),
    ("3-D 3x3x3, 8->16", "conv3d", (8, 8, 16, 16, 16), (16, 8, 3, 3, 3), dict(padding=1)),
    ("transposed 2-D 4x4 s2, 32->16", "conv_transpose2d", (32, 32, 14, 14), (32, 16, 4, 4), dict(stride=2, padding=1)),
    ("transposed 1-D k=4 s2, 32->16", "conv_transpose1d", (32, 32, 128), (32, 16, 4), dict(stride=2, padding=1)),
]


def step(lib, fn_name, x0, w0, kwargs):
    """forward + backward of one convolution, as an argument-less function."""
    fn = getattr(lib.nn.functional, fn_name)
    x = lib.tensor(x0, requires_grad=True)
    w = lib.tensor(w0, requires_grad=True)
    c_out = w0.shape[1] * kwargs.get("groups", 1) if "transpose" in fn_name else w0.shape[0]
    b = lib.tensor(np.zeros(c_out, np.float32), requires_grad=True)
    y = fn(x, w, b, **kwargs)
    gy = lib.tensor(np.random.default_rng(1).standard_normal(tuple(y.shape)).astype(np.float32))

    def run():
        x.grad = w.grad = b.grad = None
        fn(x, w, b, **kwargs).backward(gy)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    ap.add_argument("--paths", action="store_true", help="also time the GEMM path alone, in the same rounds")
    args = ap.parse_args()
    import torch
    if args.paths:
        from tinygradnorm.backend.cpu_kernels import conv_direct
    print(f"Convolutions, float32, forward + backward, CPU: tinygradnorm against torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    print(f"median of {args.repeat} calls, {args.rounds} interleaved rounds; ratio ours/torch, median [min-max]\n")
    print(f"{'case':<32}{'ours ms':>9}{'torch ms':>10}{'ratio':>8}   range" +
          (f"{'gemm ms':>14}{'ours/gemm':>11}   range" if args.paths else ""))
    rng = np.random.default_rng(0)
    default = conv_direct.MODE if args.paths else None
    for name, fn_name, x_shape, w_shape, kwargs in CASES:
        if args.only not in name:
            continue
        x0 = rng.standard_normal(x_shape).astype(np.float32)
        w0 = (rng.standard_normal(w_shape) * 0.1).astype(np.float32)
        ours, theirs = step(tg, fn_name, x0, w0, kwargs), step(torch, fn_name, x0, w0, kwargs)
        mine, other, gemm = [], [], []
        for _ in range(args.rounds):
            mine.append(time_ms(ours, args.repeat, warmup=2)[0])
            other.append(time_ms(theirs, args.repeat, warmup=2)[0])
            if args.paths:
                conv_direct.MODE = "0"
                gemm.append(time_ms(ours, args.repeat, warmup=2)[0])
                conv_direct.MODE = default
        ratios = [a / b for a, b in zip(mine, other)]
        a, b = statistics.median(mine), statistics.median(other)
        line = (f"{name:<32}{a:>9.2f}{b:>10.2f}{statistics.median(ratios):>7.2f}x   "
                f"{min(ratios):.2f}-{max(ratios):.2f}")
        if args.paths:
            paths = [m / g for m, g in zip(mine, gemm)]
            line += (f"{statistics.median(gemm):>11.2f}{statistics.median(paths):>10.2f}x   "
                     f"{min(paths):.2f}-{max(paths):.2f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
