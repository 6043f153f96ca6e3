"""``examine``: run the debugging checklist on a model and its training recipe.

The loop over the checks, each a small function of one ``Context`` in its
own module of this package (its docstring says which checklist item it
serves, what it measures and why):

    data                 data.py                normalised inputs, labels, NaN/constant images, overlap
    loss_at_init         loss_at_init.py        loss before training vs -log(1/C)
    final_layer          final_layer.py         logits, not softmax/ReLU outputs
    gradients            gradients.py           float64 gradient check of the whole model
    init_depth           init_depth.py          activation scale, dead ReLUs, update/weight ratio
    batch_independence   batch_independence.py  d loss_i / d x_j = 0 in eval mode
    overfit_one_batch    overfit.py             ~100% on one small batch
    learning_rate        lr_range.py            range test, suggested vs chosen rate
    batch_regularisation recipe.py              batch size, weight decay / dropout / augmentation

The caller's model is never trained or changed: every check works on its
own deep copy. The global NumPy random state is put back afterwards.
"""
import os
import time

import numpy as np

from .batch_independence import check_batch_independence
from .context import Context, Settings
from .data import check_data
from .final_layer import check_final_layer
from .gradients import check_gradients
from .init_depth import check_init_depth
from .loss_at_init import check_loss_at_init
from .lr_range import check_learning_rate
from .overfit import check_overfit_one_batch
from .recipe import check_batch_and_regularisation
from .report import FAIL, CheckResult, Report

__all__ = ["CHECKS", "examine"]

CHECKS = {
    "data": check_data,
    "loss_at_init": check_loss_at_init,
    "final_layer": check_final_layer,
    "gradients": check_gradients,
    "init_depth": check_init_depth,
    "batch_independence": check_batch_independence,
    "overfit_one_batch": check_overfit_one_batch,
    "learning_rate": check_learning_rate,
    "batch_regularisation": check_batch_and_regularisation,
}


def examine(model, train_loader, optimizer_factory=None, *, lr=None, loss_fn=None, test_loader=None,
            num_classes=None, train_size=None, batch_size=None, augment=None, checks=None, settings=None,
            out=None, log=None, start_lr=None):
    """Run the doctor's checks on ``model`` and its recipe; returns a ``Report``.

    Args:
        model: a minicnn ``nn.Module`` returning logits (N, C). Never changed:
            each check trains or inspects its own deep copy.
        train_loader: a ``minicnn.data.DataLoader``, or any iterable of
            ``(images, labels)`` batches (Tensors or arrays; a list of pairs
            works). Only the first ``settings.data_batches`` batches are read,
            once. ``train_loader.dataset`` (its length, labels), ``.batch_size``
            and ``.transform`` are read when present.
        optimizer_factory: ``params -> optimizer`` (called with a list of a
            copy's parameters), e.g. ``lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9)``;
            ``model -> optimizer`` (``lambda m: optim.SGD(m.parameters(), ...)``) works too.
            Default: SGD with momentum 0.9 at ``lr`` (0.01 if not given). Its
            first group's ``lr`` is the "chosen" rate.
        lr: the learning rate of the default optimizer.
        start_lr: the rate the recipe's schedule starts from, when it warms up
            to the optimizer's ``lr`` (a one-cycle schedule's first rate);
            default: the optimizer's ``lr`` (a constant or step schedule).
        loss_fn: ``(logits, labels) -> scalar Tensor``; default ``F.cross_entropy``.
        test_loader: optional; a sample of it is checked for exact duplicates
            of training images.
        num_classes: default: the model's number of outputs.
        train_size, batch_size: default ``len(train_loader.dataset)`` and
            ``train_loader.batch_size`` (or the first batch's size).
        augment: whether the recipe augments its data (default: looked up in
            ``train_loader.transform``).
        checks: names of the checks to run (default: all of ``CHECKS``, in order).
        settings: a ``Settings`` (sizes of the checks; small by default).
        out: folder for ``report.md``, ``report.json`` and the figures.
        log: called with each result's line as it is ready (e.g. ``print``).

    A check that raises is reported as FAIL with the error, the others still run.
    """
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"examine: unknown check(s) {unknown}; choose from {', '.join(CHECKS)}")
    settings = settings or Settings()
    state = np.random.get_state()
    try:
        if out:
            os.makedirs(out, exist_ok=True)
        ctx = Context(model, train_loader, optimizer_factory, lr=lr, loss_fn=loss_fn, test_loader=test_loader,
                      num_classes=num_classes, train_size=train_size, batch_size=batch_size, augment=augment,
                      settings=settings, out=out, start_lr=start_lr)
        results = []
        for name in names:
            np.random.seed(settings.seed)
            t0 = time.perf_counter()
            try:
                result = CHECKS[name](ctx)
            except Exception as e:   # a broken model should give a report, not a traceback
                result = CheckResult(name, CHECKS[name].__doc__.split("\n")[0], FAIL, None,
                                     f"the check could not run: {type(e).__name__}: {e}",
                                     "the model or the data failed during this check",
                                     "run the model on one batch by hand and read the error")
            result.details["seconds"] = round(time.perf_counter() - t0, 3)
            results.append(result)
            ctx.results.append(result)
            if log is not None:
                log(result.line())
    finally:
        np.random.set_state(state)
    context = {"model": type(model).__name__, "classes": ctx.num_classes, "batch_size": ctx.batch_size,
               "train_size": ctx.train_size, "lr": ctx.lr, "weight_decay": ctx.weight_decay,
               "samples_read": int(len(ctx.images)), "input_shape": list(ctx.images.shape[1:])}
    report = Report(results, context)
    if out:
        report.save(out)
    return report
