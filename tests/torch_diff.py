"""Differential testing against PyTorch's own test inputs (OpInfo and ModuleInfo).

``torch.testing._internal`` ships the inputs PyTorch tests itself with. For every op and layer
tinygradnorm has, each sample runs through both libraries in float64 and float32. The outputs,
the gradients of every input (and, for layers, every parameter) for one random upstream
gradient, and the running statistics after a training step and then in eval mode are compared.

Each sample ends as one of:
- pass: the same dtype and values (to 1e-8 in float64, 1e-4 in float32); in float32, a sample
  where PyTorch is the less accurate side passes when ours matches PyTorch run in float64;
- unsupported: the sample uses arguments tinygradnorm cannot express, and said so
  (NotImplementedError, or a TypeError naming an argument it does not take);
- refused: eps <= 0, which the normalization layers refuse with a clear message (allowed);
- mismatch or error: a failure.

Error inputs (samples on which PyTorch raises) must raise here too.

``python tests/torch_diff.py`` prints the counts per op and lists every unsupported sample.
"""
import dataclasses
import re
import sys
import warnings
from collections import Counter, defaultdict

import numpy as np

import tinygradnorm as tg
import tinygradnorm.nn as nn
import tinygradnorm.nn.functional as F

DTYPES = ("float64", "float32")
TOL = {"float64": 1e-8, "float32": 1e-4}


def _method(name):
    return lambda x, *a, **k: getattr(x, name)(*a, **k)


# The OpInfo name (with its variant after a dot) -> the same operation in tinygradnorm.
OPS = {
    "add": tg.add, "sub": tg.sub, "mul": tg.mul, "div.no_rounding_mode": tg.div, "div.trunc_rounding": tg.div,
    "div.floor_rounding": tg.div, "true_divide": tg.div, "pow": tg.pow, "neg": tg.neg,
    "maximum": tg.maximum, "minimum": tg.minimum, "max.binary": tg.maximum, "min.binary": tg.minimum,
    "where": lambda x, cond, other: tg.where(cond, x, other),
    "exp": tg.exp, "log": tg.log, "sqrt": tg.sqrt, "rsqrt": tg.rsqrt, "abs": tg.abs, "tanh": tg.tanh,
    "sigmoid": tg.sigmoid, "square": _method("square"), "nn.functional.relu": F.relu, "clamp": tg.clamp,
    "sum": tg.sum, "mean": tg.mean, "var": tg.var, "var.unbiased": tg.var, "std": _method("std"),
    "std.unbiased": _method("std"),
    "max.reduction_with_dim": tg.max, "max.reduction_no_dim": tg.max, "min.reduction_with_dim": tg.min,
    "min.reduction_no_dim": tg.min, "amax": tg.amax, "amin": tg.amin, "argmax": tg.argmax, "argmin": tg.argmin,
    "logsumexp": tg.logsumexp, "softmax": tg.softmax, "softmax.with_dtype": tg.softmax,
    "log_softmax": tg.log_softmax, "log_softmax.with_dtype": tg.log_softmax,
    "reshape": tg.reshape, "view": _method("view"), "permute": tg.permute, "transpose": tg.transpose,
    "flatten": tg.flatten, "squeeze": tg.squeeze, "squeeze.multiple": tg.squeeze, "unsqueeze": tg.unsqueeze,
    "broadcast_to": tg.broadcast_to, "expand": _method("expand"), "T": lambda x: x.T, "t": _method("t"),
    "nn.functional.pad.constant": F.pad, "nn.functional.pad.reflect": F.pad, "nn.functional.pad.replicate": F.pad,
    "nn.functional.pad.replicate_negative": F.pad, "nn.functional.pad.circular": F.pad,
    "cat": tg.cat, "stack": tg.stack, "matmul": tg.matmul, "__getitem__": lambda x, index: x[index],
    "clone": _method("clone"), "eq": tg.eq, "ne": tg.ne, "lt": tg.lt, "le": tg.le, "gt": tg.gt, "ge": tg.ge,
    "nn.functional.conv1d": F.conv1d, "nn.functional.conv2d": F.conv2d, "nn.functional.conv3d": F.conv3d,
    "nn.functional.conv_transpose1d": F.conv_transpose1d, "nn.functional.conv_transpose2d": F.conv_transpose2d,
    "nn.functional.conv_transpose3d": F.conv_transpose3d, "nn.functional.avg_pool2d": F.avg_pool2d,
    "nn.functional.max_pool2d": F.max_pool2d, "nn.functional.linear": F.linear,
    "nn.functional.cross_entropy": F.cross_entropy, "nn.functional.nll_loss": F.nll_loss,
    "nn.functional.batch_norm": F.batch_norm, "nn.functional.batch_norm.without_cudnn": F.batch_norm,
    "nn.functional.layer_norm": F.layer_norm, "nn.functional.group_norm": F.group_norm,
    "nn.functional.instance_norm": F.instance_norm, "nn.functional.rms_norm": F.rms_norm,
    "nn.functional.local_response_norm": F.local_response_norm,
    "nn.functional.leaky_relu": F.leaky_relu, "nn.functional.gelu": F.gelu, "nn.functional.silu": F.silu,
    "nn.functional.mse_loss": F.mse_loss, "nn.functional.l1_loss": F.l1_loss,
    "nn.functional.binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits,
    "nn.functional.adaptive_avg_pool2d": F.adaptive_avg_pool2d, "nn.functional.max_unpool2d": F.max_unpool2d,
    "nn.functional.max_unpool2d.grad": F.max_unpool2d,
}

