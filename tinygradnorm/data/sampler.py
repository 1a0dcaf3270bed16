"""DistributedSampler: each rank's share of a dataset's indices, as torch.utils.data.distributed.DistributedSampler."""
import math

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """The indices of a dataset that rank ``rank`` of ``num_replicas`` reads this epoch.

    Every rank draws the same order (a permutation seeded with ``seed + epoch`` when ``shuffle``), pads it
    by repeating its first indices until it divides evenly (or, with ``drop_last``, cuts the tail instead),
    and takes every num_replicas-th index starting at its rank. So the ranks' shares are disjoint (but for
    the padding), equally long, and cover the dataset. Call ``set_epoch(e)`` before each epoch, as in
    PyTorch, or every epoch repeats the same order.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            from .. import distributed as dist
            if not dist.is_initialized():
                raise RuntimeError("DistributedSampler: pass num_replicas and rank, or call "
                                   "tinygradnorm.distributed.init_process_group() first")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        n = len(dataset)
        if drop_last and n % num_replicas:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        return iter(self.indices().tolist())

    def indices(self):
        n = len(self.dataset)
        order = np.random.default_rng(self.seed + self.epoch).permutation(n) if self.shuffle else np.arange(n)
        if self.drop_last:
            order = order[:self.total_size]
        else:
            pad = self.total_size - n
            order = np.concatenate([order, np.resize(order, pad)]) if pad else order
        return order[self.rank:self.total_size:self.num_replicas]
