"""What the units compute: layer outputs, the images that excite a channel most, first-layer filters."""
import math
from collections import namedtuple

import numpy as np

from ..autograd import Tensor, no_grad
from ..backend import to_device
from ..nn import Conv2d, Module
from ..analysis import analysis_mode, as_images, capture, find_layer, model_device_dtype, on_device_of
from .receptive_field import receptive_field

__all__ = ["activations", "top_activating", "TopActivating", "filters"]


def activations(model, x, layers):
    """The outputs of the chosen layers for images ``x`` (N, C, H, W).

    ``layers``: one layer (a name from ``model.named_modules()`` or the module)
    -> its output array; or a list of them -> a dict name -> output array.
    Arrays are on x's device. For a module used at several places the output
    of its last call is returned. No gradient is recorded.
    """
    single = isinstance(layers, (str, Module))
    wanted = dict(find_layer(model, layer) for layer in ([layers] if single else layers))
    data = as_images(x, model)
    with analysis_mode(model), no_grad(), capture(wanted) as outs:
        model(Tensor(data))
    missing = [n for n in wanted if n not in outs]
    if missing:
        raise ValueError(f"activations: layer(s) {missing} did not run in the forward pass")
    result = {n: on_device_of(x, outs[n].data if isinstance(outs[n], Tensor) else outs[n]) for n in wanted}
    return result[next(iter(wanted))] if single else result


TopActivating = namedtuple("TopActivating", ["indices", "values", "positions", "crops", "geometry"])
TopActivating.__doc__ = """The k dataset images that excite one channel most (``top_activating``).

indices (k,): dataset indices, most exciting first; values (k,): the
channel's largest activation in each image; positions (k, 2): the (row,
column) of that unit in the layer's map (None for a layer without a
spatial map); crops (k, C, s, s) float in [0, 1]: the image region the unit
sees (its receptive field, moved inside the image where it crosses the
border, and cut to the image size when larger); geometry: the layer's
``Geometry`` (size, jump, start), or None for a non-spatial layer.
"""


def _images(dataset, start, stop):
    """Images start..stop-1 of ``dataset`` as an array (uint8 or float)."""
    if isinstance(dataset, Tensor):
        return dataset.data[start:stop]
    if hasattr(dataset, "shape") and hasattr(dataset, "dtype"):      # a NumPy/CuPy array
        return dataset[start:stop]
    idx = np.arange(start, stop)
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(idx)[0]
    items = [dataset[int(i)] for i in idx]
    return np.stack([np.asarray(it[0] if isinstance(it, tuple) else it) for it in items])


def _to_unit_float(images, dtype, device):
    """uint8 images -> floats in [0, 1]; float images are taken as already in [0, 1]."""
    images = to_device(images, device)
    if images.dtype.kind in "iu":
        return images.astype(dtype) / dtype.type(255)
    return images.astype(dtype, copy=False)


def top_activating(model, dataset, layer, channel, k=9, batch_size=256):
    """The ``k`` images of ``dataset`` whose largest activation of ``channel`` at ``layer`` is highest.

    ``dataset``: a minicnn dataset (uint8 images: ``CIFAR10``, ``ImageFolder``,
    a ``Subset``...), anything with ``len`` and ``ds[i] -> (image, label)``,
    or an array (N, C, H, W) (uint8, or floats in [0, 1]). It is streamed in
    batches of ``batch_size`` images: only the best k so far are kept.
    Each image scores the maximum of the channel over the map's positions;
    ties keep the lower index. Returns a ``TopActivating`` (indices, values,
    positions, crops of the unit's receptive field, geometry).
    """
    name, module = find_layer(model, layer)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_activating: k must be a positive int, got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"top_activating: batch_size must be a positive int, got {batch_size!r}")
    n = len(dataset)
    if n == 0:
        raise ValueError("top_activating: the dataset is empty")
    device, dtype = model_device_dtype(model)
    best_idx = np.zeros(0, np.int64)
    best_val = np.zeros(0, np.float64)
    best_pos = np.zeros((0, 2), np.int64)
    spatial = True
    with analysis_mode(model), no_grad():
        for start in range(0, n, int(batch_size)):
            batch = _to_unit_float(_images(dataset, start, min(n, start + int(batch_size))), dtype, device)
            with capture({name: module}) as outs:
                model(Tensor(batch))
            if name not in outs:
                raise ValueError(f"top_activating: layer {name!r} did not run in the forward pass")
            a = outs[name].data
            if not 0 <= channel < a.shape[1]:
                raise ValueError(f"top_activating: channel must lie in [0, {a.shape[1]}) for layer "
                                 f"{name!r} of shape {tuple(a.shape)}, got {channel}")
            a = to_device(a[:, channel], "cpu").astype(np.float64)
            if a.ndim == 1:
                spatial = False
                vals, pos = a, np.zeros((a.shape[0], 2), np.int64)
            else:
                flat = a.reshape(a.shape[0], -1)
                arg = flat.argmax(axis=1)
                vals = flat[np.arange(flat.shape[0]), arg]
                pos = np.stack(np.unravel_index(arg, a.shape[1:3]), axis=1)
            idx = np.concatenate([best_idx, np.arange(start, start + len(vals))])
            val = np.concatenate([best_val, vals])
            ps = np.concatenate([best_pos, pos])
            keep = np.lexsort((idx, -val))[:k]           # highest value first, then the lower index
            best_idx, best_val, best_pos = idx[keep], val[keep], ps[keep]

    images = _to_unit_float(_images_at(dataset, best_idx), np.dtype(np.float32), "cpu")
    height, width = images.shape[2:]
    geometry = receptive_field(model, name, input_size=images.shape[1:]) if spatial else None
    if geometry is None:
        crops = images
    else:
        crops = np.stack([_crop(img, geometry, i, j) for img, (i, j) in zip(images, best_pos)])
    return TopActivating(best_idx, best_val, best_pos if spatial else None, crops, geometry)


