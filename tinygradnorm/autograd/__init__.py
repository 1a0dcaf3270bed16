"""Reverse-mode autograd, to any order: Functions, grad mode, the backward walk, hooks and checking tools.

- ``function.py``: ``Function`` (forward on arrays; ``backward`` on arrays and/or ``gradient`` on Tensors),
  what a Function saves, the graph's edges and version checks.
- ``grad_mode.py``: ``no_grad``, ``enable_grad``, ``set_grad_enabled`` and ``inference_mode``, per thread.
- ``engine.py``: the walk behind ``backward`` and ``grad`` (arrays at first order, Tensors with
  ``create_graph=True``), tensor hooks and end-of-walk callbacks.
- ``functional.py``: ``jacobian``, ``hessian``, ``vjp``, ``jvp``, ``hvp`` and ``vhp``, as in PyTorch.
"""
from .grad_mode import (enable_grad, inference_mode, is_grad_enabled, is_inference_mode_enabled, no_grad,
                        set_grad_enabled, _state)
from .function import (AccumulateGrad, Function, OnceDifferentiable, new_version, share_view, _device_mismatch,
                       _root)
from .engine import RemovableHandle, backward, grad, queue_callback, register_hook, retain, retains_grad
from ..gradcheck import gradcheck, gradgradcheck, GradcheckError  # noqa: E402
from . import functional  # noqa: E402,F401
