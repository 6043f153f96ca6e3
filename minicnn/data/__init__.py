"""Datasets, batch transforms and the DataLoader.

Every dataset holds its images in memory as one uint8 array, channels first:
``images`` (N, C, H, W), ``labels`` (N,) int64, ``classes`` (names), and
``dataset[i] == (image, label)``. Typical use::

    from minicnn.data import (ImageFolder, DataLoader, train_val_split, channel_stats,
                              Compose, RandomCrop, RandomHorizontalFlip, ToFloat, Normalize)

    train_set = ImageFolder("cifar10-jpeg/train")         # or CIFAR10(root, train=True)
    train_set, val_set = train_val_split(train_set, 5000, seed=0)
    mean, std = channel_stats(train_set)
    augment = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(),
                       ToFloat(), Normalize(mean, std)])
    loader = DataLoader(train_set, batch_size=128, shuffle=True, transform=augment, seed=0)
    for images, labels in loader:     # Tensors: float32 (128, 3, 32, 32), int64 (128,)
        ...

Modules: ``dataset`` (ArrayDataset, Subset, splits, channel_stats),
``cifar`` (the official CIFAR-10 archive, read without trusting pickle),
``folder`` (ImageFolder with its decode cache), ``transforms``, ``loader``.
"""
from .dataset import (ArrayDataset, DatasetError, Subset, channel_stats, gather, random_split,
                      train_val_split)
from .cifar import CIFAR10
from .folder import ImageFolder, default_cache_dir
from .transforms import (AlternatingFlip, BatchPosition, Compose, Normalize, RandomCrop, RandomHorizontalFlip,
                         RandomTranslate, ToFloat)
from .loader import DataLoader, shard_bounds

__all__ = [
    "ArrayDataset", "DatasetError", "Subset", "channel_stats", "gather", "random_split",
    "train_val_split", "CIFAR10", "ImageFolder", "default_cache_dir",
    "Compose", "Normalize", "RandomCrop", "RandomTranslate", "RandomHorizontalFlip", "AlternatingFlip",
    "BatchPosition", "ToFloat", "DataLoader", "shard_bounds",
]