MODULES = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
           "LayerNorm", "GroupNorm", "RMSNorm", "LocalResponseNorm", "Linear", "Conv1d", "Conv2d", "Conv3d",
           "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "AvgPool2d", "MaxPool2d",
           "ReLU", "Sigmoid", "Tanh", "CrossEntropyLoss", "NLLLoss", "AdaptiveAvgPool2d", "L1Loss", "MSELoss",
           "BCEWithLogitsLoss", "GELU", "LeakyReLU", "SiLU", "Softmax", "LogSoftmax"]


@dataclasses.dataclass
class Outcome:
    """One sample's result: kind is pass, pass64 (matched PyTorch's float64), unsupported, mismatch or error."""
    kind: str
    what: str = ""


def op_infos():
    """(key, OpInfo) for every op in OPS, in op_db's order."""
    from torch.testing._internal.common_methods_invocations import op_db
    out = []
    for info in op_db:
        key = info.name + (f".{info.variant_test_name}" if info.variant_test_name else "")
        if key in OPS:
            out.append((key, info))
    return out


def module_infos():
    from torch.testing._internal.common_modules import module_db
    return [(m.module_cls.__name__, m) for m in module_db if m.module_cls.__name__ in MODULES]


# ---- translating PyTorch values into tinygradnorm's ------------------------------------------------------------
def _ours(value, torch):
    """A PyTorch argument as tinygradnorm's: tensors (same dtype, requires_grad), dtypes, nested containers."""
    if isinstance(value, torch.Tensor):
        t = tg.tensor(value.detach().cpu().numpy(), dtype=str(value.dtype).split(".")[1])
        return t.requires_grad_() if value.requires_grad else t
    if isinstance(value, torch.dtype):
        return getattr(tg, str(value).split(".")[1])
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_ours(v, torch) for v in value)
    if isinstance(value, dict):
        return {k: _ours(v, torch) for k, v in value.items()}
    if isinstance(value, torch.device):
        return "cpu"
    if isinstance(value, torch.memory_format):
        return getattr(tg, str(value).split(".")[-1])
    return value


def _leaves(value, kind):
    """The tensors that require grad in a nested argument, in a fixed order."""
    if isinstance(value, kind):
        return [value] if value.requires_grad else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _leaves(v, kind)]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _leaves(value[k], kind)]
    return []


def _outputs(value, kind):
    if isinstance(value, kind):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _outputs(v, kind)]
    return []


