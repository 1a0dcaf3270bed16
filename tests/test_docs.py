"""Every Python block in the docs and the README runs."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(f, i, code) for f in FILES for i, code in enumerate(re.findall(r"```python\n(.*?)```", f.read_text(), re.S))]


@pytest.mark.parametrize("path,index,code", BLOCKS, ids=[f"{b[0].name}:{b[1]}" for b in BLOCKS])
def test_snippet_runs(path, index, code):
    exec(compile(code, f"{path.name} block {index}", "exec"), {})


def test_the_snippets_are_found():
    assert sum(1 for f, _, _ in BLOCKS if f.name == "normalization.md") >= 6
