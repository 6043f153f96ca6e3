"""Figures for ``minicnn.explain`` (matplotlib; the Agg backend is chosen when a function runs).

Every function takes NumPy/CuPy arrays as the explain functions return
them, draws one figure, saves it to ``path`` when given (PNG) and returns
the matplotlib Figure (close it with ``plt.close(fig)`` when not saved;
saved figures are closed). Images are (C, H, W) or (H, W, C) floats in
[0, 1].

- ``overlay``: a heat map over the image, with a colour bar.
- ``method_figure``: one image and one method's map, side by side.
- ``overview``: one image under every method, side by side.
- ``feature_maps``: the channels of one layer's output (``explain.activations``).
- ``filter_grid``: the first-layer filters (``explain.filters``).
- ``top_patches``: the image patches that excite a channel most (``explain.top_activating``).
- ``receptive_field_map``: the effective receptive field with the theoretical one drawn on it.
"""
import math

import numpy as np

from ..backend import to_device
from ._common import normalize_map
from .attribution import saliency_map

__all__ = ["show_image", "overlay", "method_panel", "method_figure", "overview", "filter_grid", "top_patches",
           "feature_maps", "receptive_field_map", "save", "METHOD_TITLES"]

METHOD_TITLES = {
    "saliency": "saliency |dlogit/dx|",
    "gradient": "gradient (sum over channels)",
    "smoothgrad": "SmoothGrad",
    "deconvnet": "deconvnet",
    "guided_backprop": "guided backprop",
    "integrated_gradients": "integrated gradients",
    "occlusion": "occlusion (prob. drop)",
    "cam": "CAM",
    "grad_cam": "Grad-CAM",
}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _np(a):
    return np.asarray(to_device(a.data if hasattr(a, "requires_grad") else a, "cpu"), dtype=np.float64)


def _hwc(image):
    """An image as (H, W, 3) or (H, W) floats in [0, 1] for imshow."""
    img = _np(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[2] not in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return np.clip(img, 0, 1)


def show_image(ax, image, title=None):
    """Draw an image ((C, H, W) or (H, W, C) in [0, 1]; grey for one channel) on ``ax``, no ticks."""
    img = _hwc(image)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        _plt().close(fig)
    return fig


def _colorbar(fig, ax, im, label=None):
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=7)
    if label:
        cb.set_label(label, fontsize=7)
    return cb


