"""What the attacks share: argument checks, the model guard, input gradients, norms.

Every attack takes a model that maps images in ``bounds`` to logits, a batch
of images ``x`` (N, ...) as a NumPy/CuPy array or a Tensor, and returns raw
arrays on ``x``'s device. The helpers here make those conventions one piece
of code instead of seven:

- ``frozen(model)``: run the model in eval mode with its parameters'
  ``requires_grad`` off (so backward computes only the input's gradient),
  and put everything back afterwards (mode of every module, ``requires_grad``
  and ``.grad`` of every parameter), also when the attack raises.
- ``images_of``, ``labels_of``, ``bounds_of``, ``eps_of``, ``norm_of``: the
  argument checks, with errors naming the argument, the expected and the
  actual value.
- ``loss_gradient`` and ``logits_of``: the two things an attack asks the model.
- ``project``: the final projection of an adversarial image onto the
  intersection of the eps-ball around x and the box ``bounds``, exact in the
  attack's norm (no float rounding pushes a result outside the ball).
"""
import math
from contextlib import contextmanager

import numpy as np

from .. import functional as F
from ..analysis import analysis_mode
from ..autograd import Tensor, enable_grad, no_grad
from ..backend import as_array, default_dtype, device_of, get_array_module, to_device
from ..nn import Module

__all__ = ["frozen", "images_of", "labels_of", "bounds_of", "eps_of", "norm_of", "loss_gradient",
           "logits_of", "project", "per_image_norms", "num_classes_of", "batched"]


# ------------------------------------------------------------------ the model guard
@contextmanager
def frozen(model):
    """``minicnn.analysis.analysis_mode``: eval mode, frozen parameters, grad mode on; all restored after.

    A model that is a plain function (not a ``Module``) is used as it is.
    """
    if not isinstance(model, Module):
        yield model
        return
    with analysis_mode(model):
        yield model


# ------------------------------------------------------------------ argument checks
def images_of(x, name="x"):
    """The raw floating array of a batch of images (N, ...) given as an array or a Tensor."""
    data = x.data if isinstance(x, Tensor) else x
    xp = get_array_module(data)
    data = xp.asarray(data)
    if data.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric array of images, got dtype {data.dtype}")
    if data.dtype.kind != "f":
        data = data.astype(default_dtype())
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty batch of shape (N, C, H, W) (or (N, D)), "
                         f"got shape {tuple(data.shape)}")
    if not bool(xp.isfinite(data).all()):
        raise ValueError(f"{name}: the images contain NaN or infinity")
    return data


def labels_of(y, n, num_classes, name="y"):
    """Integer class indices (n,) in [0, num_classes), on the images' device (a scalar is broadcast)."""
    raw = y.data if isinstance(y, Tensor) else y
    xp = get_array_module(raw)
    arr = np.asarray(to_device(xp.asarray(raw), "cpu"))
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name}: expected integer class indices, got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = np.full(n, int(arr), dtype=np.int64)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected {n} class indices (one per image), got shape {arr.shape}")
    if n and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{name}: class indices must lie in [0, {num_classes - 1}] (the model has "
                         f"{num_classes} classes), got values from {arr.min()} to {arr.max()}")
    return arr.astype(np.int64)


def bounds_of(bounds, x, check_images=True, name="x"):
    """(lo, hi) as arrays of x's dtype broadcastable to x; checks lo < hi and that x lies inside.

    Each bound is a number or an array broadcastable to one image (per-channel
    bounds such as ``(lo.reshape(C, 1, 1), hi.reshape(C, 1, 1))`` work).
    """
    xp = get_array_module(x)
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise ValueError(f"bounds: expected a pair (lower, upper), got {bounds!r}") from None
    lo = to_device(as_array(lo, dtype=x.dtype), device_of(x))
    hi = to_device(as_array(hi, dtype=x.dtype), device_of(x))
    try:
        np.broadcast_shapes(lo.shape, hi.shape, x.shape)
    except ValueError:
        raise ValueError(f"bounds: each bound must be a number or broadcast to the images' shape "
                         f"{tuple(x.shape)}, got shapes {lo.shape} and {hi.shape}") from None
    if not (bool(xp.isfinite(lo).all()) and bool(xp.isfinite(hi).all())):
        raise ValueError(f"bounds: must be finite, got {bounds!r}")
    if not bool((lo < hi).all()):
        raise ValueError(f"bounds: the lower bound must be below the upper bound, got "
                         f"lower {_short(lo)} and upper {_short(hi)}")
    if check_images:
        tol = 1e-6
        if bool((x < lo - tol).any()) or bool((x > hi + tol).any()):
            raise ValueError(f"{name}: images must lie inside bounds ({_short(lo)}, {_short(hi)}), "
                             f"got values from {float(x.min()):.4g} to {float(x.max()):.4g}; "
                             f"scale pixels to [0, 1] (divide uint8 images by 255) or pass bounds=")
    return lo, hi


def _short(a):
    a = np.asarray(to_device(a, "cpu"))
    return f"{float(a):g}" if a.size == 1 else np.array2string(a.ravel()[:4], precision=4)


