"""tinygradnorm: a small autograd engine for learning, checking and using backprop through normalization layers."""
from . import autograd  # noqa: F401  (first: the Tensor module needs Function)
from .autograd import (no_grad, enable_grad, set_grad_enabled, inference_mode, is_grad_enabled,
                       is_inference_mode_enabled)
from .backend import device, default_device, manual_seed, cuda_available
from .dtypes import float16, float32, float64, int32, int64, uint8, bool_ as bool  # noqa: A001
from .tensor import (Tensor, Size, MemoryFormat, contiguous_format, preserve_format, channels_last,
                     channels_last_3d)
from .creation import (tensor, as_tensor, from_numpy, from_dlpack, empty, zeros, ones, full, randn, rand, randint, arange,
                       zeros_like, ones_like, full_like, randn_like, rand_like)
from .ops import (add, sub, mul, div, pow, neg, eq, ne, lt, le, gt, ge, exp, log, sqrt, rsqrt, abs, tanh, sigmoid, relu, maximum, minimum, clip, where, sum, mean, var,
                  max, min, amax, amin, argmax, argmin, logsumexp, softmax, log_softmax, reshape, permute,
                  transpose, flatten, squeeze, unsqueeze, broadcast_to, pad, cat, stack, matmul)
from .gradcheck import gradcheck, gradgradcheck, GradcheckError
from .serialization import save, load, get_rng_state, set_rng_state, CheckpointError
from . import cuda, data, nn, optim, testing, viz  # noqa: E402,F401  (tg.nn.Linear, tg.optim.SGD, tg.cuda..., as in PyTorch)

clamp = clip
__version__ = "0.1.0"
