"""The exercise notebooks of examples/notebooks: built from their sources, every solution runs and passes its
checkers, the exercises hold blanks and not the answers, and a planted wrong answer is named by the checker."""
import json
import os
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
NOTEBOOKS = os.path.join(ROOT, "examples", "notebooks")
NAMES = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))
sys.path.insert(0, NOTEBOOKS)
import build  # noqa: E402

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e \".[test]\")")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e \".[test]\")")


def _load(*parts):
    with open(os.path.join(NOTEBOOKS, *parts), encoding="utf-8") as f:
        return nbformat.read(f, as_version=4)


def _run(nb):
    """Execute nb in a fresh kernel, in the notebooks' folder; returns it with its outputs."""
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": NOTEBOOKS}})
    return client.execute()


def _text(nb):
    return "\n".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


def test_four_notebooks_each_with_a_solution():
    assert NAMES == ["01_batchnorm_backward.ipynb", "02_one_formula_other_axes.ipynb", "03_running_statistics.ipynb",
                     "04_batchnorm_double_backward.ipynb"]
    assert sorted(os.listdir(os.path.join(NOTEBOOKS, "solutions"))) == NAMES


def test_the_committed_notebooks_are_what_build_py_makes(tmp_path):
    build.build(str(tmp_path))
    for name in NAMES:
        for parts in ((name,), ("solutions", name)):
            with open(os.path.join(tmp_path, *parts), encoding="utf-8") as f:
                made = json.load(f)
            with open(os.path.join(NOTEBOOKS, *parts), encoding="utf-8") as f:
                committed = json.load(f)
            assert made == committed, f"{os.path.join(*parts)} is stale: run python examples/notebooks/build.py"


@pytest.mark.parametrize("name", NAMES)
def test_exercises_have_blanks_where_the_solutions_have_answers(name):
    exercise, solution = _load(name), _load("solutions", name)
    ex = "\n".join(c.source for c in exercise.cells).splitlines()
    sol = "\n".join(c.source for c in solution.cells).splitlines()
    assert len(ex) == len(sol) and "BEGIN SOLUTION" not in "\n".join(ex + sol)
    differing = [(e, s) for e, s in zip(ex, sol) if e != s]
    assert len(differing) >= 2 and all("# TODO" in e and "# TODO" not in s for e, s in differing)
    for e, s in differing:                  # the same names, blank in the exercise, an answer in the solution
        names = e.split("=")[0]
        assert s.startswith(names) and e.split("=")[1].split("#")[0].strip().strip(", ").replace("None", "").strip(
            ", ") == "" and "None" not in s.split("=", 1)[1]


@pytest.mark.parametrize("name", NAMES)
def test_each_solution_runs_and_its_checkers_pass(name):
    out = _text(_run(_load("solutions", name)))
    assert "approximate: False" not in out and "not computed yet" not in out
    assert out.count("approximate: True") >= 3


# A planted wrong answer in each notebook, and what its checker must say about it.
PLANTED = [
    ("01_batchnorm_backward.ipynb", "dvar = dinv_std * -0.5 * (var + eps) ** -1.5",
     "dvar = dinv_std * (var + eps) ** -1.5", "dvar is the first intermediate that disagrees"),
    ("01_batchnorm_backward.ipynb", "dmean = -dcentred.sum(axis=0)", "dmean = dcentred.sum(axis=0)",
     "dmean is the first intermediate that disagrees"),
    ("02_one_formula_other_axes.ipynb", "axes_instance = (2, 3)", "axes_instance = (1, 2, 3)",
     "instance y is the first intermediate that disagrees"),
    ("03_running_statistics.ipynb",
     "running_mean = (1 - momentum) * running_mean + momentum * batch_mean",
     "running_mean = momentum * running_mean + (1 - momentum) * batch_mean",
     "running_mean is the first that disagrees"),
    ("03_running_statistics.ipynb", "batch_var = b.var(axis=0, ddof=1)", "batch_var = b.var(axis=0)",
     "exactly what a biased running variance"),
    # the double backward: a term forgotten, a mean of products taken as a product of means, u for v in eval mode
    ("04_batchnorm_double_backward.ipynb", "dgy = gamma * inv_std * P_u + x_hat * v + w",
     "dgy = gamma * inv_std * P_u + x_hat * v", "dgy is the first intermediate that disagrees"),
    ("04_batchnorm_double_backward.ipynb", "k = avg(g_hat * u) - avg(g_hat) * avg(u) - mean_g_xhat * mean_u_xhat",
     "k = avg(g_hat) * avg(u) - avg(g_hat) * avg(u) - mean_g_xhat * mean_u_xhat",
     "dx_from_gx is the first intermediate that disagrees"),
    ("04_batchnorm_double_backward.ipynb", "dx = gy * inv_std_r * v", "dx = gy * inv_std_r * u",
     "dx is the first intermediate that disagrees"),
]


@pytest.mark.parametrize("name, right, wrong, message", PLANTED, ids=[f"{p[0][:2]}-{p[2][:14]}" for p in PLANTED])
def test_a_planted_wrong_answer_is_named_by_the_checker(name, right, wrong, message):
    nb = _load("solutions", name)
    cells = [c for c in nb.cells if right in c.source]
    assert len(cells) == 1
    cells[0].source = cells[0].source.replace(right, wrong)
    with pytest.raises(nbclient.exceptions.CellExecutionError) as info:
        _run(nb)
    assert "StepMismatch" in str(info.value) and message in str(info.value)


def test_an_untouched_exercise_stops_at_its_first_checker_naming_the_first_blank():
    with pytest.raises(nbclient.exceptions.CellExecutionError) as info:
        _run(_load("01_batchnorm_backward.ipynb"))
    assert "dbeta is the first intermediate that disagrees" in str(info.value)
