"""Robust evaluation: how accurate is the model under an attack, for each budget eps?

For each eps the attack makes x_adv from every image; then

    clean accuracy   = mean[ k(x) == y ]
    robust accuracy  = mean[ k(x) == y  and  k(x_adv) == y ]
    success rate     = fraction of the correctly classified images the attack turns wrong
                     = 1 - robust / clean

and the size of the perturbations actually used, d = x_adv - x recomputed
from the returned images (not taken from the attack's parameters): mean and
max over the images of ||d||_inf, ||d||_2 and ||d||_0 (the number of pixel
positions (h, w) where any channel changed).

A robust accuracy means something only against a strong attack: FGSM is
weak (one linear step) and gradient masking fools it easily. Report PGD
(many steps, random start) at the least, never FGSM alone.
"""
import functools
import time
from dataclasses import dataclass, field

import numpy as np

from ..backend import get_array_module, to_device
from ..analysis import analysis_mode, as_images
from ._common import batched, eps_of, eps_text, labels_of, logits_of, num_classes_of, \
    per_image_norms
from .deepfool import deepfool
from .gradient_attacks import fgsm, pgd
from .minimal import minimal_perturbation
from .one_pixel import one_pixel

__all__ = ["evaluate", "AttackReport", "ATTACKS", "get_attack"]


def _untargeted_minimal(model, x, y, **kw):
    """minimal_perturbation towards the runner-up class of each image (an untargeted use of it)."""
    xp = get_array_module(x)
    logits = logits_of(model, x)
    masked = logits.copy()
    masked[xp.arange(x.shape[0]), xp.asarray(y)] = -xp.inf
    return minimal_perturbation(model, x, masked.argmax(axis=1), **kw)


# name -> (function(model, x, y, eps, seed, bounds) -> x_adv, uses eps)
ATTACKS = {
    "fgsm": (lambda m, x, y, eps, seed, bounds: fgsm(m, x, y, eps, bounds=bounds), True),
    "pgd": (lambda m, x, y, eps, seed, bounds: pgd(m, x, y, eps, steps=10, seed=seed, bounds=bounds), True),
    "pgd-l2": (lambda m, x, y, eps, seed, bounds: pgd(m, x, y, eps, steps=10, norm=2, seed=seed, bounds=bounds),
               True),
    "deepfool": (lambda m, x, y, eps, seed, bounds: deepfool(m, x, bounds=bounds), False),
    "one-pixel": (lambda m, x, y, eps, seed, bounds: one_pixel(m, x, y, seed=seed, bounds=bounds), False),
    "minimal": (lambda m, x, y, eps, seed, bounds: _untargeted_minimal(m, x, y, max_iter=50, search_steps=5,
                                                                       bounds=bounds), False),
}


def get_attack(name):
    """The (function, uses_eps) pair of a named attack; a clear error for an unknown name."""
    if name not in ATTACKS:
        raise ValueError(f"attack: expected one of {', '.join(ATTACKS)} or a callable, got {name!r}")
    return ATTACKS[name]


@dataclass
class AttackReport:
    """The result of ``evaluate``: prints as a table, ``to_dict()`` for JSON.

    rows: one dict per eps with keys eps, robust_accuracy, success_rate,
    linf_mean, linf_max, l2_mean, l2_max, l0_mean, l0_max, time_s.
    succeeded: eps -> a bool array (N,) (NumPy): the images the attack turned
    from right to wrong (the successes).
    adversarial: eps -> the adversarial images (NumPy) when ``keep_images``.
    images: what the images are, for the printed header ("held-out images").
    """
    attack: str
    n: int
    clean_accuracy: float
    rows: list = field(default_factory=list)
    time_s: float = 0.0
    adversarial: dict = field(default_factory=dict, repr=False)
    succeeded: dict = field(default_factory=dict, repr=False)
    images: str = "images"

    @property
    def robust_accuracy(self):
        """eps -> robust accuracy."""
        return {r["eps"]: r["robust_accuracy"] for r in self.rows}

    def to_dict(self):
        return {"attack": self.attack, "n": self.n, "clean_accuracy": self.clean_accuracy,
                "robust_accuracy": {("none" if e is None else e): a for e, a in self.robust_accuracy.items()},
                "time_s": self.time_s, "rows": [dict(r) for r in self.rows]}

    def __str__(self):
        head = (f"attack {self.attack} on {self.n} {self.images}: clean accuracy {100 * self.clean_accuracy:.1f}% "
                f"({self.time_s:.1f} s)")
        cols = f"{'eps':>16} {'robust acc':>10} {'success':>8} {'L-inf mean/max':>16} {'L2 mean/max':>14} " \
               f"{'L0 mean/max':>13} {'time':>8}"
        lines = [head, cols]
        for r in self.rows:
            eps = "-" if r["eps"] is None else eps_text(r["eps"])
            succ = "-" if r["success_rate"] is None else f"{100 * r['success_rate']:.1f}%"
            lines.append(f"{eps:>16} {100 * r['robust_accuracy']:>9.1f}% {succ:>8} "
                         f"{r['linf_mean']:>7.4f}/{r['linf_max']:<8.4f} {r['l2_mean']:>6.3f}/{r['l2_max']:<7.3f} "
                         f"{r['l0_mean']:>6.1f}/{r['l0_max']:<6.0f} {r['time_s']:>7.2f}s")
        return "\n".join(lines)

    __repr__ = __str__


