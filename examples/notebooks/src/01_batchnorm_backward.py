# %% [markdown]
# # Exercise 1: batch norm backward, by hand
#
# Batch norm's forward pass is six small steps (docs/normalization.md, section 1). Here you
# walk them backward yourself, one gradient at a time, and a checker compares each one with
# what autograd gets for the same graph. Then you simplify the steps into the closed form,
# and finally you put it in a `Function` of your own and let `gradcheck` judge it.
#
# Fill in every line marked `TODO`, run the checker cell below it, and read its table: it
# names the first gradient that disagrees, so you know which step to look at.

# %%
import numpy as np
import tinygradnorm as tg
from tinygradnorm.autograd import Function
from tinygradnorm.testing import check_steps, compare

rng = np.random.default_rng(0)
m, c, eps = 8, 3, 1e-5                       # m values per channel, c channels
x = rng.standard_normal((m, c)) * 2 + 1
gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
gy = rng.standard_normal((m, c))             # the gradient arriving at the output y

# The forward pass in NumPy: the six steps, with the names the docs use.
mean = x.mean(axis=0)                        # 1
centred = x - mean                           # 2
var = (centred ** 2).mean(axis=0)            # 3 (biased: divide by m)
inv_std = (var + eps) ** -0.5                # 4
x_hat = centred * inv_std                    # 5
y = gamma * x_hat + beta                     # 6

# The reference: the same six steps as tinygradnorm ops, and autograd's gradient of each.
def staged(x, gamma, beta):
    steps = {}
    steps["mean"] = x.mean(dim=0)
    steps["centred"] = x - steps["mean"]
    steps["var"] = (steps["centred"] * steps["centred"]).mean(dim=0)
    steps["inv_std"] = (steps["var"] + eps).rsqrt()
    steps["x_hat"] = steps["centred"] * steps["inv_std"]
    y = gamma * steps["x_hat"] + beta
    for t in steps.values():
        t.retain_grad()
    return y, steps

tx, tgamma, tbeta = (tg.tensor(a, requires_grad=True) for a in (x, gamma, beta))
ty, tsteps = staged(tx, tgamma, tbeta)
ty.backward(tg.tensor(gy))
reference = {"dbeta": tbeta.grad, "dgamma": tgamma.grad, "dx_hat": tsteps["x_hat"].grad,
             "dinv_std": tsteps["inv_std"].grad, "dvar": tsteps["var"].grad,
             "dcentred": tsteps["centred"].grad, "dmean": tsteps["mean"].grad, "dx": tx.grad}
print("forward matches:", np.allclose(ty.numpy(), y))

# %% [markdown]
# ## 1. Step by step
#
# Go backward through steps 6 to 1. Each local derivative is one line; where a value feeds
# two later steps (`centred` feeds both `var` and `x_hat`), its gradient is the sum over both
# paths. Sums run over the batch axis, `axis=0`.

# %%
# BEGIN SOLUTION
dbeta = gy.sum(axis=0)  # step 6: y = gamma * x_hat + beta
dgamma = (gy * x_hat).sum(axis=0)  # step 6 again
dx_hat = gy * gamma  # step 6, towards x_hat
dinv_std = (dx_hat * centred).sum(axis=0)  # step 5: x_hat = centred * inv_std
dvar = dinv_std * -0.5 * (var + eps) ** -1.5  # step 4: inv_std = (var + eps) ** -0.5
dcentred = dx_hat * inv_std + dvar * 2 * centred / m  # steps 5 and 3: two paths meet here
dmean = -dcentred.sum(axis=0)  # step 2: centred = x - mean
dx = dcentred + dmean / m  # steps 2 and 1: two paths meet again
# END SOLUTION

# %%
check_steps({"dbeta": dbeta, "dgamma": dgamma, "dx_hat": dx_hat, "dinv_std": dinv_std, "dvar": dvar,
             "dcentred": dcentred, "dmean": dmean, "dx": dx}, reference)

# %% [markdown]
# ## 2. The closed form
#
# Substitute your steps into each other. Because `Σ centred = 0`, the `dvar` path drops out
# of `dmean`, and everything collapses to two sums per channel:
#
#     gx = (inv_std / m) (m g_hat - Σ g_hat - x_hat Σ (g_hat x_hat)),    g_hat = gamma gy
#
# Write it in one line (no intermediate gradients).

# %%
g_hat = gamma * gy
# BEGIN SOLUTION
dx_closed = (inv_std / m) * (m * g_hat - g_hat.sum(axis=0) - x_hat * (g_hat * x_hat).sum(axis=0))  # the formula above
# END SOLUTION

# %%
check_steps({"dx": dx_closed}, reference)

# %% [markdown]
# ## 3. Your own Function
#
# A `Function` gets arrays in `forward`, keeps what backward needs, and returns one gradient
# per input in `backward`. Fill in backward with the closed form, and the parameter gradients.
# `gradcheck` compares it with finite differences in float64.

# %%
class MyBatchNorm(Function):
    def forward(self, x, gamma, beta):
        self.m = x.shape[0]
        self.mean = x.mean(axis=0)
        self.inv_std = ((x - self.mean) ** 2).mean(axis=0) + eps
        self.inv_std = self.inv_std ** -0.5
        self.x_hat = (x - self.mean) * self.inv_std
        self.gamma = gamma
        return gamma * self.x_hat + beta

    def backward(self, gy):
        m, x_hat, inv_std = self.m, self.x_hat, self.inv_std
        g_hat = self.gamma * gy
        # BEGIN SOLUTION
        gx = (inv_std / m) * (m * g_hat - g_hat.sum(axis=0) - x_hat * (g_hat * x_hat).sum(axis=0))  # the closed form
        ggamma = (gy * x_hat).sum(axis=0)  # Σ gy x_hat
        gbeta = gy.sum(axis=0)  # Σ gy
        # END SOLUTION
        return gx, ggamma, gbeta

# %%
ok = tg.gradcheck(MyBatchNorm.apply, (tg.tensor(x, requires_grad=True), tg.tensor(gamma, requires_grad=True),
                                      tg.tensor(beta, requires_grad=True)))
print("gradcheck passes:", ok)
compare("y", MyBatchNorm.apply(tx, tgamma, tbeta).numpy(), y)
