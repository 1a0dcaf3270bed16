"""The GPU targets of issue 16, against PyTorch on the same device in the same run: BatchNorm2d forward+backward
at (256, 64, 56, 56) with its achieved memory bandwidth, LayerNorm(768) at (64, 128, 768), and the LeNet training
step; and the host syncs in one LeNet step.

Usage: python benchmarks/gpu_norm.py [--device cuda] [--repeat 20] [--quick]

--device cpu runs the same code on the CPU (tests/test_gpu_contract.py does, with --quick's small shapes), so
that on a GPU it only has to be run. The bandwidth is the least traffic the layer needs (forward reads x and
writes y; backward reads x and gy and writes gx: five arrays' worth) over the time taken, against the GPU's
peak from its memory clock and bus width.
"""
import argparse
import statistics
import sys
import time

import numpy as np

import tinygradnorm as tg
from tinygradnorm import nn, optim

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from lenet_step import build  # noqa: E402


def timed(fn, sync, repeat, warmup=3):
    """Median milliseconds of fn(), each call followed by sync() so that the GPU's work is counted."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def peak_bandwidth(device):
    """The GPU's peak memory bandwidth in GB/s, or None on the CPU."""
    if not device.startswith("cuda"):
        return None
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(tg.device(device).index or 0)
    return 2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8 / 1e9


def layer_pair(make, shape, device, torch, tdevice):
    """(ours, theirs) forward+backward steps of a layer on the given shape, float32."""
    rng = np.random.default_rng(0)
    xa = rng.standard_normal(shape).astype(np.float32)
    ga = rng.standard_normal(shape).astype(np.float32)
    layer, tlayer = make(nn).to(device), make(torch.nn).to(tdevice)
    x, gy = tg.tensor(xa, device=device, requires_grad=True), tg.tensor(ga, device=device)
    tx, tgy = torch.tensor(xa, device=tdevice, requires_grad=True), torch.tensor(ga, device=tdevice)

    def ours():
        x.grad = None
        layer(x).backward(gy)

    def theirs():
        tx.grad = None
        tlayer(tx).backward(tgy)
    return ours, theirs


class SyncCounter:
    """Counts the calls that bring a tensor's value to the host (each one a GPU sync) while active."""

    NAMES = ("item", "numpy", "tolist", "__float__", "__int__", "__bool__")

    def __init__(self):
        self.count = 0
        self._saved = {}

    def __enter__(self):
        for name in self.NAMES:
            original = getattr(tg.Tensor, name)
            self._saved[name] = original

            def counted(t, *a, _f=original, **k):
                self.count += 1
                return _f(t, *a, **k)
            setattr(tg.Tensor, name, counted)
        return self

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(tg.Tensor, name, original)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="small shapes (for a check that the script runs)")
    args = ap.parse_args(argv)
    try:
        device = str(tg.device(args.device))
        tg.zeros(1, device=device)
    except (RuntimeError, ValueError) as e:
        raise SystemExit(f"gpu_norm.py: error: --device {args.device}: {e}") from None
    import torch
    tdevice = "cuda" if device.startswith("cuda") else "cpu"
    if tdevice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_norm.py: error: torch sees no CUDA device to compare against")

    def sync():
        tg.cuda.synchronize(device) if device.startswith("cuda") else None
        torch.cuda.synchronize() if tdevice == "cuda" else None

    bn_shape = (8, 8, 14, 14) if args.quick else (256, 64, 56, 56)
    ln_shape = (4, 8, 96) if args.quick else (64, 128, 768)
    batch = 16 if args.quick else 256
    peak = peak_bandwidth(device)
    print(f"tinygradnorm on {device} against torch {torch.__version__} on {tdevice}, float32, median of "
          f"{args.repeat}; ms ours / torch, ratio")
    rows = []
    for name, make, shape, target in (
            ("BatchNorm2d fwd+bwd", lambda lib: lib.BatchNorm2d(bn_shape[1]), bn_shape, 1.5),
            ("LayerNorm fwd+bwd", lambda lib: lib.LayerNorm(ln_shape[-1]), ln_shape, 1.5)):
        ours, theirs = layer_pair(make, shape, device, torch, tdevice)
        a, b = timed(ours, sync, args.repeat), timed(theirs, sync, args.repeat)
        line = f"{name:<22}{str(shape):<20}{a:>9.3f}{b:>9.3f}{a / b:>8.2f}x  (target <= {target}x)"
        if peak is not None and name.startswith("BatchNorm"):
            moved = 5 * int(np.prod(shape)) * 4 / 1e9
            line += f"  {moved / (a / 1e3):.0f} GB/s of {peak:.0f} peak ({moved / (a / 1e3) / peak:.0%})"
        print(line, flush=True)
        rows.append((name, a, b))

    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = build(nn).to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    X, Y = tg.tensor(x, device=device), tg.tensor(y, device=device)
    tmodel = build(torch.nn).to(tdevice)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
    tX, tY = torch.tensor(x, device=tdevice), torch.tensor(y, device=tdevice)

    def step():
        opt.zero_grad()
        loss_fn(model(X), Y).backward()
        opt.step()

    def tstep():
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(tX), tY).backward()
        topt.step()
    a, b = timed(step, sync, args.repeat), timed(tstep, sync, args.repeat)
    print(f"{'LeNet step':<22}{'batch ' + str(batch):<20}{a:>9.3f}{b:>9.3f}{a / b:>8.2f}x  (target <= 2x)")
    with SyncCounter() as counter:
        step()
    print(f"host syncs in one LeNet step (item, numpy, float, bool of a tensor): {counter.count}")
    return rows, counter.count


if __name__ == "__main__":
    main()
