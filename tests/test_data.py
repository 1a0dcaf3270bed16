"""Data: IDX parsing on files the tests write (good, truncated, wrong magic, wrong checksum), the real
Fashion-MNIST when installed, the search order, the DataLoader, and the downloader against a local server."""
import gzip
import hashlib
import http.server
import os
import struct
import threading
import time

import numpy as np
import pytest

from tinygradnorm.data import DataLoader, DatasetError, FashionMNIST, TensorDataset, read_idx
from tinygradnorm.data import fashion_mnist as fm

REAL = "/usr/share/datasets/fashion-mnist"
HAVE_REAL = all(os.path.exists(os.path.join(REAL, f)) for f in fm.FILES.values())


def idx_bytes(array):
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape) + \
        array.tobytes()


def write_split(directory, n=20, split="train", corrupt=None):
    """Small gzipped IDX files for one split; returns the sha256 table for them."""
    rng = np.random.default_rng(0)
    contents = {f"{split}-images": idx_bytes(rng.integers(0, 256, (n, 28, 28))),
                f"{split}-labels": idx_bytes(np.arange(n) % 10)}
    sums = {}
    for key, content in contents.items():
        path = os.path.join(directory, fm.FILES[key])
        if corrupt == "truncated" and key.endswith("images"):
            content = content[:-100]
        if corrupt == "magic" and key.endswith("images"):
            content = b"\x00\x00\x08\x01" + content[4:]
        sums[key] = hashlib.sha256(content).hexdigest()  # a checksum table that matches what is written
        if corrupt == "checksum" and key.endswith("images"):
            content = content[:-1] + bytes([content[-1] ^ 0xFF])
        with gzip.open(path, "wb") as f:
            f.write(content)
    return sums


@pytest.fixture
def small(tmp_path, monkeypatch):
    sums = write_split(tmp_path)
    monkeypatch.setattr(fm, "CHECKSUMS", {**fm.CHECKSUMS, **sums})
    return tmp_path


