"""CUDA kernels for the normalization layers: the closed forms of docs/normalization.md, one block per statistic.

NOT YET VERIFIED ON A GPU, and so not selectable: ``CupyBackend.kernels`` stays None, and every op on a
CuPy array runs its array code. The sources compile with NVRTC (tests/test_cupy_readiness.py compiles them
for compute_90 without a GPU); tests/test_cuda_kernels.py compares them with the array path and with
PyTorch on a GPU, and only once it has passed there may the backend offer them.

The maths is that of backend/cpu_kernels/norm.py, laid out for a GPU:

- ``channels_forward`` / ``channels_backward``: x viewed as (P, S, Q), one block per statistic s over
  x[:, s, :] (BatchNorm, InstanceNorm, and LayerNorm/GroupNorm without affine). Statistics are float64,
  corrected two-pass; the block reduces in shared memory in a fixed tree order, so the result does not
  depend on scheduling. The elementwise pass runs in the input's type around centre = the mean rounded
  to it, with a float64 fallback where a factor leaves the type's range (docs section 7).
- ``rows_forward`` / ``rows_backward``: x viewed as (S, K), one block per row, weight and bias per element
  (LayerNorm); ``rows_param_grads``: one thread per column, summing its rows in order (no atomics, so the
  same bits every run).
- ``frozen_forward``: eval mode, one thread per element.
"""
import math

from .cpu_kernels.norm import _layout

BLOCK = 256                  # threads per block: a power of two, for the shared-memory tree reduction

