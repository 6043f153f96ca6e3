"""Check 7, overfit one batch (Karpathy's recipe: "overfit one batch").

A network that works can memorise a handful of examples: on one small
batch, trained again and again with the recipe's optimizer, it must reach
~100% training accuracy (and a loss near zero) within a few hundred steps.
If it cannot, the problem is not the data or the regularisation: the
model, the loss or the optimizer is broken (a wrong final layer, a dead or
badly initialised network, a learning rate far off). Dropout is switched
off on the copy for this test (p = 0): it is about capacity, not about
generalisation; weight decay stays as the recipe sets it.
"""
import numpy as np

from ..backend import to_device
from .report import FAIL, OK, WARN, CheckResult

__all__ = ["check_overfit_one_batch", "overfit_one_batch"]

TITLE = "Overfit one batch: ~100% training accuracy on a small batch within a few hundred steps"


def overfit_one_batch(ctx, x, y, steps):
    """Train a fresh copy on (x, y); returns the history of (loss, accuracy) and the step 100% was reached."""
    model = ctx.copy(train=True, dropout=False)
    opt = ctx.optimizer(model)
    labels = np.asarray(to_device(y.data, "cpu"))
    history, reached = [], None
    for step in range(steps):
        logits = model(x)
        loss = ctx.loss(logits, y)
        value = float(loss.item())
        acc = float((np.asarray(to_device(logits.data, "cpu")).argmax(axis=1) == labels).mean())
        history.append((value, acc))
        if not np.isfinite(value):
            break
        if acc == 1.0:
            reached = step
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return history, reached


def check_overfit_one_batch(ctx):
    """Checklist (recipe): the model can memorise one small batch."""
    s = ctx.settings
    x, y = ctx.tensors(min(s.overfit_samples, len(ctx.images)))
    history, reached = overfit_one_batch(ctx, x, y, s.overfit_steps)
    losses = [h[0] for h in history]
    best = max(h[1] for h in history)
    final_loss = losses[-1]
    details = {"samples": int(x.shape[0]), "steps": len(history), "reached_at": reached,
               "best_accuracy": best, "first_loss": losses[0], "final_loss": final_loss,
               "loss_history": losses, "lr": ctx.lr}
    if reached is not None:
        measured = f"100% of {x.shape[0]} samples after {reached} steps (loss {losses[0]:.3g} -> {final_loss:.3g})"
        return CheckResult("overfit_one_batch", TITLE, OK, float(reached), measured,
                           "the model, loss and optimizer can fit data: the learning machinery works", "", details)
    measured = (f"best accuracy {100 * best:.0f}% on {x.shape[0]} samples after {len(history)} steps "
                f"(loss {losses[0]:.3g} -> {final_loss:.3g})")
    if not np.isfinite(final_loss):
        meaning = "the loss diverged to NaN/inf while fitting one batch"
        status = FAIL
    elif best >= 0.9:
        meaning = "the model almost memorises the batch but not quite within the step budget"
        status = WARN
    else:
        meaning = ("the model cannot memorise even one small batch, so the problem is not the data or the "
                   "regularisation: the model, the loss or the optimizer is broken")
        status = FAIL
    advice = ("look at the other checks: the final layer (softmax/ReLU on the logits), the initialisation "
              "(vanishing activations, dead ReLUs), the learning rate (too high diverges, too low crawls)")
    return CheckResult("overfit_one_batch", TITLE, status, best, measured, meaning, advice, details)
