"""Several processes training one model, over MPI (mpi4py), with torch.distributed's names.

    # mpiexec -n 4 python train.py
    import tinygradnorm.distributed as dist
    dist.init_process_group(backend="mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    dist.all_reduce(t, op=dist.ReduceOp.AVG)       # in place, like torch.distributed

MPI starts the processes (``mpiexec -n K``, or a hostfile across machines) and carries the messages.
``pip install -e ".[mpi]"`` installs mpi4py and the MPICH that PyPI ships, so no system package is
needed. Each collective works on Tensors in place, as torch.distributed's do. CuPy tensors go through
the host (``.get()``, then MPI, then back); NCCL is used instead once ``TINYGRADNORM_NCCL=1`` is set,
which stays off by default until it has been verified on a machine with GPUs.

After ``init_process_group``, an exception that escapes a process ends the whole job (MPI_Abort) rather
than leaving the other processes waiting forever in their next collective.
"""
import os
import sys
import traceback

from ..tensor import Tensor

__all__ = ["ReduceOp", "init_process_group", "is_initialized", "is_available", "get_rank", "get_world_size",
           "all_reduce", "broadcast", "all_gather", "all_gather_object", "barrier", "destroy_process_group"]


class ReduceOp:
    """How all_reduce combines the ranks' values."""

    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"


_GROUP = None                 # the one process group: a _Group, or None before init_process_group


class _Group:
    def __init__(self, comm, mpi):
        self.comm, self.MPI = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.excepthook = None


def is_available():
    """True when mpi4py imports (and so MPI can carry the collectives)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def init_process_group(backend="mpi", init_method=None, world_size=-1, rank=-1, **kwargs):
    """Join the job's processes into the default process group. Only ``backend="mpi"`` is supported: the
    processes, their number and their ranks come from MPI (``mpiexec -n K``), so world_size and rank, when
    given, must agree with it."""
    global _GROUP
    if backend != "mpi":
        raise ValueError(f"init_process_group: backend {backend!r} is not supported; tinygradnorm runs over MPI: use "
                         "backend='mpi' and start the processes with mpiexec -n K")
    if _GROUP is not None:
        raise RuntimeError("init_process_group: trying to initialize the default process group twice; call "
                           "destroy_process_group() first")
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"init_process_group: mpi4py is not installed ({e}); pip install -e \".[mpi]\" "
                          "(mpi4py and MPICH from PyPI)") from None
    comm = MPI.COMM_WORLD
    group = _Group(comm, MPI)
    for what, given, actual in (("world_size", world_size, group.size), ("rank", rank, group.rank)):
        if given not in (-1, None) and given != actual:
            raise ValueError(f"init_process_group: {what}={given} disagrees with MPI's {actual}; leave it out "
                             "(mpiexec decides it)")
    _GROUP = group
    group.excepthook = sys.excepthook
    sys.excepthook = _abort_on_exception


def _abort_on_exception(kind, value, tb):
    """An exception escaped this rank: print it, then end every rank (the others would wait forever)."""
    traceback.print_exception(kind, value, tb)
    group = _GROUP
    if group is not None and group.size > 1:
        sys.stderr.write(f"rank {group.rank} of {group.size} failed; aborting the job (MPI_Abort)\n")
        sys.stderr.flush()
        group.comm.Abort(1)


def destroy_process_group():
    """Leave the process group (MPI itself is finalized when the process exits)."""
    global _GROUP
    group = _group("destroy_process_group")
    if sys.excepthook is _abort_on_exception:
        sys.excepthook = group.excepthook
    _GROUP = None


def is_initialized():
    return _GROUP is not None


def _group(name):
    if _GROUP is None:
        raise RuntimeError(f"{name}: Default process group has not been initialized, please make sure to call "
                           "init_process_group (dist.init_process_group(backend='mpi'), in every process started "
                           "by mpiexec)")
    return _GROUP


def get_rank():
    return _group("get_rank").rank


def get_world_size():
    return _group("get_world_size").size


def barrier():
    """Wait until every rank has reached this point."""
    _group("barrier").comm.Barrier()


def _check(name, tensor):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(tensor).__name__}")


def _host(tensor):
    """A C-contiguous NumPy array with the tensor's values (a view of its memory on the CPU when it can be)."""
    import numpy as np
    data = tensor.data
    return np.ascontiguousarray(data.get() if hasattr(data, "get") else data)


def _store(tensor, host):
    """Write host's values back into the tensor's own memory (in place, as torch.distributed does)."""
    data = tensor.data
    if hasattr(data, "get"):
        data.set(host) if data.flags.c_contiguous else data.__setitem__(Ellipsis, tensor.xp.asarray(host))
    elif host is not data:
        data[...] = host


def all_reduce(tensor, op=ReduceOp.SUM):
    """Combine the tensor's values across ranks, in place: every rank ends with the sum (or average, max,
    min) of all the ranks' values. The result is the same on every rank, to the bit."""
    group = _group("all_reduce")
    _check("all_reduce", tensor)
    MPI = group.MPI
    ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.MAX: MPI.MAX, ReduceOp.MIN: MPI.MIN}
    if op not in ops:
        raise ValueError(f"all_reduce: op must be one of ReduceOp.SUM, AVG, MAX, MIN (got {op!r})")
    if _nccl_wanted(tensor):
        return _nccl_all_reduce(tensor, op, group)
    host = _host(tensor)
    # NOTE: MPI's reduction order is the same on every rank, so every rank gets the same bits.
    group.comm.Allreduce(MPI.IN_PLACE, host, op=ops[op])
    if op == ReduceOp.AVG:
        host /= group.size
    _store(tensor, host)
    return tensor


