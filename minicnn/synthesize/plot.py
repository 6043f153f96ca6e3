"""Figures for minicnn.synthesize (matplotlib through ``minicnn.plotting``: Agg, imported when drawing).

Each function returns the figure and, given ``path``, saves it as a PNG (and closes it).

- ``plot_images``: a grid of images with titles (a result, a batch).
- ``plot_history``: the objective per step, and its terms.
- ``plot_class_models``: one class model per class, titled with the class,
  its logit and its probability.
- ``plot_inversions``: the original and its reconstruction from each layer.
- ``plot_style_transfer``: content, style and result side by side.
"""
import numpy as np

from ..plotting import SUPTITLE, grid, pyplot, save, show_image

__all__ = ["plot_images", "plot_history", "plot_class_models", "plot_inversions", "plot_style_transfer"]


def _batch(images):
    """A batch (N, C, H, W) array/Tensor or a list of single images, as a list of single images."""
    return list(images) if isinstance(images, (list, tuple)) else [images[i] for i in range(images.shape[0])]


def plot_images(images, titles=None, ncols=None, suptitle=None, path=None, panel=2.0):
    """A grid of images (a batch (N, C, H, W) or a list of images), each with its title."""
    ims = _batch(images)
    lines = max((t.count("\n") + 1 for t in titles), default=0) if titles else 0
    fig, axes = grid(len(ims), ncols or 5, panel=(panel, panel + 0.18 * lines), extra_height=0.4 if suptitle else 0)
    for k, ax in enumerate(axes):
        show_image(ax, ims[k], titles[k] if titles else None)
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE)
    fig.tight_layout()
    return save(fig, path)


def plot_history(history, title="objective (minimised)", path=None, terms=True):
    """The objective per step (left) and, if the history has several terms, each term on a log scale (right)."""
    plt = pyplot()
    names = [n for n in getattr(history, "terms", {}) if len(history.terms[n]) == len(history)] if terms else []
    ncols = 2 if len(names) > 1 else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 3.4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(np.arange(len(history)), list(history), color="C0")
    ax.set_xlabel("step")
    ax.set_ylabel("objective")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    for s in getattr(history, "info", {}).get("octave_start", [])[1:]:
        ax.axvline(s, color="gray", ls=":", lw=1)
    if ncols == 2:
        ax = axes[0, 1]
        for i, n in enumerate(names):
            v = np.abs(np.asarray(history.terms[n], dtype=float))
            ax.plot(v, label=n, color=f"C{i + 1}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title("terms (unweighted, |value|)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def plot_class_models(images, history, classes=None, path=None, ncols=5, suptitle="class models"):
    """One class model per panel, titled 'class / logit / p' from ``history.info`` of ``class_model``."""
    info = history.info
    targets = info["target"] if isinstance(info["target"], list) else [info["target"]]
    as_list = (lambda v: v if isinstance(v, list) else [v])
    names = as_list(info["class"]) if classes is None else [classes[t] for t in targets]
    logits, probs, grey = as_list(info["logit"]), as_list(info["probability"]), as_list(info["grey_logit"])
    titles = [f"{n}\nlogit {lg:.3g} (grey {g:.3g})\np = {p:.2f}" for n, lg, g, p in zip(names, logits, grey, probs)]
    return plot_images(images, titles, ncols=min(ncols, len(titles)), suptitle=suptitle, path=path, panel=2.2)


def plot_inversions(original, results, path=None, suptitle="reconstruction from each layer"):
    """The original image, then one reconstruction per layer.

    ``results``: a list of ``(layer_name, image, history)`` (from ``invert``);
    titles show the layer and the relative feature error reached.
    """
    ims = [original] + [img for _, img, _ in results]
    titles = ["original"] + [f"{name or 'logits'}\nrel. err {h.info.get('relative_error', float('nan')):.2g}"
                             for name, _, h in results]
    return plot_images(ims, titles, ncols=min(len(ims), 6), suptitle=suptitle, path=path, panel=2.0)


def plot_style_transfer(content, style, result, path=None, suptitle="style transfer"):
    """Content, style and result side by side."""
    return plot_images([content, style, result], ["content", "style", "result"],
                       ncols=3, suptitle=suptitle, path=path, panel=3.0)
