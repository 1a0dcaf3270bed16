"""Train d2l's LeNet with batch norm on Fashion-MNIST, on the CPU or a CuPy GPU.

    python examples/lenet.py                              # defaults: 10 epochs, SGD+momentum, cosine schedule
    python examples/lenet.py --optimizer sgd --lr 1.0 --momentum 0 --schedule none   # d2l's settings
    python examples/lenet.py --norm layer --out runs/layer  # compare normalization layers on the same network
    python examples/lenet.py --device cuda --save ckpt.npz  # GPU, with a checkpoint after every epoch

Writes curves.png and metrics.json into --out.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing, too

import tinygradnorm as tg  # noqa: E402
from tinygradnorm import nn, optim  # noqa: E402
from tinygradnorm.data import DataLoader, FashionMNIST  # noqa: E402

NORMS = ("batch", "layer", "group", "instance", "none")
DEFAULTS = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}


def norm_layer(kind, channels, spatial=None):
    """The normalization after a conv (spatial = its output H, W) or linear layer (spatial None)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)
    if kind == "layer":
        return nn.LayerNorm((channels, *spatial) if spatial else channels)
    if kind == "group":
        return nn.GroupNorm(2 if channels % 4 else 4, channels)
    if kind == "instance":  # a feature vector has no per-instance spatial statistics: nothing after linear layers
        return nn.InstanceNorm2d(channels, affine=True) if spatial else nn.Identity()
    return nn.Identity()


def lenet(norm="batch"):
    """d2l's LeNet with a normalization layer after every conv and linear layer but the last."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (got {norm!r})")
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), norm_layer(norm, 6, (24, 24)), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, kernel_size=5), norm_layer(norm, 16, (8, 8)), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(256, 120), norm_layer(norm, 120), nn.Sigmoid(),
        nn.Linear(120, 84), norm_layer(norm, 84), nn.Sigmoid(),
        nn.Linear(84, 10))


def make_optimizer(name, params, lr, momentum, weight_decay):
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def evaluate(model, loader):
    """Accuracy over a loader, in eval mode and without building graphs."""
    was_training = model.training
    model.eval()
    correct = total = 0
    with tg.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum().item())
            total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def train_epoch(model, loader, opt, loss_fn, progress=None, log_every=20):
    """One pass over loader; returns (mean loss, accuracy). Syncs with the device only every log_every steps."""
    model.train()
    loss_sum = correct = None
    seen = 0
    for step, (x, y) in enumerate(loader, 1):
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        batch_loss = loss.detach() * len(y)
        batch_correct = (logits.detach().argmax(1) == y).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        seen += len(y)
        if progress is not None:
            progress.update(1)
            if step % log_every == 0:
                progress.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
    return loss_sum.item() / seen, correct.item() / seen


def atomic_write_text(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plot_curves(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(epochs, [h["train_acc"] for h in history], "o-", label="train acc")
    ax2.plot(epochs, [h["test_acc"] for h in history], "s-", label="test acc")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend()
    fig.suptitle("LeNet on Fashion-MNIST")
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Train LeNet with normalization on Fashion-MNIST.")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--optimizer", choices=sorted(DEFAULTS), default="sgd")
    ap.add_argument("--lr", type=float, default=None, help="default: 0.1 for sgd, 1e-3 for adam/adamw")
    ap.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (d2l: 0)")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--schedule", choices=("cosine", "none"), default="cosine")
    ap.add_argument("--norm", choices=NORMS, default="batch")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="directory with the four Fashion-MNIST .gz files")
    ap.add_argument("--limit-train", type=int, default=None, help="train on the first N examples only")
    ap.add_argument("--save", default=None, help="checkpoint (.npz) written after every epoch")
    ap.add_argument("--resume", default=None, help="checkpoint to continue from")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after this epoch, as if interrupted")
    ap.add_argument("--out", default="runs/lenet", help="directory for curves.png and metrics.json")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.lr is None:
        args.lr = DEFAULTS[args.optimizer]
    return args


def main(argv=None):
    args = parse_args(argv)
    config = {k: v for k, v in vars(args).items() if k not in ("save", "resume", "out", "no_progress", "stop_after")}
    tg.manual_seed(args.seed)
    device = tg.device(args.device)
    train_set = FashionMNIST(args.data_dir, train=True)
    test_set = FashionMNIST(args.data_dir, train=False)
    if args.limit_train:
        from tinygradnorm.data import TensorDataset
        train_set = TensorDataset(*(a[: args.limit_train] for a in train_set.arrays()))
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, seed=args.seed, device=device)
    test_loader = DataLoader(test_set, 1000, device=device)

    model = lenet(args.norm).to(device)
    opt = make_optimizer(args.optimizer, model.parameters(), args.lr, args.momentum, args.weight_decay)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs) if args.schedule == "cosine" else None
    loss_fn = nn.CrossEntropyLoss()
    history, start = [], 1
    if args.resume:
        ckpt = tg.load(args.resume)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None and ckpt.get("scheduler") is not None:
            sched.load_state_dict(ckpt["scheduler"])
        tg.set_rng_state(ckpt["rng"])
        history, start = ckpt["history"], ckpt["epoch"] + 1
        print(f"resumed from {args.resume} after epoch {ckpt['epoch']}")

    print(f"LeNet ({args.norm} norm) on {device}, {len(train_set)} training images, {args.epochs} epochs, "
          f"{args.optimizer} lr {args.lr}" + (" with cosine schedule" if sched else ""))
    tqdm = None
    if not args.no_progress:
        try:
            from tqdm import tqdm
        except ImportError:
            print("(install tqdm for a progress bar: pip install -e \".[examples]\")")
    wall = time.perf_counter()
    last = min(args.epochs, args.stop_after or args.epochs)
    for epoch in range(start, last + 1):
        train_loader.set_epoch(epoch)
        bar = tqdm(total=len(train_loader), desc=f"epoch {epoch}/{args.epochs}", leave=False) if tqdm else None
        t0 = time.perf_counter()
        train_loss, train_acc = train_epoch(model, train_loader, opt, loss_fn, bar)
        device.backend.synchronize()
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        test_acc = evaluate(model, test_loader)
        if sched is not None:
            sched.step()
        if not math.isfinite(train_loss):
            raise SystemExit(f"training diverged at epoch {epoch} (loss {train_loss}); lower --lr")
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_acc": test_acc,
               "examples_per_sec": len(train_set) / seconds}
        history.append(row)
        print(f"epoch {epoch:>2}/{args.epochs}  train loss {train_loss:.4f}  train acc {train_acc:.4f}  "
              f"test acc {test_acc:.4f}  {row['examples_per_sec']:,.0f} examples/sec")
        if args.save:
            tg.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict() if sched else None, "epoch": epoch, "rng": tg.get_rng_state(),
                     "history": history, "config": config}, args.save)
    os.makedirs(args.out, exist_ok=True)
    metrics = {"epochs": history, "config": config, "wall_seconds": time.perf_counter() - wall}
    atomic_write_text(os.path.join(args.out, "metrics.json"), json.dumps(metrics, indent=2))
    try:
        plot_curves(history, os.path.join(args.out, "curves.png"))
    except ImportError:
        print("(install matplotlib for curves.png: pip install -e \".[examples]\")")
    if history:
        print(f"final: train acc {history[-1]['train_acc']:.4f}, test acc {history[-1]['test_acc']:.4f}; "
              f"wrote {args.out}/metrics.json and curves.png")
    return history


if __name__ == "__main__":
    main()
