"""Neural-network building blocks: Module, Sequential, layers, initialisers and the model summary."""
from .module import Module, Parameter, Sequential  # noqa: F401
from .layers import (Conv2d, Linear, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d,  # noqa: F401
                     GlobalAvgPool2d, Dropout, Flatten)
from . import init  # noqa: F401
from .summary import summary  # noqa: F401
from .fuse import fuse, FusedBatchNorm  # noqa: F401