def _kind_of(e):
    """'unsupported' when an exception says the arguments cannot be expressed here, 'refused' for the normalization
    layers' refusal of eps <= 0, else 'error' (a bug)."""
    if isinstance(e, NotImplementedError):
        return "unsupported"
    if isinstance(e, TypeError) and re.search(r"unexpected keyword|positional argument|takes \d+ positional|"
                                              r"got multiple values|missing \d+ required", str(e)):
        return "unsupported"
    if isinstance(e, ValueError) and "eps must be positive" in str(e):
        return "refused"
    return "error"


def _as_np(t):
    if isinstance(t, np.ndarray):
        return t
    return np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t.numpy())


def _dtype_name(t):
    return str(t.dtype).split(".")[-1]


def _compare(ours, theirs, tol):
    """'' when the lists of tensors agree (dtype, shape, values with nan where nan), else what differs."""
    if len(ours) != len(theirs):
        return f"{len(ours)} outputs against {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if (a is None) != (b is None):
            return f"output {i}: {'no gradient' if a is None else 'a gradient'} where PyTorch has " \
                   f"{'one' if a is None else 'none'}"
        if a is None:
            continue
        if _dtype_name(a) != _dtype_name(b):
            return f"output {i}: dtype {_dtype_name(a)} against {_dtype_name(b)}"
        x, y = _as_np(a), _as_np(b)
        if x.shape != y.shape:
            return f"output {i}: shape {x.shape} against {y.shape}"
        if x.dtype.kind in "biu":
            if not np.array_equal(x, y):
                return f"output {i}: {int((x != y).sum())} of {x.size} integers differ"
            continue
        wide = np.complex128 if "c" in (x.dtype.kind, y.dtype.kind) else np.float64       # complex: both parts
        x, y = x.astype(wide), y.astype(wide)
        with np.errstate(invalid="ignore"):
            same = (x == y) | (np.isnan(x) & np.isnan(y)) | (np.abs(x - y) <= tol * (1 + np.abs(y)))
        if not same.all():
            k = np.argmax(~same.reshape(-1))
            return f"output {i}: {int((~same).sum())} of {x.size} values differ, e.g. {x.reshape(-1)[k]!r} " \
                   f"against {y.reshape(-1)[k]!r}"
    return ""


def _upstream(outputs, torch, seed):
    rng = np.random.default_rng(seed)
    return [torch.tensor(rng.standard_normal(tuple(o.shape)), dtype=o.dtype) for o in outputs]


def _fresh_leaves(value, torch):
    """Every tensor that requires grad as a new leaf with the same memory and strides: some samples are views
    made under no_grad, to which PyTorch's graph would keep no edge."""
    if isinstance(value, torch.Tensor):
        return value.detach().requires_grad_() if value.requires_grad else value
    if isinstance(value, (list, tuple)):
        return type(value)(_fresh_leaves(v, torch) for v in value)
    if isinstance(value, dict):
        return {k: _fresh_leaves(v, torch) for k, v in value.items()}
    return value


