"""Check 2, the loss at initialisation (Karpathy's recipe: "verify loss @ init").

Before any training a classifier should not prefer any class: its softmax
is close to uniform, so its cross-entropy is -log(1/C) = log C (2.303 for
ten classes). The check measures the mean loss of the untouched model on a
batch (training mode, no step taken) and compares. Much higher means the
logits start large: a final layer initialised too big, inputs not
normalised, or a loss applied to the wrong thing. More than 0.5 above
log C is a WARN (a He-initialised last layer often starts 1-3 nats above);
more than 5 above is a FAIL. (Much lower is fine only for a trained model:
it has learned something.)
"""
import math

import numpy as np

from ..autograd import no_grad
from .report import FAIL, OK, WARN, CheckResult

__all__ = ["check_loss_at_init"]

TITLE = "Loss at initialisation vs -log(1/C)"
WARN_EXCESS = 0.5    # nats above log C
FAIL_EXCESS = 5.0    # nats above log C: the logits start tens of units apart


def check_loss_at_init(ctx):
    """Checklist item 2: mean cross-entropy of the model as given vs log C."""
    model = ctx.copy(train=True)
    x, y = ctx.tensors(min(64, len(ctx.images)))
    with no_grad():
        loss = float(ctx.loss(model(x), y).item())
    expected = math.log(ctx.num_classes)
    ratio = loss / expected if expected > 0 else float("inf")
    measured = f"loss {loss:.4g} vs -log(1/{ctx.num_classes}) = {expected:.4g} (ratio {ratio:.2f})"
    details = {"loss": loss, "expected": expected, "ratio": ratio}
    if not np.isfinite(loss):
        return CheckResult("loss_at_init", TITLE, FAIL, loss, measured,
                           "the loss is not finite before any training step",
                           "look for NaN inputs, a log of zero, or exploding activations", details)
    excess = loss - expected
    if excess > FAIL_EXCESS:
        status, meaning = FAIL, ("the loss at init is far above chance: the initial logits are large, so the "
                                 "network is confidently wrong before it has learned anything")
    elif excess > WARN_EXCESS:
        status, meaning = WARN, ("the loss at init is above chance level: the initial logits are somewhat large "
                                 "(common with He-initialised last layers; harmless if the other checks pass)")
    else:
        status = OK
        meaning = ("the loss at init is close to chance, as it should be for an untrained model"
                   if ratio > 0.8 else "the loss is below chance: the model already predicts better than "
                                       "guessing (fine for a trained model)")
    advice = ("initialise the last layer smaller (e.g. its weights x0.1, bias 0) so the first softmax is "
              "nearly uniform; check that the inputs are normalised and the loss gets logits")
    return CheckResult("loss_at_init", TITLE, status, loss, measured, meaning, advice, details)
