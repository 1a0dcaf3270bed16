"""Mini-batches: a DataLoader with seeded shuffling, and TensorDataset."""
import numpy as np

from ..backend import device as as_device
from ..tensor import Tensor


class TensorDataset:
    """Rows of equally long arrays (or Tensors), taken together."""

    def __init__(self, *arrays):
        arrays = [a.numpy() if isinstance(a, Tensor) else np.asarray(a) for a in arrays]
        if not arrays or any(len(a) != len(arrays[0]) for a in arrays):
            raise ValueError(f"TensorDataset: arrays must all have the same length (got "
                             f"{[len(a) for a in arrays]})")
        self._arrays = arrays

    def __len__(self):
        return len(self._arrays[0])

    def __getitem__(self, i):
        return tuple(a[i] for a in self._arrays)

    def arrays(self):
        return tuple(self._arrays)


class DataLoader:
    """Batches of (inputs, targets) Tensors from a dataset with an ``arrays()`` method (or indexable rows).

    With ``shuffle``, each epoch's order is drawn from the global generator, as in PyTorch, so
    ``tinygradnorm.manual_seed`` decides it. With ``seed``, epoch e uses a permutation from a
    generator of its own seeded with (seed, e) instead: the order depends on nothing else, and a
    resumed run (``set_epoch``) sees the same order as an uninterrupted one. A ``sampler`` (such as
    DistributedSampler) gives the indices instead.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None, device=None, sampler=None):
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive int (got {batch_size!r})")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle (the sampler decides the "
                             "order: DistributedSampler(shuffle=True))")
        self.dataset, self.batch_size, self.shuffle, self.drop_last, self.seed = dataset, batch_size, shuffle, \
            drop_last, seed
        self.sampler = sampler
        self.device = as_device(device) if device is not None else None
        self.epoch = 0
        if hasattr(dataset, "arrays"):
            self._arrays = dataset.arrays()
        else:
            rows = [dataset[i] for i in range(len(dataset))]
            self._arrays = tuple(np.stack([np.asarray(r[k]) for r in rows]) for k in range(len(rows[0])))

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else len(self._arrays[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch):
        """Choose the epoch whose shuffle order the next iteration uses."""
        self.epoch = epoch

    def __iter__(self):
        n = len(self._arrays[0])
        if self.sampler is not None:
            order = np.fromiter(iter(self.sampler), dtype=np.int64)
            n = len(order)
        elif self.shuffle and self.seed is None:
            order = as_device("cpu").backend.rng.permutation(n)
        elif self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = None
        self.epoch += 1
        for k in range(len(self)):
            rows = slice(k * self.batch_size, min((k + 1) * self.batch_size, n))
            index = order[rows] if order is not None else rows
            yield tuple(Tensor(a[index], device=self.device) for a in self._arrays)
