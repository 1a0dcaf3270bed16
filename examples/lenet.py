"""Train d2l's LeNet with batch norm on Fashion-MNIST, on the CPU or a CuPy GPU.

    python examples/lenet.py                              # defaults: 10 epochs, SGD+momentum, cosine schedule
    python examples/lenet.py --optimizer sgd --lr 1.0 --momentum 0 --schedule none   # d2l's settings
    python examples/lenet.py --norm layer                 # compare normalization layers on the same network
    python examples/lenet.py --device cuda --save ckpt.npz  # GPU, with a checkpoint after every epoch
    python examples/lenet.py --resume ckpt.npz            # continue exactly where ckpt.npz left off
    python examples/lenet.py --resume ckpt.npz --epochs 20 --extend stretch   # train on for more epochs
    mpiexec -n 2 python examples/lenet.py                 # data-parallel: 2 processes share each batch

Writes curves.png and metrics.json into --out (by default a directory named after the configuration).

Under mpiexec (pip install -e ".[mpi]"), the processes split every batch of --batch-size between them,
the network's batch norms become SyncBatchNorm, and DistributedDataParallel averages the gradients: the
run computes what one process would, and a checkpoint saved by it resumes under any number of processes.
Rank 0 alone prints and writes files. Each process takes an equal share of the cores unless
TINYGRADNORM_NUM_THREADS says otherwise.
"""
import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing, too


def _mpi_world_size():
    """The number of processes mpiexec started (1 when run on its own), from the launchers' environment."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


if _mpi_world_size() > 1:
    # An equal share of the cores for each process (set before tinygradnorm starts its threads).
    os.environ.setdefault("TINYGRADNORM_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _mpi_world_size())))

import tinygradnorm as tg  # noqa: E402
from tinygradnorm import nn, optim  # noqa: E402
from tinygradnorm.atomic import atomic_write  # noqa: E402
from tinygradnorm.data import DataLoader, DatasetError, FashionMNIST, TensorDataset  # noqa: E402
from tinygradnorm.data.download import DEADLINE  # noqa: E402

NORMS = ("batch", "layer", "group", "instance", "none")
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
# The flags that define a run: resuming with any of them changed would be another run.
RUN_FLAGS = ("batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "norm", "bn_momentum", "seed",
             "limit_train")
# Flags added since older checkpoints were written, with the value those runs used.
ADDED_FLAGS = {"bn_momentum": 0.1}
# Below this share of their initial values (mean 0, variance 1), running statistics are trusted.
WARM = 0.05
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def norm_layer(kind, channels, spatial=None, bn_momentum=0.1):
    """The normalization after a conv (spatial = its output H, W) or linear layer (spatial None)."""
    if kind == "batch":
        return (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(channels, momentum=bn_momentum)
    if kind == "layer":
        return nn.LayerNorm((channels, *spatial) if spatial else channels)
    if kind == "group":
        return nn.GroupNorm(2 if channels % 4 else 4, channels)
    if kind == "instance":  # a feature vector has no per-instance spatial statistics: nothing after linear layers
        return nn.InstanceNorm2d(channels, affine=True) if spatial else nn.Identity()
    return nn.Identity()


def lenet(norm="batch", bn_momentum=0.1):
    """d2l's LeNet with a normalization layer after every conv and linear layer but the last."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (got {norm!r})")
    layer = lambda c, spatial=None: norm_layer(norm, c, spatial, bn_momentum)  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), layer(6, (24, 24)), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, kernel_size=5), layer(16, (8, 8)), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(256, 120), layer(120), nn.Sigmoid(),
        nn.Linear(120, 84), layer(84), nn.Sigmoid(),
        nn.Linear(84, 10))