def eps_of(eps, name="eps"):
    """eps as a float >= 0 (numbers and ``fractions.Fraction`` accepted)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number >= 0, got {eps!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {eps!r}")
    return value


def norm_of(norm):
    """'inf' or 2: accepts 'inf', 'linf', np.inf, 2, '2', 'l2'."""
    key = str(norm).lower()
    if key in ("inf", "linf", "l-inf", "l_inf"):
        return "inf"
    if key in ("2", "2.0", "l2"):
        return 2
    raise ValueError(f"norm: expected 'inf' or 2, got {norm!r}")


def num_classes_of(logits):
    if logits.ndim != 2:
        raise ValueError(f"model: expected logits of shape (N, classes), got {tuple(logits.shape)}")
    return int(logits.shape[1])


# ------------------------------------------------------------------ asking the model
def logits_of(model, x, batch_size=None):
    """The model's logits for x (raw array), without recording a graph; in batches if asked."""
    with no_grad():
        if batch_size is None or x.shape[0] <= batch_size:
            return _raw(model(Tensor(x)))
        xp = get_array_module(x)
        return xp.concatenate([_raw(model(Tensor(x[i:i + batch_size])))
                               for i in range(0, x.shape[0], batch_size)])


def loss_gradient(model, x, labels, name="y"):
    """(grad, logits, labels): d/dx of sum_n CE(model(x)_n, labels_n), the logits, the checked labels.

    The loss is summed over the batch (not averaged), so each image's
    gradient does not depend on how many images share the batch. ``labels``
    are checked against the number of classes the logits show (errors name
    the argument ``name``).
    """
    xp = get_array_module(x)
    xt = Tensor(x, requires_grad=True)
    with enable_grad():
        logits = model(xt)
        labels = labels_of(labels, x.shape[0], num_classes_of(logits), name)
        loss = F.cross_entropy(logits, xp.asarray(labels), reduction="sum")
        loss.backward()
    return xt.grad, _raw(logits), labels


def _raw(t):
    return t.data if isinstance(t, Tensor) else t


def batched(n, batch_size):
    """Slices covering range(n) in chunks of batch_size (one slice when batch_size is None)."""
    step = n if not batch_size else int(batch_size)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


# ------------------------------------------------------------------ norms and projection
def per_image_norms(d, norm):
    """Each image's norm of the perturbation d (N, ...) as a float64 array (N,), on d's device.

    norm: 'inf', 2, or 0 (L0: the number of pixel positions (h, w) where any
    channel changed, for (N, C, H, W); the number of changed entries otherwise).
    """
    xp = get_array_module(d)
    n = d.shape[0]
    if norm == 0:
        changed = d != 0
        if d.ndim == 4:
            changed = changed.any(axis=1)
        return changed.reshape(n, -1).sum(axis=1).astype(np.float64)
    flat = d.reshape(n, -1).astype(np.float64)
    if norm == "inf":
        return xp.abs(flat).max(axis=1) if flat.shape[1] else xp.zeros(n)
    return xp.sqrt((flat * flat).sum(axis=1))


def _expand(v, ndim):
    return v.reshape((-1,) + (1,) * (ndim - 1))


def project(x, x_adv, eps, norm, lo, hi):
    """The point of {z : ||z - x|| <= eps, lo <= z <= hi} reached from x_adv, in x's dtype.

    L-inf: clip to [x - eps, x + eps] coordinate by coordinate, then to the
    box. L2: scale the perturbation d = x_adv - x by min(1, eps / ||d||_2),
    then clip to the box. Clipping to the box never moves a coordinate away
    from x (x is inside the box), so it keeps the norm within eps; the
    checks after each step make that hold in float arithmetic too, not
    only in exact arithmetic.
    """
    xp = get_array_module(x)
    if norm == "inf":
        # x -/+ eps computed in float64, then rounded to x's dtype towards x (never past eps)
        x64 = x.astype(np.float64)
        down, up = (x64 - eps).astype(x.dtype), (x64 + eps).astype(x.dtype)
        down = xp.where(down < x64 - eps, xp.nextafter(down, x), down)
        up = xp.where(up > x64 + eps, xp.nextafter(up, x), up)
        z = xp.minimum(xp.maximum(x_adv, down), up)
        return xp.minimum(xp.maximum(z, lo), hi).astype(x.dtype, copy=False)
    d = (x_adv - x).astype(np.float64)
    radius = xp.full(x.shape[0], float(eps))
    for _ in range(8):
        norms = per_image_norms(d, 2)
        factor = xp.minimum(1.0, radius / xp.maximum(norms, 1e-300))
        z = (x + _expand(factor, x.ndim) * d).astype(x.dtype)
        z = xp.minimum(xp.maximum(z, lo), hi)
        realized = per_image_norms(z - x, 2)
        over = realized > eps
        if not bool(over.any()):
            return z
        # float rounding took a result just past eps: aim that image's radius a little inside
        radius = xp.where(over, radius * (eps / realized) * (1 - 4 * np.finfo(x.dtype).eps), radius)
    return x.copy()
