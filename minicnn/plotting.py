"""What every figure of minicnn shares: matplotlib set up once, the image panel, class names and scores, saving.

The figures of ``minicnn.explain.plot``, ``minicnn.attacks.plot`` and
``minicnn.synthesize.plot`` (and any other module that draws) are built from
these pieces, so they look alike and behave alike:

- ``pyplot()``: ``matplotlib.pyplot`` with the Agg backend (files, no window),
  imported only when a figure is drawn: ``import minicnn`` never imports
  matplotlib. A caller that already chose a backend (a notebook) keeps it.
- ``to_numpy(a)``, ``as_hwc(image)``: arrays (NumPy, CuPy, Tensors) as NumPy
  float64; an image (C, H, W), (1, C, H, W) or (H, W, C) as what ``imshow``
  takes, (H, W, 3) or (H, W) in [0, 1].
- ``show_image(ax, image, title, xlabel)``: the image panel (grey for one
  channel, no ticks, the house font sizes); ``show_map`` the same for a
  heat map, with its colour bar.
- ``class_name(classes, k)``, ``scored(classes, k, p)``: "cat 87%" titles.
- ``colorbar``, ``grid`` (a grid of panels, the unused ones hidden).
- ``save(fig, path)``: creates the folder, writes the PNG and closes the
  figure; without ``path`` the figure is returned open (for a notebook).
"""
import math
import sys
from pathlib import Path

import numpy as np

from .autograd import Tensor
from .backend import to_device

__all__ = ["TITLE", "SUPTITLE", "LABEL", "SMALL", "DPI", "pyplot", "to_numpy", "as_hwc", "show_image", "show_map", "class_name", "scored",
           "colorbar", "grid", "save"]

TITLE, SUPTITLE, LABEL, SMALL = 9, 10, 8, 7      # font sizes: panel titles, figure titles, labels, ticks
DPI = 110


def pyplot():
    """``matplotlib.pyplot``, on the Agg backend unless the caller imported pyplot (and chose) already."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def to_numpy(a):
    """An array, a CuPy array or a Tensor as a NumPy float64 array."""
    return np.asarray(to_device(a.data if isinstance(a, Tensor) else a, "cpu"), dtype=np.float64)


def as_hwc(image, lo=0.0, hi=1.0):
    """One image as ``imshow`` takes it: (H, W, 3) or (H, W) floats in [0, 1].

    ``image``: (C, H, W), (1, C, H, W), (H, W, C) or (H, W), with pixels in
    [lo, hi]. One channel gives (H, W) (drawn grey); more than 3 channels
    show the first 3, 2 channels their mean.
    """
    img = (to_numpy(image) - lo) / (hi - lo)
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ValueError(f"as_hwc: expected one image, got a batch of {img.shape[0]}")
        img = img[0]
    if img.ndim == 3 and not (img.shape[2] in (1, 3) and img.shape[0] not in (1, 3)):
        img = img.transpose(1, 2, 0)                         # (C, H, W) -> (H, W, C)
    if img.ndim == 3:
        c = img.shape[2]
        img = img[:, :, 0] if c == 1 else img[:, :, :3] if c >= 3 else img.mean(axis=2)
    if img.ndim != 2 and img.ndim != 3:
        raise ValueError(f"as_hwc: expected an image (C, H, W) or (H, W, C), got shape {img.shape}")
    return np.clip(img, 0, 1)


def show_image(ax, image, title=None, xlabel=None, color="black", lo=0.0, hi=1.0):
    """The image panel: ``image`` (see ``as_hwc``) on ``ax``, no ticks, an optional title and label under it."""
    img = as_hwc(image, lo, hi)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=TITLE)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=TITLE, color=color)
    return ax


def show_map(ax, values, title=None, cmap="viridis", vmin=None, vmax=None, label=None, bar=True):
    """A map panel: ``values`` (h, w) in colour on ``ax``, no ticks, a title and a colour bar (``label``: its unit)."""
    im = ax.imshow(to_numpy(values), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=TITLE)
    if bar:
        colorbar(ax.figure, ax, im, label)
    return im


def class_name(classes, k):
    """``classes[k]``, or 'class k' without names."""
    k = int(k)
    return str(classes[k]) if classes is not None and 0 <= k < len(classes) else f"class {k}"


def scored(classes, k, p, digits=0):
    """'cat 87%': a class and the model's probability for it."""
    return f"{class_name(classes, k)} {100 * float(p):.{digits}f}%"


def colorbar(fig, ax, mappable, label=None):
    """A slim colour bar beside ``ax``, small ticks, an optional label (the unit)."""
    cb = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=SMALL)
    if label:
        cb.set_label(label, fontsize=SMALL)
    return cb


def grid(n, cols, panel=(2.0, 2.0), extra_height=0.0):
    """(fig, axes) for ``n`` panels in rows of ``cols`` (axes a flat list of n); the spare cells hidden."""
    plt = pyplot()
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows + extra_height), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def save(fig, path, dpi=DPI):
    """Write ``fig`` to ``path`` (PNG; parent folders created) and close it; returns the figure.

    Without ``path`` the figure stays open and is returned (close it with
    ``pyplot().close(fig)``).
    """
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        pyplot().close(fig)
    return fig
