"""DeepFool: the smallest L2 step that crosses the nearest decision boundary, repeated.

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method
to fool deep neural networks", CVPR 2016.

For a linear classifier the answer is closed-form. With two classes and
f(x) = w . x + b (class by the sign of f), the closest point across the
boundary f = 0 is reached by

    r = -f(x) w / ||w||_2^2.

With many classes, k0 the current class and, for each other class k,

    f'_k = f_k(x) - f_k0(x),   w'_k = grad f_k(x) - grad f_k0(x),

the boundary of class k is |f'_k| / ||w'_k|| away; DeepFool steps to the
nearest one, l = argmin_k |f'_k| / ||w'_k||:

    r_i = |f'_l| / ||w'_l||^2 * w'_l.

A deep network is not linear, so it linearises again at the new point and
repeats until the label changes, accumulating r = sum_i r_i. The image
tried at each step (and returned) is x + (1 + overshoot) r: the overshoot,
a fraction of the whole perturbation, pushes it just past the boundary it
would otherwise only reach.

The box. Pixels live in ``bounds`` (for images, [0, 1]), and real images
have many pixels at 0 or 1. A pixel at its lower bound cannot move down, one
at its upper bound cannot move up: clipping such a step afterwards throws
away part of it, so the image lands short of the boundary, the next step
lands short again, and some images never cross. Here each step is computed
without them: for each candidate k, the coordinates of w'_k that would push
a pixel already at a bound out of the box are set to 0 before the distance
|f'_k| / ||w'_k|| and the step are computed. The linearised margin then
changes by exactly w'_l . r_i = |f'_l|, as without a box. A step that takes
a free pixel past a bound is clipped there (x + r stays in the box), and
the next step leaves that pixel out in turn. The result is always inside
``bounds``.

Each step costs one forward pass and one backward pass per candidate class
(the gradients of the logits f_k), so ``candidates`` limits the classes
considered to the top ones of the clean prediction (all of them by default
for 10 classes).
"""
import numpy as np

from ..autograd import Tensor, enable_grad
from ..backend import get_array_module, to_device
from ..analysis import analysis_mode, as_images, bounds_of
from ._common import logits_of, per_image_norms

__all__ = ["deepfool"]


def _logit_gradients(model, x, classes):
    """(logits, grads): the logits at x and d f_k / dx for each column k of ``classes`` (N, K).

    grads has shape (K, N, ...): grads[j, n] = d logits[n, classes[n, j]] / d x[n]. One forward
    pass, K backward passes through the same graph (the images do not interact in eval mode).
    """
    xp = get_array_module(x)
    xt = Tensor(x, requires_grad=True)
    with enable_grad():
        out = model(xt)
        logits = out.data
        grads = []
        rows = xp.arange(x.shape[0])
        for j in range(classes.shape[1]):
            seed = xp.zeros_like(logits)
            seed[rows, classes[:, j]] = 1
            xt.grad = None
            out.backward(seed, retain_graph=j + 1 < classes.shape[1])
            grads.append(xt.grad if xt.grad is not None else xp.zeros_like(x))
    return logits, xp.stack(grads)


def deepfool_with_info(model, x, steps=50, overshoot=0.02, bounds=(0, 1), candidates=10):
    """DeepFool, also returning (fooled (N,) bool, steps taken (N,) int) as NumPy arrays.

    ``fooled[n]`` is the model's own verdict on the returned batch: its
    argmax for ``x_adv[n]`` differs from its argmax for ``x[n]``.
    The guard (eval mode, frozen parameters) is the caller's: ``deepfool`` and
    ``universal_perturbation`` wrap this in ``analysis_mode(model)``.
    """
    xp = get_array_module(x)
    lo, hi = bounds_of(bounds, x)
    n = x.shape[0]
    logits = logits_of(model, x)
    num_classes = logits.shape[1]
    k = max(2, min(int(candidates), num_classes))
    order = xp.argsort(-logits, axis=1)[:, :k]            # column 0: the clean class k0
    k0 = order[:, 0]
    r_tot = xp.zeros_like(x)                              # the steps so far: x + r_tot stays in the box
    x_adv = x.copy()
    active = np.ones(n, dtype=bool)
    taken = np.zeros(n, dtype=np.int64)
    grow = x.dtype.type(1 + overshoot)
    for step in range(int(steps) + 1):
        # The verdict on the whole batch, as the caller will see it: a float32 forward pass may round
        # an image's logits differently in a smaller batch, and an image right at the boundary must
        # not be called fooled on a subset and come back unfooled in the batch.
        fooled = np.asarray(to_device(logits_of(model, x_adv).argmax(axis=1) != k0, "cpu"))
        active &= ~fooled                                    # label changed: this image is done
        idx = np.flatnonzero(active)                         # images not fooled yet (NumPy indices)
        if idx.size == 0 or step == steps:
            break
        at = xp.asarray(idx)                                 # the same indices on x's device
        cls = order[at]
        z = x_adv[at]
        logits, grads = _logit_gradients(model, z, cls)
        rows = xp.arange(idx.size)
        f_k = xp.take_along_axis(logits, cls, axis=1)        # (m, K): the candidates' logits
        fp = (f_k[:, 1:] - f_k[:, :1]).T                     # f'_k = f_k - f_k0 (< 0), (K-1, m)
        w = grads[1:] - grads[:1]                            # w'_k = grad f_k - grad f_k0, (K-1, m, ...)
        # the box: a pixel at its lower bound cannot move down, one at its upper bound cannot move up
        w = xp.where(((z <= lo) & (w < 0)) | ((z >= hi) & (w > 0)), w.dtype.type(0), w)
        wn = xp.stack([per_image_norms(w[j], 2) for j in range(w.shape[0])])   # ||w'_k||, (K-1, m)
        best = (xp.abs(fp) / xp.maximum(wn, 1e-12)).argmin(axis=0)           # l: the nearest boundary
        w_l, f_l, n_l = w[best, rows], fp[best, rows], wn[best, rows]
        scale = (xp.abs(f_l) / xp.maximum(n_l, 1e-12) ** 2).astype(x.dtype)   # |f'_l| / ||w'_l||^2
        r = scale.reshape((-1,) + (1,) * (x.ndim - 1)) * w_l
        r_tot[at] = xp.minimum(xp.maximum(x[at] + r_tot[at] + r, lo), hi) - x[at]
        x_adv[at] = xp.minimum(xp.maximum(x[at] + grow * r_tot[at], lo), hi)
        taken[idx] += 1
    return x_adv, fooled, taken


def deepfool(model, x, steps=50, overshoot=0.02, bounds=(0, 1), candidates=10):
    """DeepFool's minimal L2 perturbation of each image of x (N, ...): returns x_adv like x.

    Args:
        model: images in ``bounds`` -> logits.
        x: images (array or Tensor) inside ``bounds``.
        steps: most linearisation steps per image (most images need 2-3).
        overshoot: the returned image is x + (1 + overshoot) * r (clipped to the box).
        bounds: pixel box; every step stays inside it (see the module docstring).
        candidates: how many classes (the top ones of the clean logits) to
            consider crossing to; each costs one backward pass per step.

    The clean class is the model's own prediction (DeepFool needs no label).
    Images the attack does not fool within ``steps`` come back with the
    perturbation reached so far.
    """
    x = as_images(x, bounds=bounds, spatial=False)
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
    if not np.isfinite(overshoot) or overshoot < 0:
        raise ValueError(f"overshoot: expected a number >= 0, got {overshoot!r}")
    with analysis_mode(model):
        x_adv, _, _ = deepfool_with_info(model, x, steps, overshoot, bounds, candidates)
    return x_adv
