"""The examples run end to end."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_bn_backprop_walkthrough_agrees():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "bn_backprop.py")], capture_output=True, text=True,
                         check=True).stdout
    for stage in ("mean", "centred", "var", "inv_std", "x_hat", "g_x_hat", "g_mean", "closed form", "finite differences"):
        assert stage in out
    worst = float(re.search(r"worst disagreement ([0-9.e+-]+)", out).group(1))
    assert worst < 1e-8


def test_bn_backprop_draws_the_fused_and_the_composite_graph(tmp_path):
    pytest = __import__("pytest")
    pytest.importorskip("graphviz", reason="the graphviz package is not installed")
    path = tmp_path / "graphs.dot"
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "bn_backprop.py"), "--graph", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert f"The two graphs, with their gradients: {path}" in out
    dot = path.read_text()
    assert "cluster_" in dot and "StandardizeBackward" in dot and "RsqrtBackward" in dot


REAL = pathlib.Path("/usr/share/datasets/fashion-mnist")


def test_batch_size_study_in_a_tiny_configuration(tmp_path):
    import json
    pytest = __import__("pytest")
    if not (REAL / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "batch_size_study.py"), "--examples", "64",
                          "--batch-sizes", "4,2", "--norms", "batch,group", "--limit-test", "100", "--out",
                          str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "| batch | " in out and "| group | " in out
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert set(results) == {"batch", "group"} and set(results["batch"]) == {"2", "4"}
    assert all(0 <= r["accuracy"] <= 1 and r["lr"] > 0 for norm in results.values() for r in norm.values())
    assert results["batch"]["4"]["lr"] == 2 * results["batch"]["2"]["lr"]           # scaled linearly with the batch
    assert (tmp_path / "batch_size_study.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "results.md").read_text().startswith("| norm | batch 2 | batch 4 |")


def test_batch_size_study_refuses_a_batch_of_one_in_one_line():
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "batch_size_study.py"), "--batch-sizes", "1,2"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "batch sizes must be at least 2" in run.stderr
