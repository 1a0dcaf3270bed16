"""Higher-order derivatives of every normalization layer (every configuration of tests/norm_cases.py, in training
and eval mode, fused and composite, on both CPU paths), in float64:

- second derivatives against PyTorch's own layers, which get them right;
- third derivatives against PyTorch differentiating each layer's formula written out in primitive ops (PyTorch's
  native batch and layer norm are wrong from the third order on: their double backward reuses saved statistics
  without a graph), the fused layer against the composite one as well;
- gradgradcheck (finite differences of the first derivatives) on every fused layer;
- planted wrong double backwards, each caught by gradgradcheck and by the composite twin.
"""
import numpy as np
import pytest

import tinygradnorm as tg
from tinygradnorm import nn
from conftest import mutant
from norm_cases import ALL, IDS, make

pytestmark = pytest.mark.usefixtures("cpu_path")


def _modules(case, torch, training, impl="fused", seed=3, device="cpu"):
    """The same layer in both libraries, in float64, with random parameters and running statistics (ours on
    ``device``, PyTorch's on the CPU)."""
    rng = np.random.default_rng(seed)
    theirs = make(torch.nn, case).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.uniform(0.5, 1.5, tuple(p.shape))))
        for name, b in theirs.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.tensor(rng.standard_normal(tuple(b.shape))))
            elif name.endswith("running_var"):
                b.copy_(torch.tensor(rng.uniform(0.5, 2.0, tuple(b.shape))))
    ours = make(nn, case, impl=impl).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.to(device)
    theirs.train(training)
    ours.train(training)
    return ours, theirs


def _derivatives(lib, fn, leaves, order, seed=11):
    """[d<f, c1>/d leaves, d<first, c2>/d leaves, ...] up to ``order``, each list with zeros for unused leaves, as
    host arrays (the weights c_k are made on the leaves' device)."""
    rng = np.random.default_rng(seed)
    is_torch = lib.__name__ == "torch"
    make_t = (lambda a: lib.tensor(a)) if is_torch else (lambda a: tg.tensor(a, device=leaves[0].device))
    out = fn(*leaves)
    total = (out * make_t(rng.standard_normal(tuple(out.shape)))).sum()
    results = []
    for k in range(order):
        last = k == order - 1
        grads = lib.autograd.grad(total, leaves, create_graph=not last, allow_unused=True)
        grads = [lib.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]
        results.append([g.detach().numpy().copy() for g in grads])
        if not last:
            weights = [make_t(rng.standard_normal(tuple(g.shape))) for g in grads]
            terms = [(g * c).sum() for g, c in zip(grads, weights) if g.requires_grad]
            if not terms:                   # the derivative is constant: every higher one is zero
                results += [[np.zeros(tuple(t.shape)) for t in leaves] for _ in range(order - k - 1)]
                break
            total = terms[0]
            for t in terms[1:]:
                total = total + t
    return results


def _leaves(module, x, lib):
    names = [n for n, _ in sorted(module.named_parameters())]
    params = [p.detach().clone().requires_grad_() for _, p in sorted(module.named_parameters())]
    return names, [x] + params


def _call(module, names, lib):
    """fn(x, *params): the module called with these parameters in place of its own."""
    def fn(x, *params):
        if lib.__name__ == "torch":
            return lib.func.functional_call(module, dict(zip(names, params)), (x,))
        for name, p in zip(names, params):
            module._parameters[name] = p
        return module(x)
    return fn


def _input(case, seed=5):
    return np.random.default_rng(seed).standard_normal(case[4]) * 1.5 + 0.3


def _assert_close(ours, theirs, tol=1e-8):
    assert len(ours) == len(theirs)
    for k, (a_list, b_list) in enumerate(zip(ours, theirs)):
        for i, (a, b) in enumerate(zip(a_list, b_list)):
            scale = max(1.0, np.abs(b).max(initial=0))
            err = np.abs(a - b).max(initial=0)
            assert err <= tol * scale, f"order {k + 1}, leaf {i}: max difference {err:.3g} (scale {scale:.3g})"


# ---- second order against PyTorch's layers ---------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["fused", "composite"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", ALL, ids=IDS)
def test_second_derivatives_match_torch(case, training, impl, torch, device):
    ours, theirs = _modules(case, torch, training, impl, device=device)
    x0 = _input(case)
    names, leaves_t = _leaves(theirs, torch.tensor(x0, requires_grad=True), torch)
    _, leaves_o = _leaves(ours, tg.tensor(x0, device=device, requires_grad=True), tg)
    expected = _derivatives(torch, _call(theirs, names, torch), leaves_t, 2)
    _assert_close(_derivatives(tg, _call(ours, names, tg), leaves_o, 2), expected)


