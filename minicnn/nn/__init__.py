"""minicnn.nn: Module, Parameter, the layers, the losses and ``init``.

- ``module``: ``Module`` (parameters, buffers, children, train/eval, to,
  state_dict, forward hooks, repr) and ``Parameter``
- ``layers``: Sequential, ModuleList, Conv2d, ConvTranspose2d, Linear,
  pooling, BatchNorm1d/2d, Dropout, activations, Flatten, Identity,
  Normalize (per-channel standardisation as a first layer)
- ``loss``: CrossEntropyLoss, MSELoss
- ``init``: He (Kaiming) and Xavier initialization, ``init.manual_seed``
- ``utils``: regularisers as loss terms and constraints: ``penalized_parameters``,
  ``l1_penalty``, ``l2_penalty``, ``max_norm_``
"""
from . import init, utils
from .module import Module, Parameter, RemovableHandle, IncompatibleKeys
from .layers import (
    Sequential, ModuleList, Identity, Linear, Conv2d, ConvTranspose2d,
    MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm1d, BatchNorm2d, Dropout,
    ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Normalize,
)
from .loss import CrossEntropyLoss, MSELoss

__all__ = [
    "init", "utils", "Module", "Parameter", "RemovableHandle", "IncompatibleKeys",
    "Sequential", "ModuleList", "Identity", "Linear", "Conv2d", "ConvTranspose2d",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "Dropout",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten", "Normalize", "CrossEntropyLoss", "MSELoss",
]
