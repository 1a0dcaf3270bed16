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


def test_bn_backprop_draws_the_graph_of_a_gradient_penalty(tmp_path):
    pytest = __import__("pytest")
    pytest.importorskip("graphviz", reason="the graphviz package is not installed")
    path = tmp_path / "double.dot"
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "bn_backprop.py"), "--double-graph", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert f"gx made with create_graph=True: {path}" in out
    dot = path.read_text()
    assert "StandardizeBackwardBackward" in dot and "label=StandardizeBackward " in dot and "output 0" in dot


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


def test_gradient_penalty_in_a_tiny_configuration(tmp_path):
    """Every critic trains and reports; only batch norm's mixes examples (its cross-example gradient is not 0)."""
    import json
    pytest = __import__("pytest")
    pytest.importorskip("matplotlib", reason="the figure needs matplotlib (the examples extra)")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "gradient_penalty.py"), "--iters", "3", "--batch",
                          "32", "--out", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert out.count("critic with ") == 3 and "critic with no normalization: " in out
    critics = json.loads((tmp_path / "metrics.json").read_text())["critics"]
    assert set(critics) == {"batch", "layer", "none"}
    for kind, m in critics.items():
        assert 0 <= m["near_a_mode"] <= 1 and 0 <= m["modes_covered"] <= 8 and m["history"]
        assert (m["cross_example_gradient"] > 1e-6) == (kind == "batch"), kind
    assert (tmp_path / "gradient_penalty.png").read_bytes()[:4] == b"\x89PNG"


def test_gradient_penalty_refuses_an_unknown_critic_in_one_line():
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "gradient_penalty.py"), "--norm", "group"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--norm: ['group'] not among ('batch', 'layer', 'none')" in run.stderr


def test_hessian_study_in_a_tiny_configuration(tmp_path):
    """Three checkpoints of both networks trained on 512 real images; batch norm measured with both statistics."""
    import json
    pytest = __import__("pytest")
    if not (REAL / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    pytest.importorskip("matplotlib", reason="the figure needs matplotlib (the examples extra)")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "hessian_study.py"), "--epochs", "1",
                          "--limit-train", "512", "--checkpoints", "0,1", "--measure", "64", "--lanczos", "6", "--slq",
                          "1", "--top-k", "3", "--batch-size", "32", "--out", str(tmp_path), "--no-progress"],
                         capture_output=True, text=True, check=True).stdout
    assert "| none | - | 0 |" in out and "| batch | population | 16 |" in out
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["mode"], r["step"]) for r in results["none"]] == [("train", 0), ("train", 1), ("train", 16)]
    assert [(r["mode"], r["step"]) for r in results["batch"]] == [(m, s) for s in (0, 1, 16) for m in ("train", "eval")]
    for r in results["none"] + results["batch"]:
        assert len(r["top_eigenvalues"]) == 3 and r["top_eigenvalues"] == sorted(r["top_eigenvalues"], reverse=True)
        assert 0 <= r["top_k_gradient_share"] <= 1 + 1e-9 and r["seconds"] >= 0
        assert len(r["slq_nodes"]) == 1 and abs(sum(r["slq_weights"][0]) - 1) < 1e-6     # SLQ weights sum to 1
    train0, eval0 = results["batch"][0], results["batch"][1]
    assert train0["top_eigenvalues"] != eval0["top_eigenvalues"]                     # batch vs population statistics
    assert (tmp_path / "hessian_study.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "results.md").read_text().startswith("| norm | statistics | step |")
