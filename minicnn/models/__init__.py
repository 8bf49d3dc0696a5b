"""Model presets with their training recipes: the course's eip4 network, and smaller networks that beat it."""
from .eip4 import eip4  # noqa: F401
from .small import compact, tiny  # noqa: F401
from .preset import Preset  # noqa: F401

PRESETS = {"eip4": eip4, "compact": compact, "tiny": tiny}

# Random affine augmentation: rotation up to 10 degrees, shift up to 10% of the side, scale 0.9 to 1.1.
AFFINE = dict(degrees=10.0, translate=0.1, scale=(0.9, 1.1))

# The course's recipe (EIP4 week 2): Adam 0.003 (Keras epsilon 1e-7), lr = 0.003 / (1 + 0.319 * epoch),
# batch 128, 20 epochs, no augmentation. With --augment, `with_augment` replaces part of it: the
# augmentation already regularises, so dropout goes (model_args), and the inverse-time decay, which
# never anneals (0.00042 at epoch 20), gives way to a one-cycle schedule peaking at 0.01. Chosen on the
# validation split (README, "Beyond the course").
RECIPES = {
    "eip4": dict(epochs=20, batch_size=128, lr=0.003, eps=1e-7, schedule="inverse_time", decay=0.319,
                 augment=False, augment_args=AFFINE,
                 with_augment=dict(lr=0.01, schedule="one_cycle", model_args=dict(dropout=0.0))),
    # The small presets: augmentation always on, Adam under a one-cycle schedule (per batch: cosine warm-up
    # from max/25 to max over 30% of the steps, then cosine down to max/25e4), 15 epochs. tiny: smaller
    # batches and milder augmentation, chosen on the validation split (README, "Beyond the course").
    "compact": dict(epochs=15, batch_size=128, lr=0.01, eps=1e-8, schedule="one_cycle",
                    augment=True, augment_args=AFFINE),
    "tiny": dict(epochs=15, batch_size=64, lr=0.01, eps=1e-8, schedule="one_cycle",
                 augment=True, augment_args=dict(degrees=7.0, translate=0.08, scale=(0.95, 1.05))),
}


def get_model(name, **kwargs):
    """Build a preset by name."""
    try:
        build = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(PRESETS)}") from None
    return build(**kwargs)
