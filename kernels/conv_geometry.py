"""The shapes of one convolution, named once: what every backend's choice of algorithm is decided on.

Notation (the same in every kernel of minicnn):
    N       images in the batch             C, OC   input and output channels
    H, W    input height and width          G       groups (each sees Cg = C/G inputs, makes OC/G outputs)
    KH, KW  kernel height and width         SH, SW  stride
    PH, PW  zero padding (each side)        DH, DW  dilation
    OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1       OW likewise
"""
from typing import NamedTuple

import numpy as np


def out_size(size, k, s=1, p=0, d=1):
    """Output length of a sliding window along one axis: (size + 2p - d(k-1) - 1) // s + 1 (pooling: d = 1)."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class ConvGeometry(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    OC: int
    Cg: int
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int
    DH: int
    DW: int
    G: int
    OH: int
    OW: int
    dtype: np.dtype

    @classmethod
    def of(cls, x_shape, w_shape, stride, padding, dilation, groups, dtype):
        """The geometry of x (N, C, H, W) convolved with w (OC, C/groups, KH, KW)."""
        (N, C, H, W), (OC, Cg, KH, KW) = x_shape, w_shape
        (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
        return cls(N, C, H, W, OC, Cg, KH, KW, SH, SW, PH, PW, DH, DW, groups,
                   out_size(H, KH, SH, PH, DH), out_size(W, KW, SW, PW, DW), np.dtype(dtype))

    @property
    def stride_1(self):
        """Stride 1 and no dilation: the shape the direct and wide-grid algorithms need."""
        return self.SH == self.SW == 1 and self.DH == self.DW == 1

    @property
    def pointwise(self):
        """A 1x1 kernel, stride 1, no padding: a matrix product over channels."""
        return self.KH == self.KW == 1 and self.SH == self.SW == 1 and self.PH == self.PW == 0

    @property
    def whole_image(self):
        """A kernel as large as the unpadded image, one group: one output pixel, a fully connected layer."""
        return (self.KH, self.KW) == (self.H, self.W) and self.PH == self.PW == 0 and self.DH == self.DW == 1 \
            and self.G == 1

    @property
    def depthwise(self):
        """One filter per channel (groups = C = OC)."""
        return self.G == self.C == self.OC
