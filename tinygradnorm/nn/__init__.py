"""tinygradnorm.nn: Module, Parameter and the layers."""
from . import functional  # noqa: F401
from .module import Module, Parameter