def _torch_run(fn, args, kwargs, torch, seed):
    """(outputs, gradients of the inputs that require grad) in PyTorch for one random upstream gradient."""
    args, kwargs = _fresh_leaves(args, torch), _fresh_leaves(kwargs, torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # PyTorch's own performance hints
        out = fn(*args, **kwargs)
    outs = _outputs(out, torch.Tensor)
    diff = [o for o in outs if o.requires_grad and o.dtype.is_floating_point]
    leaves = _leaves((args, kwargs), torch.Tensor)
    grads = []
    if diff and leaves:
        grads = torch.autograd.grad(diff, leaves, _upstream(diff, torch, seed), allow_unused=True)
    return outs, list(grads), diff


def _our_run(fn, args, kwargs, torch_diff, torch, seed):
    out = fn(*args, **kwargs)
    outs = _outputs(out, tg.Tensor)
    diff = [o for o in outs if o.requires_grad and o.dtype.kind == "f"]     # as PyTorch's side: no complex outputs
    leaves = _leaves((args, kwargs), tg.Tensor)
    for leaf in leaves:
        leaf.grad = None
    if diff and leaves:
        total = None
        for o, gy in zip(diff, _upstream(torch_diff, torch, seed)):
            term = (o * tg.tensor(gy.numpy(), dtype=o.dtype)).sum()
            total = term if total is None else total + term
        total.backward()
    return outs, [leaf.grad for leaf in leaves] if diff and leaves else [], diff


def run_op_sample(key, fn_theirs, sample, dtype, torch, seed=0):
    """The Outcome of one OpInfo sample."""
    args_t = (sample.input,) + tuple(sample.args)
    try:
        outs_t, grads_t, diff_t = _torch_run(fn_theirs, args_t, dict(sample.kwargs), torch, seed)
    except Exception:           # noqa: BLE001  (PyTorch itself cannot run it: not a sample to compare)
        return None
    args, kwargs = _ours(args_t, torch), _ours(dict(sample.kwargs), torch)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                outs, grads, _ = _our_run(OPS[key], args, kwargs, diff_t, torch, seed)
    except Exception as e:      # noqa: BLE001
        return Outcome(_kind_of(e), f"{_describe(sample)}: {type(e).__name__}: {str(e)[:200]}")
    return _judge(outs + grads, outs_t + grads_t, dtype, sample, torch,
                  lambda: _torch_in_float64(fn_theirs, args_t, dict(sample.kwargs), torch, seed))


def _judge(ours, theirs, dtype, sample, torch, reference64):
    problem = _compare(ours, theirs, TOL[dtype])
    if not problem:
        return Outcome("pass")
    if dtype == "float32":
        ref = reference64()
        if ref is not None and not _compare([_cast32(t) for t in ours], [_cast32(t) for t in ref], TOL[dtype]):
            return Outcome("pass64")
    return Outcome("mismatch", f"{_describe(sample)}: {problem}")


def _cast32(t):
    return None if t is None else np.asarray(_as_np(t), dtype=np.float32 if _as_np(t).dtype == np.float64 else None)


def _torch_in_float64(fn, args, kwargs, torch, seed):
    """PyTorch's outputs and gradients with every float32 input in float64: the reference when PyTorch's float32
    result is the less accurate side."""
    def up(v):
        if isinstance(v, torch.Tensor) and v.dtype == torch.float32:
            return v.detach().double().requires_grad_(v.requires_grad)
        if isinstance(v, (list, tuple)):
            return type(v)(up(x) for x in v)
        if isinstance(v, dict):
            return {k: up(x) for k, x in v.items()}
        return v
    try:
        outs, grads, _ = _torch_run(fn, up(args), up(kwargs), torch, seed)
    except Exception:           # noqa: BLE001
        return None
    return outs + grads


def _describe(sample):
    """One line: the sample's tensors as dtype[shape] (noting non-contiguous ones), its other arguments as they are."""
    return f"{_short(sample.input)} args={_short(tuple(sample.args))} kwargs={_short(dict(sample.kwargs))}"


def _short(v):
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        layout = "" if not hasattr(v, "is_contiguous") or v.is_contiguous() else " strided"
        return f"{_dtype_name(v)}{list(v.shape)}{layout}"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_short(x) for x in v) + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return repr(v)


# ---- second order: the gradient of <grad, gg> with respect to the inputs and the upstream gradient ---------------
def _second_order(lib, fn, args, kwargs, seed, torch, params=()):
    """[first gradients with create_graph, then d<first, gg>/d(inputs, gy)] in one library, or None where there is
    no second derivative to take; ``params`` (a module's) count as inputs. Unused inputs count as zero gradients
    (None in either library)."""
    is_torch = lib is torch
    kind = torch.Tensor if is_torch else tg.Tensor
    if is_torch:
        args, kwargs = _fresh_leaves(args, torch), _fresh_leaves(kwargs, torch)
    out = fn(*args, **kwargs)
    floating = (lambda o: o.dtype.is_floating_point) if is_torch else (lambda o: o.dtype.kind == "f")
    diff = [o for o in _outputs(out, kind) if o.requires_grad and floating(o)]
    leaves = _leaves((args, kwargs), kind) + list(params)
    if not diff or not leaves:
        return None
    make = (lambda a, o: torch.tensor(a, dtype=o.dtype)) if is_torch else (lambda a, o: tg.tensor(a, dtype=o.dtype))
    rng = np.random.default_rng(seed)
    gys = [make(rng.standard_normal(tuple(o.shape)), o).requires_grad_() for o in diff]
    grad = torch.autograd.grad if is_torch else tg.autograd.grad
    firsts = grad(diff, leaves, gys, create_graph=True, allow_unused=True)
    used = [g for g in firsts if g is not None and g.requires_grad]
    if not used:
        return None
    ggs = [make(rng.standard_normal(tuple(u.shape)), u) for u in used]
    seconds = grad(used, leaves + gys, ggs, allow_unused=True)
    return [_zero_if_none(g, t, torch, is_torch) for g, t in zip(list(firsts) + list(seconds), leaves + leaves + gys)]


