"""What the explain methods share beyond ``minicnn.analysis``: targets, and maps scaled and resized.

``minicnn.analysis`` holds what every analysis shares: the model guard
(``analysis_mode``), layers by name (``find_layer``), hooks inside a context
manager (``capture``, so none is ever left behind), the image check
(``as_images``: images move to the model's device) and ``on_device_of``
(every result goes back to the caller's device: a GPU model explains NumPy
images and returns NumPy arrays).
"""
import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module, to_device

__all__ = ["resolve_targets", "normalize_map", "upsample"]


def resolve_targets(logits, target):
    """The target class of each image as an int64 array (N,) on the logits' device.

    ``target``: an int (the same class for every image), a sequence of N ints,
    or None (each image's predicted class, the argmax of its logits).
    """
    xp = get_array_module(logits)
    n, k = logits.shape[0], logits.shape[-1]
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits of shape (N, classes), got {tuple(logits.shape)}")
    if target is None:
        return logits.argmax(axis=1).astype(np.int64)
    if isinstance(target, Tensor):
        target = target.data
    if isinstance(target, (bool, np.bool_)):
        raise TypeError(f"target must be a class index, a sequence of {n} indices or None, got {target!r}")
    if isinstance(target, (int, np.integer)):
        t = np.full(n, int(target), dtype=np.int64)
    else:
        t = np.asarray(to_device(target, "cpu") if hasattr(target, "__cuda_array_interface__") else target)
        if t.dtype.kind not in "iu" or t.ndim > 1 or (t.ndim == 1 and t.shape[0] != n):
            raise ValueError(f"target must be a class index, a sequence of {n} integer indices (one "
                             f"per image) or None, got {target!r}")
        t = np.full(n, int(t), dtype=np.int64) if t.ndim == 0 else t.astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"target must lie in [0, {k}) for a model with {k} classes, got {t.tolist()}")
    return xp.asarray(t)


def normalize_map(maps):
    """Maps (N, h, w) scaled to [0, 1] per image: ``max(m, 0) / max(max(m, 0))``.

    Negative values (evidence against the class) become 0, as Grad-CAM's
    ReLU does. A map with no positive value (all negative or all zero) has
    nothing to show and becomes all zeros, never NaN.
    """
    xp = get_array_module(maps)
    pos = xp.maximum(maps, 0)
    top = pos.reshape(pos.shape[0], -1).max(axis=1).reshape((-1,) + (1,) * (pos.ndim - 1))
    return xp.where(top > 0, pos / xp.where(top > 0, top, 1), 0).astype(maps.dtype, copy=False)


def upsample(maps, size):
    """Bilinear resize of maps (N, h, w) to ``size`` = (H, W), pixel centres aligned.

    Output pixel i samples the input at (i + 0.5) * h / H - 0.5, clamped to
    the edge (PyTorch's ``align_corners=False``, Pillow's bilinear resize):
    a coarse map stretched over the image it came from.
    """
    xp = get_array_module(maps)
    n, h, w = maps.shape
    out_h, out_w = size

    def taps(n_in, n_out):
        pos = (xp.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
        pos = xp.clip(pos, 0, n_in - 1)
        lo = xp.floor(pos).astype(np.int64)
        hi = xp.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(maps.dtype)

    y0, y1, fy = taps(h, out_h)
    x0, x1, fx = taps(w, out_w)
    rows = maps[:, y0, :] * (1 - fy)[None, :, None] + maps[:, y1, :] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]
