"""Figures for ``minicnn.attacks`` (matplotlib; the Agg backend is chosen when a function runs).

Each function draws one figure, saves it to ``path`` when given (PNG; the
figure is then closed) and returns the matplotlib Figure. Images are
(C, H, W) arrays (NumPy or CuPy) in ``bounds``.

- ``examples``: original | perturbation (scaled to be visible, the scale
  printed) | adversarial, the predicted class and confidence under each.
- ``robust_accuracy``: robust accuracy against eps, one line per report.
- ``universal``: a universal perturbation and what it does to a few images.
- ``fooling_images``: one fooling image per class with the model's confidence.
"""
import numpy as np

from ..autograd import Tensor
from ..backend import to_device

__all__ = ["examples", "robust_accuracy", "universal", "fooling_images"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _np(a):
    return np.asarray(to_device(a.data if isinstance(a, Tensor) else a, "cpu"), dtype=np.float64)


def _hwc(image, lo=0.0, hi=1.0):
    """(C, H, W) -> (H, W, 3) or (H, W) in [0, 1] for imshow."""
    img = (_np(image) - lo) / (hi - lo)
    if img.ndim == 3:
        img = img.transpose(1, 2, 0)
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif img.shape[2] != 3:
            img = img[:, :, :3] if img.shape[2] > 3 else img.mean(axis=2)
    return np.clip(img, 0, 1)


def _show(ax, img, title=None, xlabel=None, color="black"):
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9, color=color)


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        _plt().close(fig)
    return fig


def _predict(model, x):
    """(class indices, probabilities of them) for a batch, NumPy."""
    from ..analysis import analysis_mode
    from ._common import logits_of

    with analysis_mode(model):
        z = _np(logits_of(model, x))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    k = p.argmax(axis=1)
    return k, p[np.arange(len(k)), k]


def _name(classes, k):
    return str(classes[k]) if classes is not None and k < len(classes) else f"class {k}"


def _eps_text(v):
    k = v * 255
    return f"{v:.4f} = {k:.1f}/255" if v < 1 else f"{v:.3g}"