def _zero_if_none(g, like, torch, is_torch):
    if g is not None:
        return g.detach().clone() if is_torch else g     # (a clone: PyTorch may give a ZeroTensor)
    return torch.zeros_like(like) if is_torch else tg.zeros_like(like)


def run_op_sample_second_order(key, fn_theirs, sample, torch, seed=0):
    """The Outcome of one float64 OpInfo sample at second order, or None where PyTorch has no second derivative."""
    args_t = (sample.input,) + tuple(sample.args)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = _second_order(torch, fn_theirs, args_t, dict(sample.kwargs), seed, torch)
    except Exception:           # noqa: BLE001  (PyTorch has no double backward here)
        return None
    if theirs is None:
        return None
    args, kwargs = _ours(args_t, torch), _ours(dict(sample.kwargs), torch)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                ours = _second_order(tg, OPS[key], args, kwargs, seed, torch)
    except Exception as e:      # noqa: BLE001
        return Outcome(_kind_of(e), f"{_describe(sample)}: {type(e).__name__}: {str(e)[:200]}")
    if ours is None:
        return Outcome("mismatch", f"{_describe(sample)}: no second derivative where PyTorch has one")
    problem = _compare(ours, theirs, TOL["float64"])
    if problem and key in SECOND_ORDER_CONVENTIONS and SECOND_ORDER_CONVENTIONS[key](args_t, ours, theirs, torch):
        return Outcome("convention", f"{_describe(sample)}: {problem}")
    return Outcome("mismatch", f"{_describe(sample)}: second order: {problem}") if problem else Outcome("pass")


def _pow_at_a_zero_base(args, ours, theirs, torch):
    """pow where the base is 0: the second derivative does not exist there (d/db of b a^(b-1) tends to -inf).
    PyTorch gives nan (0 * log 0 in the backward of a where); ours composes the first-order convention that
    d(a^b)/db = 0 at a = 0, b >= 0. Every other element must agree."""
    base = args[0].detach().numpy() if isinstance(args[0], torch.Tensor) else np.asarray(args[0])
    if not (base == 0).any():
        return False
    for a, b in zip(ours, theirs):
        x, y = _as_np(a), _as_np(b)
        keep = ~np.broadcast_to(base == 0, x.shape) if x.shape == np.broadcast_shapes(x.shape, base.shape) else True
        with np.errstate(invalid="ignore"):
            same = (x == y) | (np.isnan(x) & np.isnan(y)) | (np.abs(x - y) <= TOL["float64"] * (1 + np.abs(y)))
        if not (same | ~keep).all():
            return False
    return True


# Where PyTorch's and our second derivatives differ at points where the derivative does not exist, and why.
SECOND_ORDER_CONVENTIONS = {"pow": _pow_at_a_zero_base}


def op_second_order_outcomes(key, info, torch):
    if not info.supports_autograd or torch.float64 not in info.supported_dtypes("cpu"):
        return []
    torch.manual_seed(0)
    out = []
    for i, sample in enumerate(_samples(info, torch.float64, torch)):
        outcome = run_op_sample_second_order(key, info.op, sample, torch, seed=i)
        if outcome is not None:
            out.append(outcome)
    return out


