"""Training end to end: the LeNet example on a subset of the real data, and checkpoints that resume exactly."""
import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm import nn, optim
from tinygradnorm.data import DataLoader, TensorDataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL = "/usr/share/datasets/fashion-mnist"
needs_real_data = pytest.mark.skipif(not os.path.exists(os.path.join(REAL, "train-images-idx3-ubyte.gz")),
                                     reason="the Debian package dataset-fashion-mnist is not installed")


def load_example():
    spec = importlib.util.spec_from_file_location("lenet_example", ROOT / "examples" / "lenet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_real_data
def test_short_training_run_clearly_beats_chance(tmp_path):
    lenet = load_example()
    history = lenet.main(["--epochs", "3", "--limit-train", "12800", "--batch-size", "128", "--data-dir", REAL,
                          "--out", str(tmp_path), "--no-progress"])             # 300 steps
    assert history[-1]["test_acc"] > 0.7
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3] and metrics["config"]["norm"] == "batch"
    assert set(metrics["epochs"][0]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc",
                                         "examples_per_sec"}
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_real_data
def test_example_resume_is_bit_identical(tmp_path):
    lenet = load_example()
    common = ["--limit-train", "1024", "--batch-size", "128", "--data-dir", REAL, "--no-progress", "--optimizer",
              "adam"]
    lenet.main(common + ["--epochs", "3", "--save", str(tmp_path / "straight.npz"), "--out", str(tmp_path / "a")])
    lenet.main(common + ["--epochs", "3", "--stop-after", "1", "--save", str(tmp_path / "half.npz"), "--out",
                         str(tmp_path / "b")])
    lenet.main(common + ["--epochs", "3", "--resume", str(tmp_path / "half.npz"), "--save",
                         str(tmp_path / "resumed.npz"), "--out", str(tmp_path / "c")])
    straight, resumed = tg.load(tmp_path / "straight.npz"), tg.load(tmp_path / "resumed.npz")
    assert straight["epoch"] == resumed["epoch"] == 3
    for key, value in straight["model"].items():
        assert value.numpy().tobytes() == resumed["model"][key].numpy().tobytes(), key


def test_checkpoint_resume_with_dropout_and_momentum_is_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    data = TensorDataset(rng.standard_normal((96, 8)).astype(np.float32), rng.integers(0, 3, 96))

    def setup():
        tg.manual_seed(5)
        model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        return model, opt, optim.lr_scheduler.StepLR(opt, 2, 0.5), DataLoader(data, 16, shuffle=True, seed=7)

    def epoch(model, opt, sched, loader, e):
        loader.set_epoch(e)
        for x, y in loader:
            opt.zero_grad()
            nn.CrossEntropyLoss()(model(x), y).backward()
            opt.step()
        sched.step()

    model, opt, sched, loader = setup()
    for e in range(4):
        epoch(model, opt, sched, loader, e)
    straight = [p.numpy().copy() for p in model.state_dict().values()]

    model, opt, sched, loader = setup()
    for e in range(2):
        epoch(model, opt, sched, loader, e)
    tg.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": 1,
             "rng": tg.get_rng_state()}, tmp_path / "ck.npz")
    del model, opt, sched, loader
    tg.manual_seed(999)  # the checkpoint, not the seed, must decide what happens next
    model, opt, sched, loader = setup()
    ck = tg.load(tmp_path / "ck.npz")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    tg.set_rng_state(ck["rng"])
    for e in range(ck["epoch"] + 1, 4):
        epoch(model, opt, sched, loader, e)
    for a, b in zip(straight, model.state_dict().values()):
        assert a.tobytes() == b.numpy().tobytes()


def test_save_is_atomic_and_refuses_code(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    tg.save({"a": tg.tensor([1.0, 2.0]), "n": 3, "nested": [{"s": "x", "none": None}, (1, 2.5)]}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot store a function"):
        tg.save({"f": lambda: 0}, path)
    import numpy
    monkeypatch.setattr(numpy, "savez", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        tg.save({"a": tg.tensor([9.0])}, path)   # a crash mid-save
    assert path.read_bytes() == before            # the old file is intact
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    loaded = tg.load(path)
    assert loaded["a"].tolist() == [1.0, 2.0] and loaded["n"] == 3
    assert loaded["nested"] == [{"s": "x", "none": None}, (1, 2.5)]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(tg.CheckpointError, match="bad.npz.*is damaged or was not written by tinygradnorm.save"):
        tg.load(tmp_path / "bad.npz")
