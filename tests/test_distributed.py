"""Data-parallel training over MPI: SyncBatchNorm and DistributedDataParallel against one process on the whole batch
(under mpiexec -n 2 and -n 3, with uneven shares, a rank of 0 and of 1 examples included), the collectives, the
errors, a failing rank ending the job, DistributedSampler and the moments' combination."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.distributed as dist
from tinygradnorm import nn
from tinygradnorm.data import DistributedSampler, DataLoader, TensorDataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "mpi_worker.py"
MPIEXEC = shutil.which("mpiexec", path=os.pathsep.join([str(pathlib.Path(sys.executable).parent),
                                                         os.environ.get("PATH", "")]))
needs_mpi = pytest.mark.skipif(not dist.is_available() or MPIEXEC is None,
                               reason="mpi4py or mpiexec is not installed (pip install -e \".[mpi]\")")
TOL = 1e-10


def _mpirun(n, *args, timeout=300, check=True):
    run = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(WORKER), *args], capture_output=True, text=True,
                         timeout=timeout, env=dict(os.environ, TINYGRADNORM_NUM_THREADS="1"))
    if check:
        assert run.returncode == 0, run.stdout + run.stderr
        return json.loads(run.stdout.strip().splitlines()[-1])
    return run


@needs_mpi
@pytest.mark.parametrize("n, sizes", [(2, "1,6"), (3, "0,3,4"), (3, "4,1,2")])
def test_sync_batch_norm_with_ddp_is_one_process_on_the_whole_batch(n, sizes):
    """float64, 3 SGD steps then eval: outputs, gradients, updated parameters, running statistics within 1e-10."""
    for rank_result in _mpirun(n, "equivalence", sizes):
        for layer, errors in rank_result.items():
            assert max(errors.values()) < TOL, (layer, errors)


@needs_mpi
@pytest.mark.parametrize("n, sizes", [(2, "2,5"), (3, "0,3,4"), (3, "4,1,2")])
def test_sync_batch_norm_double_backward_is_one_process_batch_norms(n, sizes):
    """A gradient penalty through SyncBatchNorm, second and third order, on uneven shards: within 1e-10 of one
    process's BatchNorm on the whole batch."""
    for rank_result in _mpirun(n, "double_backward", sizes):
        for layer, error in rank_result.items():
            assert error < TOL, (layer, error)


@needs_mpi
@pytest.mark.parametrize("n, sizes", [(2, "1,5"), (3, "2,0,5")])
def test_the_lenet_network_trains_the_same_on_several_processes(n, sizes):
    for rank_result in _mpirun(n, "lenet", sizes):
        assert max(rank_result["lenet"].values()) < TOL, rank_result


@needs_mpi
def test_collectives_follow_torch_distributed():
    for result in _mpirun(2, "collectives"):
        assert result == {"sum": [3.0, 10.0], "avg": [1.5, 5.0], "max": [2.0, 10.0], "broadcast": [2.0, 10.0],
                          "gather": [[1.0, 0.0], [2.0, 10.0]]}


@needs_mpi
def test_ddp_names_a_parameter_whose_shape_differs_across_ranks():
    for message in _mpirun(2, "mismatch"):
        assert message.startswith("DistributedDataParallel: the ranks hold different models: parameter 'weight' has "
                                  "shape (4, 3) (float32) on rank 0 but 'weight' has shape (5, 3) (float32) on rank 1")


@needs_mpi
def test_no_sync_accumulates_locally_and_the_next_backward_averages_it_all():
    for result in _mpirun(2, "no_sync"):
        assert result["local_first_step_is_not_averaged"] and result["error"] < TOL


@needs_mpi
def test_a_rank_that_fails_mid_step_ends_the_whole_job():
    """Without MPI_Abort, rank 0 would wait forever in its next collective; the timeout would catch that."""
    run = _mpirun(2, "abort", timeout=60, check=False)
    assert run.returncode != 0
    assert "planted failure on rank 1" in run.stderr and "aborting the job (MPI_Abort)" in run.stderr
    assert "rank 0 finished" not in run.stdout


# ---- without mpiexec ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [lambda: dist.all_reduce(tg.ones(2)), lambda: dist.broadcast(tg.ones(2)),
                                  lambda: dist.barrier(), lambda: dist.get_rank(), lambda: dist.get_world_size(),
                                  lambda: dist.all_gather([tg.ones(2)], tg.ones(2)),
                                  lambda: nn.parallel.DistributedDataParallel(nn.Linear(2, 2))])
def test_a_collective_before_init_process_group_says_what_to_do(call):
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="Default process group has not been initialized.*init_process_group"):
        call()


def test_only_the_mpi_backend_is_offered():
    with pytest.raises(ValueError, match="backend 'nccl' is not supported; tinygradnorm runs over MPI"):
        dist.init_process_group("nccl")


