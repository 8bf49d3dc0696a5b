"""The course's network (EIP4 week 2): 14,060 parameters in Keras counting, receptive field 28, 99.4% on MNIST.

Keras order after every 3x3 convolution: Conv -> ReLU -> BatchNorm -> Dropout(0.1). Keras batch
norm defaults (momentum 0.99 of the old value, eps 1e-3) are momentum=0.01, eps=1e-3 here.
"""
from .. import nn
from .preset import Preset

KERAS_BN = dict(momentum=0.01, eps=1e-3)


def conv_block(c_in, c_out, dropout):
    """3x3 convolution (with bias), ReLU, batch norm, dropout."""
    return [nn.Conv2d(c_in, c_out, 3), nn.ReLU(), nn.BatchNorm2d(c_out, **KERAS_BN), nn.Dropout(dropout)]


def eip4(dropout=0.1):
    """The network for (N, 1, 28, 28) images exactly: its 4x4 head leaves 1x1 only there (Preset says so otherwise)."""
    return Preset("eip4", (1, 28, 28), [
        *conv_block(1, 16, dropout),                 # 26x26x16, RF 3
        *conv_block(16, 16, dropout),                # 24x24x16, RF 5
        nn.Conv2d(16, 10, 1), nn.ReLU(),             # 24x24x10: 1x1 mixes channels, no BN
        nn.MaxPool2d(2),                             # 12x12x10, RF 6, jump 2
        *conv_block(10, 16, dropout),                # 10x10x16, RF 10
        *conv_block(16, 16, dropout),                # 8x8x16,   RF 14
        *conv_block(16, 16, dropout),                # 6x6x16,   RF 18
        *conv_block(16, 16, dropout),                # 4x4x16,   RF 22
        nn.Conv2d(16, 10, 4),                        # 1x1x10,   RF 28
        nn.BatchNorm2d(10, **KERAS_BN), nn.Dropout(dropout),
        nn.Flatten(),                                # logits (N, 10); softmax lives in the loss
    ])
