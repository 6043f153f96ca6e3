"""Check 3, the final layer: "the wrong activation on the final layer".

``F.cross_entropy`` applies its own log-softmax, so the model must return
raw scores (logits), any real number. The check looks at what the model
returns on a batch:

- every row is non-negative and sums to 1: a **softmax before the
  cross-entropy**. The loss then sees scores squashed into [0, 1], its
  softmax of them is nearly uniform whatever the network does, so the loss
  barely moves and the gradient is tiny;
- non-negative with exact zeros (and some positive values): a **ReLU on the
  logits**. A class whose logit is clipped to 0 gets no gradient, and
  logits cannot go negative to vote against a class;
- all in (0, 1) without summing to 1: a sigmoid on the logits (a WARN);
- the same logits for every sample: the layers before carry no signal
  (see the initialisation check).
"""
import numpy as np

from ..autograd import no_grad
from ..backend import to_device
from .report import FAIL, OK, WARN, CheckResult

__all__ = ["check_final_layer"]

TITLE = "Final layer: logits, not softmax or ReLU outputs, into the cross-entropy"


def check_final_layer(ctx):
    """Checklist item 3: what the model returns looks like logits."""
    model = ctx.copy(train=False)
    x, _ = ctx.tensors(min(64, len(ctx.images)))
    with no_grad():
        z = np.asarray(to_device(model(x).data, "cpu"), dtype=np.float64)
    rows = z.sum(axis=1)
    lo, hi = float(z.min()), float(z.max())
    zeros = float((z == 0).mean())
    details = {"min": lo, "max": hi, "fraction_zero": zeros, "row_sum_mean": float(rows.mean()),
               "row_sum_spread": float(rows.max() - rows.min())}
    measured = f"outputs in [{lo:.3g}, {hi:.3g}], {100 * zeros:.0f}% exactly 0, rows sum to {rows.mean():.4g} on average"
    if not np.all(np.isfinite(z)):
        return CheckResult("final_layer", TITLE, FAIL, lo, measured, "the model returns NaN or infinite outputs",
                           "look at the data and initialisation checks", details)
    if lo >= 0 and hi <= 1 and np.allclose(rows, 1.0, atol=1e-3):
        return CheckResult(
            "final_layer", TITLE, FAIL, float(rows.mean()), measured,
            "the outputs are probabilities (non-negative, rows sum to 1): a softmax sits before a "
            "cross-entropy that expects logits, so the loss barely moves and the gradient is tiny",
            "remove the softmax from the model: return the last linear layer's output (logits); the "
            "cross-entropy applies log-softmax itself. Use softmax only to read probabilities", details)
    if lo >= 0 and zeros > 0 and hi > 0:
        return CheckResult(
            "final_layer", TITLE, FAIL, zeros, measured,
            "the outputs are never negative and many are exactly 0: a ReLU sits on the logits, so clipped "
            "classes get no gradient and no logit can vote against a class",
            "remove the activation after the last linear layer: logits must be free to be negative", details)
    if z.shape[0] > 1 and np.all(z == z[:1]):
        return CheckResult("final_layer", TITLE, WARN, lo, measured,
                           "every sample gets exactly the same outputs: the layers before the last carry no signal",
                           "see the initialisation check (dead ReLUs, vanishing activations)", details)
    if lo > 0 and hi < 1:
        return CheckResult("final_layer", TITLE, WARN, hi, measured,
                           "every output lies in (0, 1): a sigmoid on the logits squashes the scores the loss needs",
                           "return the last linear layer's output directly", details)
    return CheckResult("final_layer", TITLE, OK, lo, measured,
                       "the outputs look like logits (real numbers of both signs)", "", details)
