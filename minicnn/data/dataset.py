"""In-memory datasets, subsets, train/validation splits and channel statistics.

Every dataset in ``minicnn.data`` keeps all of its images in one uint8 array,
so a batch is a single fancy-indexing gather, not a loop over files:

    images  uint8,  shape (N, C, H, W)   channels first, like the network (NCHW)
    labels  int64,  shape (N,)           class index in 0 .. len(classes)-1
    classes list of N_classes names      ``classes[label]`` is the name

``dataset[i]`` gives ``(image, label)``, one (C, H, W) uint8 image and an
int; to show it with matplotlib use ``image.transpose(1, 2, 0)`` (HWC).
``dataset.get_batch(indices)`` gives ``(images, labels)`` for many indices at
once; the DataLoader calls it.

A ``Subset`` views a dataset through an index array and shares its arrays
(nothing is copied until a batch is gathered); ``train_val_split`` carves a
validation set out of a training set with two Subsets.
"""
import numpy as np

__all__ = ["DatasetError", "ArrayDataset", "Subset", "random_split", "train_val_split",
           "channel_stats", "gather"]


class DatasetError(Exception):
    """A dataset is missing, corrupt or laid out wrongly.

    The message always says what was expected, what was found, and how to
    fix it (where to put the files, or which option to pass).
    """


class ArrayDataset:
    """A dataset held in memory as ``images`` (N, C, H, W) uint8 and ``labels`` (N,) int64.

    ``CIFAR10`` and ``ImageFolder`` are ArrayDatasets; you can also wrap your
    own arrays: ``ArrayDataset(images, labels, classes=['cat', 'dog'])``.
    """

    def __init__(self, images, labels, classes=None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"ArrayDataset: images must be a uint8 array of shape (N, C, H, W), "
                f"got dtype {images.dtype} and shape {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.kind not in "iu":
            raise ValueError(
                f"ArrayDataset: labels must be an integer array of shape ({images.shape[0]},), "
                f"got dtype {labels.dtype} and shape {labels.shape}")
        labels = labels.astype(np.int64, copy=False)
        if classes is None:
            classes = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 0)]
        classes = list(classes)
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(
                f"ArrayDataset: labels must lie in [0, {len(classes)}) for {len(classes)} classes, "
                f"got values from {labels.min()} to {labels.max()}")
        self.images = images
        self.labels = labels
        self.classes = classes

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, index):
        """``(image, label)``: a (C, H, W) uint8 array and an int."""
        index = _check_index(index, len(self), type(self).__name__)
        return self.images[index], int(self.labels[index])

    def get_batch(self, indices):
        """``(images[indices], labels[indices])`` as arrays: one gather for a whole batch."""
        indices = np.asarray(indices, dtype=np.int64)
        return self.images[indices], self.labels[indices]

    @property
    def image_shape(self):
        """(C, H, W) of every image."""
        return tuple(self.images.shape[1:])

    def __repr__(self):
        return (f"{type(self).__name__}(n={len(self)}, image_shape={self.image_shape}, "
                f"classes={len(self.classes)})")


def _check_index(index, n, who):
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{who}[index]: index must be an int, got {type(index).__name__}; "
                        f"use get_batch(indices) for many indices")
    if not -n <= index < n:
        raise IndexError(f"{who}[index]: index {index} is out of range for {n} samples")
    return int(index) % n


def gather(dataset, indices):
    """``(images, labels)`` for ``indices`` from any dataset.

    Uses ``dataset.get_batch`` when it has one (every minicnn dataset does);
    otherwise stacks ``dataset[i]`` one by one, so a plain user dataset that
    returns ``(image, label)`` pairs works too, only slower.
    """
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    pairs = [dataset[int(i)] for i in indices]
    images = np.stack([np.asarray(p[0]) for p in pairs])
    labels = np.asarray([int(p[1]) for p in pairs], dtype=np.int64)
    return images, labels


