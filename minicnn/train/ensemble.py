"""Ensembles: average the class probabilities of several trained networks.

"Combine the predictions of previous networks": M models, trained from
different seeds (or different architectures, or different epochs of one run),
make errors that are partly independent; averaging their *probabilities*

    p(k | x) = (1 / M) * sum_m softmax(f_m(x))_k

is usually more accurate than the best member alone.

``Ensemble(models)`` is a Module. Its ``forward`` returns the **log of the
mean probabilities**, ``log p(k | x)``, computed stably as
``logsumexp_m(log_softmax(f_m(x))) - log M``. These are valid logits
(``softmax(log p) = p``), so ``argmax``, ``F.cross_entropy`` (which then is
the negative log-likelihood of the averaged prediction), ``minicnn.explain``
and ``minicnn.attacks`` all work on an ensemble as on one network.
``Ensemble.probabilities(x)`` returns ``p`` itself.

The members must take the same input: use models from
``minicnn.load_model`` (each normalises [0, 1] pixels with its own training
statistics). Members with ``.classes`` must all have the same class list.

``evaluate_ensemble(models, loader, num_classes)`` runs every member once per
batch and returns each member's accuracy and the ensemble's;
``evaluate_checkpoints`` is ``minicnn eval --checkpoint a.npz b.npz ...``.
"""
import os
from collections import namedtuple

import numpy as np

from .. import functional as F
from .. import nn
from ..autograd import no_grad
from ..backend import to_device
from ..checkpoint import load_checkpoint, pixel_model
from ..data import DataLoader, ToFloat
from ..errors import CheckpointError, TrainingError
from .datasets import load_datasets
from .reports import format_report

__all__ = ["Ensemble", "EnsembleResult", "evaluate_ensemble", "evaluate_checkpoints", "format_ensemble_table"]


class Ensemble(nn.Module):
    """The mean of the members' softmax probabilities; ``forward`` returns its log (see the module docstring).

    ``models``: a list of Modules mapping the same input to logits over the
    same classes. ``ensemble.classes`` is the members' common class list
    (when they have one). ``train()``/``eval()`` reach every member.
    """

    def __init__(self, models):
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("Ensemble: models is empty; pass at least one model")
        for i, m in enumerate(models):
            if not isinstance(m, nn.Module):
                raise TypeError(f"Ensemble: models[{i}] must be an nn.Module, got {type(m).__name__}")
        class_lists = [list(m.classes) if getattr(m, "classes", None) is not None else None for m in models]
        known = [(i, c) for i, c in enumerate(class_lists) if c is not None]
        for i, c in known[1:]:
            if c != known[0][1]:
                raise ValueError(f"Ensemble: models[{i}] predicts classes {c}, but models[{known[0][0]}] "
                                 f"predicts {known[0][1]}; an ensemble averages probabilities of the same classes")
        self.members = nn.ModuleList(models)
        self.classes = known[0][1] if known else None

    def member_log_probabilities(self, x):
        """log softmax of each member's logits, stacked: a Tensor of shape (M, N, K)."""
        logps = []
        for m in self.members:
            logits = m(x)
            if logps and tuple(logits.shape) != tuple(logps[0].shape):
                raise ValueError(f"Ensemble: the members' outputs differ in shape: {tuple(logps[0].shape)} "
                                 f"and {tuple(logits.shape)}")
            logps.append(F.log_softmax(logits, axis=1))
        return F.stack(logps, axis=0)

    @staticmethod
    def log_mean_exp(logps):
        """``log((1/M) sum_m exp(logps[m]))`` over axis 0, shifted by the max so that nothing underflows to log 0."""
        shift = logps.data.max(axis=0)                      # a constant: the result does not depend on it
        return F.log(F.mean(F.exp(logps - shift), axis=0)) + shift

    def forward(self, x):
        """log p(k | x): the log of the members' mean probabilities, (N, K)."""
        return self.log_mean_exp(self.member_log_probabilities(x))

    def probabilities(self, x):
        """p(k | x) = (1/M) sum_m softmax(f_m(x)): the mean of the members' probabilities, (N, K)."""
        return F.exp(self.forward(x))


EnsembleResult = namedtuple("EnsembleResult", ["member_accuracies", "accuracy", "confusion", "member_losses",
                                               "loss"])
EnsembleResult.__doc__ = """What ``evaluate_ensemble`` measures.

member_accuracies: one accuracy per model; accuracy: the ensemble's (argmax
of the mean probabilities); confusion: the ensemble's confusion matrix (rows:
true class); member_losses, loss: mean cross-entropy (negative log-likelihood)
of each member and of the ensemble's mean probabilities.
"""