def make_optimizer(name, params, lr, momentum, weight_decay):
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def shard(n, rank, world):
    """Rows [lo, hi) of a batch of n that rank takes: shares as equal as can be, the first ranks one larger."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def evaluate(model, loader, loss_fn, rank=0, world=1):
    """(mean loss, accuracy) over a loader, in eval mode and without building graphs; with several processes,
    each evaluates its share of every batch and the sums are added up."""
    was_training = model.training
    model.eval()
    loss_sum, correct, total = 0.0, 0, 0
    with tg.no_grad():
        for x, y in loader:
            if world > 1:
                lo, hi = shard(len(y), rank, world)
                x, y = x[lo:hi], y[lo:hi]
            logits = model(x)
            loss_sum += float(loss_fn(logits, y).item()) * len(y) if len(y) else 0.0
            correct += int((logits.argmax(1) == y).sum().item())
            total += len(y)
    model.train(was_training)
    if world > 1:
        loss_sum, correct, total = _sum_over_ranks(loss_sum, correct, total)
    return loss_sum / max(total, 1), correct / max(total, 1)


def _sum_over_ranks(*values):
    from tinygradnorm import distributed as dist
    t = tg.tensor([float(v) for v in values], dtype=tg.float64)
    return dist.all_reduce(t).numpy().tolist()


def train_epoch(model, loader, opt, loss_fn, progress=None, log_every=20, rank=0, world=1):
    """One pass over loader; returns (mean loss, accuracy). Syncs with the device only every log_every steps.

    With several processes, each trains on its share of every batch. Its loss is its share of the batch's
    summed loss over the whole batch's size, times the number of processes: DistributedDataParallel averages
    the processes' gradients, and the average is then the gradient of the whole batch's mean loss."""
    model.train()
    loss_sum = correct = None
    seen = 0
    for step, (x, y) in enumerate(loader, 1):
        opt.zero_grad()
        if world > 1:
            n = len(y)
            lo, hi = shard(n, rank, world)
            x, y = x[lo:hi], y[lo:hi]
            logits = model(x)
            summed = nn.functional.cross_entropy(logits, y, reduction="sum") if len(y) else logits.sum() * 0
            (summed * (world / n)).backward()
            batch_loss = summed.detach()
        else:
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            batch_loss = loss.detach() * len(y)
        opt.step()
        batch_correct = (logits.detach().argmax(1) == y).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        seen += len(y)
        if progress is not None:
            progress.update(1)
            if step % log_every == 0 and seen:
                progress.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
    if world > 1:
        loss_total, correct_total, seen = _sum_over_ranks(loss_sum.item(), correct.item(), seen)
        return loss_total / seen, correct_total / seen
    return loss_sum.item() / seen, correct.item() / seen


def warm_up_note(model):
    """A line saying why eval accuracy cannot be trusted yet, or None when the running statistics are warm.

    With momentum m, after n updates a running statistic still holds (1 - m)^n of its initial value
    (mean 0, variance 1), which is no statistic of the data. docs/normalization.md explains.
    """
    for m in model.modules():
        if isinstance(m, BATCH_NORMS) and m.track_running_stats and m.momentum is not None:
            n, mom = int(m.num_batches_tracked.item()), m.momentum
            left = (1 - mom) ** n
            if left > WARM:
                needed = math.ceil(math.log(WARM) / math.log(1 - mom)) if 0 < mom < 1 else 1
                return (f"note: the running statistics have seen {n} batches at momentum {mom:g}, so {left:.0%} of "
                        f"each is still its initial value (mean 0, variance 1); eval-mode test accuracy is not "
                        f"meaningful until about {needed} batches. Train longer, or raise --bn-momentum "
                        "(or --bn-momentum none for a cumulative average). See docs/normalization.md.")
    return None


def describe(config):
    lr = f"{config['optimizer']} lr {config['lr']:g}" + (" cosine" if config["schedule"] == "cosine" else "")
    epochs = f"{config['epochs']} epoch" + ("" if config["epochs"] == 1 else "s")
    return f"LeNet, {config['norm']} norm, {lr}, batch {config['batch_size']}, {epochs}, seed {config['seed']}"


def default_out(config):
    """runs/lenet-<norm>-<optimizer>-lr<lr>-b<batch>-e<epochs>-s<seed>[-n<limit>][-noschedule]: runs that differ
    never share a directory."""
    name = (f"lenet-{config['norm']}-{config['optimizer']}-lr{config['lr']:g}-b{config['batch_size']}-"
            f"e{config['epochs']}-s{config['seed']}")
    if config["limit_train"]:
        name += f"-n{config['limit_train']}"
    if config["schedule"] == "none":
        name += "-noschedule"
    if config["bn_momentum"] != 0.1 and config["norm"] == "batch":
        name += f"-bnm{config['bn_momentum']}"
    return os.path.join("runs", name)


def plot_curves(history, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax1.plot(epochs, [h.get("test_loss", math.nan) for h in history], "s-", label="test loss")
    ax1.set_ylabel("cross-entropy")
    ax2.plot(epochs, [h["train_acc"] for h in history], "o-", label="train acc")
    ax2.plot(epochs, [h["test_acc"] for h in history], "s-", label="test acc")
    ax2.set_ylabel("accuracy")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


# ---- the command line --------------------------------------------------------------------------------------
class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's default, said once: where the help text already says it, it is not repeated."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is argparse.SUPPRESS or action.option_strings == ["-h",
                                                                                                              "--help"]:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Errors as one line, with no usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be positive (got {text})")
        return value
    return parse


def _non_negative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be zero or more (got {text})")
    return value


def _momentum(text):
    if text.lower() == "none":
        return None
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], or 'none' (got {text})")
    return value


def _parser(only_given=False):
    """The command line; with only_given, flags left out do not appear in the result at all."""
    ap = _Parser(description="Train LeNet with a normalization layer on Fashion-MNIST.", formatter_class=_Help,
                 argument_default=argparse.SUPPRESS if only_given else None)
    ap.add_argument("--epochs", type=_positive(int), default=10, help="epochs to train")
    ap.add_argument("--batch-size", type=_positive(int), default=256, help="examples per training step")
    ap.add_argument("--optimizer", choices=sorted(DEFAULT_LR), default="sgd", help="the optimizer")
    ap.add_argument("--lr", type=_positive(float), default=None,
                    help="learning rate (default: 0.1 for sgd, 1e-3 for adam and adamw)")
    ap.add_argument("--momentum", type=_non_negative, default=0.9, help="SGD momentum (d2l uses 0)")
    ap.add_argument("--weight-decay", type=_non_negative, default=0.0, help="weight decay")
    ap.add_argument("--schedule", choices=("cosine", "none"), default="cosine", help="learning-rate schedule")
    ap.add_argument("--norm", choices=NORMS, default="batch", help="normalization after each conv and linear layer")
    ap.add_argument("--bn-momentum", type=_momentum, default=0.1,
                    help="batch norm's running-statistics momentum; 'none' for a cumulative average")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--seed", type=int, default=0, help="seed for initialization and shuffling")
    ap.add_argument("--data-dir", default=None,
                    help="directory with the four Fashion-MNIST .gz files (default: $TINYGRADNORM_DATA, the user "
                         "cache, /usr/share/datasets/fashion-mnist, else a download into the cache)")
    ap.add_argument("--download-deadline", type=_positive(float), default=DEADLINE,
                    help="seconds one file's download may take in all")
    ap.add_argument("--limit-train", type=_positive(int), default=None,
                    help="train on the first N examples only (default: all 60,000)")
    ap.add_argument("--save", default=None, help="checkpoint (.npz) written after every epoch (default: none)")
    ap.add_argument("--resume", default=None,
                    help="checkpoint to continue from; its flags must match these (default: none)")
    ap.add_argument("--extend", choices=("stretch", "restart"), default=None,
                    help="with --resume and more --epochs than the checkpoint's run: 'stretch' recomputes the "
                         "cosine schedule over the new total; 'restart' runs a new cosine cycle over the added epochs "
                         "(default: none, which refuses a different --epochs)")
    ap.add_argument("--stop-after", type=_positive(int), default=None,
                    help="stop after this epoch, as if interrupted (default: run every epoch)")
    ap.add_argument("--out", default=None, help="directory for curves.png and metrics.json (default: "
                                                "runs/lenet-<configuration>)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (default: a progress bar)")
    if only_given:
        for action in ap._actions:
            action.default = argparse.SUPPRESS
    return ap


def parse_args(argv=None):
    """The arguments, and the names of the flags given on the command line (a resume takes the others from
    its checkpoint)."""
    ap = _parser()
    args = ap.parse_args(argv)
    args.given = set(vars(_parser(only_given=True).parse_args(argv)))
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        ap.error(f"--data-dir {args.data_dir} is not a directory")
    if args.extend is not None and args.resume is None:
        ap.error("--extend continues a checkpoint's run for more epochs; it needs --resume")
    if args.device.startswith("cuda") and not tg.cuda.is_available():
        ap.error(f"--device {args.device}: {tg.cuda.unavailable_reason()}")
    try:
        tg.device(args.device)
    except (ValueError, RuntimeError) as e:
        ap.error(f"--device {args.device}: {e}")
    return args


def check_resume(ckpt, config, given, extend, path):
    """Fill in the flags the command line leaves out from the checkpoint's run, and refuse the ones it gives that
    would change that run. Returns the extension ('' if none)."""
    saved = {**ADDED_FLAGS, **(ckpt.get("config") or {})}
    for k in RUN_FLAGS + ("epochs",):
        if k not in given and not (k == "lr" and "optimizer" in given):
            config[k] = saved.get(k, config[k])
    problems = [f"  --{k.replace('_', '-')}: the checkpoint's run used {saved.get(k)!r}, this command line gives "
                f"{config[k]!r}" for k in RUN_FLAGS if saved.get(k) != config[k]]
    if problems:
        raise SystemExit(f"lenet.py: error: {path} was trained with other flags; resuming would be another run:\n"
                         + "\n".join(problems) + "\nresume with the checkpoint's values, or start a new run")
    done, planned = ckpt["epoch"], saved.get("epochs")
    if config["epochs"] < done:
        raise SystemExit(f"lenet.py: error: --epochs {config['epochs']}: {path} has already finished epoch {done}")
    if config["epochs"] != planned and not extend:
        raise SystemExit(
            f"lenet.py: error: --epochs {config['epochs']}: {path} belongs to a run of {planned} epochs. To train on, "
            f"choose what happens to the schedule: --extend stretch (recompute it over {config['epochs']} epochs) "
            f"or --extend restart (a new cycle over the {config['epochs'] - done} added epochs)")
    if config["epochs"] == planned and extend:
        raise SystemExit(f"lenet.py: error: --extend {extend}: --epochs {config['epochs']} is the checkpoint's own "
                         "run; drop --extend, or ask for more epochs")
    return extend or ""


def extend_schedule(sched, opt, how, done, total):
    """Continue a cosine schedule past its planned end: recomputed over ``total`` epochs, or restarted."""
    if sched is None:
        return sched
    if how == "restart":
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"]
        return optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - done)
    sched.T_max = total
    for g, base in zip(opt.param_groups, sched.base_lrs):
        g["lr"] = sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * done / total)) / 2
    return sched


def main(argv=None):
    args = parse_args(argv)
    rank, world = 0, _mpi_world_size()
    if world > 1:
        from tinygradnorm import distributed as dist
        try:
            dist.init_process_group("mpi")
        except ImportError as e:
            raise SystemExit(f"lenet.py: error: started by mpiexec, but {e}") from None
        rank = dist.get_rank()
    say = print if rank == 0 else (lambda *a, **k: None)      # rank 0 alone prints and writes
    config = {k: v for k, v in vars(args).items() if k not in ("save", "resume", "out", "no_progress", "stop_after",
                                                                 "extend", "download_deadline", "given")}
    ckpt = None
    if args.resume:
        try:
            ckpt = tg.load(args.resume)
        except (OSError, tg.CheckpointError) as e:
            raise SystemExit(f"lenet.py: error: --resume: {e}") from None
        args.extend = check_resume(ckpt, config, args.given, args.extend, args.resume)
        vars(args).update((k, config[k]) for k in RUN_FLAGS + ("epochs",))
    out = args.out or default_out(config)
    tg.manual_seed(args.seed)
    device = tg.device(args.device)
    try:
        train_set = FashionMNIST(args.data_dir, train=True, deadline=args.download_deadline)
        test_set = FashionMNIST(args.data_dir, train=False, deadline=args.download_deadline)
    except DatasetError as e:
        raise SystemExit(f"lenet.py: error: {e}") from None
    say(f"data: {train_set.root}")
    if args.limit_train:
        train_set = TensorDataset(*(a[: args.limit_train] for a in train_set.arrays()))
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, seed=args.seed, device=device)
    test_loader = DataLoader(test_set, 1000, device=device)

    model = lenet(args.norm, args.bn_momentum).to(device)
    if world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)     # the same Parameters: opt below holds them
    opt = make_optimizer(args.optimizer, model.parameters(), args.lr, args.momentum, args.weight_decay)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs) if args.schedule == "cosine" else None
    loss_fn = nn.CrossEntropyLoss()
    history, start = [], 1
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None and ckpt.get("scheduler") is not None:
            sched.load_state_dict(ckpt["scheduler"])
        tg.set_rng_state(ckpt["rng"])
        history, start = ckpt["history"], ckpt["epoch"] + 1
        if args.extend:
            sched = extend_schedule(sched, opt, args.extend, ckpt["epoch"], args.epochs)
            say(f"resumed from {args.resume} after epoch {ckpt['epoch']}, extending the run to {args.epochs} "
                f"epochs ({args.extend})")
        else:
            say(f"resumed from {args.resume} after epoch {ckpt['epoch']}")
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    say(describe(config) + f", on {device}, {len(train_set)} training images"
        + (f", {world} processes sharing each batch" if world > 1 else ""))
    tqdm = None
    if not args.no_progress and rank == 0:
        try:
            from tqdm import tqdm
        except ImportError:
            say("(install tqdm for a progress bar: pip install -e \".[examples]\")")
    wall = time.perf_counter()
    last = min(args.epochs, args.stop_after or args.epochs)
    for epoch in range(start, last + 1):
        train_loader.set_epoch(epoch)
        bar = tqdm(total=len(train_loader), desc=f"epoch {epoch}/{args.epochs}", leave=False) if tqdm else None
        t0 = time.perf_counter()
        train_loss, train_acc = train_epoch(net, train_loader, opt, loss_fn, bar, rank=rank, world=world)
        device.backend.synchronize()
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        test_loss, test_acc = evaluate(net, test_loader, loss_fn, rank, world)
        if sched is not None:
            sched.step()
        if not math.isfinite(train_loss):
            raise SystemExit(f"lenet.py: error: training diverged at epoch {epoch} (loss {train_loss}); lower --lr")
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
               "test_acc": test_acc, "examples_per_sec": len(train_set) / seconds}
        history.append(row)
        say(f"epoch {epoch:>2}/{args.epochs}  train loss {train_loss:.4f}  train acc {train_acc:.4f}  "
            f"test loss {test_loss:.4f}  test acc {test_acc:.4f}  {row['examples_per_sec']:,.0f} examples/sec")
        if args.save and rank == 0:
            tg.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict() if sched else None, "epoch": epoch, "rng": tg.get_rng_state(),
                     "history": history, "config": config}, args.save)
    note = warm_up_note(model)
    if note:
        say(note)
    if rank != 0:
        return history
    os.makedirs(out, exist_ok=True)
    metrics = {"epochs": history, "config": config, "wall_seconds": time.perf_counter() - wall}
    with atomic_write(os.path.join(out, "metrics.json")) as f:
        f.write(json.dumps(metrics, indent=2).encode())
    try:
        plot_curves(history, os.path.join(out, "curves.png"), describe(config))
    except ImportError:
        print("(install matplotlib for curves.png: pip install -e \".[examples]\")")
    if history:
        print(f"final: train acc {history[-1]['train_acc']:.4f}, test acc {history[-1]['test_acc']:.4f}; "
              f"wrote {out}/metrics.json and curves.png")
    return history


if __name__ == "__main__":
    main()
