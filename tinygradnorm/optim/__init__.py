"""tinygradnorm.optim: optimizers and learning-rate schedules with PyTorch's update rules."""
from . import lr_scheduler  # noqa: F401
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD
