"""What the attacks share beyond ``minicnn.analysis``: labels, eps and norms, input gradients, projection.

Every attack takes a model that maps images in ``bounds`` to logits, a batch
of images ``x`` (N, ...) as a NumPy/CuPy array or a Tensor, and returns raw
arrays on ``x``'s device. What every analysis shares (the model guard
``analysis_mode``, the image check ``as_images``, ``bounds_of``) lives in
``minicnn.analysis``; the helpers here are the attacks' own:

- ``labels_of``, ``eps_of``, ``norm_of``: the argument checks, with errors
  naming the argument, the expected and the actual value.
- ``loss_gradient`` and ``logits_of``: the two things an attack asks the model.
- ``project``: the final projection of an adversarial image onto the
  intersection of the eps-ball around x and the box ``bounds``, exact in the
  attack's norm (no float rounding pushes a result outside the ball).
"""
import math
import numpy as np

from .. import functional as F
from ..autograd import Tensor, enable_grad, no_grad
from ..backend import get_array_module, to_device

__all__ = ["labels_of", "eps_of", "eps_text", "norm_of", "loss_gradient",
           "logits_of", "project", "per_image_norms", "num_classes_of", "batched"]


# ------------------------------------------------------------------ argument checks
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


def eps_of(eps, name="eps", norm=None, lo=None, hi=None):
    """eps as a float >= 0 (numbers and ``fractions.Fraction`` accepted).

    Given the attack's ``norm`` and bounds ``lo``, ``hi``: an L-inf budget
    larger than the pixel range (eps 8 for pixels in [0, 1]) is refused, since
    its ball holds every image; the message suggests the budget in 255ths
    that such a number usually means (8/255).
    """
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number >= 0, got {eps!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {eps!r}")
    if norm == "inf" and lo is not None:
        span = float(to_device((hi - lo).max(), "cpu"))
        if value > span:
            raise ValueError(f"{name}: {value:g} is more than the whole pixel range ({span:g}), so its L-inf "
                             f"ball holds every image; eps is in pixel units: for {value:g}/255 of the range "
                             f"pass {name}={value:g}/255 (= {value / 255 * span:.4g})")
    return value


def eps_text(eps):
    """A budget for people: '0.0314 (8/255)' when eps is a whole number of 255ths, else the number."""
    k = eps * 255
    if k > 0 and abs(k - round(k)) < 1e-6:
        return f"{eps:.4f} ({int(round(k))}/255)"
    return f"{eps:.4g}"


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
