"""Pictures for web pages: arrays as PNG bytes or ``data:`` URIs, heat maps, overlays, resized uploads.

Shared by ``minicnn.report`` (a run's HTML page, images embedded) and
``minicnn.explore`` (a local web page, images sent as base64 PNG in JSON).
Everything is NumPy and Pillow; nothing here knows about models.

- ``to_uint8_image(a)``: a (C, H, W) or (H, W) float array in [0, 1] as a uint8
  (H, W, 3) or (H, W) array.
- ``png_bytes(a, scale=1)``: that image as PNG bytes, enlarged ``scale`` times
  with nearest-neighbour (each pixel a crisp square, as the lectures show them).
- ``data_uri(png)``: ``data:image/png;base64,...`` for an ``<img src>``.
- ``heatmap(m)``: a (H, W) map as an RGB colour picture (3, H, W), [min, max] -> [0, 1] of a colour map.
- ``overlay(image, m)``: the heat map laid over the image (half and half).
- ``signed_map(d)``: a perturbation (C, H, W) as an image: grey is 0, scaled so
  the largest |value| reaches 0 or 1; returns (image, scale).
- ``image_from_bytes(data, size)``: uploaded PNG/JPEG bytes as a (3, size, size)
  float32 array: centre-crop to a square, then resize (``RESIZE_RULE`` says so in words).
"""
import base64
import io

import numpy as np

__all__ = ["to_uint8_image", "png_bytes", "data_uri", "heatmap", "overlay", "signed_map", "image_from_bytes",
           "ImageError", "ImageTooLarge", "RESIZE_RULE", "MAX_PIXELS"]

RESIZE_RULE = ("centre-cropped to a square (the longer side is cut evenly on both ends), then resized to "
               "{size}x{size} pixels with Pillow's antialiased (Lanczos) filter; transparency becomes white")
MAX_PIXELS = 40_000_000      # a decoded upload larger than this (e.g. 8000x5000) is refused before decoding


class ImageError(ValueError):
    """The bytes are not a PNG/JPEG image that can be used (the message says why)."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (refused before it is decoded)."""


def to_uint8_image(a):
    """(C, H, W) with C in (1, 3), or (H, W), floats in [0, 1] -> uint8 (H, W, 3) or (H, W)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    if a.ndim not in (2, 3):
        raise ValueError(f"to_uint8_image: expected (C, H, W) or (H, W), got shape {a.shape}")
    return (np.clip(np.nan_to_num(a), 0, 1) * 255 + 0.5).astype(np.uint8)


def png_bytes(a, scale=1):
    """PNG bytes of an image array (see ``to_uint8_image``; uint8 (H, W[, 3]) passes as is), enlarged ``scale``x."""
    from PIL import Image

    img = np.asarray(a) if np.asarray(a).dtype == np.uint8 else to_uint8_image(a)
    if scale > 1:
        img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(png):
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def heatmap(m, cmap="inferno"):
    """A (H, W) map as an RGB float image (3, H, W): its minimum is the colour map's start, its maximum its end."""
    from matplotlib import colormaps

    m = np.nan_to_num(np.asarray(m, dtype=np.float64))
    lo, hi = float(m.min()), float(m.max())
    unit = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return colormaps[cmap](unit)[..., :3].transpose(2, 0, 1)


def overlay(image, m, alpha=0.5, cmap="jet"):
    """The heat map of ``m`` (H, W) over ``image`` (C, H, W) in [0, 1]: alpha * map + (1 - alpha) * image, (3, H, W)."""
    img = np.asarray(image, dtype=np.float64)
    img = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img
    return alpha * heatmap(m, cmap) + (1 - alpha) * img


def signed_map(d):
    """A signed array (C, H, W) as a picture: 0.5 + 0.5 * d / max|d| (grey is 0); returns (image, max|d|)."""
    d = np.asarray(d, dtype=np.float64)
    scale = float(np.abs(d).max())
    return 0.5 + 0.5 * d / (scale if scale > 0 else 1.0), scale


def image_from_bytes(data, size=32, max_pixels=MAX_PIXELS):
    """Uploaded image bytes as a (3, size, size) float32 array in [0, 1] (see ``RESIZE_RULE``).

    Returns (array, (width, height) of the original). Raises ``ImageError`` for
    bytes that are not a PNG or JPEG image, ``ImageTooLarge`` for one of more than ``max_pixels`` pixels.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        kind = im.format
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"the image has more than {max_pixels:,} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageError(f"not an image (PNG or JPEG expected): {type(e).__name__}") from None
    if kind not in ("PNG", "JPEG"):
        raise ImageError(f"a {kind} image; upload a PNG or JPEG")
    w, h = im.size
    if w * h > max_pixels:
        raise ImageTooLarge(f"the image is {w}x{h} pixels; at most {max_pixels:,} pixels are accepted")
    try:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im.alpha_composite(rgba)
        im = im.convert("RGB")
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"the image cannot be decoded ({type(e).__name__}: {e})") from None
    return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255, (w, h)
