"""Figures for ``minicnn.attacks`` (matplotlib through ``minicnn.plotting``: Agg, imported when drawing).

Each function draws one figure, saves it to ``path`` when given (PNG; the
figure is then closed) and returns the matplotlib Figure. Images are
(C, H, W) arrays (NumPy or CuPy) in ``bounds``.

- ``examples``: original | perturbation (grey = unchanged, scaled to be
  visible; a few changed pixels are circled) | adversarial, the predicted
  class and confidence under each.
- ``robust_accuracy``: robust accuracy against eps, one line per report.
- ``universal``: a universal perturbation and what it does to a few images.
- ``fooling_images``: one fooling image per class with the model's confidence.
"""
import numpy as np

from ..plotting import SMALL, SUPTITLE, class_name, grid, pyplot, save, scored, show_image, show_map, to_numpy
from ._common import eps_text

__all__ = ["examples", "robust_accuracy", "universal", "fooling_images"]


def _predict(model, x, lo, hi):
    """(class indices, probabilities of them) for a batch, NumPy."""
    from ..analysis import predict

    k, p, _ = predict(model, x.astype(np.float32), bounds=(lo, hi))
    return k, p


def _changed_pixels(d):
    """(row, col) of every pixel position where some channel of d (C, H, W) or (H, W) changed."""
    return np.argwhere((d != 0).any(axis=0) if d.ndim == 3 else d != 0)


def _circle(ax, pixels, color="red"):
    """Ring each (row, col) of ``pixels`` on an image panel (one-pixel attacks: where the change is)."""
    from matplotlib.patches import Circle

    for r, c in pixels:
        ax.add_patch(Circle((c, r), 1.6, fill=False, edgecolor=color, linewidth=1.2))


def examples(model, x, x_adv, classes=None, labels=None, path=None, title=None, max_images=6, bounds=(0, 1),
             mark_pixels=5):
    """Rows of original | perturbation | adversarial, with predictions and confidences.

    The perturbation d = x_adv - x is drawn as 0.5 + s d: grey is "unchanged",
    and s is chosen so that the largest |d| fills the range (the title says
    so, with s). When at most ``mark_pixels`` pixel positions changed (a
    one-pixel attack), they are circled in red on the perturbation and the
    adversarial image. ``labels`` (optional) marks wrong predictions in red.
    """
    lo, hi = bounds
    classes = classes if classes is not None else getattr(model, "classes", None)
    x, x_adv = to_numpy(x)[:max_images], to_numpy(x_adv)[:max_images]
    n = x.shape[0]
    k0, p0 = _predict(model, x, lo, hi)
    k1, p1 = _predict(model, x_adv, lo, hi)
    fig, axes = grid(3 * n, 3, panel=(2.2, 2.3), extra_height=0.4)
    for i in range(n):
        a0, a1, a2 = axes[3 * i: 3 * i + 3]
        d = (x_adv[i] - x[i]) / (hi - lo)
        m = float(np.abs(d).max())
        s = 0.5 / m if m > 0 else 1.0
        ok0 = labels is None or k0[i] == int(labels[i])
        ok1 = labels is None or k1[i] == int(labels[i])
        changed = k1[i] != k0[i]
        show_image(a0, x[i], "original" if i == 0 else None, scored(classes, k0[i], p0[i], 1),
                   "black" if ok0 else "red", lo, hi)
        pixels = _changed_pixels(d)
        show_image(a1, 0.5 + s * d, f"perturbation d: 0.5 + {s:.2g} d\n(grey = unchanged)",
                   f"|d|inf {m:.4f} ({255 * m:.1f}/255)\nL2 {np.linalg.norm(d):.3f}, {len(pixels)} px changed")
        a1.title.set_fontsize(SMALL + 1)
        if labels is not None:
            a0.set_ylabel(f"true: {class_name(classes, labels[i])}", fontsize=SMALL + 1)
        show_image(a2, x_adv[i], "adversarial" if i == 0 else None, scored(classes, k1[i], p1[i], 1),
                   "red" if (changed and labels is None) or not ok1 else "black", lo, hi)
        if 0 < len(pixels) <= mark_pixels:
            _circle(a1, pixels)
            _circle(a2, pixels)
    fig.suptitle(title or "adversarial examples: original | perturbation | adversarial", fontsize=SUPTITLE)
    fig.tight_layout()
    return save(fig, path)