def _name_of(attack):
    if isinstance(attack, str):
        return attack
    if isinstance(attack, functools.partial):
        return getattr(attack.func, "__name__", "attack")
    return getattr(attack, "__name__", type(attack).__name__)


def evaluate(model, attack, images, labels, epsilons=(8 / 255,), batch_size=100, seed=0, bounds=(0, 1),
             keep_images=False):
    """Clean and robust accuracy of ``model`` under ``attack`` for each eps: an ``AttackReport``.

    Args:
        model: images in ``bounds`` -> logits.
        attack: a name ("fgsm", "pgd" (10 steps, L-inf), "pgd-l2", "deepfool",
            "one-pixel", "minimal"; the functions deepfool, one_pixel and
            minimal_perturbation themselves are taken as those names) or a
            callable ``attack(model, x, y, eps)``
            returning x_adv (``functools.partial`` fixes its other settings), or
            ``attack(model, x, y)`` when ``epsilons`` is None.
        images, labels: the test images (N, ...) in ``bounds`` and their classes (N,).
        epsilons: the budgets to evaluate at (pixel units); None for attacks
            without one (DeepFool, one-pixel, minimal: one row).
        batch_size: images per attack call.
        seed: passed to the named random attacks (batch b gets seed + b).
        keep_images: keep the adversarial images (NumPy) in ``report.adversarial[eps]``.
    """
    x = as_images(images, name="images", bounds=bounds, spatial=False)
    n = x.shape[0]
    named = {deepfool: "deepfool", one_pixel: "one-pixel", minimal_perturbation: "minimal"}
    if not isinstance(attack, str) and attack in named:     # functions without an eps: use their named form
        attack = named[attack]
    if isinstance(attack, str):
        fn, uses_eps = get_attack(attack)
        if not uses_eps:
            epsilons = None
    elif callable(attack):
        fn = None
    else:
        raise TypeError(f"attack: expected a name or a callable, got {type(attack).__name__}")
    eps_list = [None] if epsilons is None else [eps_of(e) for e in np.atleast_1d(np.asarray(epsilons, dtype=float))]
    slices = batched(n, batch_size)
    start = time.perf_counter()
    with analysis_mode(model):
        logits = logits_of(model, x, batch_size)
        y = labels_of(labels, n, num_classes_of(logits), "labels")
        clean_ok = np.asarray(to_device(logits.argmax(axis=1), "cpu")) == y
    report = AttackReport(attack=_name_of(attack), n=n, clean_accuracy=float(clean_ok.mean()))
    xp = get_array_module(x)
    for eps in eps_list:
        t0 = time.perf_counter()
        adv_ok = np.zeros(n, dtype=bool)
        norms = {k: np.zeros(n) for k in ("inf", 2, 0)}
        kept = []
        for b, s in enumerate(slices):
            xb, yb = x[s], xp.asarray(y[s])
            if fn is not None:
                x_adv = fn(model, xb, yb, eps, seed + b, bounds)
            elif eps is None:
                x_adv = attack(model, xb, yb)
            else:
                x_adv = attack(model, xb, yb, eps)
            x_adv = as_images(x_adv, name="the attack's result", bounds=bounds, spatial=False)
            if x_adv.shape != xb.shape:
                raise ValueError(f"attack: returned images of shape {tuple(x_adv.shape)}, expected {tuple(xb.shape)}")
            with analysis_mode(model):
                pred = np.asarray(to_device(logits_of(model, x_adv).argmax(axis=1), "cpu"))
            adv_ok[s] = pred == y[s]
            d = x_adv.astype(np.float64) - xb.astype(np.float64)
            for k in norms:
                norms[k][s] = np.asarray(to_device(per_image_norms(d, k), "cpu"))
            if keep_images:
                kept.append(np.asarray(to_device(x_adv, "cpu")))
        robust = clean_ok & adv_ok
        report.succeeded[eps] = clean_ok & ~adv_ok
        n_clean = int(clean_ok.sum())
        report.rows.append({
            "eps": eps, "robust_accuracy": float(robust.mean()),
            "success_rate": None if n_clean == 0 else float((clean_ok & ~adv_ok).sum() / n_clean),
            "linf_mean": float(norms["inf"].mean()), "linf_max": float(norms["inf"].max()),
            "l2_mean": float(norms[2].mean()), "l2_max": float(norms[2].max()),
            "l0_mean": float(norms[0].mean()), "l0_max": float(norms[0].max()),
            "time_s": time.perf_counter() - t0,
        })
        if keep_images:
            report.adversarial[eps] = np.concatenate(kept)
    report.time_s = time.perf_counter() - start
    return report
