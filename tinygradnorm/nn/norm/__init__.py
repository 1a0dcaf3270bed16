"""Normalization layers: hand-derived Functions (fused.py), their composite twins (composite.py),
the functional API (functional.py) and the modules (modules.py)."""
from .functional import batch_norm, group_norm, instance_norm, layer_norm, local_response_norm, rms_norm
from .modules import (BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, InstanceNorm1d, InstanceNorm2d,
                      InstanceNorm3d, LayerNorm, LocalResponseNorm, RMSNorm)
from .sync import SyncBatchNorm
