# %% [markdown]
# # Exercise 4: batch norm's double backward, by hand
#
# A gradient penalty, a Hessian-vector product or MAML differentiates a gradient, so somewhere a *backward*
# gets differentiated. For batch norm that is a formula of its own, the double backward
# (docs/normalization.md, section 9). Here you derive it: the gradients of
#
#     L = Σ gx u + Σ ggamma v + Σ gbeta w
#
# with respect to gy, γ and x, where `gx`, `ggamma`, `gbeta` are batch norm's backward for the output
# gradient `gy`, and `u`, `v`, `w` are the gradients that arrive at them. A checker compares each of your
# steps with autograd through the composite twin (batch norm written in primitive ops, whose every
# derivative autograd finds). Then you wrap the closed form in a differentiable Function and let
# `gradgradcheck` judge it, see why eval mode leaves only cross terms, and why batch norm and a
# per-example gradient penalty do not mix.
#
# Fill in every line marked `TODO` and run the checker below it: it names the first step that disagrees.

# %%
import numpy as np
import tinygradnorm as tg
from tinygradnorm import nn
from tinygradnorm.autograd import Function
from tinygradnorm.testing import check_steps

rng = np.random.default_rng(0)
m, c, eps = 8, 3, 1e-5                      # m values per channel, c channels
x = rng.standard_normal((m, c)) * 2 + 1
gamma = rng.uniform(0.5, 1.5, c)
gy = rng.standard_normal((m, c))            # the output's gradient: an *input* of the double backward
u = rng.standard_normal((m, c))             # the gradient arriving at gx
v, w = rng.standard_normal(c), rng.standard_normal(c)      # ... at ggamma and at gbeta

def avg(a):
    """⟨a⟩: the mean over a statistic's m values (the batch axis), kept for broadcasting."""
    return a.mean(axis=0, keepdims=True)

# The forward and the first backward, as in exercise 1, in the docs' names.
inv_std = (x.var(axis=0) + eps) ** -0.5
x_hat = (x - x.mean(axis=0)) * inv_std
g_hat = gamma * gy

def P(a):
    """The projection of section 9: a minus its mean, minus its component along x_hat."""
    return a - avg(a) - x_hat * avg(a * x_hat)

gx = inv_std * P(g_hat)                     # section 1's closed form, written with P

# The reference: autograd through the composite twin, with create_graph=True so the backward has a graph.
def reference(training):
    bn = nn.BatchNorm1d(c, impl="composite").double()
    bn.weight.data[...] = gamma
    if not training:
        bn.running_mean.data[...], bn.running_var.data[...] = x.mean(axis=0) + 0.5, x.var(axis=0) * 1.5
        bn.eval()
    tx, tgy = tg.tensor(x, requires_grad=True), tg.tensor(gy, requires_grad=True)
    t_gx, t_ggamma, t_gbeta = tg.autograd.grad(bn(tx), (tx, bn.weight, bn.bias), tgy, create_graph=True)
    L_u, L_v = (t_gx * tg.tensor(u)).sum(), (t_ggamma * tg.tensor(v)).sum()
    L = L_u + L_v + (t_gbeta * tg.tensor(w)).sum()
    d_gy, d_gamma, d_x = tg.autograd.grad(L, (tgy, bn.weight, tx), retain_graph=True)
    return {"gx": t_gx, "dgy": d_gy, "dgamma": d_gamma, "dx": d_x,
            "dx_from_gx": tg.autograd.grad(L_u, tx, retain_graph=True, materialize_grads=True)[0],
            "dx_from_ggamma": tg.autograd.grad(L_v, tx, allow_unused=True, materialize_grads=True)[0], "bn": bn}

ref = reference(training=True)
print("the first backward matches:", np.allclose(gx, ref["gx"].numpy()))

# %% [markdown]
# ## 1. With respect to gy and γ
#
# Every term of L is linear in gy. The first one is `Σ inv_std P(γ gy) u`; P is self-adjoint
# (`Σ P(a) b = Σ a P(b)`), so it equals `Σ gy γ inv_std P(u)`. The other two are `Σ gy x_hat v` and
# `Σ gy w`. And γ appears only in the first term, through g_hat.

