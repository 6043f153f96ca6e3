"""How good is it: loss, accuracy and the confusion matrix on held-out images; ``minicnn eval``."""
import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..backend import get_array_module, to_device
from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data import Compose, DataLoader, Normalize, ToFloat
from ..errors import TrainingError
from .datasets import load_datasets
from .reports import format_report

__all__ = ["TTA_MODES", "tta_views", "tta_logits", "evaluate", "evaluate_checkpoint"]

TTA_MODES = ("none", "flip", "flip-translate")


def tta_views(images, mode):
    """The views of a batch that test-time augmentation averages over (arrays, like ``images``).

    - ``'none'``: the images;
    - ``'flip'``: the images and their mirror images;
    - ``'flip-translate'``: those two, and both shifted by one pixel
      down-right and up-left (the border filled by reflection).

    Per-channel normalization commutes with mirroring and with reflecting
    a border, so the views can be taken of normalized batches.
    """
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    xp = get_array_module(images)
    views = [images]
    if mode in ("flip", "flip-translate"):
        views.append(images[:, :, :, ::-1])
    if mode == "flip-translate":
        padded = [xp.pad(v, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect") for v in views[:2]]
        h, w = images.shape[2:]
        views += [p[:, :, :h, :w] for p in padded] + [p[:, :, 2:, 2:] for p in padded]
    return [xp.ascontiguousarray(v) for v in views]


def tta_logits(model, images, mode="flip"):
    """The model's logits averaged over ``tta_views(images, mode)`` (a Tensor; no graph is recorded).

    Averaging the predictions for a few harmless changes of the input
    removes part of the model's error that depends on them (Krizhevsky et
    al. 2012 averaged ten crops). Each view costs one forward pass.
    """
    x = images.data if isinstance(images, Tensor) else images
    with no_grad():
        views = tta_views(x, mode)
        total = model(Tensor(views[0])).data
        for v in views[1:]:
            total = total + model(Tensor(v)).data
    return Tensor(total / len(views))


def evaluate(model, loader, num_classes, progress=False, tta="none", reduce=None):
    """Mean loss, accuracy and the confusion matrix (rows: true class, columns: predicted).

    Runs ``model`` in eval mode without recording a graph (the model is left
    in eval mode). ``tta`` averages the logits over flipped / shifted views
    (see ``tta_views``). ``reduce``: data-parallel evaluation
    (``minicnn.distributed``), each worker on its shard of every batch:
    ``reduce(loss_sum, confusion)`` returns both summed over the workers.
    """
    from tqdm import tqdm

    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    model.eval()
    total_loss, confusion = 0.0, np.zeros((num_classes, num_classes), dtype=np.int64)
    n = 0
    with no_grad():
        for images, labels in tqdm(loader, desc="test", disable=not progress, leave=False):
            logits = model(images) if tta == "none" else tta_logits(model, images, tta)
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            pred = to_device(logits.data.argmax(axis=1), "cpu")
            np.add.at(confusion, (to_device(labels.data, "cpu"), pred), 1)
            n += len(pred)
    if reduce is not None:
        total_loss, confusion = reduce(total_loss, confusion)
        n = int(confusion.sum())
    accuracy = float(np.trace(confusion)) / max(n, 1)
    return total_loss / max(n, 1), accuracy, confusion


def evaluate_checkpoint(path, data=None, device="cpu", model_name=None, log=print, progress=True, tta="none"):
    """``minicnn eval``: the test accuracy of a checkpoint; returns it.

    Only the test split of ``data`` is read (see ``load_datasets``); ``tta``
    as in ``evaluate``.
    """
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path, model_name)
    model.to(device)
    _, test_set, desc = load_datasets(data, progress=progress, splits=("test",))
    if "classes" in ckpt and list(ckpt["classes"]) != list(test_set.classes):
        raise TrainingError(f"{path} was trained on classes {list(ckpt['classes'])}, but {desc} has "
                            f"{list(test_set.classes)}")
    plain = Compose([ToFloat(), Normalize(ckpt["norm_mean"], ckpt["norm_std"])])
    loader = DataLoader(test_set, 500, transform=plain, device=device)
    _, acc, confusion = evaluate(model, loader, len(test_set.classes), progress=progress, tta=tta)
    log(f"checkpoint {path}: {ckpt['model_name']}, trained {int(ckpt['epoch'])} epoch(s); data {desc}"
        + (f"; test-time augmentation {tta}" if tta != "none" else ""))
    log(format_report(acc, confusion, list(test_set.classes)))
    return acc
