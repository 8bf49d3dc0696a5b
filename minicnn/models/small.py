"""Smaller networks that beat the course: `compact` (under 8,000 parameters) and `tiny` (under 4,000).

What buys accuracy per parameter here, compared with eip4:
- Conv -> BatchNorm -> ReLU with no convolution bias (the batch norm's beta already is one).
- No dropout: the random affine augmentation of the recipe is the regulariser, and a network this
  small underfits before it overfits.
- A global average pool and one small linear layer as the head, instead of a 4x4 convolution.
- Width spent where the image is small: 28x28 layers are cheap in parameters but dear in time,
  so the early layers stay narrow and the one max pool comes after two convolutions.
"""
from .. import nn
from .preset import Preset


def conv_bn_relu(c_in, c_out, kernel_size=3, groups=1):
    """Convolution without bias, batch norm, ReLU."""
    return [nn.Conv2d(c_in, c_out, kernel_size, groups=groups, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def compact():
    """7,768 parameters in Keras counting (7,604 trainable), receptive field 18 before the global pool.
    Trained on 28x28 images; the global pool takes any size from 18x18 (below, the last 3x3 convolution has no room)."""
    return Preset("compact", (1, 28, 28), [
        *conv_bn_relu(1, 10),                        # 26x26x10, RF 3
        *conv_bn_relu(10, 16),                       # 24x24x16, RF 5
        nn.MaxPool2d(2),                             # 12x12x16, RF 6, jump 2
        *conv_bn_relu(16, 10, kernel_size=1),        # 12x12x10: 1x1 squeezes the channels
        *conv_bn_relu(10, 14),                       # 10x10x14, RF 10
        *conv_bn_relu(14, 16),                       # 8x8x16,   RF 14
        *conv_bn_relu(16, 16),                       # 6x6x16,   RF 18
        nn.GlobalAvgPool2d(),                        # (N, 16)
        nn.Linear(16, 10),                           # logits (N, 10)
    ], min_size=18)


def separable(c):
    """Depthwise-separable 3x3 block: a 3x3 convolution per channel (groups=c, 9c weights) that looks
    around, then a 1x1 convolution (c*c weights) that mixes the channels; each Conv -> BN -> ReLU.
    For c = 16: 144 + 256 weights where a full 3x3 convolution has 2,304."""
    return [*conv_bn_relu(c, c, groups=c), *conv_bn_relu(c, c, kernel_size=1)]


def tiny():
    """3,872 parameters in Keras counting (3,462 trainable), receptive field 22 before the global pool.

    A full convolution at 26 pixels, then the 24x24 layer as a separable block that widens to 21 channels,
    and, after the pool, four depthwise-separable blocks of 21 channels. The separable 24x24 layer costs 240
    weights where a full 8 -> 16 convolution costs 1,152; what it saves buys 21 channels instead of 16 for
    the four blocks (chosen on the validation split: README, "Beyond the course").
    Trained on 28x28 images; the global pool takes any size from 22x22.
    """
    return Preset("tiny", (1, 28, 28), [
        *conv_bn_relu(1, 8),                         # 26x26x8,  RF 3
        *conv_bn_relu(8, 8, groups=8),               # 24x24x8,  RF 5: a 3x3 filter per channel
        *conv_bn_relu(8, 21, kernel_size=1),         # 24x24x21: 1x1 mixes and widens
        nn.MaxPool2d(2),                             # 12x12x21, RF 6, jump 2
        *separable(21),                              # 10x10x21, RF 10
        *separable(21),                              # 8x8x21,   RF 14
        *separable(21),                              # 6x6x21,   RF 18
        *separable(21),                              # 4x4x21,   RF 22
        nn.GlobalAvgPool2d(),                        # (N, 21)
        nn.Linear(21, 10),                           # logits (N, 10)
    ], min_size=22)