# %%
# BEGIN SOLUTION
P_u = P(u)  # the projection, applied to u
dgy = gamma * inv_std * P_u + x_hat * v + w  # three terms, one per upstream gradient
dgamma = (gy * inv_std * P_u).sum(axis=0)  # only gx depends on gamma, through g_hat = gamma * gy
# END SOLUTION

# %%
check_steps({"dgy": dgy, "dgamma": dgamma}, ref)

# %% [markdown]
# ## 2. With respect to x
#
# Two facts: the Jacobian of x_hat is P again (`Σ_j c_j ∂x_hat_j/∂x_i = inv_std P(c)_i`), and
# `∂inv_std/∂x_i = -inv_std² x_hat_i / m`.
#
# - The ggamma term, `Σ (gy v) x_hat`, depends on x only through x_hat: the first fact gives it at once.
# - The gx term is `inv_std · K` with `K = Σ g_hat u - m ⟨g_hat⟩⟨u⟩ - m ⟨g_hat x_hat⟩⟨u x_hat⟩`. Both factors
#   depend on x; differentiate each and collect:
#
#       -inv_std² [x_hat k + P(g_hat) ⟨u x_hat⟩ + P(u) ⟨g_hat x_hat⟩],   k = K / m
#
# (gbeta = Σ gy does not depend on x at all.)

# %%
mean_u_xhat, mean_g_xhat = avg(u * x_hat), avg(g_hat * x_hat)
# BEGIN SOLUTION
dx_from_ggamma = inv_std * P(gy * v)  # the first fact, applied to c = gy v
k = avg(g_hat * u) - avg(g_hat) * avg(u) - mean_g_xhat * mean_u_xhat  # K / m: three means of products
dx_from_gx = -inv_std ** 2 * (x_hat * k + P(g_hat) * mean_u_xhat + P_u * mean_g_xhat)  # the bracket above
dx = dx_from_gx + dx_from_ggamma  # the two terms that depend on x
# END SOLUTION

# %%
check_steps({"dx_from_ggamma": dx_from_ggamma, "dx_from_gx": dx_from_gx, "dx": dx}, ref)

# %% [markdown]
# ## 3. A differentiable Function
#
# A `Function` whose `backward` works on arrays can be differentiated once. To differentiate its gradient
# again, its way back must itself be an op with a gradient. So batch norm becomes two Functions:
# `MyBatchNorm`, whose `gradient` (on Tensors) calls `MyBatchNormBackward`, and `MyBatchNormBackward`,
# whose forward is the first backward and whose `gradient` is what you just derived, written with
# tinygradnorm ops. It computes the statistics from x again (not from saved arrays), so that even its own
# gradient, the third derivative, is right: PyTorch's native batch norm gets that one wrong.

# %%
def t_avg(a):
    return a.mean(0, keepdim=True)

def t_P(a, x_hat):
    return a - t_avg(a) - x_hat * t_avg(a * x_hat)

def t_stats(x):
    """(x_hat, inv_std) of a Tensor x, in differentiable ops."""
    centred = x - t_avg(x)
    inv_std = (t_avg(centred * centred) + eps).rsqrt()
    return centred * inv_std, inv_std

class MyBatchNormBackward(Function):
    def forward(self, x, gy, gamma):                  # arrays in: the first backward, (gx, ggamma, gbeta)
        self.save_for_backward(x, gy, gamma)
        inv_std = (x.var(axis=0) + eps) ** -0.5
        x_hat = (x - x.mean(axis=0)) * inv_std
        g_hat = gamma * gy
        gx = inv_std * (g_hat - g_hat.mean(axis=0) - x_hat * (g_hat * x_hat).mean(axis=0))
        return gx, (gy * x_hat).sum(axis=0), gy.sum(axis=0)

    def gradient(self, u, v, w):                      # Tensors in: the double backward, in tinygradnorm ops
        x, gy, gamma = self.saved_tensors
        x_hat, inv_std = t_stats(x)
        g_hat = gamma * gy
        u = tg.zeros_like(x) if u is None else u
        v = tg.zeros_like(gamma) if v is None else v
        w = tg.zeros_like(gamma) if w is None else w
        P_u = t_P(u, x_hat)
        k = t_avg(g_hat * u) - t_avg(g_hat) * t_avg(u) - t_avg(g_hat * x_hat) * t_avg(u * x_hat)
        # BEGIN SOLUTION
        d_x_from_gx = -inv_std * inv_std * (x_hat * k + t_P(g_hat, x_hat) * t_avg(u * x_hat) + P_u * t_avg(g_hat * x_hat))  # section 2
        d_x = d_x_from_gx + inv_std * t_P(gy * v, x_hat)  # section 2, with the ggamma term
        d_gy = gamma * inv_std * P_u + x_hat * v + w  # section 1
        d_gamma = (gy * inv_std * P_u).sum(0)  # section 1
        # END SOLUTION
        return d_x, d_gy, d_gamma

