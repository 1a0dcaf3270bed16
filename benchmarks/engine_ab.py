"""This engine against an earlier commit's, in one process, on the first-order steps of
benchmarks/norm_layers.py, with torch's for reference.

Usage: python benchmarks/engine_ab.py --against 20c421d [--rounds 9] [--repeat 7] [--only BatchNorm1d]
                                      [--mode train|eval|both]

Run from a git checkout. The earlier commit's package is taken out with ``git archive`` into a folder
under the system's temporary directory (kept, so that Numba's cache of its kernels serves the next run)
and imported under another name; the package imports its own modules relatively, so it runs unchanged.
Both engines and torch then share the process and the machine's state at each moment, which a
comparison of two separate runs cannot give on a machine whose speed drifts by 2x within minutes.

The three are timed in alternation, --rounds times, each the median of --repeat calls, the order turning
round by round (what runs right after torch may find its threads still spinning). The table gives
each one's median time, the per-round ratio now/before (median and range; below 1.0: this engine is
faster) and each engine's median ratio to torch.
"""
import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile


import tinygradnorm
from norm_layers import CASES, call, inputs
from timing import time_ms


def earlier_package(commit):
    """The package of ``commit``, imported as tinygradnorm_<commit>."""
    sha = subprocess.run(["git", "rev-parse", "--short=12", commit], check=True, capture_output=True,
                         text=True).stdout.strip()
    name = f"tinygradnorm_{sha}"
    root = os.path.join(tempfile.gettempdir(), "tinygradnorm-ab")
    if not os.path.isdir(os.path.join(root, name)):
        work = tempfile.mkdtemp(dir=_made(root))
        archive = subprocess.run(["git", "archive", sha, "tinygradnorm"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", work], input=archive, check=True)
        os.replace(os.path.join(work, "tinygradnorm"), os.path.join(root, name))     # whole, or not at all
        shutil.rmtree(work)
    sys.path.insert(0, root)
    return importlib.import_module(name), sha


def _made(path):
    os.makedirs(path, exist_ok=True)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="the earlier commit")
    ap.add_argument("--rounds", type=int, default=9, help="a multiple of 3 gives each one each place equally often")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--only", default="", help="run only the layers whose name contains this")
    ap.add_argument("--mode", choices=["train", "eval", "both"], default="both")
    args = ap.parse_args()
    import torch

    before, sha = earlier_package(args.against)
    modes = ["train", "eval"] if args.mode == "both" else [args.mode]
    print(f"Normalization layers, float32, CPU: this engine against {sha}'s, and torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    print(f"median of {args.repeat} calls, {args.rounds} interleaved rounds; now/before median [min-max]\n")
    print(f"{'layer':<31}{'mode':<7}{'now ms':>8}{'before':>8}{'torch':>8}{'now/before':>12}   range"
          f"{'now/torch':>12}{'before/torch':>14}")
    for name, make, shape in CASES:
        if args.only not in name:
            continue
        xa, ga = inputs(shape)
        for mode in modes:
            runs = [call(lib, make(lib.nn), xa, ga, mode) for lib in (tinygradnorm, before, torch)]
            times = [[], [], []]
            for r in range(args.rounds):
                for i in range(3):              # each round in another order: none always follows torch's threads
                    k = (r + i) % 3
                    times[k].append(time_ms(runs[k], args.repeat, warmup=1)[0])
            now, old, ref = (statistics.median(t) for t in times)
            ratios = [a / b for a, b in zip(times[0], times[1])]
            print(f"{name:<31}{mode:<7}{now:>8.3f}{old:>8.3f}{ref:>8.3f}{statistics.median(ratios):>11.2f}x"
                  f"   {min(ratios):.2f}-{max(ratios):.2f}{now / ref:>11.2f}x{old / ref:>13.2f}x", flush=True)


if __name__ == "__main__":
    main()