def overlay(image, heat, title=None, path=None, ax=None, cmap="jet", alpha=0.5, symmetric=False,
            label=None, vmin=None, vmax=None):
    """Draw ``heat`` (H, W) over ``image`` with a colour bar; returns the Figure.

    ``symmetric=True`` centres the colour scale on 0 (a diverging map, for
    signed values such as occlusion drops); otherwise the scale runs from the
    map's minimum to its maximum (or ``vmin``/``vmax``). ``label`` names the
    colour bar's unit. A map of another size than the image is stretched over it.
    """
    plt = _plt()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.4, 3))
    fig = fig or ax.figure
    img = _hwc(image)
    h = _np(heat)
    if symmetric:
        top = float(np.abs(h).max()) or 1.0
        vmin, vmax = -top, top
    ax.imshow(img.mean(axis=2) if img.ndim == 3 else img, cmap="gray", vmin=0, vmax=1,
              extent=(0, img.shape[1], img.shape[0], 0), interpolation="nearest")
    im = ax.imshow(h, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, extent=(0, img.shape[1], img.shape[0], 0),
                   interpolation="bilinear" if h.shape != img.shape[:2] else "nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    _colorbar(fig, ax, im, label)
    return save(fig, path)


def method_panel(ax, image, method, result):
    """Draw one method's result for one image on ``ax`` in the way that method is usually shown.

    saliency, SmoothGrad: max over channels of |value| (hot colours);
    deconvnet, guided backprop: the signed reconstruction as an RGB image
    (0.5 + 0.5 * v / max|v|: grey is 0); gradient, integrated gradients: sum
    over channels, signed (red raises the class score, blue lowers it); occlusion: the
    score's drop over the image, signed; CAM, Grad-CAM: the map normalised to
    [0, 1] (ReLU, then / max) over the image.
    """
    r = _np(result)
    fig = ax.figure
    title = METHOD_TITLES.get(method, method)
    if method in ("deconvnet", "guided_backprop"):
        top = np.abs(r).max() or 1.0
        show_image(ax, 0.5 + 0.5 * r / top, title)
        return
    if method in ("saliency", "smoothgrad"):
        m = r if r.ndim == 2 else saliency_map(r[None])[0]
        im = ax.imshow(m, cmap="hot", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
        _colorbar(fig, ax, im)
        return
    if method in ("gradient", "integrated_gradients"):
        m = r.sum(axis=0) if r.ndim == 3 else r
        top = np.abs(m).max() or 1.0
        im = ax.imshow(m, cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
        _colorbar(fig, ax, im)
        return
    if method == "occlusion":
        flat = float(np.abs(r).max()) < 1e-4
        overlay(image, r, title + ("\n(no window moves the score)" if flat else ""), ax=ax, cmap="RdBu_r",
                alpha=0.6, symmetric=True)
        return
    if method in ("cam", "grad_cam"):
        norm = normalize_map(r[None])[0]
        overlay(image, norm, title + ("" if norm.max() > 0 else " (no positive evidence)"), ax=ax,
                vmin=0, vmax=1)
        return
    raise ValueError(f"method_panel: unknown method {method!r}")


def method_figure(image, method, result, title=None, path=None):
    """Two panels: the image (titled, e.g. with the class and its probability) and one method's map."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(6.2, 2.9))
    show_image(a, image, title)
    method_panel(b, image, method, result)
    fig.tight_layout()
    return save(fig, path)


def feature_maps(maps, title=None, image=None, path=None, max_maps=32):
    """The first ``max_maps`` channels of one image's activations (C, h, w), each with its own
    colour scale (its maximum in the panel's title), next to ``image`` when given."""
    plt = _plt()
    a = _np(maps)
    if a.ndim != 3:
        raise ValueError(f"feature_maps: expected one image's (C, h, w) activations, got shape {a.shape}")
    c = min(a.shape[0], max_maps)
    n = c + (image is not None)
    cols = min(8, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.6 * rows + 0.4), squeeze=False)
    k = 0
    if image is not None:
        show_image(axes[0, 0], image, "input")
        k = 1
    for ch in range(c):
        ax = axes[(k + ch) // cols, (k + ch) % cols]
        ax.imshow(a[ch], cmap="viridis", vmin=min(0.0, a[ch].min()), interpolation="nearest")
        ax.set_title(f"ch {ch}: max {a[ch].max():.2g}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    for j in range(n, rows * cols):
        axes[j // cols, j % cols].axis("off")
    fig.suptitle((title or "feature maps") + (f" (first {c} of {a.shape[0]})" if c < a.shape[0] else ""),
                 fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def overview(image, results, title=None, path=None, cols=5):
    """One image (first panel) and every method's result for it (``results``: method -> result).

    ``results`` values are one image's results (x-shaped without the batch
    axis, or (H, W)), e.g. ``{m: r[i] for m, r in explain_all(...)[0].items()}``.
    ``title`` goes over the image (the class and its probability, say).
    """
    plt = _plt()
    n = 1 + len(results)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.6 * rows), squeeze=False)
    show_image(axes[0, 0], image, title or "input")
    for k, (method, result) in enumerate(results.items(), start=1):
        method_panel(axes[k // cols, k % cols], image, method, result)
    for k in range(n, rows * cols):
        axes[k // cols, k % cols].axis("off")
    fig.tight_layout()
    return save(fig, path)


def filter_grid(model_or_conv, title=None, path=None, layer=None):
    """The filters of the first convolution (or ``layer``), tiled (``explain.filters``), with a scale note."""
    from .features import filters

    plt = _plt()
    grid = filters(model_or_conv, layer=layer)
    fig, ax = plt.subplots(figsize=(4, 4 * grid.shape[0] / grid.shape[1] + 0.4))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "first-layer filters", fontsize=10)
    ax.set_xlabel("each filter scaled by its max |w|: grey = 0", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def top_patches(top, title=None, path=None, labels=None, classes=None):
    """The k crops of ``top`` (an ``explain.top_activating`` result), each titled with its activation.

    ``labels`` (k,) and ``classes`` (names) add each image's class to its title.
    """
    plt = _plt()
    k = len(top.indices)
    cols = min(k, 5)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.3 * rows + 0.3), squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols, i % cols]
        if i >= k:
            ax.axis("off")
            continue
        name = ""
        if labels is not None:
            lab = int(labels[i])
            name = (classes[lab] if classes is not None else str(lab)) + "\n"
        show_image(ax, top.crops[i], f"{name}#{int(top.indices[i])}: {float(top.values[i]):.2f}")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def receptive_field_map(erf, geometry=None, title=None, path=None):
    """The effective receptive field (H, W) (``explain.effective_receptive_field``), with the
    theoretical field of the same centre unit drawn as a box when ``geometry`` (and the unit) is given.

    ``geometry``: (Geometry, (i, j)) of the unit whose ERF this is.
    """
    plt = _plt()
    from matplotlib.patches import Rectangle

    e = _np(erf)
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    im = ax.imshow(e / (e.max() or 1.0), cmap="viridis", interpolation="nearest")
    _colorbar(fig, ax, im, "|d unit / d x| (max = 1)")
    if geometry is not None:
        g, (i, j) = geometry
        (top, bottom), (left, right) = g.region(i, j)
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                               edgecolor="red", linewidth=1.5, label=f"theoretical {g.size[0]}x{g.size[1]}"))
        ax.legend(loc="lower right", fontsize=7)
        ax.set_xlim(-0.5, e.shape[1] - 0.5)
        ax.set_ylim(e.shape[0] - 0.5, -0.5)
    ax.set_title(title or "effective receptive field", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return save(fig, path)