def test_outside_a_process_group_sync_batch_norm_is_batch_norm():
    rng = np.random.default_rng(0)
    bn, sync = nn.BatchNorm2d(3).double(), nn.SyncBatchNorm(3).double()
    for _ in range(2):
        x = rng.standard_normal((4, 3, 5, 5))
        xa, xb = tg.tensor(x, requires_grad=True), tg.tensor(x, requires_grad=True)
        ya, yb = bn(xa), sync(xb)
        ya.sum().backward()
        yb.sum().backward()
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        np.testing.assert_array_equal(xa.grad.numpy(), xb.grad.numpy())
    for a, b in zip(list(bn.state_dict().values()), list(sync.state_dict().values())):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_convert_sync_batchnorm_keeps_the_parameters_buffers_and_state_dict_keys():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3), nn.BatchNorm1d(3),
                          nn.LayerNorm(3))
    weight, running = model[1].weight, model[4].running_mean
    keys = list(model.state_dict())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], nn.SyncBatchNorm) and isinstance(converted[4], nn.SyncBatchNorm)
    assert isinstance(converted[5], nn.LayerNorm)
    assert converted[1].weight is weight and converted[4].running_mean is running
    assert list(converted.state_dict()) == keys
    assert isinstance(nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(4)), nn.SyncBatchNorm)


def test_combining_moments_pairwise_matches_the_whole_batch_for_uneven_groups():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((13, 4)) * 3 + 1e4                       # a large mean: E[x²] - E[x]² would lose it
    sizes = [0, 1, 5, 7]
    parts = np.split(x, np.cumsum(sizes)[:-1])
    counts = np.array([[len(p)] * 4 for p in parts], dtype=float)
    means = np.array([p.mean(0) if len(p) else np.zeros(4) for p in parts])
    m2s = np.array([((p - p.mean(0)) ** 2).sum(0) if len(p) else np.zeros(4) for p in parts])
    n, mean, m2 = dist.combine_moments(counts, means, m2s)
    assert (n == 13).all()
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(m2 / 13, x.var(0), rtol=1e-9)


def test_distributed_sampler_pads_splits_and_reshuffles_per_epoch():
    data = TensorDataset(np.arange(10))
    shares = [list(DistributedSampler(data, num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]            # padded with the first indices
    dropped = [list(DistributedSampler(data, num_replicas=3, rank=r, shuffle=False, drop_last=True)) for r in range(3)]
    assert dropped == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    s = DistributedSampler(data, num_replicas=2, rank=1, seed=5)
    first = list(s)
    assert len(first) == len(s) == 5 and list(s) == first              # the same epoch, the same order
    s.set_epoch(1)
    assert list(s) != first
    everyone = sorted(sum((list(DistributedSampler(data, num_replicas=2, rank=r, seed=5)) for r in range(2)), []))
    assert everyone == list(range(10))
    with pytest.raises(ValueError, match=r"Invalid rank 3, rank should be in the interval \[0, 2\]"):
        DistributedSampler(data, num_replicas=3, rank=3)


def test_a_data_loader_reads_a_samplers_share():
    data = TensorDataset(np.arange(10) * 10)
    loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, num_replicas=3, rank=1, shuffle=False))
    assert [b[0].numpy().tolist() for b in loader] == [[10, 40], [70, 0]] and len(loader) == 2
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        DataLoader(data, shuffle=True, sampler=DistributedSampler(data, num_replicas=1, rank=0))


REAL = pathlib.Path("/usr/share/datasets/fashion-mnist")


@needs_mpi
@pytest.mark.skipif(not (REAL / "train-images-idx3-ubyte.gz").exists(),
                    reason="the Debian package dataset-fashion-mnist is not installed")
def test_the_example_under_mpiexec_trains_as_one_process_and_its_checkpoint_resumes_on_any_number(tmp_path):
    lenet = str(ROOT / "examples" / "lenet.py")
    common = ["--epochs", "2", "--limit-train", "512", "--batch-size", "64", "--no-progress"]

    def run(n, *extra, out):
        cmd = ([MPIEXEC, "-n", str(n)] if n > 1 else []) + [sys.executable, lenet, *common, *extra, "--out",
                                                             str(tmp_path / out)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, TINYGRADNORM_NUM_THREADS="1"))
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout, json.loads((tmp_path / out / "metrics.json").read_text())["epochs"]

    ckpt = str(tmp_path / "ckpt.npz")
    out, first = run(2, "--save", ckpt, "--stop-after", "1", out="two")
    assert "2 processes sharing each batch" in out and out.count("epoch  1/2") == 1       # rank 0 alone prints
    _, whole = run(1, out="one")                                       # the same two epochs in one process
    _, resumed_one = run(1, "--resume", ckpt, out="resumed1")
    _, resumed_three = run(3, "--resume", ckpt, out="resumed3")
    assert abs(first[0]["train_loss"] - whole[0]["train_loss"]) < 1e-4
    for resumed in (resumed_one, resumed_three):
        assert [r["epoch"] for r in resumed] == [1, 2]
        for key in ("train_loss", "test_loss", "train_acc"):
            assert abs(resumed[1][key] - whole[1][key]) < 1e-3, (key, resumed[1][key], whole[1][key])
