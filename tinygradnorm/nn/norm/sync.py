"""SyncBatchNorm: batch norm whose statistics cover the whole batch, shared out over the processes of a
distributed job (docs/normalization.md, section 8).

Forward: each rank finds its count, mean and centred sum of squares per channel (two-pass, float64); one
all-gather brings every rank's three to every rank, which combine them in rank order by the pairwise
formula of Chan, Golub and LeVeque, never through E[x²] - E[x]² (distributed.gather_moments). A rank may hold any number of examples,
none or one included: the global statistics weight each rank by its count.

Backward: the closed form of section 1 needs only two sums per channel over the whole batch, Σgy and
Σ(gy·x_hat), so one all-reduce of 2·C numbers is all the backward communicates. The double backward
(SyncStandardizeBackward) is batch norm's with global means, through a differentiable all-reduce. The weight's and bias's
gradients are this rank's own sums: DistributedDataParallel averages them with the other ranks' like every
other parameter's.

Outside an initialized process group (or with one process), and in eval mode, it is exactly BatchNorm.
"""
import math

from ... import distributed as dist
from ...autograd import Function
from ...ops._util import sum_to
from .functional import _check_dtypes, _check_eps, _check_vector, _update_running
from .fused import Standardize, _double_backward
from .modules import _BatchNorm, _attr


class SyncStandardize(Function):
    """Batch norm's standardization (axes: all but 1) with statistics over every rank's batch; also returns the
    global mean and unbiased variance (without a gradient), for the running statistics."""

    non_differentiable = (1, 2)

    def forward(self, x, *params, eps, has_weight, has_bias, param_shape):
        xp = self.xp
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        f64 = xp.float64
        axes = (0,) + tuple(range(2, x.ndim))
        n_local = math.prod(x.shape[a] for a in axes)
        # This rank's count, mean and centred sum of squares per channel (corrected two-pass, float64).
        c = x.shape[1]
        if n_local:
            mean = x.sum(axis=axes, dtype=f64) / n_local
            centred = x.astype(f64) - mean.reshape(param_shape)
            shift = centred.sum(axis=axes) / n_local
            m2 = xp.maximum(xp.square(centred).sum(axis=axes) - n_local * shift * shift, 0)
            mean = mean + shift
        else:
            mean, m2 = xp.zeros(c, dtype=f64), xp.zeros(c, dtype=f64)
        # Every rank's three, combined in rank order (one all-gather of 3·C numbers).
        n, mean, m2 = dist.gather_moments(n_local, mean, m2)
        n, mean, m2 = xp.asarray(n), xp.asarray(mean), xp.asarray(m2)
        m = int(n[0])
        if m <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {m} over all ranks (input "
                             f"size {tuple(x.shape)} on this rank)")
        var = m2 / m                                             # biased: the batch is normalized with it
        inv_std = (1 / xp.sqrt(var + eps)).reshape(param_shape)
        mean_b = mean.reshape(param_shape)
        x_hat = (x - mean_b.astype(x.dtype)) * inv_std.astype(x.dtype)
        y = x_hat if weight is None else x_hat * weight.reshape(param_shape)
        if bias is not None:
            y = y + bias.reshape(param_shape)
        self.save_for_backward(x, weight, mean_b, inv_std)
        self.m, self.axes, self.eps, self.view, self.param_shape = m, axes, eps, None, param_shape
        self.has_bias, self.param_shapes = has_bias, [p.shape for p in params]
        return y.astype(x.dtype, copy=False), mean, m2 / (m - 1)

    def backward(self, gy, *_):
        x, weight, mean, inv_std = self.saved
        return self._per_input(_sync_grads(self.xp, x, gy, weight, mean, inv_std, self.m, self.axes,
                                           self.param_shape, self._needs()))

    def gradient(self, gy, *_):
        x, weight = self.saved_tensors[:2]
        mean, inv_std = self.saved[2:]
        grads = SyncStandardizeBackward.apply(x, gy, *([weight] if weight is not None else []), mean=mean,
                                              inv_std=inv_std, m=self.m, axes=self.axes, eps=self.eps,
                                              param_shape=self.param_shape, needs=self._needs())
        return self._per_input(grads)

    _needs = Standardize._needs
    _per_input = Standardize._per_input


