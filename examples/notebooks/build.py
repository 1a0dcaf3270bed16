"""Build the exercise notebooks, and their solutions, from the sources in src/.

    python examples/notebooks/build.py          # writes NN_name.ipynb and solutions/NN_name.ipynb

A source is a Python file in the "percent" format: ``# %%`` starts a code cell and ``# %% [markdown]``
a Markdown cell (its lines start with ``# ``). Between ``# BEGIN SOLUTION`` and ``# END SOLUTION``,
each line ``name = expression  # hint`` is a step the learner writes: the solution notebook keeps
the line, the exercise notebook has ``name = None  # TODO: hint`` in its place. (The tests check
that the committed notebooks are what this script builds, and run every solution.)
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from tinygradnorm.atomic import atomic_write  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STEP = re.compile(r"^(\s*)([A-Za-z_][\w, ]*?)\s*=\s*(.+?)(?:\s+#\s*(.*))?$")


def cells_of(source):
    """[(kind, lines)] of a percent-format source."""
    cells = []
    for line in source.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
    return [(kind, _trim(lines)) for kind, lines in cells]


def _trim(lines):
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def render(lines, kind, solution):
    """The cell's text: Markdown without the comment marks; code with the solution steps or their blanks."""
    if kind == "markdown":
        return "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines)
    out, inside = [], False
    for line in lines:
        marker = line.strip()
        if marker == "# BEGIN SOLUTION":
            inside = True
            continue
        if marker == "# END SOLUTION":
            inside = False
            continue
        if inside and not solution:
            m = STEP.match(line)
            if m is None:
                raise ValueError(f"a solution line must be `name = expression  # hint`, got {line!r}")
            indent, names, _, hint = m.groups()
            blanks = ", ".join("None" for _ in names.split(","))
            line = f"{indent}{names} = {blanks}  # TODO: {hint or 'your code'}"
        out.append(line)
    return "\n".join(out)


def notebook(cells, solution):
    return {
        "cells": [{"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": render(lines, kind, solution),
                   **({"execution_count": None, "outputs": []} if kind == "code" else {})}
                  for i, (kind, lines) in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def build(out_dir=HERE):
    """Write every notebook; return the paths written."""
    written = []
    for name in sorted(os.listdir(os.path.join(HERE, "src"))):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(HERE, "src", name), encoding="utf-8") as f:
            cells = cells_of(f.read())
        for solution, folder in ((False, out_dir), (True, os.path.join(out_dir, "solutions"))):
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, name[:-3] + ".ipynb")
            with atomic_write(path) as f:
                f.write((json.dumps(notebook(cells, solution), indent=1, ensure_ascii=False) + "\n").encode())
            written.append(path)
    return written


if __name__ == "__main__":
    for path in build(*sys.argv[1:]):
        print(path)
