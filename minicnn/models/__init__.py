"""Model presets with their training recipes: the course's eip4 network, and smaller networks that beat it."""
from .eip4 import eip4  # noqa: F401

PRESETS = {"eip4": eip4}

# The course's recipe (EIP4 week 2): Adam 0.003 (Keras epsilon 1e-7), lr = 0.003 / (1 + 0.319 * epoch),
# batch 128, 20 epochs, no augmentation. augment_args are used with --augment.
RECIPES = {
    "eip4": dict(epochs=20, batch_size=128, lr=0.003, eps=1e-7, schedule="inverse_time", decay=0.319,
                 augment=False, augment_args=dict(degrees=10.0, translate=0.1, scale=(0.9, 1.1))),
}


def get_model(name, **kwargs):
    """Build a preset by name."""
    try:
        build = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(PRESETS)}") from None
    return build(**kwargs)
