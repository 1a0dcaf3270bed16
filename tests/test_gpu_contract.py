"""The GPU's side of the contract, checked on the CPU: what a user without a GPU sees (clear errors, not
tracebacks), tensors on two devices refused by name, and the GPU scripts (the example's --device cuda, the
benchmark, benchmarks/gpu_suite.sh) written and run here, so that on a GPU they only have to be run."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import tinygradnorm as tg
import tinygradnorm.nn.functional as F
from tinygradnorm import nn
from tinygradnorm.backend import Device
from tinygradnorm.tensor import Tensor

ROOT = pathlib.Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(tg.cuda.is_available(), reason="these check what a machine without a GPU says")


def _on_fake_gpu(a):
    """A tensor that says it lives on cuda:0 but holds a NumPy array: enough for the device checks, which run
    before any arithmetic."""
    return Tensor._wrap(np.asarray(a, dtype=np.float32), Device("cuda", 0, tg.device("cpu").backend), False, None)


def test_an_op_on_two_devices_names_both_and_the_fix():
    with pytest.raises(RuntimeError, match=r"expected all tensors on the same device, got \(3,\) on cpu, \(3,\) on "
                                           r"cuda:0\. Move them to one device first, e\.g\. t\.to\('cuda:0'\)"):
        tg.ones(3) * _on_fake_gpu(np.ones(3))


def test_a_norm_layer_with_its_parameters_elsewhere_says_how_to_move_it():
    bn = nn.BatchNorm1d(3)
    bn.weight = nn.Parameter(_on_fake_gpu(np.ones(3)))
    with pytest.raises(RuntimeError, match=r"input is on cpu but a parameter or statistic is on cuda:0; move the "
                                           r"module with \.to\('cpu'\)"):
        bn(tg.ones(4, 3))


def test_a_loss_on_two_devices_is_refused():
    with pytest.raises(RuntimeError, match="expected all tensors on the same device"):
        F.mse_loss(tg.ones(3), _on_fake_gpu(np.ones(3)))


@no_gpu
def test_asking_for_the_gpu_without_one_says_why():
    assert tg.cuda.is_available() is False and tg.cuda.device_count() == 0
    assert tg.cuda.unavailable_reason()
    with pytest.raises(RuntimeError, match=r"device 'cuda:0' is unavailable: "):
        tg.zeros(2, device="cuda")
    with pytest.raises(RuntimeError, match=r"device 'cuda:0' is unavailable: "):
        nn.Linear(2, 2).to("cuda")


def test_the_gpu_benchmark_runs_on_the_cpu(torch):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_norm.py"), "--device", "cpu", "--quick",
                          "--repeat", "2"], capture_output=True, text=True, check=True).stdout
    for row in ("BatchNorm2d fwd+bwd", "LayerNorm fwd+bwd", "LeNet step", "host syncs in one LeNet step"):
        assert row in out
    assert "host syncs in one LeNet step (item, numpy, float, bool of a tensor): 0" in out


@no_gpu
def test_the_gpu_benchmark_without_a_gpu_stops_in_one_line(torch):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_norm.py"), "--device", "cuda"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.strip().startswith("gpu_norm.py: error: --device cuda:")
    assert len(run.stderr.strip().splitlines()) == 1


def test_the_gpu_suite_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_suite.sh")], check=True)


@no_gpu
def test_the_gpu_suite_without_a_gpu_stops_at_once_and_says_why(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), str(tmp_path / "out")],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert run.returncode == 2 and "gpu_suite.sh: no usable GPU:" in run.stderr
    assert not (tmp_path / "out" / "tests.txt").exists()
