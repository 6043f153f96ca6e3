"""How good is it: loss, accuracy and the confusion matrix on held-out images; ``minicnn eval``."""
import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..backend import to_device
from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data import Compose, DataLoader, Normalize, ToFloat
from ..errors import TrainingError
from .datasets import load_datasets
from .reports import format_report

__all__ = ["evaluate", "evaluate_checkpoint"]


def evaluate(model, loader, num_classes, progress=False):
    """Mean loss, accuracy and the confusion matrix (rows: true class, columns: predicted).

    Runs ``model`` in eval mode without recording a graph (the model is left in eval mode).
    """
    from tqdm import tqdm

    model.eval()
    total_loss, confusion = 0.0, np.zeros((num_classes, num_classes), dtype=np.int64)
    n = 0
    with no_grad():
        for images, labels in tqdm(loader, desc="test", disable=not progress, leave=False):
            logits = model(images)
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            pred = to_device(logits.data.argmax(axis=1), "cpu")
            np.add.at(confusion, (to_device(labels.data, "cpu"), pred), 1)
            n += len(pred)
    accuracy = float(np.trace(confusion)) / max(n, 1)
    return total_loss / max(n, 1), accuracy, confusion


def evaluate_checkpoint(path, data=None, device="cpu", model_name=None, log=print, progress=True):
    """``minicnn eval``: the test accuracy of a checkpoint; returns it.

    Only the test split of ``data`` is read (see ``load_datasets``).
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
    _, acc, confusion = evaluate(model, loader, len(test_set.classes), progress=progress)
    log(f"checkpoint {path}: {ckpt['model_name']}, trained {int(ckpt['epoch'])} epoch(s); data {desc}")
    log(format_report(acc, confusion, list(test_set.classes)))
    return acc
