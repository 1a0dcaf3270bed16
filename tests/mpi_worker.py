"""What tests/test_distributed.py runs under mpiexec: one check per mode, its result as JSON on rank 0's last line.

    mpiexec -n 3 python tests/mpi_worker.py equivalence 0,3,4
    mpiexec -n 2 python tests/mpi_worker.py lenet 1,5
    mpiexec -n 2 python tests/mpi_worker.py collectives | mismatch | abort | no_sync
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import tinygradnorm as tg  # noqa: E402
import tinygradnorm.distributed as dist  # noqa: E402
from tinygradnorm import nn, optim  # noqa: E402


def report(result):
    """Gather every rank's result; rank 0 prints them as one JSON line."""
    every = dist.all_gather_object(result)
    if dist.get_rank() == 0:
        print(json.dumps(every), flush=True)


def _shards(sizes):
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rank = dist.get_rank()
    return slice(int(starts[rank]), int(starts[rank + 1]))


def _max_diff(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max()) if a.size else 0.0


def compare_runs(make, sizes, input_shape, steps=3, seed=0):
    """One process with the plain model on the whole batch against this job's DDP+SyncBatchNorm model on its shard:
    the largest difference in outputs, parameter gradients, parameters after each SGD step, running statistics,
    and eval outputs."""
    world, n = dist.get_world_size(), sum(sizes)
    mine = _shards(sizes)
    tg.manual_seed(seed)
    reference = make().double()
    tg.manual_seed(seed + 1 + dist.get_rank())          # different weights on every rank: DDP must broadcast rank 0's
    model = make().double()
    model.load_state_dict(reference.state_dict()) if dist.get_rank() == 0 else None
    ddp = nn.parallel.DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(model))
    opt_ref = optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(seed)
    errors = {"output": 0.0, "grad": 0.0, "param": 0.0, "running": 0.0, "eval": 0.0}
    for _ in range(steps):
        x = rng.standard_normal((n,) + input_shape) * 2 + 0.5
        out_ref = reference(tg.tensor(x))
        w_out = rng.standard_normal(out_ref.shape[1:])
        # The whole batch's loss is the mean of per-example losses; each rank's, its share of that sum times the
        # number of ranks, so that DDP's average of the ranks' gradients is the whole batch's gradient.
        ((out_ref * tg.tensor(w_out)).sum() / n).backward()
        out = ddp(tg.tensor(x[mine]))
        ((out * tg.tensor(w_out)).sum() * (world / n)).backward()
        errors["output"] = max(errors["output"], _max_diff(out.numpy(), out_ref.numpy()[mine]))
        for (name, p), q in zip(reference.named_parameters(), ddp.module.parameters()):
            errors["grad"] = max(errors["grad"], _max_diff(p.grad.numpy(), q.grad.numpy()))
        opt_ref.step()
        opt.step()
        opt_ref.zero_grad()
        opt.zero_grad()
        for p, q in zip(reference.parameters(), ddp.module.parameters()):
            errors["param"] = max(errors["param"], _max_diff(p.numpy(), q.numpy()))
        for a, b in zip(reference.buffers(), ddp.module.buffers()):
            errors["running"] = max(errors["running"], _max_diff(a.numpy(), b.numpy()))
    reference.eval()
    ddp.eval()
    x = rng.standard_normal((n,) + input_shape)
    errors["eval"] = _max_diff(ddp(tg.tensor(x[mine])).numpy(), reference(tg.tensor(x)).numpy()[mine])
    return errors


def equivalence(sizes):
    results = {}
    results["bn1d"] = compare_runs(lambda: nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Sigmoid(),
                                                         nn.Linear(4, 3), nn.BatchNorm1d(3, affine=False)),
                                   sizes, (5,))
    results["bn2d"] = compare_runs(lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Sigmoid(),
                                                         nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2, momentum=None)),
                                   sizes, (2, 5, 5))
    report(results)


