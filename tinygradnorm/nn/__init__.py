"""tinygradnorm.nn: Module, Parameter and the layers."""
from . import functional, init  # noqa: F401
from .module import Module, Parameter
from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, SiLU, Sigmoid, Softmax, Tanh
from .containers import ModuleDict, ModuleList, Sequential
from .layers import Dropout, Dropout2d, Flatten, Identity, Linear
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, MaxUnpool2d
from . import utils  # noqa: F401  (nn.utils.clip_grad_norm_)
from .norm import (BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d,
                   LayerNorm, LocalResponseNorm, RMSNorm, SyncBatchNorm)
from . import parallel  # noqa: F401,E402  (nn.parallel.DistributedDataParallel)