def broadcast(tensor, src=0):
    """Overwrite the tensor, in place, with rank src's values."""
    group = _group("broadcast")
    _check("broadcast", tensor)
    if not 0 <= src < group.size:
        raise ValueError(f"broadcast: src={src} is not a rank of this group of {group.size}")
    host = _host(tensor)
    group.comm.Bcast(host, root=src)
    _store(tensor, host)
    return tensor


def all_gather(tensor_list, tensor):
    """Fill tensor_list (one tensor per rank, each shaped like ``tensor``) with every rank's ``tensor``."""
    group = _group("all_gather")
    _check("all_gather", tensor)
    if len(tensor_list) != group.size:
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} tensors; it needs one per rank "
                         f"({group.size})")
    import numpy as np
    host = _host(tensor)
    out = np.empty((group.size,) + host.shape, dtype=host.dtype)
    group.comm.Allgather(host, out)
    for t, part in zip(tensor_list, out):
        if tuple(t.shape) != host.shape:
            raise ValueError(f"all_gather: every tensor must have shape {host.shape}, got {tuple(t.shape)}")
        _store(t, part)
    return tensor_list


def all_gather_object(obj):
    """Every rank's obj (anything picklable), as a list in rank order. (For metadata, not for arrays.)"""
    return _group("all_gather_object").comm.allgather(obj)


def _to_host(a):
    import numpy as np
    return np.ascontiguousarray(a.get() if hasattr(a, "get") else a, dtype=np.float64)


def gather_moments(count, mean, m2):
    """(count, mean, M2) over every rank's examples, from each rank's count (a number), per-channel mean and
    centred sum of squares M2 (float64 arrays, NumPy or CuPy): one all-gather of 3·C numbers, then the ranks'
    moments combined in rank order by Chan, Golub and LeVeque's pairwise update (never E[x²] - E[x]²). Host
    NumPy arrays, the same bits on every rank."""
    import numpy as np
    group = _group("gather_moments")
    mean, m2 = _to_host(mean), _to_host(m2)
    local = np.concatenate([np.full(mean.size, float(count)), mean, m2])
    every = np.empty((group.size, local.size))
    group.comm.Allgather(local, every)
    c = mean.size
    return combine_moments(every[:, :c], every[:, c:2 * c], every[:, 2 * c:])


def combine_moments(counts, means, m2s):
    """(count, mean, M2) of the union of groups given their counts, means and M2 (arrays of shape (groups, C)),
    added in group order: n = n_a + n_b, delta = mean_b - mean_a, mean = mean_a + delta n_b / n,
    M2 = M2_a + M2_b + delta² n_a n_b / n. A group of count 0 changes nothing."""
    import numpy as np
    n, mean, m2 = np.zeros(means.shape[1]), np.zeros(means.shape[1]), np.zeros(means.shape[1])
    for n_r, mean_r, m2_r in zip(counts, means, m2s):
        total = n + n_r
        safe = np.where(total > 0, total, 1)
        delta = mean_r - mean
        mean = np.where(n_r > 0, mean + delta * n_r / safe, mean)
        m2 = np.where(n_r > 0, m2 + m2_r + delta * delta * n * n_r / safe, m2)
        n = total
    return n, mean, m2


def all_reduce_sums(*arrays):
    """The sums over ranks of these float64 arrays (NumPy or CuPy), as host NumPy arrays: one all-reduce of all
    of them together, the same bits on every rank."""
    import numpy as np
    group = _group("all_reduce_sums")
    parts = [_to_host(a) for a in arrays]
    both = np.concatenate([p.reshape(-1) for p in parts])
    group.comm.Allreduce(group.MPI.IN_PLACE, both, op=group.MPI.SUM)
    out, start = [], 0
    for p in parts:
        out.append(both[start:start + p.size].reshape(p.shape))
        start += p.size
    return out


# ---- NCCL, for CuPy tensors (off until verified on GPUs) ----------------------------------------------------
def _nccl_wanted(tensor):
    return os.environ.get("TINYGRADNORM_NCCL") == "1" and hasattr(tensor.data, "get")


def _nccl_all_reduce(tensor, op, group):
    """all_reduce through NCCL on the GPU's memory, with a communicator bootstrapped over MPI. Unverified."""
    import cupy
    from cupy.cuda import nccl
    comm = getattr(group, "nccl", None)
    if comm is None:
        uid = group.comm.bcast(nccl.get_unique_id() if group.rank == 0 else None, root=0)
        comm = group.nccl = nccl.NcclCommunicator(group.size, uid, group.rank)
    data = tensor.data
    if not data.flags.c_contiguous:
        raise ValueError("all_reduce over NCCL needs a contiguous tensor")
    kinds = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "int64": nccl.NCCL_INT64}
    nccl_op = {ReduceOp.SUM: nccl.NCCL_SUM, ReduceOp.AVG: nccl.NCCL_SUM, ReduceOp.MAX: nccl.NCCL_MAX,
               ReduceOp.MIN: nccl.NCCL_MIN}[op]
    comm.allReduce(data.data.ptr, data.data.ptr, data.size, kinds[data.dtype.name], nccl_op,
                   cupy.cuda.get_current_stream().ptr)
    if op == ReduceOp.AVG:
        data /= group.size
    return tensor