def test_good_small_files(small):
    ds = FashionMNIST(small, train=True, download=False)
    assert ds.images.shape == (20, 1, 28, 28) and ds.images.dtype == np.float32
    assert 0 <= ds.images.min() and ds.images.max() <= 1
    assert ds.labels.dtype == np.int64 and list(ds.labels[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


@pytest.mark.parametrize("corrupt,message", [
    ("truncated", "truncated"), ("magic", "wrong magic number 0x00000801"), ("checksum", "sha256 of the decompressed")])
def test_bad_small_files_are_refused(tmp_path, monkeypatch, corrupt, message):
    """Truncated and wrong-magic files fail the IDX checks even when their checksum is the expected one."""
    sums = write_split(tmp_path, corrupt=corrupt)
    monkeypatch.setattr(fm, "CHECKSUMS", {**fm.CHECKSUMS, **sums})
    with pytest.raises(DatasetError, match=message):
        FashionMNIST(tmp_path, train=True, download=False)


def test_truncated_gzip_stream_is_refused(tmp_path):
    path = tmp_path / "x.gz"
    data = gzip.compress(idx_bytes(np.zeros((3, 28, 28))))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cannot be decompressed"):
        read_idx(path, 3)


def test_not_found_offline_lists_places_and_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TINYGRADNORM_DATA", raising=False)
    monkeypatch.setattr(fm, "SYSTEM_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError) as err:
        FashionMNIST(None, download=False)
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and ".cache" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "TINYGRADNORM_DATA" in msg
    with pytest.raises(DatasetError, match=str(tmp_path / "empty")):
        FashionMNIST(tmp_path / "empty", download=False)


def test_search_order_an_explicit_root_alone_else_env_cache_system(small, tmp_path, monkeypatch):
    other = tmp_path / "env"
    other.mkdir()
    monkeypatch.setenv("TINYGRADNORM_DATA", str(other))
    assert fm.candidate_dirs("/explicit") == ["/explicit"]
    assert fm.candidate_dirs(None) == [str(other), fm.cache_dir(), fm.SYSTEM_DIR]
    assert FashionMNIST(small, download=False).root == str(small)
    with pytest.raises(DatasetError, match="were not found in:\n  - " + str(other)):
        FashionMNIST(other, download=False)        # an explicit root that lacks the files: no silent fallback
    monkeypatch.setenv("TINYGRADNORM_DATA", str(small))
    monkeypatch.setattr(fm, "SYSTEM_DIR", str(tmp_path / "nowhere"))
    assert FashionMNIST(None, download=False).root == str(small)


def test_dataloader_batches_shuffle_and_drop_last():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True, seed=3)
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [4, 4, 2] and len(loader) == 3
    assert sorted(np.concatenate([b[1].numpy() for b in batches]).tolist()) == list(range(10))
    loader.set_epoch(0)
    again = list(loader)
    assert all((a[1].numpy() == b[1].numpy()).all() for a, b in zip(batches, again))  # seeded: the same order
    second = np.concatenate([b[1].numpy() for b in loader])
    assert not (second == np.concatenate([b[1].numpy() for b in batches])).all()    # the next epoch differs
    assert [len(b[1]) for b in DataLoader(TensorDataset(x, y), 4, drop_last=True)] == [4, 4]


@pytest.mark.skipif(not HAVE_REAL, reason="the Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    train, test = FashionMNIST(REAL, train=True, download=False), FashionMNIST(REAL, train=False, download=False)
    assert train.raw_images.shape == (60000, 28, 28) and test.raw_images.shape == (10000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    for key in fm.FILES:
        content = gzip.open(os.path.join(REAL, fm.FILES[key])).read()
        assert hashlib.sha256(content).hexdigest() == fm.CHECKSUMS[key]


# ---- the downloader, against a server on 127.0.0.1 ------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        mode = self.path.split("/")[1]
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        if mode == "corrupt":
            body = body[:-10] + b"0123456789"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "drop":
            self.wfile.write(body[: len(body) // 3])  # promise the whole file, send a third, hang up
            self.wfile.flush()
            self.connection.close()
            return
        if mode == "stall":
            self.wfile.write(body[:100])              # a start, then silence longer than the read timeout
            self.wfile.flush()
            time.sleep(3)
            return
        if mode == "trickle":
            for i in range(len(body)):                # a byte every 20 ms: each read succeeds, the whole never ends
                try:
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.02)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    sums = write_split(src, n=30, split="t10k")
    _Handler.files = {p.name: p.read_bytes() for p in src.iterdir()}
    monkeypatch.setattr(fm, "CHECKSUMS", {**fm.CHECKSUMS, **sums})
    monkeypatch.setattr(fm, "SYSTEM_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TINYGRADNORM_DATA", raising=False)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_good_file_into_cache(server, tmp_path):
    ds = FashionMNIST(None, train=False, mirrors=[server + "/good/"])
    assert len(ds) == 30 and ds.root.endswith(os.path.join(".cache", "tinygradnorm", "fashion-mnist"))
    assert not [p for p in os.listdir(ds.root) if p.startswith(".part-")]


def test_download_falls_back_to_second_mirror(server):
    ds = FashionMNIST(None, train=False, mirrors=[server + "/corrupt/", server + "/good/"])
    assert len(ds) == 30


@pytest.mark.parametrize("mode,message", [
    ("corrupt", "sha256|cannot be decompressed"), ("drop", "connection closed|IncompleteRead"),
    ("stall", "timed out"), ("trickle", "passed its deadline of 0.5 s")])
def test_download_failures_leave_nothing_behind_and_name_no_deleted_file(server, tmp_path, mode, message):
    """A server that corrupts, truncates, stalls past the read timeout, or trickles past the overall deadline."""
    start = time.monotonic()
    with pytest.raises(DatasetError, match=message) as err:
        FashionMNIST(None, train=False, mirrors=[server + f"/{mode}/"], timeout=1, deadline=0.5)
    assert time.monotonic() - start < 20                  # bounded, however slow the server
    assert "attempt 2" in str(err.value)                  # it retried
    assert ".part-" not in str(err.value) and "delete it" not in str(err.value)
    cache = tmp_path / "home" / ".cache" / "tinygradnorm" / "fashion-mnist"
    assert not cache.exists() or not [p for p in os.listdir(cache) if p.endswith(".gz")]


def test_a_dead_downloaders_partial_file_is_removed_by_the_next_download(server, tmp_path):
    cache = tmp_path / "home" / ".cache" / "tinygradnorm" / "fashion-mnist"
    cache.mkdir(parents=True)
    stale = cache / ".part-0123456789ab-t10k-images-idx3-ubyte.gz"
    stale.write_bytes(b"half a file")                     # no writer holds it: its process is gone
    FashionMNIST(None, train=False, mirrors=[server + "/good/"])
    assert not stale.exists() and not [p for p in os.listdir(cache) if p.startswith(".part-")]
