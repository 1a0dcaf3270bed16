"""Grad mode is per thread, as in PyTorch; the mode switches work as context managers and decorators."""
import threading

import numpy as np
import pytest

import tinygradnorm as tg
from conftest import leaf

pytestmark = pytest.mark.usefixtures("cpu_path")    # both CPU paths: compiled kernels and NumPy alone


def _in_order(*steps):
    """Run each (thread index, fn) step in the given order, each in its own long-lived thread."""
    n = 1 + max(i for i, _ in steps)
    turns = [threading.Event() for _ in steps] + [threading.Event()]
    errors = []

    def worker(me):
        for k, (i, fn) in enumerate(steps):
            if i != me:
                continue
            turns[k].wait(10)
            try:
                fn()
            except BaseException as e:      # reported by the main thread
                errors.append(e)
            turns[k + 1].set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    turns[0].set()
    for t in threads:
        t.join(20)
    if errors:
        raise errors[0]


def test_no_grad_in_one_thread_does_not_reach_another():
    """With one process-wide flag, thread 1's graph would not be recorded while thread 0 is inside no_grad."""
    block = tg.no_grad()
    x = leaf([1.0, 2.0])
    seen = {}

    def other_thread_trains():
        y = (x * 3).sum()
        seen["requires_grad"] = y.requires_grad
        y.backward()

    _in_order((0, block.__enter__), (1, other_thread_trains), (0, lambda: block.__exit__(None, None, None)))
    assert seen["requires_grad"]
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_overlapping_no_grad_blocks_in_two_threads_restore_each_threads_mode():
    """Enter 0, enter 1, exit 0, exit 1: a process-wide flag would be left off for good."""
    a, b = tg.no_grad(), tg.no_grad()
    modes = {}
    _in_order((0, a.__enter__), (1, b.__enter__), (0, lambda: a.__exit__(None, None, None)),
              (1, lambda: b.__exit__(None, None, None)),
              (0, lambda: modes.__setitem__(0, tg.is_grad_enabled())),
              (1, lambda: modes.__setitem__(1, tg.is_grad_enabled())))
    assert modes == {0: True, 1: True} and tg.is_grad_enabled()


def test_a_new_thread_starts_with_grad_enabled():
    seen = []
    with tg.no_grad():
        t = threading.Thread(target=lambda: seen.append(tg.is_grad_enabled()))
        t.start()
        t.join()
    assert seen == [True]


def test_set_grad_enabled_as_call_context_and_decorator():
    tg.set_grad_enabled(False)
    try:
        assert not tg.is_grad_enabled()
    finally:
        tg.set_grad_enabled(True)
    with tg.set_grad_enabled(False):
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()

    @tg.set_grad_enabled(False)
    def f(t):
        return t * 2

    assert tg.is_grad_enabled()                 # decorating does not switch the mode
    assert not f(leaf([1.0])).requires_grad
    with pytest.raises(TypeError, match="mode must be a bool"):
        tg.set_grad_enabled("no")


def test_decorators_without_parentheses_and_inference_mode():
    x = leaf([1.0])

    @tg.no_grad
    def a(t):
        return t * 2

    @tg.inference_mode
    def b(t):
        return t * 2

    @tg.inference_mode(False)
    def c(t):
        return t * 2

    assert not a(x).requires_grad
    out = b(x)
    assert not out.requires_grad and out.is_inference()
    with tg.no_grad():
        assert c(x).requires_grad
    assert a.__name__ == "a" and tg.is_grad_enabled() and not tg.is_inference_mode_enabled()


def test_mode_is_restored_when_the_block_raises():
    with pytest.raises(ValueError):
        with tg.no_grad():
            raise ValueError
    assert tg.is_grad_enabled()
