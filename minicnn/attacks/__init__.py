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
"""
from .gradient_attacks import adversarial_examples, fgsm, pgd

__all__ = ["fgsm", "pgd", "adversarial_examples"]
