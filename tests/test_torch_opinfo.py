"""PyTorch's own test inputs (OpInfo reference and error inputs, ModuleInfo inputs) through both libraries.

The machinery, and what counts as a pass, is in torch_diff.py; ``python tests/torch_diff.py``
prints the full table. Here every op and layer is one test per dtype: no sample may differ
from PyTorch or fail where PyTorch succeeds, and each sample tinygradnorm cannot express must be
one of the known gaps listed below (none are left), so that a real error never hides as "unsupported".
"""
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest: pip install expecttest")

import torch_diff as D  # noqa: E402

OPS = D.op_infos()
MODULES = D.module_infos()

# What tinygradnorm does not have yet, by op: the only reasons a sample may be unsupported. None are left; a new
# gap would go here, with the pattern of its message.
KNOWN_GAPS = {}
# The ops and layers with compiled CPU kernels: they run again with NumPy's code alone.
KERNEL_BACKED = {"sigmoid", "nn.functional.conv1d", "nn.functional.conv2d", "nn.functional.conv_transpose1d",
                 "nn.functional.conv_transpose2d", "Conv1d", "ConvTranspose1d", "ConvTranspose2d",
                 "nn.functional.avg_pool2d", "nn.functional.batch_norm",
                 "nn.functional.instance_norm", "nn.functional.layer_norm", "nn.functional.group_norm",
                 "nn.functional.rms_norm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d",
                 "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "GroupNorm", "RMSNorm", "Conv2d", "AvgPool2d",
                 "Sigmoid"}


def _check(key, outcomes):
    failures = [f"{o.kind}: {o.what}" for o in outcomes if o.kind in ("mismatch", "error")]
    assert not failures, f"{len(failures)} of {len(outcomes)} samples of {key} fail:\n" + "\n".join(failures[:20])
    gap = KNOWN_GAPS.get(key)
    strays = [o.what for o in outcomes if o.kind == "unsupported" and not (gap and re.search(gap, o.what))]
    assert not strays, f"{key}: unsupported for a reason not among the known gaps:\n" + "\n".join(strays[:20])


@pytest.mark.parametrize("dtype", D.DTYPES)
@pytest.mark.parametrize("key, info", OPS, ids=[k for k, _ in OPS])
def test_op_reference_inputs_match_torch(key, info, dtype):
    _check(key, D.op_outcomes(key, info, dtype, torch))


@pytest.mark.parametrize("key, info", OPS, ids=[k for k, _ in OPS])
def test_op_error_inputs_raise_as_in_torch(key, info):
    _check(key, D.op_error_outcomes(key, info, torch))


@pytest.mark.parametrize("dtype", D.DTYPES)
@pytest.mark.parametrize("name, info", MODULES, ids=[k for k, _ in MODULES])
def test_module_inputs_match_torch_in_train_then_eval(name, info, dtype):
    _check(name, D.module_outcomes(name, info, dtype, torch))


@pytest.mark.parametrize("name, info", MODULES, ids=[k for k, _ in MODULES])
def test_module_error_inputs_raise_as_in_torch(name, info):
    _check(name, D.module_error_outcomes(name, info, torch))


@pytest.mark.parametrize("key, info, kind", [(k, i, "op") for k, i in OPS if k in KERNEL_BACKED]
                         + [(k, i, "module") for k, i in MODULES if k in KERNEL_BACKED],
                         ids=[k for k, _ in OPS if k in KERNEL_BACKED] + [k for k, _ in MODULES if k in KERNEL_BACKED])
def test_kernel_backed_ops_on_the_numpy_path(monkeypatch, key, info, kind):
    """The same comparison in float32 with the compiled kernels switched off."""
    import tinygradnorm as tg
    monkeypatch.setattr(tg.device("cpu").backend, "_kernels", None)
    outcomes = D.op_outcomes(key, info, "float32", torch) if kind == "op" else \
        D.module_outcomes(key, info, "float32", torch)
    _check(key, outcomes)


CONVS = [(k, i, "op") for k, i in OPS if "conv" in k] + [(k, i, "module") for k, i in MODULES if "Conv" in k]


@pytest.mark.parametrize("key, info, kind", CONVS, ids=[c[0] for c in CONVS])
def test_convolutions_on_the_direct_tiles(monkeypatch, key, info, kind):
    """PyTorch's own convolution inputs, float32 and float64, with conv_direct's tiles forced on wherever they can
    run (by default they run only on AVX-512 CPUs, in float32); and the second derivatives."""
    pytest.importorskip("numba")
    from tinygradnorm.backend.cpu_kernels import conv_direct
    monkeypatch.setattr(conv_direct, "MODE", "1")
    for dtype in D.DTYPES:
        _check(key, D.op_outcomes(key, info, dtype, torch) if kind == "op" else
               D.module_outcomes(key, info, dtype, torch))
    _check(key, D.op_second_order_outcomes(key, info, torch) if kind == "op" else
           D.module_second_order_outcomes(key, info, torch))


@pytest.mark.parametrize("key, info", OPS, ids=[k for k, _ in OPS])
def test_op_second_derivatives_match_torch(key, info):
    """Every float64 sample where PyTorch has a double backward: the first gradients with create_graph=True and the
    gradients of <grad, gg> with respect to the inputs and the upstream gradient."""
    outcomes = D.op_second_order_outcomes(key, info, torch)
    _check(key, outcomes)
    assert key in D.SECOND_ORDER_CONVENTIONS or not any(o.kind == "convention" for o in outcomes)


@pytest.mark.parametrize("path", ["compiled", "numpy"])
@pytest.mark.parametrize("name, info", MODULES, ids=[k for k, _ in MODULES])
def test_module_second_derivatives_match_torch_in_train_and_eval(monkeypatch, name, info, path):
    """Each float64 ModuleInfo input in training and in eval mode: the second derivatives with respect to the input,
    the parameters and the upstream gradient (kernel-backed layers once more on the NumPy path)."""
    if path == "numpy":
        if name not in KERNEL_BACKED:
            pytest.skip("no compiled kernel behind this layer")
        import tinygradnorm as tg
        monkeypatch.setattr(tg.device("cpu").backend, "_kernels", None)
    outcomes = D.module_second_order_outcomes(name, info, torch)
    _check(name, outcomes)
    assert name in ("CrossEntropyLoss", "NLLLoss") or not any(o.kind == "convention" for o in outcomes)