def run_module_input_second_order(name, module_input, training, torch, seed=0):
    """The float64 module input at second order, with respect to the inputs and the parameters, in training or eval
    mode; None where PyTorch has no second derivative (or cannot run the input)."""
    cls_t = getattr(torch.nn, name)
    c_args, c_kwargs = module_input.constructor_input.args, dict(module_input.constructor_input.kwargs)
    f_args, f_kwargs = module_input.forward_input.args, dict(module_input.forward_input.kwargs)
    try:
        theirs = cls_t(*c_args, **c_kwargs).double()
        state = {k: v.clone() for k, v in theirs.state_dict().items()}
        theirs.train(training)
        params_t = [p for _, p in sorted(theirs.named_parameters())]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = _second_order(torch, theirs, f_args, f_kwargs, seed, torch, params_t)
    except Exception:           # noqa: BLE001
        return None
    if expected is None:
        return None
    where = f"{c_args} {c_kwargs} on {_shapes(f_args)} ({'train' if training else 'eval'})"
    try:
        ours = getattr(nn, name)(*_ours(c_args, torch), **_ours(c_kwargs, torch)).double()
        ours.load_state_dict({k: _ours(v, torch) for k, v in state.items()})
        ours.train(training)
        params = [p for _, p in sorted(ours.named_parameters())]
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            got = _second_order(tg, ours, _ours(f_args, torch), _ours(f_kwargs, torch), seed, torch, params)
    except Exception as e:      # noqa: BLE001
        return Outcome(_kind_of(e), f"{where}: {type(e).__name__}: {str(e)[:200]}")
    if got is None:
        return Outcome("mismatch", f"{where}: no second derivative where PyTorch has one")
    problem = _compare(got, expected, TOL["float64"])
    if problem and name in ("CrossEntropyLoss", "NLLLoss") and _every_target_ignored(f_args, c_kwargs, got, expected,
                                                                                     torch):
        return Outcome("convention", f"{where}: {problem}")
    return Outcome("mismatch", f"{where}: second order: {problem}") if problem else Outcome("pass")


def _every_target_ignored(f_args, c_kwargs, ours, theirs, torch):
    """A mean loss whose every target is ignored: its value is 0/0, and PyTorch's first derivative is 0 (ours too),
    but its second derivative with respect to the upstream gradient is nan (0/0 again), where the derivative of that
    0 is 0. Every difference must be such a nan against a 0."""
    target = f_args[1] if len(f_args) > 1 else None
    ignore = c_kwargs.get("ignore_index", -100)
    if target is None or c_kwargs.get("reduction", "mean") != "mean" or not bool((target == ignore).all()):
        return False
    for a, b in zip(ours, theirs):
        x, y = _as_np(a), _as_np(b)
        differ = ~((x == y) | (np.isnan(x) & np.isnan(y)))
        if not (np.isnan(y[differ]).all() and (x[differ] == 0).all()):
            return False
    return True


def module_second_order_outcomes(name, info, torch):
    torch.manual_seed(0)                # (the ModuleInfo inputs are random: the same ones on every run)
    out = []
    for training in (True, False):
        for i, mi in enumerate(info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=True,
                                                        training=training)):
            outcome = run_module_input_second_order(name, mi, training, torch, seed=i)
            if outcome is not None:
                out.append(outcome)
    return out


def run_error_input(key, error_input, torch):
    """'pass' when ours raises on an input PyTorch refuses; otherwise what happened."""
    sample = error_input.sample_input
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = _ours((sample.input,) + tuple(sample.args), torch)   # (a tensor of 65 dims fails already here)
            OPS[key](*args, **_ours(dict(sample.kwargs), torch))
    except Exception:           # noqa: BLE001
        return Outcome("pass")
    return Outcome("mismatch", f"{_describe(sample)}: PyTorch raises {error_input.error_type.__name__} "
                               f"({error_input.error_regex!r}); tinygradnorm returned a result")


