"""tinygradnorm.nn: Module, Parameter and the layers."""
from . import functional  # noqa: F401
from .module import Module, Parameter
from .norm import (BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d,
                   LayerNorm, LocalResponseNorm, RMSNorm)
