"""tinygradnorm.testing: compare() prints exact / approximate / max diff, and check_steps() names the first step
that disagrees."""
import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm.testing import StepMismatch, check_steps, compare


def test_compare_prints_exact_approximate_and_the_largest_difference(capsys):
    a = np.array([1.0, 2.0, 3.0])
    assert compare("same", a, a.copy())
    assert compare("close", a + 1e-12, a)
    assert not compare("far", a + 1e-3, tg.tensor(a))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "same            | exact: True  | approximate: True  | max diff: 0.00e+00"
    assert "exact: False | approximate: True" in lines[1]
    assert "approximate: False | max diff: 1.00e-03" in lines[2]


def test_compare_reports_a_shape_mismatch(capsys):
    assert not compare("dx", np.ones((2, 3)), np.ones(3))
    assert "shape (2, 3) where the reference has (3,)" in capsys.readouterr().out


def test_check_steps_names_the_first_wrong_step_and_checks_them_all(capsys):
    ref = {"a": np.ones(2), "b": np.zeros(2), "c": np.ones(2)}
    with pytest.raises(StepMismatch, match="^b is the first intermediate"):
        check_steps({"a": np.ones(2), "b": np.ones(2), "c": np.zeros(2)}, ref)
    out = capsys.readouterr().out
    assert out.count("approximate: False") == 2                        # c was still checked and shown


def test_check_steps_says_what_is_not_computed_and_what_it_cannot_check(capsys):
    with pytest.raises(StepMismatch, match="^a is the first"):
        check_steps({"a": None}, {"a": np.ones(1)})
    assert "not computed yet" in capsys.readouterr().out
    with pytest.raises(StepMismatch, match="no reference for this name; expected one of a"):
        check_steps({"z": np.ones(1)}, {"a": np.ones(1)})
    check_steps({"a": np.ones(1)}, {"a": np.ones(1)})
    assert "all steps agree" in capsys.readouterr().out