SOURCE = r"""
#define BLOCK 256

__device__ double block_sum(double v, double* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int k = BLOCK / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) sh[threadIdx.x] += sh[threadIdx.x + k];
        __syncthreads();
    }
    double total = sh[0];
    __syncthreads();
    return total;
}

__device__ bool fits(double a) {          // a, and products of the loop's factors, stay in T's range
    return a == 0.0 || (fabs(a) > 1e-30 && fabs(a) < 1e30);
}

extern "C" __global__ void channels_forward(const T* x, const T* weight, const T* bias, double eps, T* y,
                                            double* mean, double* var, double* inv_std,
                                            long long P, long long S, long long Q) {
    __shared__ double sh[BLOCK];
    const long long s = blockIdx.x, m = P * Q;
    double total = 0.0;
    for (long long e = threadIdx.x; e < m; e += BLOCK)
        total += (double)x[((e / Q) * S + s) * Q + e % Q];
    double mu = block_sum(total, sh) / m;                                   // step 1: mean
    double sum_c = 0.0, sum_cc = 0.0;
    for (long long e = threadIdx.x; e < m; e += BLOCK) {
        double c = (double)x[((e / Q) * S + s) * Q + e % Q] - mu;           // step 2: centred
        sum_c += c;
        sum_cc += c * c;
    }
    sum_c = block_sum(sum_c, sh);
    sum_cc = block_sum(sum_cc, sh);
    double shift = sum_c / m;                                               // corrected two-pass
    double v = fmax(sum_cc / m - shift * shift, 0.0);                       // step 3
    mu += shift;
    double inv = 1.0 / sqrt(v + eps);                                       // step 4
    T centre = (T)mu;                                                       // steps 5-6:
    double sc = inv * (double)weight[s];                                    // y = (x - centre) * scale + offset
    T scale = (T)sc;
    T offset = (T)((double)bias[s] - (mu - (double)centre) * sc);
    for (long long e = threadIdx.x; e < m; e += BLOCK) {
        long long i = ((e / Q) * S + s) * Q + e % Q;
        y[i] = (x[i] - centre) * scale + offset;
    }
    if (threadIdx.x == 0) { mean[s] = mu; var[s] = v; inv_std[s] = inv; }
}

extern "C" __global__ void channels_backward(const T* x, const T* gy, const double* mean, const double* inv_std,
                                             const T* weight, T* gx, double* sum_gy, double* sum_gy_xhat,
                                             long long P, long long S, long long Q) {
    __shared__ double sh[BLOCK];
    const long long s = blockIdx.x, m = P * Q;
    const double mu = mean[s], inv = inv_std[s];
    double sg = 0.0, sgc = 0.0;
    for (long long e = threadIdx.x; e < m; e += BLOCK) {
        long long i = ((e / Q) * S + s) * Q + e % Q;
        double g = (double)gy[i];
        sg += g;                                                            // Σgy
        sgc += g * ((double)x[i] - mu);                                     // Σgy·(x - mean)
    }
    sg = block_sum(sg, sh);
    sgc = block_sum(sgc, sh);
    // gx = scale·gy + a·(x - mean) + k, with scale = inv_std·weight (docs section 7)
    double sc = inv * (double)weight[s];
    double a = -sc * inv * inv * sgc / m;
    double k = -sc * sg / m;
    if (fits(a)) {
        T centre = (T)mu, scale = (T)sc, a_t = (T)a, k_t = (T)(k - a * (mu - (double)centre));
        for (long long e = threadIdx.x; e < m; e += BLOCK) {
            long long i = ((e / Q) * S + s) * Q + e % Q;
            gx[i] = scale * gy[i] + a_t * (x[i] - centre) + k_t;
        }
    } else {
        for (long long e = threadIdx.x; e < m; e += BLOCK) {
            long long i = ((e / Q) * S + s) * Q + e % Q;
            gx[i] = (T)(sc * (double)gy[i] + a * ((double)x[i] - mu) + k);
        }
    }
    if (threadIdx.x == 0) { sum_gy[s] = sg; sum_gy_xhat[s] = sgc * inv; }
}

extern "C" __global__ void rows_forward(const T* x, const T* weight, const T* bias, double eps, T* y,
                                        double* mean, double* var, double* inv_std, long long S, long long K) {
    __shared__ double sh[BLOCK];
    const long long s = blockIdx.x;
    const T* row = x + s * K;
    double total = 0.0;
    for (long long k = threadIdx.x; k < K; k += BLOCK) total += (double)row[k];
    double mu = block_sum(total, sh) / K;                                   // step 1
    double sum_c = 0.0, sum_cc = 0.0;
    for (long long k = threadIdx.x; k < K; k += BLOCK) {
        double c = (double)row[k] - mu;                                     // step 2
        sum_c += c;
        sum_cc += c * c;
    }
    sum_c = block_sum(sum_c, sh);
    sum_cc = block_sum(sum_cc, sh);
    double shift = sum_c / K;
    double v = fmax(sum_cc / K - shift * shift, 0.0);                       // step 3
    mu += shift;
    double inv = 1.0 / sqrt(v + eps);                                       // step 4
    T centre = (T)mu, d = (T)(mu - (double)centre), inv_t = (T)inv;
    for (long long k = threadIdx.x; k < K; k += BLOCK)                      // steps 5-6
        y[s * K + k] = ((row[k] - centre) - d) * inv_t * weight[k] + bias[k];
    if (threadIdx.x == 0) { mean[s] = mu; var[s] = v; inv_std[s] = inv; }
}

extern "C" __global__ void rows_backward(const T* x, const T* gy, const double* mean, const double* inv_std,
                                         const T* weight, T* gx, long long S, long long K) {
    __shared__ double sh[BLOCK];
    const long long s = blockIdx.x;
    const double mu = mean[s], inv = inv_std[s];
    double s1 = 0.0, s2 = 0.0;
    for (long long k = threadIdx.x; k < K; k += BLOCK) {
        double g_hat = (double)gy[s * K + k] * (double)weight[k];           // g_hat = weight·gy
        s1 += g_hat;                                                        // Σg_hat
        s2 += g_hat * ((double)x[s * K + k] - mu);                          // Σg_hat·(x - mean)
    }
    s1 = block_sum(s1, sh);
    s2 = block_sum(s2, sh);
    double a = -inv * inv * inv * s2 / K;                                   // gx = (inv_std·weight)·gy + a·(x - mean) + k
    double kk = -inv * s1 / K;
    if (fits(a)) {
        T centre = (T)mu, inv_t = (T)inv, a_t = (T)a, k_t = (T)(kk - a * (mu - (double)centre));
        for (long long k = threadIdx.x; k < K; k += BLOCK)
            gx[s * K + k] = inv_t * weight[k] * gy[s * K + k] + a_t * (x[s * K + k] - centre) + k_t;
    } else {
        for (long long k = threadIdx.x; k < K; k += BLOCK)
            gx[s * K + k] = (T)(inv * (double)weight[k] * (double)gy[s * K + k] + a * ((double)x[s * K + k] - mu) + kk);
    }
}

extern "C" __global__ void rows_param_grads(const T* x, const T* gy, const double* mean, const double* inv_std,
                                            double* ggamma, double* gbeta, long long S, long long K) {
    const long long k = (long long)blockIdx.x * BLOCK + threadIdx.x;
    if (k >= K) return;
    double g1 = 0.0, g2 = 0.0;
    for (long long s = 0; s < S; ++s) {                                     // rows in order: the same bits every run
        double g = (double)gy[s * K + k];
        g1 += g;                                                            // gbeta = Σ gy
        g2 += g * ((double)x[s * K + k] - mean[s]) * inv_std[s];            // ggamma = Σ gy·x_hat
    }
    gbeta[k] = g1;
    ggamma[k] = g2;
}

extern "C" __global__ void frozen_forward(const T* x, const T* centre, const T* scale, const T* offset, T* y,
                                          long long n, long long S, long long Q) {
    const long long i = (long long)blockIdx.x * BLOCK + threadIdx.x;
    if (i >= n) return;
    const long long s = (i / Q) % S;
    y[i] = (x[i] - centre[s]) * scale[s] + offset[s];                       // (x - mean) * inv_std * weight + bias
}
"""

