"""Data-parallel throughput: examples/lenet.py under mpiexec against one process, on this machine.

Usage: python benchmarks/distributed_lenet.py [--processes 2] [--examples 15360] [--repeat 2]

Trains one epoch of --examples images (batch 256) each way and reports the training examples per second
that lenet.py prints (the best of --repeat runs): one process on every core, one process on one core, and
--processes processes under mpiexec with one core each (TINYGRADNORM_NUM_THREADS=1).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def examples_per_second(launcher, threads, examples):
    with tempfile.TemporaryDirectory() as out:
        cmd = launcher + [sys.executable, os.path.join(ROOT, "examples", "lenet.py"), "--epochs", "1",
                          "--limit-train", str(examples), "--no-progress", "--out", out]
        env = dict(os.environ, TINYGRADNORM_NUM_THREADS=str(threads))
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return float(re.search(r"([\d,]+) examples/sec", done.stdout).group(1).replace(",", "")), done.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--examples", type=int, default=15360, help="training images in the epoch (60 steps of 256)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    mpiexec = shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    if mpiexec is None:
        raise SystemExit("distributed_lenet.py: error: mpiexec not found; pip install -e \".[mpi]\"")
    cores = os.cpu_count() or 1
    runs = [(f"1 process, {cores} threads", [], cores), ("1 process, 1 thread", [], 1),
            (f"{args.processes} processes, 1 thread each", [mpiexec, "-n", str(args.processes)], 1)]
    print(f"examples/lenet.py, one epoch of {args.examples} images, batch 256, {cores} cores; best of {args.repeat}")
    results = {}
    for name, launcher, threads in runs:
        results[name] = max(examples_per_second(launcher, threads, args.examples)[0] for _ in range(args.repeat))
        print(f"{name:<34}{results[name]:>10,.0f} examples/sec", flush=True)
    base = results[runs[0][0]]
    print(f"\n{runs[2][0]} against {runs[0][0]}: {results[runs[2][0]] / base:.2f}x; against 1 process, 1 thread: "
          f"{results[runs[2][0]] / results[runs[1][0]]:.2f}x")


if __name__ == "__main__":
    main()
