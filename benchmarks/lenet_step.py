"""One LeNet-with-batch-norm training step (forward, backward, SGD update) at batch 256 on the CPU,
against PyTorch in the same run. Reports milliseconds per step (median and best of --repeat) and the ratio.

Usage: python benchmarks/lenet_step.py [--repeat 30] [--batch 256]
"""
import argparse
import numpy as np

import tinygradnorm as tg
from tinygradnorm import nn, optim
from timing import print_table, time_ms

def build(lib):
    """The network of examples/lenet.py, from tinygradnorm.nn or torch.nn."""
    return lib.Sequential(
        lib.Conv2d(1, 6, kernel_size=5), lib.BatchNorm2d(6), lib.Sigmoid(), lib.AvgPool2d(2, 2),
        lib.Conv2d(6, 16, kernel_size=5), lib.BatchNorm2d(16), lib.Sigmoid(), lib.AvgPool2d(2, 2), lib.Flatten(),
        lib.Linear(256, 120), lib.BatchNorm1d(120), lib.Sigmoid(), lib.Linear(120, 84), lib.BatchNorm1d(84),
        lib.Sigmoid(), lib.Linear(84, 10))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)

    model = build(nn)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    X, Y = tg.tensor(x), tg.tensor(y)

    def ours():
        opt.zero_grad()
        loss_fn(model(X), Y).backward()
        opt.step()

    rows = [("tinygradnorm", *time_ms(ours, args.repeat))]
    try:
        import torch
        tmodel = build(torch.nn)
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
        tloss = torch.nn.CrossEntropyLoss()
        tX, tY = torch.tensor(x), torch.tensor(y)

        def theirs():
            topt.zero_grad()
            tloss(tmodel(tX), tY).backward()
            topt.step()
        rows.append((f"torch {torch.__version__} ({torch.get_num_threads()} threads)", *time_ms(theirs, args.repeat)))
    except ImportError:
        pass
    print_table(f"LeNet + batch norm training step, batch {args.batch}, float32, CPU (ms)", ["median", "best"], rows)

if __name__ == "__main__":
    main()
