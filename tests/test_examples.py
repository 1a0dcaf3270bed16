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
