"""Figures for ``minicnn.explain`` (matplotlib; the Agg backend is chosen when a function runs).

Every function takes NumPy/CuPy arrays as the explain functions return
them, draws one figure, saves it to ``path`` when given (PNG) and returns
the matplotlib Figure (close it with ``plt.close(fig)`` when not saved;
saved figures are closed). Images are (C, H, W) or (H, W, C) floats in
[0, 1]. The image panel, colour bars and saving are ``minicnn.plotting``'s.

- ``overlay``: a heat map over the image, with a colour bar.
- ``method_figure``: one image and one method's map, side by side.
- ``overview``: one image under every method, side by side.
- ``feature_maps``: the channels of one layer's output (``explain.activations``).
- ``filter_grid``: the first-layer filters (``explain.filters``).
- ``top_patches``: the image patches that excite a channel most (``explain.top_activating``).
- ``receptive_field_map``: the effective receptive field with the theoretical one drawn on it.
"""

import numpy as np

from ..plotting import (LABEL, SMALL, SUPTITLE, TITLE, as_hwc, class_name, colorbar, grid, pyplot, save, show_image,
                        show_map, to_numpy)
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


def overlay(image, heat, title=None, path=None, ax=None, cmap="jet", alpha=0.5, symmetric=False,
            label=None, vmin=None, vmax=None):
    """Draw ``heat`` (H, W) over ``image`` with a colour bar; returns the Figure.

    ``symmetric=True`` centres the colour scale on 0 (a diverging map, for
    signed values such as occlusion drops); otherwise the scale runs from the
    map's minimum to its maximum (or ``vmin``/``vmax``). ``label`` names the
    colour bar's unit. A map of another size than the image is stretched over it.
    """
    plt = pyplot()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.4, 3))
    fig = fig or ax.figure
    img = as_hwc(image)
    h = to_numpy(heat)
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
        ax.set_title(title, fontsize=TITLE)
    colorbar(fig, ax, im, label)
    return save(fig, path)


def method_panel(ax, image, method, result, layer=None):
    """Draw one method's result for one image on ``ax`` in the way that method is usually shown.

    saliency, SmoothGrad: max over channels of |value| (hot colours);
    deconvnet, guided backprop: the signed reconstruction as an RGB image
    (0.5 + 0.5 * v / max|v|: grey is 0); gradient, integrated gradients: sum
    over channels, signed (red raises the class score, blue lowers it); occlusion: the
    score's drop over the image, signed; CAM, Grad-CAM: the map normalised to
    [0, 1] (ReLU, then / max) over the image.
    """
    r = to_numpy(result)
    title = METHOD_TITLES.get(method, method)
    if method in ("deconvnet", "guided_backprop"):
        top = np.abs(r).max() or 1.0
        show_image(ax, 0.5 + 0.5 * r / top, title)
        return
    if method in ("saliency", "smoothgrad"):
        show_map(ax, r if r.ndim == 2 else saliency_map(r[None])[0], title, cmap="hot")
        return
    if method in ("gradient", "integrated_gradients"):
        m = r.sum(axis=0) if r.ndim == 3 else r
        top = np.abs(m).max() or 1.0
        show_map(ax, m, title, cmap="RdBu_r", vmin=-top, vmax=top)
        return
    if method == "occlusion":
        flat = float(np.abs(r).max()) < 1e-4
        overlay(image, r, title + ("\n(no window moves the score)" if flat else ""), ax=ax, cmap="RdBu_r",
                alpha=0.6, symmetric=True)
        return
    if method in ("cam", "grad_cam"):
        title += f" at layer {layer}" if layer else ""
        norm = normalize_map(r[None])[0]
        overlay(image, norm, title + ("" if norm.max() > 0 else " (no positive evidence)"), ax=ax,
                vmin=0, vmax=1)
        return
    raise ValueError(f"method_panel: unknown method {method!r}")


def method_figure(image, method, result, title=None, path=None, layer=None):
    """Two panels: the image (titled, e.g. with the class and its probability) and one method's map.

    ``layer``: the layer CAM and Grad-CAM were taken at (named in their panel's title).
    """
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(6.2, 2.9))
    show_image(a, image, title)
    method_panel(b, image, method, result, layer)
    fig.tight_layout()
    return save(fig, path)


