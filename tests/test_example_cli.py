"""The LeNet example's command line, as a user meets it: bad flags, resuming another run, extending a run,
results that can be told apart, and the short-run pitfall explained where it bites."""
import importlib.util
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

import tinygradnorm as tg

ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL = "/usr/share/datasets/fashion-mnist"
needs_real_data = pytest.mark.skipif(not os.path.exists(os.path.join(REAL, "train-images-idx3-ubyte.gz")),
                                     reason="the Debian package dataset-fashion-mnist is not installed")
SMALL = ["--limit-train", "256", "--batch-size", "128", "--data-dir", REAL, "--no-progress"]


@pytest.fixture(scope="module")
def lenet():
    spec = importlib.util.spec_from_file_location("lenet_cli", ROOT / "examples" / "lenet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fails(lenet, argv, capsys):
    """The error text of a run that must stop before training, checked to be short and traceback-free."""
    with pytest.raises(SystemExit) as stop:
        lenet.main(argv)
    err = capsys.readouterr().err + (stop.value.code if isinstance(stop.value.code, str) else "")
    assert stop.value.code != 0 and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--data-dir", "/nonexistent"], r"--data-dir /nonexistent is not a directory"),
    (["--epochs", "0"], r"argument --epochs: must be positive \(got 0\)"),
    (["--lr", "-1"], r"argument --lr: must be positive"),
    (["--batch-size", "abc"], r"'abc' is not an integer"),
    (["--momentum", "nan"], r"argument --momentum: must be zero or more"),
    (["--bn-momentum", "2"], r"must be in \[0, 1\], or 'none'"),
    (["--limit-train", "0"], r"argument --limit-train: must be positive"),
    (["--extend", "stretch"], r"--extend .* needs --resume"),
    (["--device", "gpu"], r"--device gpu: unknown device"),
])
def test_bad_flags_stop_before_training_with_one_line(lenet, capsys, argv, message):
    err = _fails(lenet, argv, capsys)
    assert re.search(message, err) and len(err.strip().splitlines()) == 1


def test_cuda_without_a_gpu_stops_with_the_reason(lenet, capsys):
    if tg.cuda.is_available():
        pytest.skip("a GPU is available here")
    err = _fails(lenet, ["--device", "cuda"], capsys)
    assert "--device cuda:" in err and len(err.strip().splitlines()) == 1


def test_help_shows_every_default(lenet):
    text = lenet._parser().format_help()
    blocks = re.split(r"\n  (?=-)", text.split("options:")[1])[1:]
    for block in blocks:
        if block.startswith("-h"):
            continue
        assert "default" in block, block


def test_bn_backprop_with_a_batch_of_one_stops_with_one_line():
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "bn_backprop.py"), "--batch", "1"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        "bn_backprop.py: error: --batch 1: batch norm needs at least 2 values per channel to have a variance "
        "(see --help)"]


# ---- resume --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(lenet, tmp_path_factory):
    """A finished two-epoch SGD run on 256 images."""
    d = tmp_path_factory.mktemp("ckpt")
    lenet.main(SMALL + ["--epochs", "2", "--save", str(d / "sgd.npz"), "--out", str(d / "out")])
    return d / "sgd.npz"


@needs_real_data
@pytest.mark.parametrize("flags, named", [
    (["--lr", "0.5"], r"--lr: the checkpoint's run used 0.1, this command line gives 0.5"),
    (["--optimizer", "adam"], r"--optimizer: the checkpoint's run used 'sgd', this command line gives 'adam'"),
    (["--norm", "layer"], r"--norm: the checkpoint's run used 'batch', this command line gives 'layer'"),
    (["--batch-size", "64"], r"--batch-size: the checkpoint's run used 128, this command line gives 64"),
    (["--epochs", "4"], r"belongs to a run of 2 epochs.*--extend stretch.*--extend restart"),
    (["--epochs", "1"], r"has already finished epoch 2"),
])
def test_resume_refuses_a_command_line_that_changes_the_run(lenet, checkpoint, capsys, tmp_path, flags, named):
    err = _fails(lenet, ["--resume", str(checkpoint), "--no-progress", "--out", str(tmp_path)] + flags, capsys)
    assert re.search(named, err, re.S)


@needs_real_data
def test_resume_takes_the_flags_it_is_not_given_from_the_checkpoint(lenet, checkpoint, tmp_path, capsys):
    history = lenet.main(["--resume", str(checkpoint), "--no-progress", "--data-dir", REAL, "--out", str(tmp_path)])
    assert len(history) == 2                     # the run was already complete: nothing more to do
    assert "resumed from" in capsys.readouterr().out


@needs_real_data
@pytest.mark.parametrize("how, lr_after_epoch_3", [("stretch", 0.1 * (1 + math.cos(math.pi * 3 / 4)) / 2),
                                                   ("restart", 0.1 * (1 + math.cos(math.pi * 1 / 2)) / 2)])
def test_extending_a_run_is_explicit_and_does_what_it_says(lenet, checkpoint, tmp_path, how, lr_after_epoch_3):
    lenet.main(["--resume", str(checkpoint), "--epochs", "4", "--extend", how, "--stop-after", "3", "--no-progress",
                "--data-dir", REAL, "--save", str(tmp_path / "more.npz"), "--out", str(tmp_path)])
    saved = tg.load(tmp_path / "more.npz")
    assert saved["epoch"] == 3 and saved["config"]["epochs"] == 4
    assert math.isclose(saved["optimizer"]["param_groups"][0]["lr"], lr_after_epoch_3, rel_tol=1e-12)


# ---- telling results apart, and the warm-up note ------------------------------------------------------------
def test_the_default_out_directory_names_the_configuration(lenet):
    base = vars(lenet.parse_args([]))
    names = {lenet.default_out({**base, **change}) for change in
             ({}, {"norm": "layer"}, {"optimizer": "adam", "lr": 1e-3}, {"epochs": 3}, {"limit_train": 500},
              {"seed": 1}, {"schedule": "none"}, {"bn_momentum": None})}
    assert len(names) == 8 and lenet.default_out(base) == os.path.join("runs", "lenet-batch-sgd-lr0.1-b256-e10-s0")


def test_the_plot_records_the_configuration_test_loss_and_whole_epochs(lenet, tmp_path, monkeypatch):
    import matplotlib.figure
    seen = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: seen.append(fig))
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.2 / e, "train_acc": 0.5, "test_acc": 0.4}
               for e in (1, 2, 3)]
    lenet.plot_curves(history, tmp_path / "c.png", "LeNet, layer norm, adam lr 0.001, batch 64, 3 epochs, seed 2")
    fig = seen[0]
    assert fig._suptitle.get_text() == "LeNet, layer norm, adam lr 0.001, batch 64, 3 epochs, seed 2"
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train loss", "test loss"]
    assert all(float(t).is_integer() for t in loss_ax.get_xticks())


@needs_real_data
def test_a_short_run_says_why_its_test_accuracy_cannot_be_trusted(lenet, tmp_path, capsys):
    lenet.main(SMALL + ["--epochs", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"data: {REAL}" in out
    assert re.search(r"the running statistics have seen 2 batches at momentum 0.1, so 81% of each is still its "
                     r"initial value", out)
    lenet.main(SMALL + ["--epochs", "1", "--bn-momentum", "none", "--out", str(tmp_path)])
    assert "running statistics have seen" not in capsys.readouterr().out        # a cumulative average is warm