def _images_at(dataset, indices):
    return np.stack([np.asarray(to_device(_images(dataset, int(i), int(i) + 1)[0], "cpu")) for i in indices])


def _crop(image, geometry, i, j):
    """The receptive field of unit (i, j) in ``image`` (C, H, W), moved inside the image, at most its size."""
    _, height, width = image.shape
    (top, bottom), (left, right) = geometry.region(i, j)
    out = []
    for lo, hi, extent in ((top, bottom, height), (left, right, width)):
        size = min(hi - lo + 1, extent)
        lo = min(max(lo, 0), extent - size)
        out.append((lo, lo + size))
    (t, b), (l, r) = out
    return image[:, t:b, l:r]


def filters(model_or_conv, layer=None, pad=1):
    """The filters of a convolution tiled into one image (AlexNet's figure 3).

    ``model_or_conv``: a ``Conv2d``, or a model (its first ``Conv2d``, or
    ``layer`` by name). Each filter is scaled by its own largest |weight|:
    0.5 + 0.5 * w / max|w|, so grey is 0, bright is positive, dark negative.
    Returns floats in [0, 1], filters in a near-square grid separated by
    ``pad`` white pixels: (rows, cols, 3) RGB for 3 input channels; for any
    other number of input channels a grey (rows, cols) image with one row of
    tiles per filter and one column per input channel.
    """
    if isinstance(model_or_conv, Conv2d) and layer is None:
        conv = model_or_conv
    elif isinstance(model_or_conv, Module):
        if layer is not None:
            _, conv = find_layer(model_or_conv, layer)
        else:
            conv = next((m for m in model_or_conv.modules() if isinstance(m, Conv2d)), None)
        if not isinstance(conv, Conv2d):
            raise ValueError(f"filters: no Conv2d found ({'layer ' + repr(layer) if layer else 'in the model'})")
    else:
        raise TypeError(f"filters: expected a Conv2d or a model, got {type(model_or_conv).__name__}")
    w = to_device(conv.weight.data, "cpu").astype(np.float64)
    c_out, c_in, kh, kw = w.shape
    scale = np.abs(w).reshape(c_out, -1).max(axis=1).reshape(c_out, 1, 1, 1)
    w = 0.5 + 0.5 * w / np.where(scale > 0, scale, 1)
    if c_in == 3:
        cols = math.ceil(math.sqrt(c_out))
        rows = math.ceil(c_out / cols)
        tiles = [w[o].transpose(1, 2, 0) for o in range(c_out)]
        grid = np.ones((rows * (kh + pad) - pad, cols * (kw + pad) - pad, 3))
    else:
        rows, cols = c_out, c_in
        tiles = [w[o, c] for o in range(c_out) for c in range(c_in)]
        grid = np.ones((rows * (kh + pad) - pad, cols * (kw + pad) - pad))
    for t, tile in enumerate(tiles):
        r, c = divmod(t, cols)
        grid[r * (kh + pad):r * (kh + pad) + kh, c * (kw + pad):c * (kw + pad) + kw] = tile
    return grid.astype(np.float32)