class MyBatchNorm(Function):
    def forward(self, x, gamma, beta):
        self.save_for_backward(x, gamma)
        inv_std = (x.var(axis=0) + eps) ** -0.5
        return gamma * (x - x.mean(axis=0)) * inv_std + beta

    def gradient(self, gy):
        x, gamma = self.saved_tensors
        return MyBatchNormBackward.apply(x, gy, gamma)

# %%
inputs = tuple(tg.tensor(a, requires_grad=True) for a in (x, gamma, rng.standard_normal(c)))
print("gradcheck passes:", tg.gradcheck(MyBatchNorm.apply, inputs))
print("gradgradcheck passes:", tg.gradgradcheck(MyBatchNorm.apply, inputs))
mine = MyBatchNorm.apply(*inputs)
g_mine, = tg.autograd.grad(mine, inputs[0], tg.tensor(gy), create_graph=True)
check_steps({"dx": tg.autograd.grad((g_mine * tg.tensor(u)).sum(), inputs[0])[0]},
            {"dx": ref["dx_from_gx"]})

# %% [markdown]
# ## 4. Eval mode: only the cross terms
#
# In eval mode the statistics are the running ones, constants: `y = (x - mean) inv_std γ + β` is affine in
# x, and its backward is linear in gy. `gx = gy inv_std γ` does not depend on x, so u cannot reach x; what
# survives pairs each upstream gradient with an input other than its own.

# %%
ref_eval = reference(training=False)
bn = ref_eval["bn"]
mean_r, inv_std_r = bn.running_mean.numpy(), (bn.running_var.numpy() + eps) ** -0.5
# BEGIN SOLUTION
dx = gy * inv_std_r * v  # only ggamma = Σ gy (x - mean) inv_std depends on x
dgy = gamma * inv_std_r * u + (x - mean_r) * inv_std_r * v + w  # gx, ggamma and gbeta are all linear in gy
dgamma = (u * gy * inv_std_r).sum(axis=0)  # gx = gy inv_std gamma
# END SOLUTION

# %%
check_steps({"dx": dx, "dgy": dgy, "dgamma": dgamma}, ref_eval)

# %% [markdown]
# ## 5. Why batch norm and a per-example gradient penalty do not mix
#
# WGAN-GP penalizes `(|∂D(x_i)/∂x_i| - 1)²` for each example i: it assumes the critic's score of example
# i depends on example i alone. In training mode batch norm normalizes each example with the *batch's*
# statistics, so D(x_i) depends on every x_j. Layer norm normalizes each example with its own, and batch
# norm in eval mode with constants: there ∂D(x_i)/∂x_j = 0 for j ≠ i.

# %%
def cross_example_gradient(layer, train):
    """The largest |∂D(x_0)/∂x_j| over the other examples j of a batch."""
    tg.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 8), layer, nn.Tanh(), nn.Linear(8, 1)).double().train(train)
    batch = tg.tensor(rng.standard_normal((6, 2)), requires_grad=True)
    g, = tg.autograd.grad(critic(batch)[0, 0], batch)
    return float(np.abs(g.numpy()[1:]).max())

for name, layer, train in (("batch norm, training", nn.BatchNorm1d(8), True), ("layer norm", nn.LayerNorm(8), True),
                           ("batch norm, eval", nn.BatchNorm1d(8), False)):
    print(f"{name:<22} max |dD(x_0)/dx_j|, j != 0: {cross_example_gradient(layer, train):.2e}")
assert cross_example_gradient(nn.BatchNorm1d(8), True) > 1e-3
assert cross_example_gradient(nn.LayerNorm(8), True) == 0 and cross_example_gradient(nn.BatchNorm1d(8), False) == 0
