"""DistributedDataParallel: one model per process, each on its share of the batch, the gradients averaged.

    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = nn.parallel.DistributedDataParallel(model)      # every rank starts from rank 0's weights
    loss_fn(ddp(x_local), y_local).backward()              # gradients averaged over the ranks here
    opt.step()                                             # the same update on every rank

At construction it checks that every rank holds the same parameters (names, shapes, dtypes), naming the
first that differs and the ranks, then copies rank 0's parameters and buffers to every rank. After each
backward through it, the gradients are averaged over the ranks: packed in parameter order into flat
buckets of about ``bucket_cap_mb``, one all-reduce per bucket rather than one per parameter. Inside
``no_sync()`` they are left local, to accumulate over several backwards, and the next backward outside
it averages what has accumulated.

Averaging gives the gradient of the mean of the ranks' losses. With unequal shares of the batch, scale
each rank's loss so that the ranks' losses add up to the loss of the whole batch times the number of
ranks: sum the per-example losses and divide by the global batch size, times the world size (as
examples/lenet.py does); then K processes compute exactly what one process does on the whole batch.
"""
import contextlib

from .. import distributed as dist
from ..autograd import is_grad_enabled, no_grad, queue_callback
from ..creation import zeros_like
from ..tensor import Tensor
from .module import Module

__all__ = ["DistributedDataParallel"]


class DistributedDataParallel(Module):
    """Wraps ``module``; its state_dict keys gain the prefix ``module.``, as in PyTorch."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=25, find_unused_parameters=False):
        super().__init__()
        if process_group is not None:
            raise ValueError("DistributedDataParallel: only the default process group is supported; pass "
                             "process_group=None")
        if not dist.is_initialized():
            raise RuntimeError("DistributedDataParallel: Default process group has not been initialized, please "
                               "make sure to call init_process_group (dist.init_process_group(backend='mpi'))")
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self.bucket_bytes = int(bucket_cap_mb * 2 ** 20)
        self._sync = True
        self._queued = False
        params = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        _check_same_everywhere([(name, tuple(p.shape), str(p.dtype)) for name, p in params])
        self._params = [p for _, p in params]
        with no_grad():
            for t in list(module.parameters()) + [b for b in module.buffers() if b is not None]:
                dist.broadcast(t, src=0)

    def forward(self, *args, **kwargs):
        if self.broadcast_buffers and self.training:
            with no_grad():
                for b in self.module.buffers():
                    if b is not None:
                        dist.broadcast(b, src=0)
        if self._sync and not self._queued and is_grad_enabled():     # (an eval pass under no_grad has no backward)
            self._queued = True
            queue_callback(self._average_gradients)
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backwards inside this block keep their gradients on this rank (to accumulate them); the first backward
        after it averages everything accumulated."""
        old, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = old

    def _average_gradients(self):
        """Average every parameter's .grad over the ranks, bucket by bucket (a parameter without a gradient on
        this rank counts as zeros, so that every rank packs the same buckets)."""
        self._queued = False
        bucket, size = [], 0
        for p in self._params:
            if p.grad is None:
                p.grad = zeros_like(p)
            bucket.append(p)
            size += p.grad.data.nbytes
            if size >= self.bucket_bytes:
                _average(bucket)
                bucket, size = [], 0
        if bucket:
            _average(bucket)


def _average(bucket):
    """One all-reduce (average) of a bucket of gradients, packed flat in one tensor and unpacked after."""
    xp = bucket[0].grad.xp
    packed = Tensor._wrap(xp.concatenate([p.grad.data.reshape(-1) for p in bucket]), bucket[0].grad.device, False,
                          None)
    dist.all_reduce(packed, op=dist.ReduceOp.AVG)
    start = 0
    for p in bucket:
        n = p.grad.data.size
        p.grad.data[...] = packed.data[start:start + n].reshape(p.grad.data.shape)
        start += n


def _check_same_everywhere(signature):
    """Raise, naming the first parameter and the ranks that disagree, unless every rank has this signature."""
    every = dist.all_gather_object(signature)
    for rank, theirs in enumerate(every):
        if theirs == every[0]:
            continue
        for i in range(max(len(theirs), len(every[0]))):
            mine = every[0][i] if i < len(every[0]) else None
            other = theirs[i] if i < len(theirs) else None
            if mine != other:
                what = (f"parameter {mine[0]!r} has shape {mine[1]} ({mine[2]}) on rank 0 but "
                        + (f"{other[0]!r} has shape {other[1]} ({other[2]})" if other else "is missing")
                        + f" on rank {rank}") if mine else f"rank {rank} has an extra parameter {other[0]!r}"
                raise ValueError(f"DistributedDataParallel: the ranks hold different models: {what}; every rank "
                                 "must build the same model")
