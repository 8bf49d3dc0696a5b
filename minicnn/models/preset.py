"""A preset network: nn.Sequential that knows the images it takes, and says so before a wrong size reaches its head."""
from .. import nn
from ..functional.checks import check_input


class Preset(nn.Sequential):
    """Layers applied in order (an nn.Sequential, same state_dict names), to images of `image_shape` (C, H, W).

    min_size=None: exactly H x W. eip4's head is a 4x4 convolution that must leave a 1x1 map; a larger image
    leaves a larger map, and Flatten would turn it into more logits than classes without any error.
    min_size=k: C channels and any H, W of at least k. compact and tiny end in a global average pool, which
    gives one value per channel whatever the map's size; below k pixels a 3x3 convolution runs out of image.
    """

    def __init__(self, name, image_shape, layers, min_size=None):
        super().__init__(*layers)
        self.name, self.image_shape, self.min_size = name, tuple(image_shape), min_size

    def with_layers(self, layers):
        """The same preset (name, images, check) over other layers: for passes that rebuild the list (nn.fuse)."""
        return Preset(self.name, self.image_shape, layers, self.min_size)

    def forward(self, x):
        self.check_images(x)
        return super().forward(x)

    def check_images(self, x):
        """A ValueError naming the model and both shapes when x is not a batch of the images this network takes."""
        a = check_input(x, self.name)  # a Tensor or an array, 4-D, float32 or float64
        C, H, W = self.image_shape
        _, c, h, w = a.shape
        if self.min_size is None and (c, h, w) != (C, H, W):
            raise ValueError(f"{self.name} expects images of shape (N, {C}, {H}, {W}), got (N, {c}, {h}, {w})")
        if self.min_size is not None and (c != C or min(h, w) < self.min_size):
            raise ValueError(f"{self.name} expects images of shape (N, {C}, H, W) with H and W at least "
                             f"{self.min_size} (it is trained on {H}x{W}), got (N, {c}, {h}, {w})")

    def extra_repr(self):
        H, W = self.image_shape[1:]
        size = f"{H}x{W}" if self.min_size is None else f"at least {self.min_size}x{self.min_size}"
        return f"{self.name}: images of {self.image_shape[0]} channel(s), {size}"
