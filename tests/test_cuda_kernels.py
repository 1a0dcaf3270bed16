"""The CUDA normalization kernels (backend/cuda_kernels.py) on a GPU: against the array path and against PyTorch.

These need an NVIDIA GPU and skip without one. Until they have passed on a GPU, the backend never selects the
kernels (tests/test_cupy_readiness.py checks that, and compiles their source with NVRTC everywhere).
"""
import numpy as np
import pytest

import tinygradnorm as tg

pytestmark = pytest.mark.skipif(not tg.cuda.is_available(), reason=f"no CUDA device: {tg.cuda.unavailable_reason()}")

CASES = [  # (input shape, axes, parameter shape or None): channels and rows layouts
    ((8, 6, 5, 7), (0, 2, 3), (1, 6, 1, 1)),             # BatchNorm2d
    ((16, 6), (0,), (1, 6)),                              # BatchNorm1d on (N, C): channels with Q = 1
    ((4, 6, 9), (2,), (1, 6, 1)),                         # InstanceNorm1d (weight per channel, S = N*C)
    ((5, 7, 33), (2,), (1, 1, 33)),                       # LayerNorm(33)
    ((3, 300, 1030), (2,), (1, 1, 1030)),                 # LayerNorm with rows longer than a block
]


def _array_path(cp, x, w, b, gy, axes, eps):
    """The reference: the Function's array code on the GPU (CupyBackend.kernels is None)."""
    from tinygradnorm.nn.norm.fused import _standardize, _standardize_backward
    m = int(np.prod([x.shape[a] for a in axes]))
    y, mean, var, inv_std = _standardize(cp, x, w, b, axes, eps, m)
    gx, ggamma, gbeta = _standardize_backward(cp, x, gy, mean, inv_std, w, axes, m, True)
    return y, mean, var, gx, ggamma, gbeta


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, axes, pshape", CASES)
def test_cuda_kernels_match_the_array_path(shape, axes, pshape, dtype):
    import cupy as cp
    from tinygradnorm.backend.cuda_kernels import CudaKernels
    from tinygradnorm.ops._util import sum_to
    rng = np.random.default_rng(0)
    x = cp.asarray((rng.standard_normal(shape) * 3 + 2).astype(dtype))
    gy = cp.asarray(rng.standard_normal(shape).astype(dtype))
    w = cp.asarray(rng.uniform(0.5, 1.5, pshape).astype(dtype))
    b = cp.asarray(rng.standard_normal(pshape).astype(dtype))
    kernels = CudaKernels(cp)
    out = kernels.standardize_forward(x, w, b, axes, 1e-5)
    assert out is not None
    y, mean, var, inv_std, saved = out
    gx, sum_gy, sum_gy_xhat = kernels.standardize_backward(saved, x, gy)
    ry, rmean, rvar, rgx, rggamma, rgbeta = _array_path(cp, x, w, b, gy, axes, 1e-5)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for a, r in ((y, ry), (mean, rmean), (var, rvar), (gx, rgx), (sum_to(sum_gy_xhat, pshape), sum_to(rggamma, pshape)),
                 (sum_to(sum_gy, pshape), sum_to(rgbeta, pshape))):
        np.testing.assert_allclose(cp.asnumpy(a), cp.asnumpy(r), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape, axes, pshape", CASES)
def test_cuda_kernels_give_the_same_bits_every_run(shape, axes, pshape):
    import cupy as cp
    from tinygradnorm.backend.cuda_kernels import CudaKernels
    x = cp.asarray(np.random.default_rng(1).standard_normal(shape).astype("float32"))
    gy = cp.ones_like(x)
    w = cp.ones(pshape, dtype=x.dtype)
    kernels = CudaKernels(cp)
    seen = set()
    for _ in range(3):
        y, *_, saved = kernels.standardize_forward(x, w, w, axes, 1e-5)
        gx, sum_gy, sum_gy_xhat = kernels.standardize_backward(saved, x, gy)
        seen.add(b"".join(cp.asnumpy(a).tobytes() for a in (y, gx, sum_gy, sum_gy_xhat)))
    assert len(seen) == 1
