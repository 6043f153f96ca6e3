"""Batch transforms: data augmentation and normalization for a whole batch at once.

Each transform is called as ``t(batch, rng)`` on an NCHW array batch (NumPy
or CuPy; the result stays on the same device) and returns a new array. The
random ones draw from ``rng``, a ``numpy.random.Generator``, so a run is
reproducible from its seed; the random numbers are drawn with NumPy and
moved to the batch's device. Nothing loops over the images in Python: a
random crop is one gather from a strided view, a flip is one ``where``.

The usual CIFAR-10 training pipeline, in this order::

    mean, std = channel_stats(train_set)
    train_tf = Compose([
        RandomCrop(32, padding=4),      # uint8 (N, 3, 32, 32) in, uint8 out
        RandomHorizontalFlip(),         # uint8 in, uint8 out
        ToFloat(),                      # uint8 -> float32 in [0, 1]
        Normalize(mean, std),           # float32, per channel (x - mean) / std
    ])
    test_tf = Compose([ToFloat(), Normalize(mean, std)])

Cropping and flipping work on any dtype; doing them before ``ToFloat``
moves a quarter of the bytes. ``Normalize`` needs a floating batch, and its
``mean``/``std`` are on the [0, 1] scale that ``ToFloat`` produces.
"""
import numpy as np

from ..backend import get_array_module

__all__ = ["Compose", "ToFloat", "Normalize", "RandomCrop", "RandomTranslate", "RandomHorizontalFlip",
           "AlternatingFlip", "BatchPosition"]


def _check_batch(name, batch, channels=None):
    if not hasattr(batch, "ndim") or batch.ndim != 4:
        raise ValueError(f"{name}: expected an NCHW batch of shape (N, C, H, W), "
                         f"got shape {getattr(batch, 'shape', type(batch).__name__)}")
    if channels is not None and batch.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels (from mean/std), "
                         f"got a batch of shape {batch.shape}")


def _rng(rng):
    return np.random.default_rng() if rng is None else rng