KERNELS = ("channels_forward", "channels_backward", "rows_forward", "rows_backward", "rows_param_grads",
           "frozen_forward")
TYPES = {"float32": "float", "float64": "double"}


def source(dtype_name):
    """The CUDA source for one element type ('float32' or 'float64')."""
    return f"typedef {TYPES[dtype_name]} T;\n" + SOURCE


class CudaKernels:
    """The kernels above behind the interface of the CPU's NormKernels (standardize_forward, ...), for CuPy arrays.

    Unverified: constructed only by tests/test_cuda_kernels.py on a GPU, never by the backend.
    """

    def __init__(self, cupy):
        self.cp = cupy
        self._modules = {}

    def _kernel(self, dtype, name):
        key = dtype.name
        if key not in self._modules:
            self._modules[key] = self.cp.RawModule(code=source(key), options=("-std=c++11",))
        return self._modules[key].get_function(name)

    def _launch(self, dtype, name, blocks, args):
        """Run a kernel on `blocks` blocks; Python ints go in as long long and floats as double."""
        cp = self.cp
        args = tuple(cp.int64(a) if isinstance(a, int) else cp.float64(a) if isinstance(a, float) else a for a in args)
        self._kernel(dtype, name)((int(blocks),), (BLOCK,), args)

    def standardize_forward(self, x, weight, bias, axes, eps, param_shape=None):
        cp = self.cp
        if param_shape is not None:                     # flat parameters, and the shape that broadcasts them
            weight, bias = (None if t is None else t.reshape(param_shape) for t in (weight, bias))
        params = [(1,) * (x.ndim - t.ndim) + tuple(t.shape) for t in (weight, bias) if t is not None]
        layout = _layout(x.shape, axes, params)
        if layout is None or layout.kind not in ("channels", "rows") or layout.groups != 1 or x.dtype.name not in TYPES:
            return None
        x = cp.ascontiguousarray(x)
        stat_shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
        n_stats = math.prod(stat_shape)
        y = cp.empty_like(x)
        mean, var, inv_std = (cp.empty(n_stats, dtype=cp.float64) for _ in range(3))
        if layout.kind == "channels":
            p, s, q = layout.view
            w = _vector(cp, weight, stat_shape, 1, x.dtype)
            b = _vector(cp, bias, stat_shape, 0, x.dtype)
            self._launch(x.dtype, "channels_forward", s, (x, w, b, float(eps), y, mean, var, inv_std, p, s, q))
        else:
            s, k = layout.view
            w = _flat(cp, weight, k, 1, x.dtype)
            b = _flat(cp, bias, k, 0, x.dtype)
            self._launch(x.dtype, "rows_forward", s, (x, w, b, float(eps), y, mean, var, inv_std, s, k))
        shaped = (a.reshape(stat_shape) for a in (mean, var, inv_std))
        return (y, *shaped, (layout, w, mean, inv_std, stat_shape))

    def standardize_backward(self, saved, x, gy):
        cp = self.cp
        layout, w, mean, inv_std, stat_shape = saved
        x, gy = cp.ascontiguousarray(x), cp.ascontiguousarray(gy, dtype=x.dtype)
        gx = cp.empty_like(x)
        if layout.kind == "channels":
            p, s, q = layout.view
            sum_gy, sum_gy_xhat = cp.empty(s, dtype=cp.float64), cp.empty(s, dtype=cp.float64)
            self._launch(x.dtype, "channels_backward", s, (x, gy, mean, inv_std, w, gx, sum_gy, sum_gy_xhat, p, s, q))
            return gx, sum_gy.reshape(stat_shape), sum_gy_xhat.reshape(stat_shape)
        s, k = layout.view
        self._launch(x.dtype, "rows_backward", s, (x, gy, mean, inv_std, w, gx, s, k))
        ggamma, gbeta = cp.empty(k, dtype=cp.float64), cp.empty(k, dtype=cp.float64)
        self._launch(x.dtype, "rows_param_grads", -(-k // BLOCK), (x, gy, mean, inv_std, ggamma, gbeta, s, k))
        shape = layout.sums_shape
        return gx, gbeta.reshape(shape), ggamma.reshape(shape)


def _vector(cp, t, stat_shape, fill, dtype):
    if t is None:
        return cp.full(math.prod(stat_shape), fill, dtype=dtype)
    return cp.ascontiguousarray(cp.broadcast_to(t, stat_shape), dtype=dtype).reshape(-1)


def _flat(cp, t, k, fill, dtype):
    return cp.full(k, fill, dtype=dtype) if t is None else cp.ascontiguousarray(t, dtype=dtype).reshape(k)