# ---- modules ----------------------------------------------------------------------------------------------------
def run_module_input(name, module_input, dtype, training, torch, seed=0):
    """Construct the module in both libraries with the same state, then compare a forward and backward (outputs,
    input and parameter gradients, buffers) and, after a training one, an eval one."""
    cls_t = getattr(torch.nn, name)
    c_args, c_kwargs = module_input.constructor_input.args, dict(module_input.constructor_input.kwargs)
    f_args, f_kwargs = module_input.forward_input.args, dict(module_input.forward_input.kwargs)
    torch_dtype = getattr(torch, dtype)
    try:
        theirs = cls_t(*c_args, **c_kwargs).to(torch_dtype)
        state = {k: v.clone() for k, v in theirs.state_dict().items()}
        theirs.train(training)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = _torch_module_run(theirs, f_args, f_kwargs, torch, seed)
    except Exception:           # noqa: BLE001
        return None
    try:
        ours = getattr(nn, name)(*_ours(c_args, torch), **_ours(c_kwargs, torch)).to(getattr(tg, dtype))
        ours.load_state_dict({k: _ours(v, torch) for k, v in state.items()})
        ours.train(training)
    except Exception as e:      # noqa: BLE001
        return Outcome(_kind_of(e), f"constructor {c_args} {c_kwargs}: {type(e).__name__}: {str(e)[:200]}")
    where = f"{c_args} {c_kwargs} on {_shapes(f_args)}"
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            problem = _compare(_our_module_run(ours, f_args, f_kwargs, expected[1], torch, seed), expected[0],
                               TOL[dtype])
            if not problem and training:
                theirs.eval(), ours.eval()
                expected = _torch_module_run(theirs, f_args, f_kwargs, torch, seed + 1)
                problem = _compare(_our_module_run(ours, f_args, f_kwargs, expected[1], torch, seed + 1),
                                   expected[0], TOL[dtype])
                problem = f"then in eval mode: {problem}" if problem else ""
    except Exception as e:      # noqa: BLE001
        return Outcome(_kind_of(e), f"{where}: {type(e).__name__}: {str(e)[:200]}")
    return Outcome("mismatch", f"{where}: {problem}") if problem else Outcome("pass")


def _torch_module_run(module, f_args, f_kwargs, torch, seed):
    """([outputs, input grads, parameter grads, buffers], the differentiable outputs) in PyTorch."""
    args, kwargs = _fresh_leaves(f_args, torch), _fresh_leaves(f_kwargs, torch)
    outs = _outputs(module(*args, **kwargs), torch.Tensor)
    diff = [o for o in outs if o.requires_grad and o.dtype.is_floating_point]
    leaves = _leaves((args, kwargs), torch.Tensor)
    params = [p for _, p in sorted(module.named_parameters())]
    grads = list(torch.autograd.grad(diff, leaves + params, _upstream(diff, torch, seed), allow_unused=True)) \
        if diff and leaves + params else [None] * len(leaves + params)
    buffers = [b for _, b in sorted(module.named_buffers()) if b is not None]
    return outs + grads + buffers, diff


def _our_module_run(module, f_args, f_kwargs, torch_diff, torch, seed):
    args, kwargs = _ours(f_args, torch), _ours(f_kwargs, torch)
    module.zero_grad()
    outs, grads, _ = _our_run(module, args, kwargs, torch_diff, torch, seed)
    params = [p.grad for _, p in sorted(module.named_parameters())]
    buffers = [b for _, b in sorted(module.named_buffers()) if b is not None]
    return outs + grads + params + buffers


def _shapes(args):
    return [tuple(a.shape) if hasattr(a, "shape") else a for a in args]


def run_module_error_input(name, error_input, torch):
    mi = error_input.module_error_input
    c, f = mi.constructor_input, mi.forward_input
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = getattr(nn, name)(*_ours(c.args, torch), **_ours(dict(c.kwargs), torch))
            m(*_ours(f.args, torch), **_ours(dict(f.kwargs), torch))
    except Exception:           # noqa: BLE001
        return Outcome("pass")
    return Outcome("mismatch", f"{c.args} {dict(c.kwargs)} on {_shapes(f.args)}: PyTorch raises "
                               f"{error_input.error_type.__name__}; tinygradnorm returned a result")


# ---- running everything -----------------------------------------------------------------------------------------
def op_outcomes(key, info, dtype, torch):
    torch.manual_seed(0)                # (some reference inputs are random: the same ones on every run)
    torch_dtype = getattr(torch, dtype)
    out = []
    if torch_dtype not in info.supported_dtypes("cpu"):
        return out
    for i, sample in enumerate(_samples(info, torch_dtype, torch)):
        outcome = run_op_sample(key, info.op, sample, dtype, torch, seed=i)
        if outcome is not None:
            out.append(outcome)
    return out