def examples(model, x, x_adv, classes=None, labels=None, path=None, title=None, max_images=6):
    """Rows of original | perturbation x s + 0.5 | adversarial, with predictions and confidences.

    The perturbation d = x_adv - x is drawn as 0.5 + s d with s chosen so the
    largest |d| fills the range; s and ||d||_inf are printed over it.
    ``labels`` (optional) marks wrong predictions in red.
    """
    plt = _plt()
    classes = classes if classes is not None else getattr(model, "classes", None)
    x, x_adv = _np(x)[:max_images], _np(x_adv)[:max_images]
    n = x.shape[0]
    k0, p0 = _predict(model, x.astype(np.float32))
    k1, p1 = _predict(model, x_adv.astype(np.float32))
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.3 * n + 0.4), squeeze=False)
    for i in range(n):
        d = x_adv[i] - x[i]
        m = float(np.abs(d).max())
        s = 0.5 / m if m > 0 else 1.0
        ok0 = labels is None or k0[i] == int(labels[i])
        ok1 = labels is None or k1[i] == int(labels[i])
        changed = k1[i] != k0[i]
        _show(axes[i, 0], _hwc(x[i]), "original" if i == 0 else None,
              f"{_name(classes, k0[i])} ({100 * p0[i]:.1f}%)", "black" if ok0 else "red")
        _show(axes[i, 1], _hwc(0.5 + s * d), f"perturbation x{s:.1f}",
              f"|d|inf {m:.4f} ({255 * m:.1f}/255)\nL2 {np.linalg.norm(d):.3f}, "
              f"{int((d != 0).any(axis=0).sum()) if d.ndim == 3 else int((d != 0).sum())} px changed")
        axes[i, 1].title.set_fontsize(8)
        if labels is not None:
            axes[i, 0].set_ylabel(f"true: {_name(classes, int(labels[i]))}", fontsize=8)
        _show(axes[i, 2], _hwc(x_adv[i]), "adversarial" if i == 0 else None,
              f"{_name(classes, k1[i])} ({100 * p1[i]:.1f}%)",
              "red" if (changed and labels is None) or not ok1 else "black")
    fig.suptitle(title or "adversarial examples: original | perturbation (scaled) | adversarial", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def robust_accuracy(reports, path=None, title=None):
    """Robust accuracy (%) against eps (in /255) for one ``AttackReport`` or a list of them."""
    plt = _plt()
    reports = reports if isinstance(reports, (list, tuple)) else [reports]
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    top = 0
    for rep in reports:
        rows = [r for r in rep.rows if r["eps"] is not None]
        eps = np.array([r["eps"] for r in rows]) * 255
        acc = np.array([r["robust_accuracy"] for r in rows]) * 100
        ax.plot(eps, acc, "o-", label=f"{rep.attack}")
        for e, a in zip(eps, acc):
            ax.annotate(f"{a:.0f}%", (e, a), textcoords="offset points", xytext=(3, 4), fontsize=7)
        top = max(top, rep.clean_accuracy * 100)
    ax.axhline(top, color="gray", ls="--", lw=1, label=f"clean accuracy {top:.1f}%")
    ax.set_xlabel("eps (L-inf budget, in 1/255 of the pixel range)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    n = reports[0].n
    ax.set_title(title or f"accuracy under attack ({n} images)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def universal(result, model=None, images=None, classes=None, path=None, title=None, max_images=4):
    """The perturbation v (scaled to be visible, scale printed, with a colour bar of its values),
    and, given ``model`` and ``images``, a few images before and after adding v with predictions."""
    plt = _plt()
    v = _np(result.perturbation if hasattr(result, "perturbation") else result)
    k = 0 if images is None or model is None else min(max_images, len(images))
    fig, axes = plt.subplots(2 if k else 1, max(k, 2) if k else 2, figsize=(2.4 * max(k, 2), 6.0 if k else 2.8),
                             squeeze=False)
    m = float(np.abs(v).max())
    s = 0.5 / m if m > 0 else 1.0
    _show(axes[0, 0], _hwc(0.5 + s * v), f"v x{s:.1f} + 0.5",
          f"|v|inf {m:.4f} ({255 * m:.1f}/255), L2 {np.linalg.norm(v):.3f}")
    im = axes[0, 1].imshow(np.abs(v).max(axis=0) if v.ndim == 3 else np.abs(v), cmap="magma",
                           interpolation="nearest")
    axes[0, 1].set_xticks([])
    axes[0, 1].set_yticks([])
    axes[0, 1].set_title("|v| (max over channels)", fontsize=9)
    cb = fig.colorbar(im, ax=axes[0, 1], fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=7)
    for j in range(2, axes.shape[1]):
        axes[0, j].axis("off")
    if k:
        classes = classes if classes is not None else getattr(model, "classes", None)
        x = _np(images)[:k]
        xv = np.clip(x + v, 0, 1)
        k0, p0 = _predict(model, x.astype(np.float32))
        k1, p1 = _predict(model, xv.astype(np.float32))
        for j in range(k):
            _show(axes[1, j], _hwc(xv[j]), f"{_name(classes, k0[j])} ({100 * p0[j]:.0f}%) ->",
                  f"{_name(classes, k1[j])} ({100 * p1[j]:.0f}%)", "red" if k1[j] != k0[j] else "black")
    rates = ""
    if hasattr(result, "fooling_rate"):
        rates = f": fools {100 * result.fooling_rate:.0f}% of its images"
        if result.held_out_fooling_rate is not None:
            rates += f", {100 * result.held_out_fooling_rate:.0f}% of held-out images"
    fig.suptitle(title or f"universal perturbation{rates}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def fooling_images(images, probabilities, targets, classes=None, path=None, title=None, cols=5):
    """One fooling image per target with the class and the model's confidence under it."""
    plt = _plt()
    images = _np(images)
    probabilities = np.atleast_1d(_np(probabilities))
    targets = np.atleast_1d(np.asarray(targets))
    n = len(images)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes[i // cols, i % cols]
        ax.axis("on")
        _show(ax, _hwc(images[i]), None, f"{_name(classes, int(targets[i]))}\n{100 * probabilities[i]:.2f}%")
    fig.suptitle(title or "fooling images: what the model is sure it sees", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