def evaluate_ensemble(models, loader, num_classes=None, progress=False):
    """Each model's accuracy and the ensemble's, in one pass over ``loader`` (an ``EnsembleResult``).

    ``models``: a list of Modules or an ``Ensemble``; ``loader``: ``(images,
    labels)`` batches of what the models take. ``num_classes`` defaults to
    the width of the models' output. Each model runs in eval mode without a
    graph; the callers' modes are restored afterwards.
    """
    from tqdm import tqdm

    ensemble = models if isinstance(models, Ensemble) else Ensemble(models)
    modes = [m.training for m in ensemble.modules()]
    n_models = len(ensemble.members)
    correct, losses = np.zeros(n_models, dtype=np.int64), np.zeros(n_models)
    confusion = None if num_classes is None else np.zeros((num_classes, num_classes), dtype=np.int64)
    ens_loss, n = 0.0, 0
    try:
        ensemble.eval()
        with no_grad():
            for images, labels in tqdm(loader, desc="test", disable=not progress, leave=False):
                logps = ensemble.member_log_probabilities(images)          # (M, N, K)
                mean_logp = ensemble.log_mean_exp(logps)                  # (N, K)
                y = to_device(labels.data, "cpu").astype(np.int64)
                lp = to_device(logps.data, "cpu")
                correct += (lp.argmax(axis=2) == y[None]).sum(axis=1)
                losses -= lp[:, np.arange(len(y)), y].sum(axis=1)
                ens = to_device(mean_logp.data, "cpu")
                if confusion is None:
                    confusion = np.zeros((ens.shape[1], ens.shape[1]), dtype=np.int64)
                ens_loss -= float(ens[np.arange(len(y)), y].sum())
                np.add.at(confusion, (y, ens.argmax(axis=1)), 1)
                n += len(y)
    finally:
        for m, mode in zip(ensemble.modules(), modes):
            object.__setattr__(m, "training", mode)
    if confusion is None:
        raise ValueError("evaluate_ensemble: the loader gave no batch")
    n = max(n, 1)
    return EnsembleResult([float(c) / n for c in correct], float(np.trace(confusion)) / n, confusion,
                          [float(v) / n for v in losses], ens_loss / n)


def format_ensemble_table(names, result):
    """The table ``minicnn eval`` prints for several checkpoints: one row per model, then the ensemble."""
    rows = [(name, acc, loss) for name, acc, loss in zip(names, result.member_accuracies, result.member_losses)]
    rows.append((f"ensemble of {len(names)} (mean probability)", result.accuracy, result.loss))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'model':<{width}}  test accuracy  test loss"]
    for i, (name, acc, loss) in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * (width + 26))
        lines.append(f"{name:<{width}}  {100 * acc:12.2f}%  {loss:9.4f}")
    best = max(result.member_accuracies)
    lines.append(f"ensemble - best member: {100 * (result.accuracy - best):+.2f} points")
    return "\n".join(lines)


def evaluate_checkpoints(paths, data=None, device="cpu", model_name=None, log=print, progress=True):
    """``minicnn eval --checkpoint a.npz b.npz ...``: each model's and the ensemble's test accuracy.

    Checkpoints trained on different class lists are refused (CheckpointError
    naming both files and lists). Each model normalises the pixels with its
    own training statistics. Returns the ``EnsembleResult``.
    """
    paths = [os.fspath(p) for p in paths]
    ckpts = [load_checkpoint(p) for p in paths]
    first = [str(c) for c in ckpts[0].get("classes", [])]
    for p, c in zip(paths[1:], ckpts[1:]):
        classes = [str(x) for x in c.get("classes", [])]
        if classes != first:
            raise CheckpointError(f"{p} was trained on classes {classes}, but {paths[0]} on {first}: an "
                                  f"ensemble averages the probabilities of the same classes")
    models = [pixel_model(c, p, model_name).to(device) for c, p in zip(ckpts, paths)]
    _, test_set, desc = load_datasets(data, progress=progress, splits=("test",))
    if list(test_set.classes) != first:
        raise TrainingError(f"the checkpoints were trained on classes {first}, but {desc} has "
                            f"{list(test_set.classes)}")
    loader = DataLoader(test_set, 500, transform=ToFloat(), device=device)   # each model normalises itself
    result = evaluate_ensemble(models, loader, len(first), progress=progress)
    names = [f"{p} ({c['model_name']}, {int(c['epoch'])} ep)" for p, c in zip(paths, ckpts)]
    log(f"data {desc}; {len(paths)} checkpoints, probabilities averaged")
    log(format_ensemble_table(names, result))
    log("the ensemble:")
    log(format_report(result.accuracy, result.confusion, first))
    return result
