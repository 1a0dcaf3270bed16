"""Training gives the same bits for any number of threads, on both CPU paths.

The backend splits work over TINYGRADNORM_NUM_THREADS threads. Every reduction across pieces
(the convolution's weight gradient, the NumPy path's per-block statistics, the split matmul)
uses pieces that depend on the shapes only and adds them in a fixed order. These tests make
even tiny arrays split into many pieces, so that the joining code runs at test sizes.
"""
import hashlib

import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn as nn
import tinygradnorm.nn.functional as F

BACKEND = tg.device("cpu").backend


@pytest.fixture
def set_threads(monkeypatch):
    """A function that gives the CPU backend k threads (and a fresh pool), with even tiny work split."""
    from tinygradnorm.backend import numpy_backend
    monkeypatch.setattr(BACKEND, "min_split_bytes", 0)
    monkeypatch.setattr(BACKEND, "block_bytes", 256)
    monkeypatch.setattr(numpy_backend, "_SPLIT_MATMUL_MACS", 0)
    monkeypatch.setattr(BACKEND, "split_matmul", True)
    try:
        from tinygradnorm.backend.cpu_kernels import conv as cpu_kernels
        monkeypatch.setattr(cpu_kernels, "_CONV_CHUNK_BYTES", 4096)
    except ImportError:
        pass
    saved = BACKEND.threads

    def set_to(k):
        if BACKEND._pool is not None:
            BACKEND._pool.shutdown()
            BACKEND._pool = None
        BACKEND.threads = k

    yield set_to
    set_to(saved)


def _train_digest(steps=3, dtype=np.float32):
    """A hash of every parameter, buffer and loss after a few SGD steps of a net with every kind of layer, then
    an eval forward and backward. (In float64 too: a float64 sum added in another order mostly rounds to the same
    float32, so only float64 shows every difference.)"""
    tg.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3), nn.GroupNorm(2, 6), nn.Sigmoid(), nn.InstanceNorm2d(6, affine=True),
        nn.Flatten(), nn.Linear(24, 16), nn.BatchNorm1d(16), nn.Sigmoid(), nn.LayerNorm(16), nn.RMSNorm(16),
        nn.Linear(16, 5)).to(tg.float64 if dtype == np.float64 else tg.float32)
    opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(1)
    x = tg.tensor(rng.standard_normal((24, 2, 8, 8)).astype(dtype))
    y = tg.tensor(rng.integers(0, 5, 24))
    digest = hashlib.sha256()
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        digest.update(loss.numpy().tobytes())
    model.eval()                        # and eval mode, forward and backward: the frozen-statistics kernels
    x.requires_grad_()
    F.cross_entropy(model(x), y).backward()
    digest.update(x.grad.numpy().tobytes())
    for t in list(model.parameters()) + list(model.buffers()):
        digest.update(t.numpy().tobytes())
        digest.update(t.grad.numpy().tobytes() if t.grad is not None else b"")
    return digest.hexdigest()


@pytest.mark.usefixtures("cpu_path")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_is_bit_identical_for_any_thread_count(set_threads, dtype):
    digests = {}
    for k in (1, 2, 3, 4, 7):
        set_threads(k)
        digests[k] = _train_digest(dtype=dtype)
    assert len(set(digests.values())) == 1, digests


@pytest.mark.usefixtures("cpu_path")
def test_training_repeats_exactly_at_one_thread_count(set_threads):
    set_threads(4)
    assert len({_train_digest() for _ in range(3)}) == 1


def test_conv_weight_gradient_is_bit_identical_across_thread_counts(set_threads):
    """The reduction the issue found unordered: the same Conv2d backward, many times, at several thread counts."""
    rng = np.random.default_rng(2)
    x = tg.tensor(rng.standard_normal((32, 3, 10, 10)).astype(np.float32))
    w = tg.tensor(rng.standard_normal((5, 3, 3, 3)).astype(np.float32), requires_grad=True)
    gy = tg.tensor(rng.standard_normal((32, 5, 8, 8)).astype(np.float32))
    seen = set()
    for k in (1, 2, 4, 7):
        set_threads(k)
        for _ in range(5):
            w.grad = None
            F.conv2d(x, w).backward(gy)
            seen.add(w.grad.numpy().tobytes())
    assert len(seen) == 1


def _train_in_thread(model, x, y, steps, out, key):
    opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    out[key] = b"".join(t.numpy().tobytes() for t in list(model.parameters()) + list(model.buffers()))


@pytest.mark.usefixtures("cpu_path")
def test_two_threads_training_their_own_models_match_the_same_work_done_in_turn(set_threads):
    """Grad mode, the thread pool, the per-thread scratch arrays and the recycled memory are shared by both threads."""
    import threading
    set_threads(3)

    def setup(seed):
        tg.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.Sigmoid(), nn.AvgPool2d(2),
                              nn.Flatten(), nn.Linear(64, 10), nn.LayerNorm(10), nn.Linear(10, 3))
        rng = np.random.default_rng(seed)
        return model, tg.tensor(rng.standard_normal((16, 2, 8, 8)).astype(np.float32)), tg.tensor(rng.integers(0, 3, 16))

    alone, together = {}, {}
    for seed in (0, 1):
        _train_in_thread(*setup(seed), 4, alone, seed)
    jobs = [setup(seed) for seed in (0, 1)]
    threads = [threading.Thread(target=_train_in_thread, args=(*jobs[seed], 4, together, seed)) for seed in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_recycled_memory_is_never_handed_to_two_threads_at_once():
    """Many threads take, fill, check and drop recycled arrays of a few sizes: a shared block would show."""
    import threading
    import time
    kernels = BACKEND.kernels
    if kernels is None:
        pytest.skip(f"no compiled CPU kernels: {BACKEND.kernels_missing}")
    from tinygradnorm.backend.cpu_kernels.memory import _Recycler
    recycler = _Recycler(min_bytes=64)
    clashes = []

    def worker(k):
        for i in range(300):
            a = recycler.empty((64 + 64 * (i % 3),), np.float64)
            a[...] = k
            time.sleep(0)                   # let the other threads run while this array is alive
            if (a != k).any():
                clashes.append(k)
            del a

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not clashes
