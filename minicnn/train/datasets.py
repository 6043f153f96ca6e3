"""Finding CIFAR-10 on disk: ``--data PATH``, or the usual places, or a message saying how to get it.

The usual places (``DEFAULT_DATA_PLACES``) are relative to the current
folder and to the checkout that holds the minicnn package, so a clone's
data is found from any folder; the message lists every place tried.

Two layouts are understood: an image-folder tree ``PATH/train/<class>/*.png``
and ``PATH/test/<class>/...``, and the official python version
(``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz`` inside ``PATH``).
"""
import os

from ..data import CIFAR10, DatasetError, ImageFolder
from ..errors import TrainingError

__all__ = ["DEFAULT_DATA_PLACES", "CHECKOUT", "resolve_data", "load_datasets", "how_to_get_data"]

# Where CIFAR-10 is looked for without --data, in this order. "." is the current folder;
# CHECKOUT is the folder that holds the minicnn package (a clone's root), so the data beside
# a clone is found from any folder.
DEFAULT_DATA_PLACES = (
    "$MINICNN_DATA",
    "./data/cifar10-jpeg",
    "./data/cifar-10-batches-py",
    "./data",
    "../shared/data/cifar10-jpeg",
    "CHECKOUT/data/cifar10-jpeg",
    "CHECKOUT/data",
    "CHECKOUT/../shared/data/cifar10-jpeg",
    "~/.cache/minicnn/data",
)
DOWNLOAD_DIR = "~/.cache/minicnn/data"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _candidates():
    """(place as written in DEFAULT_DATA_PLACES, the path it means here), each path once."""
    seen = set()
    for place in DEFAULT_DATA_PLACES:
        if place.startswith("$"):
            path = os.environ.get(place[1:])
            if not path:
                yield f"{place} (not set)", None
                continue
        elif place.startswith("CHECKOUT/"):
            path = os.path.normpath(os.path.join(CHECKOUT, place[len("CHECKOUT/"):]))
        else:
            path = os.path.expanduser(place)
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            yield place, path


def _kind(path):
    """'folder' for an image tree with train/ and test/, 'cifar' for the official format, else None."""
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        return "folder"
    if os.path.isdir(os.path.join(path, "cifar-10-batches-py")) or \
            os.path.isfile(os.path.join(path, "cifar-10-python.tar.gz")):
        return "cifar"
    if os.path.basename(os.path.normpath(path)) == "cifar-10-batches-py":
        return "cifar-inner"
    return None


def how_to_get_data(looked):
    """The message for a missing dataset: every place minicnn looked, and the ways to provide it."""
    return (
        "CIFAR-10 was not found. Looked in:\n  " + "\n  ".join(looked) + "\n"
        "Pass --data PATH (for example --data ~/data/cifar10-jpeg) with one of:\n"
        "  - an image-folder tree PATH/train/<class>/*.png|jpg and PATH/test/<class>/...\n"
        "  - the official python version: a folder holding cifar-10-batches-py/ or cifar-10-python.tar.gz\n"
        "or run with --data download to fetch the official archive (163 MB, MD5-checked) into "
        f"{DOWNLOAD_DIR}. You can also set MINICNN_DATA=PATH.")


def resolve_data(path):
    """Find the dataset: returns (kind, path). ``path=None`` searches the default places."""
    if path == "download":
        return "download", os.path.expanduser(DOWNLOAD_DIR)
    if path is not None:
        kind = _kind(path)
        if kind is None:
            if not os.path.exists(path):
                raise TrainingError(f"--data {path}: no such folder.\n" + how_to_get_data([path]))
            raise TrainingError(
                f"--data {path}: not a CIFAR-10 layout (expected train/ and test/ class folders, "
                f"or cifar-10-batches-py/ or cifar-10-python.tar.gz inside it).\n" + how_to_get_data([path]))
        return kind, path
    looked = []
    for place, cand in _candidates():
        if cand is None:
            looked.append(place)
            continue
        full = os.path.abspath(cand)
        looked.append(full if place.startswith(("CHECKOUT", "$")) or full == place
                      else f"{place} (here: {full})")
        kind = _kind(cand) if os.path.isdir(cand) else None
        if kind:
            return kind, cand
    raise TrainingError(how_to_get_data(looked))


def load_datasets(path, progress=True, splits=("train", "test")):
    """``(train_set, test_set, description)`` for ``--data`` (see ``resolve_data``).

    Only the ``splits`` asked for are read and decoded; the others are None
    (``minicnn eval`` reads only the test split).
    """
    unknown = set(splits) - {"train", "test"}
    if unknown or not splits:
        raise ValueError(f"load_datasets: splits must name 'train' and/or 'test', got {splits!r}")
    kind, root = resolve_data(path)
    sets = {}
    try:
        for split in ("train", "test"):
            if split not in splits:
                sets[split] = None
            elif kind == "folder":
                sets[split] = ImageFolder(os.path.join(root, split), progress=progress)
            else:
                top = os.path.dirname(os.path.normpath(root)) if kind == "cifar-inner" else root
                sets[split] = CIFAR10(top, train=split == "train", download=kind == "download")
    except DatasetError as e:
        raise TrainingError(str(e)) from None
    train, test = sets["train"], sets["test"]
    if train is not None and test is not None and list(train.classes) != list(test.classes):
        raise TrainingError(f"train and test classes differ: {train.classes} vs {test.classes}")
    return train, test, f"{root} ({kind})"
