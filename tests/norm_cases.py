"""The normalization configurations every test walks through, with their PyTorch twins."""
import itertools

# (id, class name, positional args, keyword args, input shape)
BASE = [
    ("bn1d_2d", "BatchNorm1d", (3,), {}, (4, 3)),
    ("bn1d_3d_odd", "BatchNorm1d", (3,), {}, (2, 3, 5)),
    ("bn1d_c1", "BatchNorm1d", (1,), {}, (2, 1, 3)),
    ("bn2d", "BatchNorm2d", (3,), {}, (2, 3, 5, 3)),
    ("bn2d_c1", "BatchNorm2d", (1,), {}, (2, 1, 3, 3)),
    ("bn3d", "BatchNorm3d", (2,), {}, (2, 2, 3, 1, 3)),
    ("in1d", "InstanceNorm1d", (3,), {}, (2, 3, 5)),
    ("in2d", "InstanceNorm2d", (2,), {}, (2, 2, 3, 5)),
    ("in3d_c1", "InstanceNorm3d", (1,), {}, (2, 1, 3, 1, 3)),
]
# Layers with running statistics: every combination of affine and track_running_stats.
RUNNING = [(f"{i}-affine{a:d}-track{t:d}", cls, args, dict(kw, affine=a, track_running_stats=t), shape)
           for (i, cls, args, kw, shape), a, t in itertools.product(BASE, (True, False), (True, False))]
OTHERS = [
    ("ln_last", "LayerNorm", (5,), {}, (2, 3, 5)),
    ("ln_two_dims", "LayerNorm", ((3, 5),), {}, (2, 3, 5)),
    ("ln_no_bias", "LayerNorm", (4,), {"bias": False}, (2, 4)),
    ("ln_no_affine", "LayerNorm", (4,), {"elementwise_affine": False}, (3, 4)),
    ("gn", "GroupNorm", (2, 4), {}, (2, 4, 3, 3)),
    ("gn_one_group_1d", "GroupNorm", (1, 3), {}, (2, 3, 5)),
    ("gn_no_affine", "GroupNorm", (3, 6), {"affine": False}, (2, 6, 3)),
    ("rms", "RMSNorm", (5,), {}, (2, 3, 5)),
    ("rms_two_dims_eps", "RMSNorm", ((3, 5),), {"eps": 1e-6}, (2, 3, 5)),
    ("rms_no_affine", "RMSNorm", (4,), {"elementwise_affine": False}, (3, 4)),
    ("lrn_2d", "LocalResponseNorm", (3,), {}, (2, 5, 3, 3)),
    ("lrn_1d_even", "LocalResponseNorm", (2,), {"alpha": 0.5, "beta": 0.6, "k": 2.0}, (2, 4, 5)),
    ("lrn_3d", "LocalResponseNorm", (4,), {"alpha": 0.3}, (2, 5, 2, 2, 3)),
]
ALL = RUNNING + OTHERS
IDS = [c[0] for c in ALL]


def make(nn, case, **extra):
    """The module for a case, from tinygradnorm.nn or torch.nn."""
    _, cls, args, kwargs, _ = case
    return getattr(nn, cls)(*args, **kwargs, **extra)


def output_and_input_grad(lib, build, x0, gy, dtype):
    """[y, gx] in float64 of the module ``build(lib.nn)`` (made float64 for dtype float64) on x0 and the output
    gradient gy, both cast to dtype: for comparing float32 runs of either library against a float64 one."""
    import numpy as np
    m = build(lib.nn)
    m = m.double() if dtype == np.float64 else m
    x = lib.tensor(x0.astype(dtype), requires_grad=True)
    y = m(x)
    y.backward(lib.tensor(gy.astype(dtype)))
    return [np.asarray(t, dtype=np.float64) for t in (y.detach().numpy(), x.grad.numpy())]
