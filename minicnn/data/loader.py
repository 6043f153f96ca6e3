"""``DataLoader``: batches of (images, labels) Tensors, the next one prepared in the background.

One epoch::

    indices = permutation(len(dataset))            # or 0..N-1 without shuffle
    for each slice of batch_size indices:
        images, labels = dataset.get_batch(slice)  # uint8 (B, C, H, W), int64 (B,)
        move both to the device                    # 'gpu': copy the uint8 bytes, 4x less than float32
        images = transform(images, rng)            # augmentation + normalization, on the device
        yield Tensor(float32 images), Tensor(int64 labels)

With ``prefetch=True`` a background thread runs that loop one or two
batches ahead of the training step (NumPy releases the GIL in its heavy
kernels, so gathering and augmenting overlap with the forward/backward
pass). Leaving the ``for`` loop early (``break``, an exception) stops the
thread; an exception inside the thread is raised again in the loop.

Reproducibility: epoch ``k`` draws its shuffle and its augmentation from
generators seeded by ``(seed, k)`` only, so the same seed gives the same
batches, and ``set_epoch(k)`` (used when resuming) continues exactly where
an uninterrupted run would be. Each ``iter(loader)`` uses the current epoch
and then advances it by one.
"""
import queue
import threading

import numpy as np

from ..autograd import Tensor
from ..backend import to_device
from .dataset import gather
from .transforms import BatchPosition, ToFloat

__all__ = ["DataLoader", "shard_bounds"]

_DONE = object()   # end-of-epoch marker on the queue


def shard_bounds(n, rank, ranks):
    """Rows ``lo:hi`` of a batch of ``n`` that worker ``rank`` of ``ranks`` takes (data-parallel training).

    Contiguous, disjoint, covering the batch; the sizes differ by at most one.
    """
    return n * rank // ranks, n * (rank + 1) // ranks


class _WorkerError:
    """An exception raised in the background thread, carried to the consumer."""

    def __init__(self, exc):
        self.exc = exc


class DataLoader:
    """Iterate over ``dataset`` in batches of Tensors.

    Args:
        dataset: any minicnn dataset or Subset (or an object with ``__len__``
            and ``__getitem__`` returning ``(image, label)``).
        batch_size: samples per batch.
        shuffle: a new random order every epoch.
        drop_last: skip the last, smaller batch.
        transform: called as ``transform(images, rng)`` on the uint8 NCHW
            batch, already on ``device``. If it returns integers (or
            ``transform`` is None) the loader scales them to float32 in [0, 1]
            like ``ToFloat``; a floating result is cast to float32. A
            transform whose ``uses_position`` is True (``AlternatingFlip``,
            or a ``Compose`` holding one) is called as
            ``transform(images, rng, BatchPosition(indices, epoch))``.
        seed: seeds the shuffle and the augmentation of every epoch.
        device: ``'cpu'`` or ``'gpu'``.
        prefetch: prepare the next batch in a background thread.

    Yields ``(images, labels)``: Tensors of float32 (B, C, H, W) and int64 (B,).
    """

    def __init__(self, dataset, batch_size=128, shuffle=False, drop_last=False, transform=None,
                 seed=0, device="cpu", prefetch=True):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if device not in ("cpu", "gpu"):
            raise ValueError(f"DataLoader: device must be 'cpu' or 'gpu', got {device!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"DataLoader: seed must be a non-negative int, got {seed!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, got {transform!r}")
        if len(dataset) == 0:
            raise ValueError("DataLoader: the dataset is empty")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.seed = int(seed)
        self.device = device
        self.prefetch = bool(prefetch)
        self.epoch = 0
        self.start_batch = 0
        self._to_float = ToFloat()
        # Data-parallel training (minicnn.distributed) sets (rank, ranks): this process then takes
        # its part, shard_bounds(len(batch), rank, ranks), of every batch of the same global order.
        self.shard = None

    def __len__(self):
        """Number of batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch, start_batch=0):
        """Make the next ``iter(loader)`` produce epoch ``epoch`` from batch ``start_batch`` on (resuming)."""
        for name, v in (("epoch", epoch), ("start_batch", start_batch)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"DataLoader.set_epoch: {name} must be a non-negative int, got {v!r}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    # ---- one epoch ---------------------------------------------------------
    def _epoch_plan(self, epoch):
        """The index batches of ``epoch``, with the generator each batch's augmentation draws from.

        Batch ``k`` of epoch ``e`` gets its own generator seeded by (seed, e, k),
        so a run resumed at any batch augments exactly as an uninterrupted one.
        """
        n = len(self.dataset)
        order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                 else np.arange(n))
        stop = len(self) * self.batch_size if self.drop_last else n
        return [(order[i:i + self.batch_size], np.random.default_rng([self.seed, epoch, k]), epoch)
                for k, i in enumerate(range(0, stop, self.batch_size))]

    def _make_batch(self, indices, rng, epoch):
        mine = slice(*shard_bounds(len(indices), *self.shard)) if self.shard else slice(None)
        images, labels = gather(self.dataset, indices[mine])
        if self.shard and self.transform is not None:   # augment as the whole batch would be (the same draws)
            images = np.concatenate([np.zeros((mine.start,) + images.shape[1:], images.dtype), images,
                                     np.zeros((len(indices) - mine.stop,) + images.shape[1:], images.dtype)])
        images = to_device(np.ascontiguousarray(images), self.device)
        labels = to_device(np.asarray(labels, dtype=np.int64), self.device)
        if getattr(self.transform, "uses_position", False):
            images = self.transform(images, rng, BatchPosition(indices, epoch))
        elif self.transform is not None:
            images = self.transform(images, rng)
        images = images[mine]
        if images.dtype.kind in "iub":
            images = self._to_float(images.astype("uint8", copy=False))
        elif images.dtype != np.float32:
            images = images.astype(np.float32)
        return Tensor(images), Tensor(labels)

    def __iter__(self):
        plan = self._epoch_plan(self.epoch)[self.start_batch:]
        self.epoch, self.start_batch = self.epoch + 1, 0
        if not self.prefetch:
            return (self._make_batch(*batch) for batch in plan)
        return self._prefetching(plan)

    def _prefetching(self, plan):
        """Generator: a worker thread fills a small queue; we hand its batches out in order."""
        q = queue.Queue(maxsize=2)
        stop = threading.Event()

        def put(item):
            # Wait for room in the queue, but give up as soon as the consumer has left.
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def worker():
            try:
                for batch in plan:
                    if stop.is_set() or not put(self._make_batch(*batch)):
                        return
                put(_DONE)
            except BaseException as e:  # carried to the consumer and raised there
                put(_WorkerError(e))

        thread = threading.Thread(target=worker, name="minicnn-DataLoader", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _WorkerError):
                    raise item.exc
                yield item
        finally:
            # Runs on normal exhaustion, on an exception, and when the consumer
            # breaks out of its loop (the generator is closed).
            stop.set()
            thread.join()

    def __repr__(self):
        return (f"DataLoader(n={len(self.dataset)}, batch_size={self.batch_size}, "
                f"batches={len(self)}, shuffle={self.shuffle}, drop_last={self.drop_last}, "
                f"device={self.device!r}, transform={self.transform!r})")
