"""Check 9, batch size and regularisation: "too large a batch", "no regularisation".

- **Batch size**: with a batch larger than about 1/20 of the training set
  there are fewer than 20 steps per epoch; the gradient noise that helps
  SGD generalise is gone and each epoch barely moves the weights.
- **Regularisation**: a model trained with no weight decay, no dropout and
  no data augmentation overfits the training set (CIFAR-10 networks reach
  100% training accuracy). At least one should be on.

Both are WARNs: the recipe may be deliberate.
"""
from .. import nn
from .report import OK, WARN, CheckResult

__all__ = ["check_batch_and_regularisation", "has_augmentation"]

TITLE = "Batch size and regularisation: batch <= 1/20 of the training set; weight decay, dropout or augmentation"


def has_augmentation(transform):
    """True when a loader transform (or a Compose of them) contains a random transform (``Random*``)."""
    if transform is None:
        return False
    parts = getattr(transform, "transforms", None)
    if parts is not None:
        return any(has_augmentation(t) for t in parts)
    return type(transform).__name__.startswith("Random")


def check_batch_and_regularisation(ctx):
    """Checklist items 4-5: batch size relative to the data; some regularisation."""
    n, b = ctx.train_size, ctx.batch_size
    dropout = any(isinstance(m, nn.Dropout) and m.p > 0 for m in ctx.model.modules())
    augment = ctx.augment if ctx.augment is not None else has_augmentation(getattr(ctx.train_loader, "transform", None))
    wd = ctx.weight_decay
    details = {"batch_size": b, "train_size": n, "weight_decay": wd, "dropout": dropout, "augmentation": augment}
    regs = [name for name, on in (("weight decay", wd > 0), ("dropout", dropout), ("augmentation", augment)) if on]
    measured = (f"batch {b} of {n if n is not None else '?'} training samples"
                + (f" ({n / b:.0f} steps per epoch)" if n else "")
                + f"; regularisation: {', '.join(regs) if regs else 'none'}")
    problems, advice = [], []
    if n is not None and b > n / 20:
        problems.append("the batch is larger than 1/20 of the training set (fewer than 20 steps per epoch)")
        advice.append(f"use a batch of at most {max(1, n // 20)} (32-256 is typical), or more data")
    if not regs:
        problems.append("no weight decay, dropout or augmentation: the model will overfit")
        advice.append("add weight decay (5e-4 for SGD on CIFAR-10), random crops and flips, or dropout")
    if not problems:
        return CheckResult("batch_regularisation", TITLE, OK, b / n if n else None, measured,
                           "the batch leaves enough steps per epoch and the model is regularised", "", details)
    return CheckResult("batch_regularisation", TITLE, WARN, b / n if n else None, measured,
                       "; ".join(problems), "; ".join(advice), details)