def double_backward(sizes):
    """SyncBatchNorm on this rank's shard against one process's BatchNorm on the whole batch, at second and third
    order: a gradient penalty's gradients with respect to the input, weight and bias, then the gradient of a
    function of those. Parameter gradients are summed over the ranks (each rank holds its share)."""
    n = sum(sizes)
    mine = _shards(sizes)
    rng = np.random.default_rng(3)
    out = {}
    for name, make, shape in (("bn1d", lambda: nn.BatchNorm1d(3), (3,)), ("bn2d", lambda: nn.BatchNorm2d(2),
                                                                         (2, 3, 2))):
        x0 = rng.standard_normal((n,) + shape) * 1.5 + 0.5
        c, d, e = (rng.standard_normal((n,) + shape) for _ in range(3))
        ref, sync = make().double(), nn.SyncBatchNorm.convert_sync_batchnorm(make().double())
        w0, b0 = rng.uniform(0.5, 1.5, shape[0]), rng.standard_normal(shape[0])
        for m in (ref, sync):
            m.weight.data[...], m.bias.data[...] = w0, b0
        results = []
        for m, part in ((ref, slice(None)), (sync, mine)):
            x = tg.tensor(x0[part], requires_grad=True)
            params = [m.weight, m.bias]
            y = m(x)
            gx, = tg.autograd.grad((y * tg.tensor(c[part])).sum(), x, create_graph=True)
            penalty = (gx * gx * tg.tensor(d[part])).sum()
            second = tg.autograd.grad(penalty, [x] + params, create_graph=True, materialize_grads=True)
            # NOTE: linear in the parameters' gradients, which each rank holds a share of (their sum is the whole).
            third = tg.autograd.grad(sum(((g * tg.tensor(w0)).sum() for g in second[1:]),
                                         (second[0] * tg.tensor(e[part])).sum()),
                                     [x] + params, materialize_grads=True)
            results.append([gx] + list(second) + list(third))
        errors = []
        for expected, got in zip(*results):
            expected, got = expected.numpy(), got.numpy()
            if expected.shape == x0.shape:                       # an input-shaped gradient: this rank's rows
                errors.append(_max_diff(expected[mine], got))
            else:                                                # a parameter's: the sum over ranks
                total = tg.tensor(got.copy())
                dist.all_reduce(total)
                errors.append(_max_diff(expected, total.numpy()))
        out[name] = max(errors)
    report(out)


def lenet(sizes):
    from lenet import lenet as build
    report({"lenet": compare_runs(lambda: build("batch"), sizes, (1, 28, 28))})


def collectives():
    rank, world = dist.get_rank(), dist.get_world_size()
    t = tg.tensor([float(rank + 1), 10.0 * rank])
    out = {}
    out["sum"] = dist.all_reduce(t.clone(), op=dist.ReduceOp.SUM).numpy().tolist()
    out["avg"] = dist.all_reduce(t.clone(), op=dist.ReduceOp.AVG).numpy().tolist()
    out["max"] = dist.all_reduce(t.clone(), op=dist.ReduceOp.MAX).numpy().tolist()
    out["broadcast"] = dist.broadcast(t.clone(), src=world - 1).numpy().tolist()
    parts = [tg.zeros(2, dtype=tg.float64) for _ in range(world)]
    dist.all_gather(parts, t)
    out["gather"] = [p.numpy().tolist() for p in parts]
    dist.barrier()
    report(out)


def mismatch():
    model = nn.Linear(3, 4 + dist.get_rank())
    try:
        nn.parallel.DistributedDataParallel(model)
    except ValueError as e:
        report(str(e))
        return
    report("no error")


def abort():
    """Rank 1 fails in the middle of a step; without MPI_Abort the others would wait in the next collective."""
    model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(3, 4), nn.SyncBatchNorm(4)))
    x = tg.randn(4, 3)
    model(x).sum().backward()
    if dist.get_rank() == 1:
        raise RuntimeError("planted failure on rank 1")
    model(x).sum().backward()            # rank 0 would block here forever
    print("rank 0 finished, which it must not", flush=True)


def no_sync():
    """Two backwards inside no_sync and one outside give the same averaged gradient as their sum, at once."""
    tg.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Linear(3, 2).double())
    xs = [tg.tensor(np.random.default_rng(10 * dist.get_rank() + i).standard_normal((4, 3))) for i in range(3)]
    with model.no_sync():
        model(xs[0]).sum().backward()
        local = model.module.weight.grad.numpy().copy()
        model(xs[1]).sum().backward()
    model(xs[2]).sum().backward()
    accumulated = model.module.weight.grad.numpy()
    expected = sum(x.numpy().sum(axis=0) for x in xs)           # d/dW of sum(W x) over the three batches
    expected = np.tile(expected, (2, 1))
    total = tg.tensor(expected)
    dist.all_reduce(total, op=dist.ReduceOp.AVG)
    report({"local_first_step_is_not_averaged": bool(np.allclose(local, np.tile(xs[0].numpy().sum(0), (2, 1)))),
            "error": _max_diff(accumulated, total.numpy())})


if __name__ == "__main__":
    dist.init_process_group("mpi")
    mode = sys.argv[1]
    args = [[int(v) for v in a.split(",")] for a in sys.argv[2:]]
    {"equivalence": equivalence, "double_backward": double_backward, "lenet": lenet, "collectives": collectives, "mismatch": mismatch, "abort": abort,
     "no_sync": no_sync}[mode](*args)
    dist.destroy_process_group()
