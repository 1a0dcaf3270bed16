"""tinygradnorm.nn: Module, Parameter and the layers."""
from . import functional, init  # noqa: F401
from .module import Module, Parameter
from .layers import (AvgPool2d, Conv2d, CrossEntropyLoss, Dropout, Flatten, Identity, Linear, MaxPool2d, NLLLoss,
                     ReLU, Sequential, Sigmoid, Tanh)
from .norm import (BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d,
                   LayerNorm, LocalResponseNorm, RMSNorm)
