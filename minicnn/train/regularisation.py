"""Regularisers in training: ``minicnn train --l1 LAMBDA --l2 LAMBDA --max-norm C``.

The penalties and the constraint themselves are ``minicnn.nn.utils``
(``l1_penalty``, ``l2_penalty``, ``max_norm_``); this module puts them into a
run. The parameters they act on are ``nn.utils.penalized_parameters(model)``:
the weights of the convolutional and linear layers; biases, batchnorm's
scale and shift, and frozen parameters are left out (as the lectures note:
they do not make a unit's response more complex, and shrinking batchnorm's
scale towards 0 fights the normalisation).

The loss that ``fit`` minimises becomes (``regularised_loss``)::

    loss = cross_entropy(logits, labels) + l1 * sum_w |w| + l2 * sum_w w^2

so its gradient gains ``l1 * sign(w) + 2 * l2 * w``. The training loss that
a run reports (progress bar, metrics.csv ``train_loss``) is this whole
objective; validation and test losses are the plain cross-entropy.

``--l2`` and ``--weight-decay`` are two roads to the same place:
``--weight-decay wd`` adds ``wd * w`` to each weight's gradient inside the
optimizer (nothing is added to the loss), ``--l2 lambda`` adds
``lambda * sum w^2`` to the loss, whose gradient is ``2 * lambda * w``. So
``--l2 lambda`` is ``--weight-decay 2*lambda`` (up to rounding): the
convention here is R(W) = sum w^2 without a 1/2 (the lectures'
``loss + lambda * R(W)``), and PyTorch's ``weight_decay`` is the gradient's
coefficient. That holds for SGD (with or without momentum or Nesterov) and
for minicnn's Adam, whose ``weight_decay`` is the same coupled L2 term added
to the gradient before Adam's per-weight rescaling (decoupled decay,
AdamW, shrinks the weights directly and would differ). The differences are
what you see and where it lives: ``--l2`` shows up in the reported training
loss, ``--weight-decay`` does not. Both act on the same weights (no biases,
no batchnorm), and they add up: the default ``--weight-decay`` of the
non-ResNet models is 5e-4, so pass ``--weight-decay 0`` to measure ``--l2``
alone.

Max-norm (``--max-norm c``, Srivastava et al. 2014) is a constraint, not a
loss term: after every optimizer step, each unit's incoming weight vector (a
row of a linear layer's weight, one filter of a convolution) whose L2 norm is
above ``c`` is scaled back to norm ``c`` (``nn.utils.max_norm_`` with
``dim=0``). The Trainer applies it right after each ``optimizer.step()``, in
``fit``'s ``on_step`` callback, before the next forward pass.

All three define a run: ``--resume`` refuses to change them.
"""
from ..nn.utils import l1_penalty, l2_penalty, max_norm_, penalized_parameters

__all__ = ["regularised_loss", "regularised_parameters", "apply_max_norm"]


def regularised_parameters(model):
    """The weights the penalties and the constraint act on: ``nn.utils.penalized_parameters(model)``."""
    return penalized_parameters(model)


def regularised_loss(loss_fn, params, l1=0.0, l2=0.0):
    """``loss_fn(logits, labels) + l1 * sum |w| + l2 * sum w^2`` over ``params``, as a loss function.

    With ``l1 == l2 == 0`` it returns ``loss_fn`` itself.
    """
    if not l1 and not l2:
        return loss_fn
    params = list(params)

    def loss(logits, labels):
        total = loss_fn(logits, labels)
        if l1:
            total = total + l1 * l1_penalty(params)
        if l2:
            total = total + l2 * l2_penalty(params)
        return total

    return loss


def apply_max_norm(params, c):
    """Scale every unit's weight vector with norm above ``c`` back to norm ``c`` (after a step); returns how many."""
    return max_norm_(params, c, dim=0)
