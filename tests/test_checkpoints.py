"""Checkpoints under faults: writers killed mid-save, live writers side by side, umasks, damaged files, and
optimizer state from another model."""
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm import serialization
from tinygradnorm.atomic import atomic_write

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")

_SAVER = """
import sys, numpy as np
sys.path.insert(0, {root!r})
import tinygradnorm as tg
big = {{f"w{{i}}": tg.tensor(np.random.default_rng(i).standard_normal(1_000_000).astype(np.float32)) for i in range(10)}}
while True:
    tg.save(big, {path!r})
"""

_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from tinygradnorm.atomic import atomic_write
with atomic_write({path!r}) as f:
    f.write(b"partial")
    print("writing", flush=True)
    time.sleep(60)
"""


def _temp_files(directory):
    return sorted(p for p in os.listdir(directory) if p.startswith(".tmp-"))


def test_a_writer_killed_mid_save_leaves_a_file_the_next_save_removes(tmp_path):
    """SIGKILL a process that saves 40 MB checkpoints in a loop, five times, each time while a temporary file exists."""
    path = tmp_path / "ckpt.npz"
    left = set()
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER.format(root=str(ROOT), path=str(path))])
        try:
            deadline = time.monotonic() + 60
            while not _temp_files(tmp_path) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert _temp_files(tmp_path), "the saver never started writing"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        left |= set(_temp_files(tmp_path))
    assert left, "no kill landed mid-save"
    if path.exists():
        assert len(tg.load(path)) == 10            # whatever is in place is a whole checkpoint
    tg.save({"x": tg.ones(2)}, path)
    assert _temp_files(tmp_path) == []             # the dead writers' files are gone
    assert tg.load(path)["x"].tolist() == [1.0, 1.0]


def test_a_live_writer_keeps_its_temporary_file(tmp_path):
    path = tmp_path / "other.npz"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=str(ROOT), path=str(path))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        live = _temp_files(tmp_path)
        assert len(live) == 1
        tg.save({"x": tg.ones(1)}, tmp_path / "mine.npz")      # a second writer in the same directory
        assert _temp_files(tmp_path) == live                  # it left the live writer's file alone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    tg.save({"x": tg.ones(1)}, tmp_path / "mine.npz")
    assert _temp_files(tmp_path) == [] and not path.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_get_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        tg.save({"x": tg.ones(1)}, tmp_path / "a.npz")
        with open(tmp_path / "b.txt", "w"):
            pass
    finally:
        os.umask(old)
    mode = lambda p: oct(os.stat(p).st_mode & 0o777)  # noqa: E731
    assert mode(tmp_path / "a.npz") == mode(tmp_path / "b.txt") == oct(0o666 & ~umask)


def _checkpoint(path):
    model = tg.nn.Sequential(tg.nn.Linear(4, 3), tg.nn.BatchNorm1d(3))
    opt = tg.optim.Adam(model.parameters())
    model(tg.randn(5, 4)).sum().backward()
    opt.step()
    tg.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1, "history": [{"a": 0.5}]}, path)
    return path.read_bytes()


def test_every_single_bit_flip_raises_loads_own_error(tmp_path):
    raw = _checkpoint(tmp_path / "good.npz")
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.npz"
    for bit in rng.choice(len(raw) * 8, size=300, replace=False):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        bad.write_bytes(bytes(flipped))
        with pytest.raises(tg.CheckpointError, match=r"bad\.npz"):
            tg.load(bad)


@pytest.mark.parametrize("cut", [0, 1, 21, 100, -1, -64, -65, -200])
def test_truncated_files_raise_loads_own_error(tmp_path, cut):
    raw = _checkpoint(tmp_path / "good.npz")
    (tmp_path / "cut.npz").write_bytes(raw[:cut] if cut > 0 else raw[:len(raw) + cut] if cut else b"")
    with pytest.raises(tg.CheckpointError, match=r"cut\.npz.*(damaged|trusted)"):
        tg.load(tmp_path / "cut.npz")


def _signed(arrays, structure):
    buf = io.BytesIO()
    np.savez(buf, __structure__=np.frombuffer(json.dumps(structure).encode(), dtype=np.uint8), **arrays)
    if structure.get("format") == serialization.FORMAT:
        serialization._sign(buf)
    return buf.getvalue()


def test_a_structure_naming_a_missing_array_says_so(tmp_path):
    path = tmp_path / "odd.npz"
    path.write_bytes(_signed({"a0": np.ones(2)}, {"format": serialization.FORMAT,
                                                 "root": {"dict": [["w", {"tensor": "a7", "requires_grad": False}]]}}))
    with pytest.raises(tg.CheckpointError, match=r"odd\.npz.*names the array 'a7', which the file does not hold"):
        tg.load(path)


def test_files_of_the_first_format_still_load(tmp_path):
    path = tmp_path / "old.npz"
    path.write_bytes(_signed({"a0": np.arange(3.0)}, {"format": "tinygradnorm.save/1",
                                                      "root": {"dict": [["w", {"array": "a0"}]]}}))
    assert tg.load(path)["w"].tolist() == [0.0, 1.0, 2.0]


def test_an_unsigned_file_that_claims_the_current_format_is_refused(tmp_path):
    path = tmp_path / "unsigned.npz"
    raw = _signed({}, {"format": serialization.FORMAT, "root": {"value": 1}})
    path.write_bytes(raw[:-64] + b"f" * 64)
    with pytest.raises(tg.CheckpointError, match="checksum does not match"):
        tg.load(path)


def test_an_interrupted_atomic_write_leaves_the_target_alone(tmp_path):
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"new, half written")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old" and _temp_files(tmp_path) == []


# ---- optimizer state from another model --------------------------------------------------------------------
def _trained(opt_cls, shape, **kw):
    lin = tg.nn.Linear(*shape)
    opt = opt_cls(lin.parameters(), lr=0.1, **kw)
    lin(tg.randn(2, shape[0])).sum().backward()
    opt.step()
    return lin, opt


def test_optimizer_state_from_another_model_is_refused_naming_the_parameter():
    _, theirs = _trained(tg.optim.SGD, (4, 6), momentum=0.9)
    lin, ours = _trained(tg.optim.SGD, (6, 4), momentum=0.9)
    before = {k: v["momentum_buffer"].copy() for k, v in ours.state.items()}
    with pytest.raises(ValueError, match=r"'momentum_buffer' of parameter 0 \(group 0, shape \(4, 6\)\) has shape "
                                         r"\(6, 4\).*the parameter has shape \(4, 6\)"):
        ours.load_state_dict(theirs.state_dict())
    assert all((ours.state[k]["momentum_buffer"] == v).all() for k, v in before.items())   # nothing changed
    ours.step()                                                                           # and it still works


@pytest.mark.parametrize("saved, loading", [(tg.optim.SGD, tg.optim.Adam), (tg.optim.Adam, tg.optim.SGD)])
def test_optimizer_state_of_another_kind_is_refused(saved, loading):
    _, theirs = _trained(saved, (3, 2), **({"momentum": 0.9} if saved is tg.optim.SGD else {}))
    lin = tg.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="belongs to another kind of optimizer"):
        loading(lin.parameters()).load_state_dict(theirs.state_dict())


def test_optimizer_state_with_another_dtype_is_refused():
    _, theirs = _trained(tg.optim.Adam, (3, 2))
    lin = tg.nn.Linear(3, 2).double()
    with pytest.raises(ValueError, match="'exp_avg' of parameter 0 .* dtype float32, but the parameter has .* float64"):
        tg.optim.Adam(lin.parameters()).load_state_dict(theirs.state_dict())