class Subset:
    """The samples ``indices`` of ``dataset``, sharing its arrays.

    ``Subset(train, range(1000))`` is the first 1,000 training images (what
    ``--subset 1000`` uses); ``train_val_split`` returns two Subsets.
    ``subset.images`` and ``subset.labels`` gather (copy) the selected rows.
    """

    def __init__(self, dataset, indices):
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise ValueError(f"Subset: indices must be a 1-D integer sequence, "
                             f"got dtype {indices.dtype} and shape {indices.shape}")
        indices = indices.astype(np.int64, copy=False)
        n = len(dataset)
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise ValueError(f"Subset: indices must lie in [0, {n}) for a dataset of {n} samples, "
                             f"got values from {indices.min()} to {indices.max()}")
        self.dataset = dataset
        self.indices = indices

    def __len__(self):
        return self.indices.shape[0]

    def __getitem__(self, index):
        index = _check_index(index, len(self), "Subset")
        return self.dataset[int(self.indices[index])]

    def get_batch(self, indices):
        return gather(self.dataset, self.indices[np.asarray(indices, dtype=np.int64)])

    classes = property(lambda self: self.dataset.classes)
    images = property(lambda self: gather(self.dataset, self.indices)[0],
                      doc="the selected images (a copy), (n, C, H, W) uint8")
    labels = property(lambda self: gather(self.dataset, self.indices)[1],
                      doc="the selected labels (a copy), (n,) int64")

    def __repr__(self):
        return f"Subset(n={len(self)} of {self.dataset!r})"


def random_split(dataset, lengths, seed=0):
    """Split ``dataset`` into disjoint random Subsets of the given ``lengths``.

    ``lengths`` must add up to ``len(dataset)``. The same ``seed`` gives the
    same split. The indices inside each part are sorted (the DataLoader
    shuffles anyway), so a split is easy to inspect.
    """
    lengths = [int(k) for k in lengths]
    if any(k < 0 for k in lengths) or sum(lengths) != len(dataset):
        raise ValueError(f"random_split: lengths must be non-negative and add up to "
                         f"len(dataset) = {len(dataset)}, got {lengths} (sum {sum(lengths)})")
    perm = np.random.default_rng(seed).permutation(len(dataset))
    parts, start = [], 0
    for k in lengths:
        parts.append(Subset(dataset, np.sort(perm[start:start + k])))
        start += k
    return parts


def train_val_split(dataset, n_val, seed=0):
    """``(train, val)``: ``n_val`` random samples for validation, the rest for training.

    This is what ``--val-split N`` does: the validation images come out of the
    training set, so the test set stays untouched until the very end.
    """
    n = len(dataset)
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) or not 0 < n_val < n:
        raise ValueError(f"train_val_split: n_val must be an int in [1, {n - 1}] for a dataset "
                         f"of {n} samples, got {n_val!r}")
    train, val = random_split(dataset, [n - int(n_val), int(n_val)], seed=seed)
    return train, val


def channel_stats(dataset, batch_size=4096):
    """Per-channel ``(mean, std)`` of the pixel values scaled to [0, 1].

    Compute these on the *training* set and pass them to ``Normalize``::

        mean, std = channel_stats(train_set)   # CIFAR-10: about (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)

    The pixel values are the integers 0..255, so the statistics come from a
    per-channel histogram (``count[c, v]`` = how many pixels of channel c
    have value v), which is exact and needs no float64 copy of the data:

        mean_c = sum_v v * count[c, v] / n_c / 255
        std_c  = sqrt(sum_v v^2 * count[c, v] / n_c / 255^2 - mean_c^2)   (population std)
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("channel_stats: the dataset is empty")
    counts = None
    for start in range(0, n, batch_size):
        images, _ = gather(dataset, np.arange(start, min(start + batch_size, n)))
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"channel_stats: expected uint8 (N, C, H, W) images, "
                             f"got dtype {images.dtype} and shape {images.shape}")
        if counts is None:
            counts = np.zeros((images.shape[1], 256), dtype=np.int64)
        for c in range(images.shape[1]):
            counts[c] += np.bincount(images[:, c].ravel(), minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum(axis=1).astype(np.float64)
    mean = (counts * values).sum(axis=1) / total
    var = (counts * values ** 2).sum(axis=1) / total - mean ** 2
    std = np.sqrt(np.maximum(var, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
