# %% [markdown]
# # Exercise 2: LayerNorm, GroupNorm and InstanceNorm are batch norm over other axes
#
# Nothing in the batch-norm derivation cares which axes a statistic covers, only that each
# statistic has `m` elements (docs/normalization.md, section 2). So one forward and one
# backward, written for *any* axes, give you every one of these layers.
#
# Write them once, then say which axes each layer reduces over. The checker compares your
# outputs and input gradients with tinygradnorm's layers and names the first that disagrees.

# %%
import numpy as np
import tinygradnorm as tg
import tinygradnorm.nn.functional as F
from tinygradnorm.testing import check_steps

rng = np.random.default_rng(1)
n, c, h, w, groups, eps = 4, 6, 3, 5, 3, 1e-5
x = rng.standard_normal((n, c, h, w)) * 3 + 2
gy = rng.standard_normal((n, c, h, w))

def reference(layer):
    """tinygradnorm's output and input gradient for one of the four layers (no affine parameters)."""
    tx = tg.tensor(x, requires_grad=True)
    y = {"batch": lambda t: F.batch_norm(t, None, None, training=True, eps=eps),
         "instance": lambda t: F.instance_norm(t, eps=eps),
         "layer": lambda t: F.layer_norm(t, (c, h, w), eps=eps),
         "group": lambda t: F.group_norm(t, groups, eps=eps)}[layer](tx)
    y.backward(tg.tensor(gy))
    return y.numpy(), tx.grad.numpy()

# %% [markdown]
# ## 1. Standardize over any axes, forward and backward
#
# With `keepdims=True` the statistics broadcast back against `x`. `m` is the number of
# elements behind each statistic: the product of the sizes of `axes`.

# %%
def standardize(x, axes):
    """(y, x_hat, inv_std, m): x standardized over axes (biased variance, no affine)."""
    # BEGIN SOLUTION
    m = int(np.prod([x.shape[a] for a in axes]))  # elements per statistic
    mean = x.mean(axis=axes, keepdims=True)  # step 1
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)  # steps 2-3
    inv_std = (var + eps) ** -0.5  # step 4
    x_hat = (x - mean) * inv_std  # step 5
    # END SOLUTION
    return x_hat, x_hat, inv_std, m

def standardize_backward(gy, x_hat, inv_std, m, axes):
    """gx by the closed form (no affine, so g_hat = gy)."""
    # BEGIN SOLUTION
    gx = (inv_std / m) * (m * gy - gy.sum(axis=axes, keepdims=True) - x_hat * (gy * x_hat).sum(axis=axes, keepdims=True))  # closed form
    # END SOLUTION
    return gx

# %% [markdown]
# ## 2. Which axes?
#
# `x` is (N, C, H, W). Give the axes each layer reduces over. GroupNorm first reshapes to
# (N, G, C/G, H, W), so its axes refer to that shape.

# %%
# BEGIN SOLUTION
axes_batch = (0, 2, 3)  # per channel, over the batch and the pixels
axes_instance = (2, 3)  # per sample and channel, over the pixels
axes_layer = (1, 2, 3)  # per sample, over everything else
axes_group = (2, 3, 4)  # per sample and group, over the group's channels and pixels
# END SOLUTION

# %%
mine, ref = {}, {}
for layer, axes in (("batch", axes_batch), ("instance", axes_instance), ("layer", axes_layer),
                    ("group", axes_group)):
    xs = x.reshape(n, groups, c // groups, h, w) if layer == "group" else x
    gs = gy.reshape(xs.shape)
    if axes is None:
        mine[f"{layer} y"] = mine[f"{layer} gx"] = None
    else:
        y, x_hat, inv_std, m = standardize(xs, axes)
        mine[f"{layer} y"] = None if y is None else y.reshape(x.shape)
        gx = None if x_hat is None else standardize_backward(gs, x_hat, inv_std, m, axes)
        mine[f"{layer} gx"] = None if gx is None else gx.reshape(x.shape)
    ref[f"{layer} y"], ref[f"{layer} gx"] = reference(layer)
check_steps(mine, ref)
