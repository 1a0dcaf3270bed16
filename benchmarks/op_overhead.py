"""Per-op Python overhead: a small elementwise op with its backward, against PyTorch in the same run.

Usage: python benchmarks/op_overhead.py [--size 16] [--repeat 20000]
"""
import argparse
import timeit

import numpy as np

import tinygradnorm as tg
from timing import print_table


def per_call_us(fn, repeat):
    fn()
    best = min(timeit.repeat(fn, number=repeat, repeat=5))
    return best / repeat * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=20000)
    args = ap.parse_args()
    x0 = np.random.default_rng(0).standard_normal(args.size).astype(np.float32)
    rows = []

    x = tg.tensor(x0, requires_grad=True)
    g = tg.ones(args.size)

    def ours_fwd():
        x * 2.0

    def ours_fwd_bwd():
        (x * 2.0).backward(g)

    rows.append(("tinygradnorm", per_call_us(ours_fwd, args.repeat), per_call_us(ours_fwd_bwd, args.repeat)))
    try:
        import torch
        torch.set_num_threads(1)
        tx = torch.tensor(x0, requires_grad=True)
        tgr = torch.ones(args.size)

        def torch_fwd():
            tx * 2.0

        def torch_fwd_bwd():
            (tx * 2.0).backward(tgr)

        rows.append(("torch " + torch.__version__, per_call_us(torch_fwd, args.repeat),
                     per_call_us(torch_fwd_bwd, args.repeat)))
    except ImportError:
        pass

    print_table(f"elementwise x * 2.0 on {args.size} float32 elements (best of 5 x {args.repeat} calls, µs)",
                ["forward", "fwd+bwd"], rows, unit_width=12, name_width=22)

if __name__ == "__main__":
    main()
