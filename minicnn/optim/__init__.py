"""Optimizers that update a flat parameter buffer, and learning-rate schedules."""
from .optimizer import Optimizer  # noqa: F401
from .sgd import SGD  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .schedules import Schedule, InverseTimeDecay, StepDecay, OneCycle  # noqa: F401
