"""minicnn.attacks: breaking a trained CNN, and measuring how robust it is.

Conventions (as in ``minicnn.explain``): the model takes images with pixels
in ``bounds`` (default (0, 1)) and returns logits, e.g. from
``minicnn.load_model``; ``eps`` is in pixel units (8/255 is the usual L-inf
budget on CIFAR-10); every returned image lies inside ``bounds``; inputs
may be NumPy/CuPy arrays or Tensors and results are raw arrays on the
input's device; random attacks take a ``seed``. The model is never changed
(mode, parameters, their ``.grad``, buffers, ``requires_grad``, hooks),
also when an attack raises.

- ``fgsm``, ``pgd``, ``adversarial_examples`` (gradient_attacks): Goodfellow's
  fast gradient sign, Madry's projected gradient descent (L-inf and L2).
- ``deepfool`` (deepfool): the minimal-L2 attack of Moosavi-Dezfooli et al.
- ``minimal_perturbation`` (minimal): Szegedy et al.'s box-constrained L-BFGS.
- ``one_pixel`` (one_pixel): Su et al.'s differential evolution.
- ``universal_perturbation`` (universal): one perturbation for many images.
- ``fooling_image`` (fooling): noise the model calls a class at 99%.
- ``evaluate`` (evaluate): clean and robust accuracy, success rate, norms.
- ``minicnn.attacks.plot``: the figures (imported on its own; needs matplotlib).
"""
from .gradient_attacks import adversarial_examples, fgsm, pgd
from .deepfool import deepfool
from .minimal import minimal_perturbation
from .one_pixel import one_pixel
from .universal import UniversalResult, fooling_rate, universal_perturbation
from .fooling import fooling_image
from .evaluate import ATTACKS, AttackReport, evaluate

__all__ = ["fgsm", "pgd", "adversarial_examples", "deepfool", "minimal_perturbation", "one_pixel",
           "universal_perturbation", "UniversalResult", "fooling_rate", "fooling_image", "evaluate",
           "AttackReport", "ATTACKS"]
