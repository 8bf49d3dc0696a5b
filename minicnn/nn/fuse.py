"""Fusion as an explicit pass: ReLU -> BatchNorm2d -> Dropout, three layers that read and write the data three times,
run in training as one operation that reads and writes it once.

    run = nn.fuse(model)     # the same layer objects (the same parameters, buffers and modes), fused runs
    loss = F.cross_entropy(run(x), y)            # train with `run`; save, load and summarise `model`

`fuse` returns a new Sequential in which every run [ReLU] BatchNorm2d [Dropout] of `model` (at any depth of
nested Sequentials) is one `FusedBatchNorm` layer. In training, and while the configuration's `fuse` is on
(minicnn.config), that layer calls F.batch_norm(x, ..., relu=True, dropout=p): the backend's batch-norm
kernels read relu(x) and apply the dropout mask on the fly (kernels/batchnorm.py, batchnorm.cu), with the
same numbers as the layers one by one. In eval mode, or with `config.using(fuse=False)`, it runs the layers
one by one. `minicnn.training.Trainer` trains through `fuse(model)`.
"""
from .. import config
from .. import functional as F
from .layers import BatchNorm2d, Dropout, ReLU
from .module import Module, Sequential


class FusedBatchNorm(Module):
    """[ReLU] BatchNorm2d [Dropout] as one layer; holds the original layers (their parameters and modes)."""

    def __init__(self, relu, bn, dropout):
        super().__init__()
        self.relu, self.bn, self.dropout = relu, bn, dropout

    def forward(self, x):
        bn, drop = self.bn, self.dropout
        if bn.training and config.current().fuse:
            active = drop is not None and drop.training
            return F.batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, True, bn.momentum, bn.eps,
                                relu=self.relu is not None, dropout=drop.p if active else 0.0,
                                generator=drop.generator if active else None)
        for layer in (self.relu, bn, drop):
            if layer is not None:
                x = layer(x)
        return x

    def extra_repr(self):
        return " -> ".join(name for name, layer in (("ReLU", self.relu), ("BatchNorm2d", self.bn),
                                                    ("Dropout", self.dropout)) if layer is not None)


def fuse(model):
    """`model` with every [ReLU] BatchNorm2d [Dropout] run of its Sequentials as one FusedBatchNorm (see above);
    a model that is not a Sequential is returned as it is."""
    if not isinstance(model, Sequential):
        return model
    layers, out, i = model.children(), [], 0
    while i < len(layers):
        relu = layers[i] if type(layers[i]) is ReLU else None
        j = i + (relu is not None)
        if j < len(layers) and type(layers[j]) is BatchNorm2d:
            drop = layers[j + 1] if j + 1 < len(layers) and type(layers[j + 1]) is Dropout else None
            out.append(FusedBatchNorm(relu, layers[j], drop))
            i = j + 1 + (drop is not None)
        else:
            out.append(fuse(layers[i]))
            i += 1
    rebuild = getattr(model, "with_layers", None)   # a Sequential subclass that keeps its own checks (models.Preset)
    return rebuild(out) if rebuild is not None else Sequential(*out)
