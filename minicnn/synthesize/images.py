"""Image files in and out (Pillow): pixels in [0, 1], shape (1, C, H, W), and back to PNG.

Also ``shared_images_dir()``: where the project's sample photographs and
textures live (``../shared/data/images`` beside the repository, or the
folder named by the environment variable ``MINICNN_IMAGES``).
"""
import os
from pathlib import Path

import numpy as np

from ..plotting import as_hwc

__all__ = ["load_image", "save_image", "shared_images_dir"]


def load_image(path, size=None, channels=3, dtype=np.float32):
    """Read an image file as an array (1, C, H, W) with values in [0, 1].

    Args:
        size: None (as stored), an int (the longer side becomes ``size``,
            aspect kept) or (H, W). Resampled with Pillow's bicubic filter.
        channels: 3 (RGB; a greyscale texture is repeated in R, G and B) or 1.
    """
    from PIL import Image

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path} does not exist")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    with Image.open(path) as im:
        im = im.convert("RGB" if channels == 3 else "L")
        if size is not None:
            w, h = im.size
            if isinstance(size, int):
                s = size / max(w, h)
                new = (max(1, round(w * s)), max(1, round(h * s)))
            else:
                new = (int(size[1]), int(size[0]))
            im = im.resize(new, Image.BICUBIC)
        a = np.asarray(im, dtype=np.float64) / 255.0
    a = a[..., None] if a.ndim == 2 else a
    return np.clip(a.transpose(2, 0, 1)[None], 0, 1).astype(dtype)


def save_image(path, image, scale=1):
    """Write one image (C, H, W) or (1, C, H, W) in [0, 1] as a PNG, enlarged ``scale`` times (nearest)."""
    from PIL import Image

    a = np.round(as_hwc(image) * 255).astype(np.uint8)
    im = Image.fromarray(a)
    if scale != 1:
        im = im.resize((im.size[0] * int(scale), im.size[1] * int(scale)), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return str(path)


def shared_images_dir():
    """The sample images folder or None: ``$MINICNN_IMAGES``, else ``shared/data/images`` above the package."""
    env = os.environ.get("MINICNN_IMAGES")
    if env:
        return Path(env) if Path(env).is_dir() else None
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "shared" / "data" / "images"
        if cand.is_dir():
            return cand
    return None