class Compose:
    """Apply transforms in order: ``Compose([t1, t2])(x, rng) == t2(t1(x, rng), rng)``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: every transform must be callable, got {t!r}")

    @property
    def uses_position(self):
        """True if a transform inside needs to know which images the batch holds (``BatchPosition``)."""
        return any(getattr(t, "uses_position", False) for t in self.transforms)

    def __call__(self, batch, rng=None, position=None):
        rng = _rng(rng)
        for t in self.transforms:
            batch = t(batch, rng, position) if getattr(t, "uses_position", False) else t(batch, rng)
        return batch

    def __repr__(self):
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class ToFloat:
    """uint8 pixels 0..255 -> float32 in [0, 1]:  y = x / 255."""

    def __call__(self, batch, rng=None):
        xp = get_array_module(batch)
        if batch.dtype != xp.uint8:
            raise TypeError(f"ToFloat: expects a uint8 batch (pixel values 0..255), got {batch.dtype}")
        return batch.astype(xp.float32) * xp.float32(1.0 / 255.0)

    def __repr__(self):
        return "ToFloat()"


class Normalize:
    """Per-channel standardization:  y[n, c] = (x[n, c] - mean[c]) / std[c].

    ``mean`` and ``std`` have one entry per channel (compute them with
    ``channel_stats`` on the training set). The batch must be floating (put
    ``ToFloat()`` first); the result has the batch's dtype.
    """

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape or self.mean.size == 0:
            raise ValueError(f"Normalize: mean and std need one value per channel, "
                             f"got {self.mean.size} and {self.std.size} values")
        if not np.all(self.std > 0):
            raise ValueError(f"Normalize: every std must be > 0, got {self.std.tolist()}")

    def __call__(self, batch, rng=None):
        _check_batch("Normalize", batch, channels=self.mean.size)
        xp = get_array_module(batch)
        if batch.dtype.kind != "f":
            raise TypeError(f"Normalize: expects a floating batch, got {batch.dtype}; "
                            f"put ToFloat() before Normalize in Compose")
        shape = (1, -1, 1, 1)   # broadcast over N, H, W
        mean = xp.asarray(self.mean.reshape(shape), dtype=batch.dtype)
        scale = xp.asarray((1.0 / self.std).reshape(shape), dtype=batch.dtype)
        return (batch - mean) * scale

    def __repr__(self):
        fmt = lambda a: "(" + ", ".join(f"{v:.4f}" for v in a) + ")"
        return f"Normalize(mean={fmt(self.mean)}, std={fmt(self.std)})"


class RandomCrop:
    """Pad each side by ``padding``, then cut a random ``size`` x ``size`` window per image.

    ``padding_mode`` is ``'constant'`` (zeros, the classic CIFAR crop) or
    ``'reflect'`` (mirror the border without repeating it, as ``numpy.pad``).
    With ``P`` the padded batch, (N, C, H + 2p, W + 2p), and per-image
    offsets ``dy[n], dx[n]`` drawn uniformly from ``0 .. H + 2p - size``::

        y[n, c, i, j] = P[n, c, dy[n] + i, dx[n] + j]

    Vectorized: a strided view ``W`` of P has shape (N, C, oy, ox, size, size)
    with ``W[n, c, a, b] = P[n, c, a:a+size, b:b+size]`` (every window, no
    copy), and one fancy index ``W[arange(N), :, dy, dx]`` picks each image's
    window.
    """

    def __init__(self, size, padding=0, padding_mode="constant"):
        self.size = (size, size) if np.isscalar(size) else tuple(size)
        self.padding = int(padding)
        if len(self.size) != 2 or min(self.size) <= 0 or self.padding < 0:
            raise ValueError(f"{type(self).__name__}: size must be a positive int or pair and padding >= 0, "
                             f"got size={size!r}, padding={padding!r}")
        if padding_mode not in ("constant", "reflect"):
            raise ValueError(f"{type(self).__name__}: padding_mode must be 'constant' or 'reflect', "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode

    def __call__(self, batch, rng=None):
        _check_batch(type(self).__name__, batch)
        return self._crop(batch, rng, *self.size)

    def _crop(self, batch, rng, th, tw):
        xp = get_array_module(batch)
        n, c, h, w = batch.shape
        p = self.padding
        name = type(self).__name__
        if self.padding_mode == "reflect" and p >= min(h, w):
            raise ValueError(f"{name}: reflect padding {p} needs images larger than {p} "
                             f"pixels, got {h}x{w}")
        if th > h + 2 * p or tw > w + 2 * p:
            raise ValueError(f"{name}: crop {th}x{tw} is larger than the padded image "
                             f"{h + 2 * p}x{w + 2 * p} (batch {batch.shape}, padding {p})")
        rng = _rng(rng)
        dy = rng.integers(0, h + 2 * p - th + 1, size=n)
        dx = rng.integers(0, w + 2 * p - tw + 1, size=n)
        padded = xp.pad(batch, ((0, 0), (0, 0), (p, p), (p, p)), mode=self.padding_mode) if p else batch
        windows = _all_windows(xp, padded, th, tw)
        # Advanced indices separated by a slice: the (N,) index dimension goes first,
        # then C, then the window's (th, tw): (N, C, th, tw).
        return windows[xp.arange(n), :, xp.asarray(dy), xp.asarray(dx)]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding}, padding_mode={self.padding_mode!r})"


class RandomTranslate(RandomCrop):
    """Shift each image by a random (dy, dx) in -shift .. shift pixels, keeping its size.

    ``RandomCrop`` of the image's own size from the image padded by
    ``shift``; the uncovered border is filled by reflection (default) or
    zeros (``padding_mode='constant'``). With shift 2 and reflection this is
    the translation of the fast CIFAR-10 recipes.
    """

    def __init__(self, shift, padding_mode="reflect"):
        if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or shift < 0:
            raise ValueError(f"RandomTranslate: shift must be an int >= 0 (pixels), got {shift!r}")
        super().__init__(1, padding=shift, padding_mode=padding_mode)

    def __call__(self, batch, rng=None):
        _check_batch("RandomTranslate", batch)
        return self._crop(batch, rng, batch.shape[2], batch.shape[3])

    def __repr__(self):
        return f"RandomTranslate(shift={self.padding}, padding_mode={self.padding_mode!r})"


def _all_windows(xp, x, th, tw):
    """Read-only strided view (N, C, H-th+1, W-tw+1, th, tw) of every th x tw window of x."""
    n, c, h, w = x.shape
    sn, sc, sh, sw = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(n, c, h - th + 1, w - tw + 1, th, tw), strides=(sn, sc, sh, sw, sh, sw))


def _mirror_where(batch, flip):
    """y[n] = x[n, :, :, ::-1] where flip[n] (a NumPy bool array), else x[n]: one ``where``, no loop."""
    xp = get_array_module(batch)
    return xp.where(xp.asarray(flip)[:, None, None, None], batch[:, :, :, ::-1], batch)


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``:  y[n] = x[n, :, :, ::-1] if flip[n]."""

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, batch, rng=None):
        _check_batch("RandomHorizontalFlip", batch)
        return _mirror_where(batch, _rng(rng).random(batch.shape[0]) < self.p)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class BatchPosition:
    """Which images a batch holds: ``indices`` (their positions in the dataset) and the ``epoch``.

    The ``DataLoader`` passes one to transforms whose ``uses_position`` is True.
    """

    def __init__(self, indices, epoch):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.epoch = int(epoch)

    def __repr__(self):
        return f"BatchPosition({len(self.indices)} indices, epoch={self.epoch})"


def _hash_bits(indices, seed):
    """One pseudo-random bit per index, fixed by (index, seed): the low bit of a SplitMix64 hash."""
    with np.errstate(over="ignore"):                  # the hash is arithmetic modulo 2**64
        z = np.asarray(indices, dtype=np.uint64) + np.uint64(seed + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(63)).astype(bool)          # the top bit: the best mixed


class AlternatingFlip:
    """Mirror image i in epoch e iff  first[i] XOR (e is odd),  first[i] a fixed random bit.

    Epoch 0 flips a random half (as ``RandomHorizontalFlip``); after that
    every image alternates, so any two consecutive epochs show each image
    once as it is and once mirrored (Jordan 2024, "94% on CIFAR-10 in 3.29
    seconds"). Random flips leave, by chance, a quarter of the images with
    the same orientation in both epochs. ``first`` comes from (index,
    ``seed``), not from the loader's generator.

    Needs to know which images and epoch the batch holds: inside a
    ``DataLoader`` it gets them (``uses_position``); called by hand, pass
    ``position=BatchPosition(indices, epoch)``.
    """

    uses_position = True

    def __init__(self, seed=0):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"AlternatingFlip: seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)

    def __call__(self, batch, rng=None, position=None):
        _check_batch("AlternatingFlip", batch)
        if not isinstance(position, BatchPosition):
            raise ValueError("AlternatingFlip: needs position=BatchPosition(indices, epoch), which a DataLoader "
                             f"passes; got {position!r}")
        if len(position.indices) != batch.shape[0]:
            raise ValueError(f"AlternatingFlip: position has {len(position.indices)} indices for a batch of "
                             f"{batch.shape[0]} images")
        return _mirror_where(batch, _hash_bits(position.indices, self.seed) ^ bool(position.epoch % 2))

    def __repr__(self):
        return f"AlternatingFlip(seed={self.seed})"
