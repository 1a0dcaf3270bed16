"""Every normalization layer against PyTorch on the CPU, in the same run: train mode (forward+backward,
with the input's and the parameters' gradients) and eval mode (forward under no_grad).

Usage: python benchmarks/norm_layers.py [--rounds 5] [--repeat 7] [--only GroupNorm] [--mode train|eval]
                                      [--numpy-alignment]

The two libraries are timed in alternation, --rounds times, each time the median of --repeat calls;
the table gives our median time, torch's, and the median and range of the per-round ratios
ours/torch (below 1.0: we are faster). Run with TINYGRADNORM_JIT=0 to time the NumPy path.
Add --composite for the composite (autograd-derived) layers' train step beside the fused ones.

Our input and output gradient start on a 64-byte boundary, as a layer inside a network gets them from the
kernels' recycled memory and as torch's allocator gives every tensor; --numpy-alignment passes NumPy's own
arrays instead (16 bytes past a boundary), the case of a user's array handed straight to a layer.
"""
import argparse
import statistics

import numpy as np

import tinygradnorm as tg
from tinygradnorm import nn
from timing import aligned, time_ms

# (name, constructor taking the nn module of either library, input shape): the shapes of issue 13's table.
CASES = [
    ("GroupNorm(8, 64), affine", lambda lib: lib.GroupNorm(8, 64), (32, 64, 28, 28)),
    ("LayerNorm((16, 8, 8)), affine", lambda lib: lib.LayerNorm((16, 8, 8)), (256, 16, 8, 8)),
    ("LayerNorm(768), affine", lambda lib: lib.LayerNorm(768), (64, 128, 768)),
    ("BatchNorm1d(256)", lambda lib: lib.BatchNorm1d(256), (256, 256)),
    ("RMSNorm(768)", lambda lib: lib.RMSNorm(768), (64, 128, 768)),
    ("BatchNorm2d(64)", lambda lib: lib.BatchNorm2d(64), (64, 64, 28, 28)),
    ("BatchNorm3d(16)", lambda lib: lib.BatchNorm3d(16), (16, 16, 8, 16, 16)),
    ("InstanceNorm2d(64), affine", lambda lib: lib.InstanceNorm2d(64, affine=True), (32, 64, 28, 28)),
    ("LocalResponseNorm(5)", lambda lib: lib.LocalResponseNorm(5), (32, 64, 28, 28)),
]


def steps(make, shape, mode, torch, impl="fused", align=True):
    """One call of the layer in ``mode`` for each library: (ours, torch's) as argument-less functions."""
    xa, ga = inputs(shape, align)
    layer = make(nn) if impl == "fused" else _with_impl(make(nn), impl)
    return call(tg, layer, xa, ga, mode), call(torch, make(torch.nn), xa, ga, mode)


def inputs(shape, align=True):
    """The input and the output gradient every library gets, float32 (on a 64-byte boundary unless not align)."""
    rng = np.random.default_rng(0)
    xa = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    ga = rng.standard_normal(shape).astype(np.float32)
    return (aligned(xa), aligned(ga)) if align else (xa, ga)


def call(lib, layer, xa, ga, mode):
    """One call of ``layer``, a module of ``lib`` (torch, or tinygradnorm in this or another version), in ``mode``,
    as an argument-less function. Our Tensors take the arrays as they are (their alignment too); torch copies them
    into its own memory, which starts on a 64-byte boundary."""
    wrap = lib.tensor if lib.__name__ == "torch" else lib.Tensor
    x, gy = wrap(xa, requires_grad=(mode == "train")), wrap(ga)
    for _ in range(3):                     # running statistics that are not the initial ones, for eval
        layer(wrap(xa))
    if mode == "train":
        def run():
            x.grad = None
            layer.zero_grad()
            layer(x).backward(gy)
        return run
    layer.eval()
    no_grad = lib.no_grad

    def run():
        with no_grad():
            layer(x)
    return run


def _with_impl(layer, impl):
    layer.impl = impl
    return layer


def interleaved(ours, theirs, rounds, repeat):
    """(our median ms, torch's median ms, per-round ratios ours/torch), timed in alternation."""
    mine, other, ratios = [], [], []
    for _ in range(rounds):
        a = time_ms(ours, repeat, warmup=1)[0]
        b = time_ms(theirs, repeat, warmup=1)[0]
        mine.append(a)
        other.append(b)
        ratios.append(a / b)
    return statistics.median(mine), statistics.median(other), ratios


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--only", default="", help="run only the layers whose name contains this")
    ap.add_argument("--mode", choices=["train", "eval", "both"], default="both")
    ap.add_argument("--composite", action="store_true", help="also time the composite layers' train step")
    ap.add_argument("--numpy-alignment", action="store_true",
                    help="give our layers NumPy's own arrays, not 64-byte-aligned copies")
    args = ap.parse_args()
    import torch

    modes = ["train", "eval"] if args.mode == "both" else [args.mode]
    path = "compiled kernels" if tg.device("cpu").backend.kernels is not None else "NumPy path"
    print(f"Normalization layers, float32, CPU: tinygradnorm ({path}) against torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    print(f"median of {args.repeat} calls, {args.rounds} interleaved rounds; ratio ours/torch, median [min-max]; "
          f"inputs {'as NumPy allocates them' if args.numpy_alignment else '64-byte aligned'}\n")
    print(f"{'layer':<31}{'shape':<21}{'mode':<7}{'ours ms':>9}{'torch ms':>10}{'ratio':>8}   range")
    for name, make, shape in CASES:
        if args.only not in name:
            continue
        for mode in modes:
            ours, theirs = steps(make, shape, mode, torch, align=not args.numpy_alignment)
            a, b, ratios = interleaved(ours, theirs, args.rounds, args.repeat)
            print(f"{name:<31}{str(shape):<21}{mode:<7}{a:>9.2f}{b:>10.2f}{statistics.median(ratios):>7.2f}x"
                  f"   {min(ratios):.2f}-{max(ratios):.2f}", flush=True)
            if args.composite and mode == "train":
                comp, _ = steps(make, shape, mode, torch, impl="composite")
                c = time_ms(comp, args.repeat, warmup=1)[0]
                print(f"{'  composite':<31}{'':<21}{mode:<7}{c:>9.2f}{'':>10}{c / b:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
