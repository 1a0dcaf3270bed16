# %% [markdown]
# # Exercise 3: running statistics, momentum and eval mode
#
# In training, batch norm normalizes each batch with that batch's own mean and variance. A
# deployed model sees one example at a time, and its answer must not depend on which other
# examples share its batch. So batch norm also keeps running estimates of the mean and
# variance over the training data, and eval mode normalizes with those instead
# (docs/normalization.md, section 4).
#
# Four conventions decide the numbers, and well-known tutorials get some of them wrong. This
# checker knows the usual slips and tells you which one you made.

# %%
import numpy as np
import tinygradnorm as tg
from tinygradnorm import nn
from tinygradnorm.testing import StepMismatch, compare

rng = np.random.default_rng(2)
c, momentum, eps = 3, 0.1, 1e-5
batches = [rng.standard_normal((16, c)) * (i + 1) + i for i in range(5)]
test_x = rng.standard_normal((4, c)) * 3 + 2

def reference():
    """nn.BatchNorm1d's running statistics after the five batches, and its eval output on test_x."""
    bn = nn.BatchNorm1d(c, momentum=momentum, eps=eps, affine=False).double()
    for b in batches:
        bn(tg.tensor(b))
    bn.eval()
    return bn.running_mean.numpy(), bn.running_var.numpy(), bn(tg.tensor(test_x)).numpy()

# The slips the checker recognizes: each is a whole alternative pipeline.
def mistaken(kind):
    rm, rv = np.zeros(c), np.ones(c)
    for b in batches:
        mean = b.mean(axis=0)
        var = b.var(axis=0, ddof=0 if kind == "a biased running variance (divide by m, not m - 1)" else 1)
        w = 1 - momentum if kind == "an inverted momentum (weighting the old value by momentum)" else momentum
        rm, rv = (1 - w) * rm + w * mean, (1 - w) * rv + w * var
    if kind == "eps outside the square root":
        return rm, rv, (test_x - rm) / (np.sqrt(rv) + eps)
    if kind == "the test batch's own statistics in eval mode":
        return rm, rv, (test_x - test_x.mean(axis=0)) / np.sqrt(test_x.var(axis=0) + eps)
    return rm, rv, (test_x - rm) / np.sqrt(rv + eps)

MISTAKES = ["an inverted momentum (weighting the old value by momentum)",
            "a biased running variance (divide by m, not m - 1)", "eps outside the square root",
            "the test batch's own statistics in eval mode"]

def check(running_mean, running_var, y_eval):
    names = ("running_mean", "running_var", "eval output")
    mine = (running_mean, running_var, y_eval)
    if any(v is None for v in mine):
        raise StepMismatch(f"{names[[v is None for v in mine].index(True)]} is not computed yet")
    good = [compare(name, a, b) for name, a, b in zip(names, mine, reference())]
    if all(good):
        print("all agree with nn.BatchNorm1d")
        return
    first = names[good.index(False)]
    for kind in MISTAKES:
        if all(np.allclose(a, b) for a, b in zip(mine, mistaken(kind))):
            raise StepMismatch(f"{first} disagrees: your numbers are exactly what {kind} gives")
    raise StepMismatch(f"{first} is the first that disagrees with nn.BatchNorm1d")

# %% [markdown]
# ## 1. Update the running statistics
#
# PyTorch's rule: `running = (1 - momentum) * running + momentum * batch`, so `momentum` is the
# weight of the *new* value (0.1 by default). The running variance uses the **unbiased**
# variance of the batch (divide by `m - 1`), while the batch is normalized with the biased
# one. They start at mean 0 and variance 1.

# %%
running_mean, running_var = np.zeros(c), np.ones(c)
for b in batches:
    # BEGIN SOLUTION
    batch_mean = b.mean(axis=0)  # the batch's mean per channel
    batch_var = b.var(axis=0, ddof=1)  # unbiased: divide by m - 1
    running_mean = (1 - momentum) * running_mean + momentum * batch_mean  # PyTorch's momentum
    running_var = (1 - momentum) * running_var + momentum * batch_var  # the same rule
    # END SOLUTION

# %% [markdown]
# ## 2. Normalize in eval mode
#
# Eval mode uses the running statistics, with `eps` inside the square root.

# %%
# BEGIN SOLUTION
y_eval = (test_x - running_mean) / np.sqrt(running_var + eps)  # no batch statistics here
# END SOLUTION

# %%
check(running_mean, running_var, y_eval)

# %% [markdown]
# ## 3. momentum=None
#
# With `momentum=None` batch norm keeps a cumulative average instead: batch `n` is weighted
# `1/n`, so nothing of the initial mean 0 and variance 1 is left after the first batch. After
# the five batches, `running_mean` is the plain average of the five batch means.

# %%
bn = nn.BatchNorm1d(c, momentum=None, affine=False).double()
for b in batches:
    bn(tg.tensor(b))
compare("cumulative mean", bn.running_mean.numpy(), np.mean([b.mean(axis=0) for b in batches], axis=0))
