"""Szegedy et al.'s minimal perturbation: box-constrained L-BFGS with a line search over c.

Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow & Fergus, "Intriguing
properties of neural networks", ICLR 2014: the smallest D that makes the
model say ``target`` is approximated by

    minimise over D:   c ||D||_2^2 + loss(x + D, target)    subject to  lo <= x + D <= hi,

where loss is the cross-entropy of the target class. The box constraint is
exactly what L-BFGS-B handles (SciPy's implementation: the optimiser is not
the lesson here). A larger c weighs the size of D more, so D shrinks until
x + D stops reaching the target; the line search looks, per image, for the
largest c that still succeeds (multiplying or dividing c by 10 until it
brackets the change, then bisecting geometrically), and keeps the smallest
successful D. (The squared norm keeps the objective smooth at D = 0, where
L-BFGS-B starts; the paper writes |D|.)

The images of a batch are solved together as one vector: the objective is
a sum of one term per image (each with its own c), so the joint minimiser
is the per-image one.
"""
import numpy as np

from ..backend import device_of, get_array_module, to_device
from ..analysis import analysis_mode, as_images, bounds_of
from ._common import labels_of, logits_of, loss_gradient, num_classes_of, \
    per_image_norms

__all__ = ["minimal_perturbation"]


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _solve(model, x, x64, lo64, hi64, target, c, max_iter):
    """argmin over z in the box of sum_n c_n ||z_n - x_n||^2 + CE(model(z_n), target_n), by L-BFGS-B."""
    from scipy.optimize import Bounds, minimize

    n = x.shape[0]
    c_full = np.repeat(c, x64.size // n)
    device = device_of(x)

    def objective(z_flat):
        z = to_device(z_flat.reshape(x.shape).astype(x.dtype), device)
        grad, logits, _ = loss_gradient(model, z, target, "target")
        logits = np.asarray(to_device(logits, "cpu"), dtype=np.float64)
        ce = -_log_softmax(logits)[np.arange(n), target].sum()
        d = z_flat - x64
        value = float((c_full * d * d).sum() + ce)
        g = 2 * c_full * d + np.asarray(to_device(grad, "cpu"), dtype=np.float64).ravel()
        return value, g

    res = minimize(objective, x64.copy(), jac=True, method="L-BFGS-B", bounds=Bounds(lo64, hi64),
                   options={"maxiter": int(max_iter)})
    z = to_device(np.clip(res.x, lo64, hi64).reshape(x.shape).astype(x.dtype), device)
    pred = np.asarray(to_device(logits_of(model, z).argmax(axis=1), "cpu"))
    return z, pred == target


def minimal_perturbation(model, x, target, c=1.0, max_iter=100, search_steps=8, bounds=(0, 1),
                         return_info=False):
    """The smallest perturbation L-BFGS-B finds that makes the model predict ``target``.

    Args:
        model: images in ``bounds`` -> logits.
        x: images (N, ...), array or Tensor, inside ``bounds``.
        target: the class (N,) (or one int for all) each image should become.
        c: the first weight of ||D||^2 tried; the line search moves it by
            factors of 10 and then bisects (``search_steps`` L-BFGS-B runs in all).
        max_iter: L-BFGS-B iterations per run (each one forward and one backward pass).
        bounds: the pixel box x + D must stay in.
        return_info: also return a dict with ``success`` (N,) bool, ``c`` (N,)
            the weight of the returned D, and ``l2`` (N,) its norm.

    Returns:
        x + D (like x): for images where no c succeeded, x itself, unchanged.
    """
    x = as_images(x, bounds=bounds, spatial=False)
    lo, hi = bounds_of(bounds, x)
    c0 = float(c)
    if not np.isfinite(c0) or c0 <= 0:
        raise ValueError(f"c: expected a positive number, got {c!r}")
    if int(search_steps) < 1 or int(max_iter) < 1:
        raise ValueError(f"search_steps and max_iter: expected integers >= 1, got {search_steps!r}, {max_iter!r}")
    xp = get_array_module(x)
    n = x.shape[0]
    x64 = np.asarray(to_device(x, "cpu"), dtype=np.float64).ravel()
    lo64 = np.broadcast_to(np.asarray(to_device(lo, "cpu"), dtype=np.float64), x.shape).ravel()
    hi64 = np.broadcast_to(np.asarray(to_device(hi, "cpu"), dtype=np.float64), x.shape).ravel()
    with analysis_mode(model):
        t = labels_of(target, n, num_classes_of(logits_of(model, x[:1])), "target")
        best = x.copy()
        best_norm = np.full(n, np.inf)
        best_c = np.full(n, np.nan)
        c_now = np.full(n, c0)
        c_ok = np.full(n, np.nan)       # largest c known to succeed
        c_fail = np.full(n, np.nan)     # smallest c known to fail
        for _ in range(int(search_steps)):
            z, ok = _solve(model, x, x64, lo64, hi64, t, c_now, max_iter)
            norms = np.asarray(to_device(per_image_norms(z - x, 2), "cpu"))
            better = ok & (norms < best_norm)
            if better.any():
                at = xp.asarray(np.flatnonzero(better))
                best[at] = z[at]
                best_norm[better], best_c[better] = norms[better], c_now[better]
            c_ok = np.where(ok, np.fmax(c_ok, c_now), c_ok)
            c_fail = np.where(~ok, np.fmin(c_fail, c_now), c_fail)
            both = ~np.isnan(c_ok) & ~np.isnan(c_fail)
            c_now = np.where(both, np.sqrt(np.where(both, c_ok * c_fail, 1.0)),
                             np.where(ok, c_now * 10, c_now / 10))
    if return_info:
        return best, {"success": np.isfinite(best_norm), "c": best_c,
                      "l2": np.where(np.isfinite(best_norm), best_norm, 0.0)}
    return best