def feature_maps(maps, title=None, image=None, path=None, max_maps=32):
    """The first ``max_maps`` channels of one image's activations (C, h, w), each with its own
    colour scale (its maximum in the panel's title), next to ``image`` when given."""
    a = to_numpy(maps)
    if a.ndim != 3:
        raise ValueError(f"feature_maps: expected one image's (C, h, w) activations, got shape {a.shape}")
    c = min(a.shape[0], max_maps)
    fig, axes = grid(c + (image is not None), 8, panel=(1.5, 1.6), extra_height=0.4)
    if image is not None:
        show_image(axes.pop(0), image, "input")
    for ch, ax in enumerate(axes):
        show_map(ax, a[ch], vmin=min(0.0, a[ch].min()), bar=False)
        ax.set_title(f"ch {ch}: max {a[ch].max():.2g}", fontsize=SMALL)
    fig.suptitle((title or "feature maps") + (f" (first {c} of {a.shape[0]})" if c < a.shape[0] else ""),
                 fontsize=TITLE)
    fig.tight_layout()
    return save(fig, path)


def overview(image, results, title=None, path=None, cols=5, layer=None):
    """One image (first panel) and every method's result for it (``results``: method -> result).

    ``results`` values are one image's results (x-shaped without the batch
    axis, or (H, W)), e.g. ``{m: r[i] for m, r in explain_all(...)[0].items()}``.
    ``title`` goes over the image (the class and its probability, say).
    """
    fig, axes = grid(1 + len(results), cols, panel=(2.9, 2.6))
    show_image(axes[0], image, title or "input")
    for ax, (method, result) in zip(axes[1:], results.items()):
        method_panel(ax, image, method, result, layer)
    fig.tight_layout()
    return save(fig, path)


def filter_grid(model_or_conv, title=None, path=None, layer=None):
    """The filters of the first convolution (or ``layer``), tiled (``explain.filters``), with a scale note."""
    from .features import filters

    plt = pyplot()
    tiles = filters(model_or_conv, layer=layer)
    fig, ax = plt.subplots(figsize=(4, 4 * tiles.shape[0] / tiles.shape[1] + 0.4))
    show_image(ax, tiles)
    ax.set_title(title or "first-layer filters", fontsize=SUPTITLE)
    ax.set_xlabel("each filter scaled by its max |w|: grey = 0", fontsize=LABEL)
    fig.tight_layout()
    return save(fig, path)


def top_patches(top, title=None, path=None, labels=None, classes=None):
    """The k crops of ``top`` (an ``explain.top_activating`` result), each titled with its activation.

    ``labels`` (k,) and ``classes`` (names) add each image's class to its title.
    """
    fig, axes = grid(len(top.indices), 5, panel=(1.9, 2.3), extra_height=0.3)
    for i, ax in enumerate(axes):
        name = "" if labels is None else class_name(classes, labels[i]) + "\n"
        show_image(ax, top.crops[i], f"{name}#{int(top.indices[i])}: {float(top.values[i]):.2f}")
    if title:
        fig.suptitle(title, fontsize=SUPTITLE)
    fig.tight_layout()
    return save(fig, path)


def receptive_field_map(erf, geometry=None, title=None, path=None):
    """The effective receptive field (H, W) (``explain.effective_receptive_field``), with the
    theoretical field of the same centre unit drawn as a box when ``geometry`` (and the unit) is given.

    ``geometry``: (Geometry, (i, j)) of the unit whose ERF this is.
    """
    plt = pyplot()
    from matplotlib.patches import Rectangle

    e = to_numpy(erf)
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    show_map(ax, e / (e.max() or 1.0), title or "effective receptive field", label="|d unit / d x| (max = 1)")
    if geometry is not None:
        g, (i, j) = geometry
        (top, bottom), (left, right) = g.region(i, j)
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                               edgecolor="red", linewidth=1.5, label=f"theoretical {g.size[0]}x{g.size[1]}"))
        ax.legend(loc="lower right", fontsize=SMALL)
        ax.set_xlim(-0.5, e.shape[1] - 0.5)
        ax.set_ylim(e.shape[0] - 0.5, -0.5)
    fig.tight_layout()
    return save(fig, path)
