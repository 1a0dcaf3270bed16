"""Every differentiable op of the engine, as plain functions of Tensors."""
from .elementwise import (add, sub, mul, div, pow, neg, maximum, minimum, where, exp, log, sqrt, rsqrt, abs, clip,
                          eq, ne, lt, le, gt, ge, bitwise_and, bitwise_or, bitwise_xor, bitwise_not)
from .activation import tanh, sigmoid, relu, leaky_relu, gelu, silu
from .reduce import (sum, mean, var, max, min, amax, amin, argmax, argmin, logsumexp, log_softmax, softmax)
from .movement import (reshape, permute, transpose, flatten, squeeze, unsqueeze, broadcast_to, expand, pad, cat,
                       stack, getitem, index_key, to, clone, t)
from .linalg import matmul
from ._util import sum_to
