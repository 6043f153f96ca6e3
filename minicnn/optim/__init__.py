"""minicnn.optim: optimizers and learning-rate schedules.

- ``Optimizer`` (parameter groups, state, ``state_dict``), ``SGD`` (momentum,
  Nesterov, weight decay), ``Adam``, ``AdamW``: PyTorch's update formulas.
- ``lr_scheduler``: ``StepLR``, ``MultiStepLR``, ``CosineAnnealingLR``,
  ``OneCycleLR``, ``LinearWarmup`` (also importable from here).
- ``EMA``: an exponential moving average of a model's weights, beside any optimizer.
"""
from . import lr_scheduler
from .optimizer import Optimizer
from .sgd import SGD
from .adam import Adam, AdamW
from .ema import EMA
from .lr_scheduler import LRScheduler, StepLR, MultiStepLR, CosineAnnealingLR, OneCycleLR, LinearWarmup

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "EMA", "lr_scheduler",
    "LRScheduler", "StepLR", "MultiStepLR", "CosineAnnealingLR", "OneCycleLR", "LinearWarmup",
]
