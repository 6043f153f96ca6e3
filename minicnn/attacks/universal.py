"""Universal adversarial perturbations: one small v that fools the model on most images.

Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial
perturbations", CVPR 2017. With k(x) the model's predicted class and
P_{p,eps} the projection onto the eps-ball of the norm p:

    v = 0
    while fooling_rate(v) < target and passes < max_passes:
        for each image x_i (in a seeded random order):
            if k(x_i + v) == k(x_i):                     # not fooled yet
                dv = DeepFool's minimal perturbation of x_i + v
                if k(x_i + v + dv) != k(x_i):
                    v = P_{p,eps}(v + dv)

    fooling_rate(v) = fraction of images with k(clip(x_i + v)) != k(x_i).

A perturbation is only "universal" if it also fools images it was not
computed on: pass ``held_out`` images and the result reports the fooling
rate on them too.
"""
from dataclasses import dataclass, field

import numpy as np

from ..backend import get_array_module, to_device
from ..analysis import analysis_mode, as_images, bounds_of
from ._common import eps_of, logits_of, norm_of, project
from .deepfool import deepfool_with_info

__all__ = ["universal_perturbation", "UniversalResult", "fooling_rate"]


@dataclass
class UniversalResult:
    """What ``universal_perturbation`` found.

    perturbation: v, one image's shape (C, H, W), on the images' device.
    fooling_rate: fraction of ``images`` whose prediction v changes.
    held_out_fooling_rate: the same on ``held_out`` (None when none were given).
    passes: passes over the images made; history: fooling rate after each pass.
    eps, norm: the budget v respects.
    """
    perturbation: object
    fooling_rate: float
    held_out_fooling_rate: object
    passes: int
    eps: float
    norm: object
    history: list = field(default_factory=list)

    def __iter__(self):
        """``v, rate, held_out_rate = universal_perturbation(...)`` also works."""
        return iter((self.perturbation, self.fooling_rate, self.held_out_fooling_rate))

    def to_dict(self):
        return {"fooling_rate": self.fooling_rate, "held_out_fooling_rate": self.held_out_fooling_rate,
                "passes": self.passes, "eps": self.eps, "norm": str(self.norm), "history": list(self.history)}


def _predict(model, x, batch_size):
    return np.asarray(to_device(logits_of(model, x, batch_size).argmax(axis=1), "cpu"))


def fooling_rate(model, images, v, bounds=(0, 1), batch_size=256):
    """Fraction of ``images`` whose predicted class changes when v is added (and the result clipped)."""
    x = as_images(images, name="images", bounds=bounds, spatial=False)
    lo, hi = bounds_of(bounds, x)
    xp = get_array_module(x)
    with analysis_mode(model):
        clean = _predict(model, x, batch_size)
        moved = _predict(model, xp.minimum(xp.maximum(x + v, lo), hi), batch_size)
    return float((clean != moved).mean())


def universal_perturbation(model, images, eps, norm="inf", max_passes=10, target_fooling_rate=0.8,
                           held_out=None, overshoot=0.02, deepfool_steps=10, candidates=10, seed=0,
                           bounds=(0, 1), batch_size=256):
    """A universal perturbation v with ||v|| <= eps (Moosavi-Dezfooli et al.'s algorithm).

    Args:
        model: images in ``bounds`` -> logits.
        images: the images (N, C, H, W) v is computed on.
        eps: budget of v in ``norm`` ("inf" or 2), pixel units.
        max_passes: most passes over the images.
        target_fooling_rate: stop once this fraction of ``images`` is fooled.
        held_out: optional other images to report the fooling rate on.
        overshoot, deepfool_steps, candidates: DeepFool's settings for each inner step.
        seed: seeds the order the images are visited in.
        batch_size: images per forward pass when measuring fooling rates.

    Returns:
        ``UniversalResult`` (perturbation, fooling_rate, held_out_fooling_rate, passes, history).
    """
    x = as_images(images, name="images", bounds=bounds, spatial=False)
    norm = norm_of(norm)
    lo, hi = bounds_of(bounds, x)
    eps = eps_of(eps, norm=norm, lo=lo, hi=hi)
    if not 0 <= float(target_fooling_rate) <= 1:
        raise ValueError(f"target_fooling_rate: expected a number in [0, 1], got {target_fooling_rate!r}")
    if not isinstance(max_passes, (int, np.integer)) or max_passes < 0:
        raise ValueError(f"max_passes: expected an integer >= 0, got {max_passes!r}")
    xp = get_array_module(x)
    h = None
    if held_out is not None:
        h = as_images(held_out, name="held_out", bounds=bounds, spatial=False)
        if h.shape[1:] != x.shape[1:]:
            raise ValueError(f"held_out: expected images of shape {x.shape[1:]} like images, got {h.shape[1:]}")
    rng = np.random.default_rng(seed)
    zero = xp.zeros((1,) + x.shape[1:], dtype=x.dtype)
    v = zero.copy()                                   # kept as a batch of one image

    def apply(batch):
        return xp.minimum(xp.maximum(batch + v, lo), hi)

    history, passes = [], 0
    with analysis_mode(model):
        clean = _predict(model, x, batch_size)
        rate = float((_predict(model, apply(x), batch_size) != clean).mean())
        while rate < target_fooling_rate and passes < max_passes:
            passes += 1
            for i in rng.permutation(x.shape[0]):
                xi = apply(x[i:i + 1])
                if _predict(model, xi, None)[0] != clean[i]:
                    continue                                           # already fooled by v
                adv, fooled, _ = deepfool_with_info(model, xi, deepfool_steps, overshoot, bounds, candidates)
                if fooled[0]:
                    v = project(zero, v + (adv - xi), eps, norm, -np.inf, np.inf)
            rate = float((_predict(model, apply(x), batch_size) != clean).mean())
            history.append(rate)
        held = None
        if h is not None:
            held = float((_predict(model, apply(h), batch_size) != _predict(model, h, batch_size)).mean())
    return UniversalResult(perturbation=v[0], fooling_rate=rate, held_out_fooling_rate=held, passes=passes,
                           eps=eps, norm=norm, history=history)
