"""Fooling images: from noise to an image the model calls ``target`` with >= 99% confidence.

Nguyen, Yosinski & Clune, "Deep Neural Networks are Easily Fooled: High
Confidence Predictions for Unrecognizable Images", CVPR 2015, made such
images with evolutionary algorithms and with gradient ascent; this is the
gradient-ascent version. Starting from noise (or flat gray), repeat

    g = grad_x log p_target(x)                      (log-softmax of the logits)
    g = 0 where a pixel sits at a bound and g pushes it out
    x = clip_bounds( x + lr * g / max|g| )          (the largest pixel moves by lr)

until p_target(x) >= threshold or ``steps`` run out. Normalising by the
largest gradient entry makes ``lr`` a step in pixel units whatever the
scale of the logits; leaving out the pixels already held at a bound keeps
the step from shrinking to nothing once many pixels saturate. Nothing asks the image to look like anything: the
model is confident about a picture no person would name.
"""
import numpy as np

from .. import functional as F
from ..autograd import Tensor, enable_grad
from ..backend import get_array_module, to_device
from ..nn import Module, Normalize
from ..analysis import analysis_mode, bounds_of
from ._common import labels_of, logits_of, num_classes_of

__all__ = ["fooling_image", "input_shape_of"]


def input_shape_of(model, size=32):
    """(C, size, size) with C taken from the model's first ``nn.Normalize`` (3 when it has none)."""
    if isinstance(model, Module):
        for m in model.modules():
            if isinstance(m, Normalize):
                return (int(m.mean.shape[0]), size, size)
    return (3, size, size)


def fooling_image(model, target, steps=300, lr=0.05, start="noise", seed=0, threshold=0.99, shape=None,
                  bounds=(0, 1), device="cpu"):
    """An image (or one per target) the model assigns to ``target`` with probability >= ``threshold``.

    Args:
        model: images in ``bounds`` -> logits.
        target: a class index, or a list/array of them (one image each).
        steps: most gradient-ascent steps; each is one forward and one backward pass.
        lr: step size in pixel units (the largest pixel change per step).
        start: "noise" (uniform in ``bounds``, seeded) or "gray" (the middle of ``bounds``).
        seed: seeds the noise.
        threshold: stop once p_target reaches it (0.99 by default).
        shape: one image's shape (C, H, W); default (C, 32, 32) with C from
            the model's ``nn.Normalize`` (see ``input_shape_of``).
        bounds: pixel box of the image.
        device: "cpu" or "gpu" for the image.

    Returns:
        (image, probability): for an int target, an image (C, H, W) and a
        float; for several targets, images (N, C, H, W) and an array (N,).
    """
    single = np.ndim(target) == 0
    targets = np.atleast_1d(np.asarray(target))
    if start not in ("noise", "gray"):
        raise ValueError(f"start: expected 'noise' or 'gray', got {start!r}")
    if not 0 < float(threshold) <= 1:
        raise ValueError(f"threshold: expected a probability in (0, 1], got {threshold!r}")
    if not float(lr) > 0:
        raise ValueError(f"lr: expected a positive step size, got {lr!r}")
    shape = tuple(shape) if shape is not None else input_shape_of(model)
    n = targets.shape[0]
    probe = to_device(np.zeros((1,) + shape, dtype=np.float32), device)
    lo, hi = bounds_of(bounds, probe)
    lo_np = np.broadcast_to(np.asarray(to_device(lo, "cpu"), dtype=np.float64), shape)
    hi_np = np.broadcast_to(np.asarray(to_device(hi, "cpu"), dtype=np.float64), shape)
    if start == "noise":
        u = np.random.default_rng(seed).uniform(0, 1, (n,) + shape)
    else:
        u = np.full((n,) + shape, 0.5)
    x = to_device((lo_np + u * (hi_np - lo_np)).astype(np.float32), device)
    xp = get_array_module(x)
    with analysis_mode(model):
        t = labels_of(targets, n, num_classes_of(logits_of(model, x[:1])), "target")
        t_dev = xp.asarray(t)
        prob = np.zeros(n)
        active = np.ones(n, dtype=bool)
        for step_no in range(int(steps) + 1):
            xt = Tensor(x, requires_grad=True)
            with enable_grad():
                logp = F.log_softmax(model(xt), axis=1)
                picked = logp[xp.arange(n), t_dev]
                picked.sum().backward()
            prob = np.exp(np.asarray(to_device(picked.data, "cpu"), dtype=np.float64))
            active = prob < threshold
            if not active.any() or step_no == steps:
                break
            g = xt.grad
            g = xp.where(((x <= lo) & (g < 0)) | ((x >= hi) & (g > 0)), 0, g)   # pixels held at a bound
            scale = xp.abs(g).reshape(n, -1).max(axis=1).reshape((n,) + (1,) * len(shape))
            step = lr * g / xp.maximum(scale, 1e-12)
            step = step * xp.asarray(active.astype(np.float32)).reshape((n,) + (1,) * len(shape))
            x = xp.minimum(xp.maximum(x + step.astype(x.dtype), lo), hi)
    if single:
        return x[0], float(prob[0])
    return x, prob
