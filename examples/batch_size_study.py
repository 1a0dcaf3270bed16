"""Why GroupNorm exists: test accuracy against batch size, for batch, group, layer and instance norm.

Wu and He (Group Normalization, 2018, figure 1) show batch norm's error rising sharply as the batch
per device shrinks from 32 to 2, while group norm's stays flat: with two examples, a batch's mean and
variance are noisy estimates, and the running statistics that eval mode uses are built from them.
This trains the LeNet of examples/lenet.py on Fashion-MNIST with each normalization at each batch
size, the learning rate scaled linearly with the batch (lr = base_lr * batch / base_batch), each run
on the same budget of training examples, and plots test accuracy (in eval mode) against batch size.

    python examples/batch_size_study.py                       # 4 norms x 6 batch sizes, about 15 minutes on 2 cores
    python examples/batch_size_study.py --examples 6000 --batch-sizes 2,32 --norms batch,group   # a quick look

Writes batch_size_study.png, results.json and results.md (the table) into --out.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing, too
sys.path.insert(0, HERE)

import tinygradnorm as tg  # noqa: E402
from tinygradnorm import nn, optim  # noqa: E402
from tinygradnorm.atomic import atomic_write  # noqa: E402
from tinygradnorm.data import DataLoader, DatasetError, FashionMNIST, TensorDataset  # noqa: E402
from lenet import evaluate, lenet  # noqa: E402

NORMS = ("batch", "group", "layer", "instance")


class _Parser(argparse.ArgumentParser):
    """Errors as one line, with no usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _ints(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"batch sizes must be at least 2 (batch norm needs two values per "
                                         f"channel), got {text!r}")
    return values


def _norms(text):
    values = text.split(",")
    bad = [v for v in values if v not in NORMS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown norm {bad[0]!r}; choose from {', '.join(NORMS)}")
    return values


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def parse_args(argv=None):
    ap = _Parser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--norms", type=_norms, default=list(NORMS), help="comma-separated, from " + ",".join(NORMS))
    ap.add_argument("--batch-sizes", type=_ints, default=[2, 4, 8, 16, 32, 64], help="comma-separated")
    ap.add_argument("--examples", type=_positive(int), default=60_000,
                    help="training examples per run (the same budget at every batch size)")
    ap.add_argument("--base-lr", type=_positive(float), default=0.05, help="SGD learning rate at --base-batch")
    ap.add_argument("--base-batch", type=_positive(int), default=32, help="the batch size --base-lr is for")
    ap.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    ap.add_argument("--limit-test", type=_positive(int), default=None, help="evaluate on the first N test images")
    ap.add_argument("--seed", type=int, default=0, help="the same seed (initial weights, order) for every run")
    ap.add_argument("--data-dir", default=None, help="where Fashion-MNIST is, or goes (default: lenet.py's search)")
    ap.add_argument("--out", default="runs/batch_size_study", help="directory for the figure and the tables")
    return ap.parse_args(argv)


def run(norm, batch, train_set, test_loader, args):
    """Train one LeNet on args.examples examples at this batch size; return (test accuracy, train loss, seconds)."""
    tg.manual_seed(args.seed)
    model = lenet(norm)
    lr = args.base_lr * batch / args.base_batch
    opt = optim.SGD(model.parameters(), lr=lr, momentum=args.momentum)
    loss_fn = nn.CrossEntropyLoss()
    steps = args.examples // batch
    start, done, loss_sum = time.perf_counter(), 0, 0.0
    model.train()
    while done < steps:
        loader = DataLoader(train_set, batch, shuffle=True, drop_last=True, seed=args.seed + done)
        for x, y in loader:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            done += 1
            if done > steps - 100:
                loss_sum += loss.item()        # the training loss over the last 100 steps
            if done == steps:
                break
    _, acc = evaluate(model, test_loader, loss_fn)
    return acc, loss_sum / min(100, steps), time.perf_counter() - start


def table(results, norms, sizes):
    lines = ["| norm | " + " | ".join(f"batch {b}" for b in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for norm in norms:
        lines.append(f"| {norm} | " + " | ".join(f"{results[norm][str(b)]['accuracy']:.3f}" for b in sizes) + " |")
    return "\n".join(lines)


def plot(results, norms, sizes, path, title):
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for norm in norms:
        ax.plot(sizes, [results[norm][str(b)]["accuracy"] for b in sizes], marker="o", label=f"{norm} norm")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("test accuracy (eval mode)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def main(argv=None):
    args = parse_args(argv)
    try:
        train_set = FashionMNIST(args.data_dir, train=True)
        test_set = FashionMNIST(args.data_dir, train=False)
    except DatasetError as e:
        raise SystemExit(f"batch_size_study.py: error: {e}") from None
    if args.limit_test:
        test_set = TensorDataset(*(a[: args.limit_test] for a in test_set.arrays()))
    test_loader = DataLoader(test_set, 1000)
    sizes = sorted(args.batch_sizes)
    print(f"data: {train_set.root}; {args.examples} training examples per run, lr = {args.base_lr} x batch / "
          f"{args.base_batch}, SGD momentum {args.momentum}, {len(test_set)} test images")
    results = {}
    for norm in args.norms:
        for batch in sizes:
            acc, loss, seconds = run(norm, batch, train_set, test_loader, args)
            results.setdefault(norm, {})[str(batch)] = {"accuracy": acc, "train_loss": loss, "seconds": seconds,
                                                        "lr": args.base_lr * batch / args.base_batch}
            print(f"{norm:>8} norm, batch {batch:>3}: test accuracy {acc:.4f}, train loss {loss:.3f} "
                  f"({seconds:.0f} s)", flush=True)
    os.makedirs(args.out, exist_ok=True)
    title = (f"LeNet on Fashion-MNIST, {args.examples} training examples per run,\n"
             f"lr {args.base_lr} x batch/{args.base_batch}, SGD momentum {args.momentum}, seed {args.seed}")
    summary = {"config": {k: v for k, v in vars(args).items() if k != "out"}, "results": results}
    with atomic_write(os.path.join(args.out, "results.json")) as f:
        f.write(json.dumps(summary, indent=1).encode())
    text = table(results, args.norms, sizes)
    with atomic_write(os.path.join(args.out, "results.md")) as f:
        f.write((text + "\n").encode())
    plot(results, args.norms, sizes, os.path.join(args.out, "batch_size_study.png"), title)
    print("\n" + text + f"\n\nwrote {args.out}/batch_size_study.png, results.json and results.md")


if __name__ == "__main__":
    main()
