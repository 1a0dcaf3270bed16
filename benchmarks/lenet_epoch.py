"""One whole epoch of examples/lenet.py's training on the real Fashion-MNIST, against the same loop in PyTorch in
the same run: the same batches in the same order (one DataLoader's, each batch handed to both), SGD with momentum
0.9 at lr 0.1 on a per-step cosine schedule over the epoch, the loss and accuracy tracked every step as the
example does, then an evaluation of the test set in eval mode. Reports examples per second for both.

Usage: python benchmarks/lenet_epoch.py [--norm batch] [--batch 256] [--epochs 1] [--data-dir DIR]
"""
import argparse
import math
import time

import numpy as np

import tinygradnorm as tg
from lenet_step import build
from tinygradnorm.data import DataLoader, FashionMNIST


def run_epoch(lib, model, opt, batches, steps, lr):
    """Train on batches (NumPy arrays) with a per-step cosine schedule; returns (seconds, mean loss, accuracy)."""
    loss_fn = lib.nn.CrossEntropyLoss()
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    t0 = time.perf_counter()
    for step, (x, y) in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        X, Y = lib.tensor(x), lib.tensor(y)
        opt.zero_grad()
        logits = model(X)
        loss = loss_fn(logits, Y)
        loss.backward()
        opt.step()
        loss_sum += float(loss.item()) * len(y)
        correct += int((logits.detach().argmax(1) == Y).sum().item())
        seen += len(y)
    return time.perf_counter() - t0, loss_sum / seen, correct / seen


def evaluate(lib, model, batches):
    model.eval()
    correct, seen = 0, 0
    t0 = time.perf_counter()
    with lib.no_grad():
        for x, y in batches:
            logits = model(lib.tensor(x))
            correct += int((logits.argmax(1) == lib.tensor(y)).sum().item())
            seen += len(y)
    return time.perf_counter() - t0, correct / seen


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--norm", default="batch", choices=("batch", "layer", "group", "instance", "none"))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1, help="epochs timed, each library in turn, alternating")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    import torch
    train = DataLoader(FashionMNIST(args.data_dir, train=True), args.batch, shuffle=True, seed=0)
    test = DataLoader(FashionMNIST(args.data_dir, train=False), 1000)
    test_batches = [(x.numpy(), y.numpy()) for x, y in test]
    tg.manual_seed(0)
    torch.manual_seed(0)
    ours, theirs = build(tg.nn, args.norm), build(torch.nn, args.norm)
    opts = (tg.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9),
            torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9))
    print(f"LeNet with {args.norm} norm, one epoch of Fashion-MNIST (60,000 examples, batch {args.batch}) then the "
          f"test set, float32, CPU: tinygradnorm against torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"{'epoch':<7}{'library':<14}{'train s':>9}{'examples/s':>12}{'eval s':>8}{'loss':>8}{'train acc':>11}"
          f"{'test acc':>10}")
    totals = {"tinygradnorm": 0.0, "torch": 0.0}
    for epoch in range(args.epochs):
        batches = [(x.numpy(), y.numpy()) for x, y in train]              # the same batches for both
        for name, lib, model, opt in (("tinygradnorm", tg, ours, opts[0]), ("torch", torch, theirs, opts[1])):
            seconds, loss, acc = run_epoch(lib, model, opt, batches, len(batches), 0.1)
            eval_s, test_acc = evaluate(lib, model, test_batches)
            totals[name] += seconds
            n = sum(len(y) for _, y in batches)
            print(f"{epoch + 1:<7}{name:<14}{seconds:>9.2f}{n / seconds:>12.0f}{eval_s:>8.2f}{loss:>8.4f}{acc:>11.4f}"
                  f"{test_acc:>10.4f}", flush=True)
    ratio = totals["tinygradnorm"] / totals["torch"]
    print(f"\ntraining time ratio tinygradnorm/torch: {ratio:.2f}x (examples/s ratio {1 / ratio:.2f}x)")


if __name__ == "__main__":
    main()