# ---- third order against the formula, differentiated by PyTorch ------------------------------------------------
def _torch_formula(case, module, torch, training):
    """fn(x, *params) in PyTorch's primitive ops: the layer's formula, whose every derivative PyTorch gets right."""
    _, cls, args, kwargs, shape = case
    eps = getattr(module, "eps", None)
    names = [n for n, _ in sorted(module.named_parameters())]

    def affine(y, params, view):
        p = dict(zip(names, params))
        if "weight" in p:
            y = y * p["weight"].reshape(view)
        if "bias" in p:
            y = y + p["bias"].reshape(view)
        return y

    def standardize(x, axes):
        mean = x.mean(axes, keepdim=True)
        centred = x - mean
        return centred * ((centred * centred).mean(axes, keepdim=True) + eps).rsqrt()

    if cls.startswith("BatchNorm") or cls.startswith("InstanceNorm"):
        channel_view = (1, shape[1]) + (1,) * (len(shape) - 2)
        frozen = not training and module.track_running_stats           # eval mode with running statistics
        axes = tuple(range(2, len(shape))) if cls.startswith("InstanceNorm") else (0,) + tuple(range(2, len(shape)))

        def fn(x, *params):
            if frozen:
                mean = module.running_mean.detach().reshape(channel_view)
                var = module.running_var.detach().reshape(channel_view)
                y = (x - mean) * (var + eps).rsqrt()
            else:
                y = standardize(x, axes)
            return affine(y, params, channel_view)
        return fn
    if cls == "LayerNorm":
        k = len(module.normalized_shape)
        axes = tuple(range(len(shape) - k, len(shape)))
        return lambda x, *params: affine(standardize(x, axes), params, tuple(module.normalized_shape))
    if cls == "GroupNorm":
        g = module.num_groups

        def fn(x, *params):
            n, c = x.shape[:2]
            y = standardize(x.reshape(n, g, -1), (2,)).reshape(x.shape)
            return affine(y, params, (1, c) + (1,) * (x.ndim - 2))
        return fn
    if cls == "RMSNorm":
        k = len(module.normalized_shape)
        axes = tuple(range(len(shape) - k, len(shape)))
        rms_eps = eps if eps is not None else torch.finfo(torch.float64).eps
        return lambda x, *params: affine(x * ((x * x).mean(axes, keepdim=True) + rms_eps).rsqrt(), params,
                                         tuple(module.normalized_shape))
    if cls == "LocalResponseNorm":
        size, alpha, beta, kk = module.size, module.alpha, module.beta, module.k

        def fn(x, *params):
            sq = x * x
            c = x.shape[1]
            pad = [0, 0] * (x.ndim - 2) + [size // 2, (size - 1) // 2]
            padded = torch.nn.functional.pad(sq, pad)
            window = sum(padded[:, j:j + c] for j in range(size))
            return x / (window * (alpha / size) + kk) ** beta
        return fn
    raise AssertionError(cls)


@pytest.mark.parametrize("impl", ["fused", "composite"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", ALL, ids=IDS)
def test_third_derivatives_match_the_formula_differentiated_by_torch(case, training, impl, torch, device):
    ours, theirs = _modules(case, torch, training, impl, device=device)
    x0 = _input(case)
    names, leaves_t = _leaves(theirs, torch.tensor(x0, requires_grad=True), torch)
    _, leaves_o = _leaves(ours, tg.tensor(x0, device=device, requires_grad=True), tg)
    expected = _derivatives(torch, _torch_formula(case, theirs, torch, training), leaves_t, 3)
    _assert_close(_derivatives(tg, _call(ours, names, tg), leaves_o, 3), expected)


def test_torch_native_batch_norm_is_wrong_at_third_order_and_the_formula_is_the_reference(torch):
    """Why the third-order reference is the formula: PyTorch's own BatchNorm2d gives other third derivatives
    (its double backward treats the saved statistics as constants), while ours match the formula."""
    case = ALL[IDS.index("bn2d-affine1-track1")]
    ours, theirs = _modules(case, torch, True)
    x0 = _input(case)
    names, leaves_t = _leaves(theirs, torch.tensor(x0, requires_grad=True), torch)
    native = _derivatives(torch, _call(theirs, names, torch), leaves_t, 3)
    formula = _derivatives(torch, _torch_formula(case, theirs, torch, True), leaves_t, 3)
    _assert_close(native[:2], formula[:2])
    assert np.abs(native[2][0] - formula[2][0]).max() > 1e-3           # third order: PyTorch's native layer is off
    _, leaves_o = _leaves(ours, tg.tensor(x0, requires_grad=True), tg)
    _assert_close(_derivatives(tg, _call(ours, names, tg), leaves_o, 3), formula)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", ALL, ids=IDS)
def test_fused_matches_composite_at_third_order(case, training, torch):
    fused, _ = _modules(case, torch, training, "fused")
    comp, _ = _modules(case, torch, training, "composite")
    x0 = _input(case)
    names, leaves_f = _leaves(fused, tg.tensor(x0, requires_grad=True), tg)
    _, leaves_c = _leaves(comp, tg.tensor(x0, requires_grad=True), tg)
    _assert_close(_derivatives(tg, _call(fused, names, tg), leaves_f, 3),
                  _derivatives(tg, _call(comp, names, tg), leaves_c, 3), tol=1e-10)


# ---- gradgradcheck -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", ALL, ids=IDS)
def test_gradgradcheck_passes_on_every_layer(case, training, torch, cpu_path):
    if cpu_path == "numpy" and not training:
        pytest.skip("eval mode's double backward is the same Tensor code on both paths; train covers both kernels")
    ours, _ = _modules(case, torch, training)
    names, leaves = _leaves(ours, tg.tensor(_input(case), requires_grad=True), tg)
    assert tg.gradgradcheck(_call(ours, names, tg), tuple(leaves))


# Planted wrong double backwards: (what, function, text, replacement, a case whose gradient runs it, training).
PLANTED = [
    ("the k term of the train-mode double backward", "ArrayNorm.standardize_double_backward", "gx = x_hat * k",
     "gx = x_hat * 0", "bn2d-affine1-track1", True),
    ("the cross term of the eval-mode double backward", "FrozenStandardizeBackward.gradient", "gx = gy * s * vs",
     "gx = gy * vs", "bn2d-affine1-track1", False),
    ("a term of local response norm's double backward", "LocalResponseNormalizeBackward.gradient",
     "- c * z * gy * q", "- c * z * gy", "lrn_1d_even", True),
]


@pytest.mark.parametrize("what, where, old, new, case_id, training", PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_wrong_double_backward_is_caught(monkeypatch, what, where, old, new, case_id, training, torch,
                                                 cpu_path):
    from tinygradnorm.backend import norm
    from tinygradnorm.nn.norm import fused
    if where == "ArrayNorm.standardize_double_backward" and cpu_path == "compiled":
        from tinygradnorm.backend.cpu_kernels import norm as kernels        # the same slip in the kernel
        monkeypatch.setattr(kernels, "_double_backward", mutant(
            kernels._double_backward, "a3 = -s2 * (kk - 2.0 * m_gx * m_ux)", "a3 = -s2 * (0.0 - 2.0 * m_gx * m_ux)"))
    else:
        cls_name, method = where.split(".")
        cls = getattr(norm if cls_name == "ArrayNorm" else fused, cls_name)
        monkeypatch.setattr(cls, method, mutant(getattr(cls, method), old, new))
    case = ALL[IDS.index(case_id)]
    ours, _ = _modules(case, torch, training)
    names, leaves = _leaves(ours, tg.tensor(_input(case), requires_grad=True), tg)
    with pytest.raises(tg.GradcheckError, match="gradgradcheck failed for (input|grad_outputs)"):
        tg.gradgradcheck(_call(ours, names, tg), tuple(leaves))
    comp, _ = _modules(case, torch, training, "composite")
    _, leaves_c = _leaves(comp, tg.tensor(_input(case), requires_grad=True), tg)
    with pytest.raises(AssertionError, match="order 2"):
        _assert_close(_derivatives(tg, _call(ours, names, tg), leaves, 2),
                      _derivatives(tg, _call(comp, names, tg), leaves_c, 2), tol=1e-10)


def test_a_wrong_differentiable_double_backward_is_caught_at_third_order(monkeypatch, torch):
    """The Tensor-op double backward (what the second derivative is built from when a graph of it is recorded) with
    the k term dropped: the check of the chain up to the third order fails (the second derivative taken with
    create_graph=True is already off)."""
    from tinygradnorm.nn.norm import fused
    monkeypatch.setattr(fused, "_double_backward", mutant(fused._double_backward, "(x_hat * k +", "(0 * k +"))
    case = ALL[IDS.index("ln_last")]
    ours, theirs = _modules(case, torch, True)
    x0 = _input(case)
    names, leaves_t = _leaves(theirs, torch.tensor(x0, requires_grad=True), torch)
    _, leaves_o = _leaves(ours, tg.tensor(x0, requires_grad=True), tg)
    expected = _derivatives(torch, _torch_formula(case, theirs, torch, True), leaves_t, 3)
    with pytest.raises(AssertionError, match="order [23]"):
        _assert_close(_derivatives(tg, _call(ours, names, tg), leaves_o, 3), expected)


def test_statistics_taken_as_constants_are_caught_at_third_order(monkeypatch, torch):
    """PyTorch's mistake, planted: a double backward that reuses the saved statistics even while a graph is
    recorded. Second derivatives stay right; the third-order check against the formula fails."""
    from tinygradnorm.nn.norm import fused
    monkeypatch.setattr(fused, "_double_backward", mutant(fused._double_backward, "    if is_grad_enabled():",
                                                          "    if False:"))
    case = ALL[IDS.index("bn2d-affine1-track1")]
    ours, theirs = _modules(case, torch, True)
    x0 = _input(case)
    names, leaves_t = _leaves(theirs, torch.tensor(x0, requires_grad=True), torch)
    _, leaves_o = _leaves(ours, tg.tensor(x0, requires_grad=True), tg)
    expected = _derivatives(torch, _torch_formula(case, theirs, torch, True), leaves_t, 3)
    got = _derivatives(tg, _call(ours, names, tg), leaves_o, 3)
    _assert_close(got[:2], expected[:2])
    with pytest.raises(AssertionError, match="order 3"):
        _assert_close(got, expected)