def robust_accuracy(reports, path=None, title=None):
    """Robust accuracy (%) against eps (in /255) for one ``AttackReport`` or a list of them."""
    plt = pyplot()
    reports = reports if isinstance(reports, (list, tuple)) else [reports]
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    top = 0
    for rep in reports:
        rows = [r for r in rep.rows if r["eps"] is not None]
        eps = np.array([r["eps"] for r in rows]) * 255
        acc = np.array([r["robust_accuracy"] for r in rows]) * 100
        ax.plot(eps, acc, "o-", label=f"{rep.attack}")
        for e, a in zip(eps, acc):
            ax.annotate(f"{a:.0f}%", (e, a), textcoords="offset points", xytext=(3, 4), fontsize=SMALL)
        top = max(top, rep.clean_accuracy * 100)
    ax.axhline(top, color="gray", ls="--", lw=1, label=f"clean accuracy {top:.1f}%")
    ax.set_xlabel("eps (L-inf budget, in 1/255 of the pixel range)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL + 1)
    n = reports[0].n
    ax.set_title(title or f"accuracy under attack ({n} images)", fontsize=SUPTITLE)
    fig.tight_layout()
    return save(fig, path)


def universal(result, model=None, images=None, classes=None, path=None, title=None, max_images=4):
    """The perturbation v (scaled to be visible, with a colour bar of |v|) on top, and, given
    ``model`` and ``images``, a few images with v added below, each with the prediction before and after."""
    from matplotlib.gridspec import GridSpec

    plt = pyplot()
    v = to_numpy(result.perturbation if hasattr(result, "perturbation") else result)
    k = 0 if images is None or model is None else min(max_images, len(images))
    cols = max(k, 2)                                  # the two top panels share the width
    fig = plt.figure(figsize=(2.4 * cols, 5.8 if k else 2.9))
    gs = GridSpec(2 if k else 1, cols, figure=fig)
    m = float(np.abs(v).max())
    s = 0.5 / m if m > 0 else 1.0
    budget = f" (eps {eps_text(result.eps)}, L-{result.norm})" if hasattr(result, "eps") else ""
    show_image(fig.add_subplot(gs[0, :cols // 2]), 0.5 + s * v, f"v{budget}: 0.5 + {s:.2g} v",
               f"|v|inf {m:.4f} ({255 * m:.1f}/255), L2 {np.linalg.norm(v):.3f}")
    show_map(fig.add_subplot(gs[0, cols // 2:]), np.abs(v).max(axis=0) if v.ndim == 3 else np.abs(v),
             "|v| (max over channels)", cmap="magma")
    if k:
        classes = classes if classes is not None else getattr(model, "classes", None)
        x = to_numpy(images)[:k]
        xv = np.clip(x + v, 0, 1)
        k0, p0 = _predict(model, x, 0, 1)
        k1, p1 = _predict(model, xv, 0, 1)
        for j in range(k):
            show_image(fig.add_subplot(gs[1, j * cols // k: (j + 1) * cols // k]), xv[j],
                       f"clean: {scored(classes, k0[j], p0[j])}", f"+ v: {scored(classes, k1[j], p1[j])}",
                       "red" if k1[j] != k0[j] else "black")
    rates = ""
    if hasattr(result, "fooling_rate"):
        rates = f": fools {100 * result.fooling_rate:.0f}% of its images"
        if result.held_out_fooling_rate is not None:
            rates += f", {100 * result.held_out_fooling_rate:.0f}% of held-out images"
    fig.suptitle(title or f"universal perturbation{rates}", fontsize=SUPTITLE)
    fig.tight_layout()
    return save(fig, path)


def fooling_images(images, probabilities, targets, classes=None, path=None, title=None, cols=5):
    """One fooling image per target with the class and the model's confidence under it."""
    images = to_numpy(images)
    probabilities = np.atleast_1d(to_numpy(probabilities))
    targets = np.atleast_1d(np.asarray(targets))
    fig, axes = grid(len(images), cols, panel=(1.9, 2.4), extra_height=0.4)
    for i, ax in enumerate(axes):
        show_image(ax, images[i], None, f"{class_name(classes, targets[i])}\n{100 * probabilities[i]:.2f}%")
    fig.suptitle(title or "fooling images: what the model is sure it sees", fontsize=SUPTITLE)
    fig.tight_layout()
    return save(fig, path)