def _samples(info, torch_dtype, torch):
    """The op's reference inputs. Some of PyTorch's generators refuse requires_grad=True (they also make integer
    tensors); those are made without it, and their floating-point tensors then require grad."""
    grad = info.supports_autograd
    try:
        return list(info.reference_inputs("cpu", torch_dtype, requires_grad=grad))
    except ValueError:
        samples = list(info.reference_inputs("cpu", torch_dtype, requires_grad=False))

    def want_grad(v):
        if isinstance(v, torch.Tensor) and v.dtype.is_floating_point:
            return v.detach().requires_grad_(grad)
        if isinstance(v, (list, tuple)):
            return type(v)(want_grad(x) for x in v)
        return v
    for sample in samples:
        sample.input, sample.args = want_grad(sample.input), want_grad(tuple(sample.args))
    return samples


def op_error_outcomes(key, info, torch):
    if info.error_inputs_func is None:
        return []
    return [run_error_input(key, e, torch) for e in info.error_inputs("cpu")]


def module_outcomes(name, info, dtype, torch):
    torch.manual_seed(0)
    torch_dtype = getattr(torch, dtype)
    out = []
    for training in (True, False):
        for i, mi in enumerate(info.module_inputs_func(info, device="cpu", dtype=torch_dtype, requires_grad=True,
                                                        training=training)):
            outcome = run_module_input(name, mi, dtype, training, torch, seed=i)
            if outcome is not None:
                out.append(outcome)
    return out


def module_error_outcomes(name, info, torch):
    if info.module_error_inputs_func is None:
        return []
    return [run_module_error_input(name, e, torch)
            for e in info.module_error_inputs_func(info, device="cpu", dtype=torch.float32, requires_grad=False,
                                                   training=True)]


def report(torch):
    """Counts per op and dtype, then every unsupported sample: the table the closing note quotes."""
    rows, unsupported, failures = [], defaultdict(list), []
    jobs = [(k, "op", i) for k, i in op_infos()] + [(k, "module", i) for k, i in module_infos()]
    for key, kind, info in jobs:
        for dtype in DTYPES + ("errors",):
            if dtype == "errors":
                outcomes = op_error_outcomes(key, info, torch) if kind == "op" else \
                    module_error_outcomes(key, info, torch)
            else:
                outcomes = op_outcomes(key, info, dtype, torch) if kind == "op" else \
                    module_outcomes(key, info, dtype, torch)
            counts = Counter(o.kind for o in outcomes)
            rows.append((f"{'nn.' if kind == 'module' else ''}{key}", dtype, counts))
            for o in outcomes:
                if o.kind == "unsupported":
                    unsupported[key].append(o.what)
                elif o.kind in ("mismatch", "error"):
                    failures.append(f"{key} [{dtype}] {o.kind}: {o.what}")
    return rows, unsupported, failures


def main():
    import torch
    rows, unsupported, failures = report(torch)
    total = Counter()
    print("| op or layer | inputs | pass | pass (vs float64) | mismatch | error | unsupported | refused eps<=0 |")
    print("|---|---|---|---|---|---|---|---|")
    for key, dtype, c in rows:
        total.update(c)
        print(f"| {key} | {dtype} | {c['pass']} | {c['pass64']} | {c['mismatch']} | {c['error']} | "
              f"{c['unsupported']} | {c['refused']} |")
    print(f"| **total** | | {total['pass']} | {total['pass64']} | {total['mismatch']} | {total['error']} | "
          f"{total['unsupported']} | {total['refused']} |")
    print("\nUnsupported samples:")
    for key, items in unsupported.items():
        reasons = Counter(re.sub(r"^.*?: (\w+Error: )", r"\1", w) for w in items)
        for reason, n in reasons.most_common():
            print(f"- {key}: {n} x {reason}")
    if failures:
        print("\nFailures:")
        print("\n".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