def _sync_grads(xp, x, gy, weight, mean, inv_std, m, axes, param_shape, needs):
    """(gx, ggamma, gbeta) of SyncStandardize: the closed form of section 1 with Σgy and Σ(gy·x_hat) over every
    rank (one all-reduce of 2·C numbers); ggamma and gbeta are this rank's own sums (DDP averages them)."""
    f64 = xp.float64
    x_hat = (x - mean.astype(x.dtype)) * inv_std.astype(x.dtype)
    sum_gy, sum_gy_xhat = dist.all_reduce_sums(gy.sum(axis=axes, dtype=f64), (gy * x_hat).sum(axis=axes, dtype=f64))
    sum_gy = xp.asarray(sum_gy).reshape(param_shape)
    sum_gy_xhat = xp.asarray(sum_gy_xhat).reshape(param_shape)
    scale = inv_std if weight is None else inv_std * weight.reshape(param_shape)
    # gx = inv_std·weight·(gy - (Σgy + x_hat·Σ(gy·x_hat)) / m), with the sums and m over every rank
    gx = scale.astype(x.dtype) * (gy - ((sum_gy + x_hat * sum_gy_xhat) / m).astype(x.dtype)) if needs[0] else None
    ggamma = sum_to(gy * x_hat, param_shape) if needs[1] else None
    gbeta = sum_to(gy, param_shape) if needs[2] else None
    return gx, ggamma, gbeta


class SyncStandardizeBackward(Function):
    """SyncStandardize's backward as an op: (x, gy[, weight]) -> (gx, ggamma, gbeta). Its gradient is batch norm's
    double backward (docs section 9) with every mean taken over all ranks' examples: the per-rank sums go through
    a differentiable all-reduce (AllReduceSum), so the third and higher orders are right on every rank too."""

    def forward(self, x, gy, *weight, mean, inv_std, m, axes, eps, param_shape, needs):
        weight = weight[0] if weight else None
        self.save_for_backward(x, gy, weight, mean, inv_std)
        self.m, self.axes, self.eps, self.view, self.param_shape = m, axes, eps, None, param_shape
        return _sync_grads(self.xp, x, gy, weight, mean, inv_std, m, axes, param_shape, needs)

    def average(self, a):
        """The mean over every rank's examples, per channel, of a Tensor: its local sums, all-reduced."""
        return AllReduceSum.apply(a.sum(self.axes, keepdim=True)) / self.m

    def gradient(self, u, v, w):
        x, gy, weight = self.saved_tensors[:3]
        mean, inv_std = self.saved[3:]
        return _double_backward(self, x, gy, weight, u, v, w, mean, inv_std, centred=True)


class AllReduceSum(Function):
    """The sum of a tensor over every rank, on every rank. Each rank's loss depends on the sum, so the gradient is
    the all-reduce of the gradients: the op is its own adjoint, and differentiable to any order."""

    def forward(self, a):
        return self.xp.asarray(dist.all_reduce_sums(a)[0]).astype(a.dtype, copy=False)

    def backward(self, g):
        return self.xp.asarray(dist.all_reduce_sums(g)[0]).astype(g.dtype, copy=False)

    def gradient(self, g):
        return AllReduceSum.apply(g)


class SyncBatchNorm(_BatchNorm):
    """Batch norm with statistics over the whole batch of a distributed job, as torch.nn.SyncBatchNorm.

    Arguments, defaults, buffers and state_dict keys are BatchNorm's; ``process_group`` must be None (the
    default group). Without an initialized process group, with one process, or in eval mode, it computes
    exactly what BatchNorm does.
    """

    _function = "sync_batch_norm"
    _dims = (2, 3, 4, 5)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        if process_group is not None:
            raise ValueError("SyncBatchNorm: only the default process group is supported; pass process_group=None")
        self.process_group = None

    def forward(self, input):
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        running_mean, running_var, factor = self._start(input)
        c = input.data.shape[1]
        weight, bias = _attr(self, "_parameters", "weight"), _attr(self, "_parameters", "bias")
        for what, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                        ("running_var", running_var)):
            _check_vector("sync_batch_norm", what, t, c, input)
        _check_dtypes("sync_batch_norm", input, weight, bias, running_mean, running_var)
        _check_eps("sync_batch_norm", self.eps)
        params = [p for p in (weight, bias) if p is not None]
        shape = (1, c) + (1,) * (input.data.ndim - 2)
        y, mean, var_unbiased = SyncStandardize.apply(input, *params, eps=self.eps, has_weight=weight is not None,
                                                      has_bias=bias is not None, param_shape=shape)
        if self.track_running_stats:
            _update_running(running_mean, running_var, mean.data, var_unbiased.data, factor)
        return y

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """module with every BatchNorm1d/2d/3d inside it replaced by a SyncBatchNorm holding the same parameters
        and buffers (as torch.nn.SyncBatchNorm.convert_sync_batchnorm). A BatchNorm given directly comes back
        converted; the containers are changed in place and returned."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      process_group)
            for name, p in module._parameters.items():
                out._parameters[name] = p
            for name, b in module._buffers.items():
                out._buffers[name] = b
            out.train(module.training)
            return out
        for name, child in list(module._modules.items()):
            converted = cls.convert_sync_batchnorm(child, process_group)
            if converted is not child:
                module._modules[name] = converted
        return module


