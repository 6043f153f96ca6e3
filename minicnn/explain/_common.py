"""What the explain methods share: the model left untouched, inputs, targets, layers.

Images are moved to the model's device (``as_batch``) and every result goes
back to the caller's device (``on_device_of``): a GPU model explains NumPy
images and returns NumPy arrays.

Every analysis runs inside ``analysis_mode(model)``: eval mode, no parameter
gradients, grad mode on (input gradients work inside a caller's ``no_grad``),
the true ReLU derivative (whatever ``relu_backward_rule`` the caller is in),
and on exit (also on an error) each module's mode and each parameter's
``requires_grad`` and ``.grad`` exactly as the caller had them.
Hooks are registered only through ``capture`` (a context manager), so none
is ever left behind.
"""
from contextlib import contextmanager

import numpy as np

from ..analysis import analysis_mode as guard
from ..autograd import Tensor
from ..backend import default_dtype, device_of, get_array_module, to_device
from ..nn import Module

__all__ = ["analysis_mode", "as_batch", "on_device_of", "resolve_targets", "find_layer", "capture",
           "model_dtype_device", "normalize_map", "upsample"]


@contextmanager
def analysis_mode(model):
    """``minicnn.analysis.analysis_mode`` for a Module (a plain function is refused: the methods need layers)."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicnn nn.Module, got {type(model).__name__}")
    with guard(model):
        yield model


def model_dtype_device(model):
    """(dtype, device) of the model's first floating parameter or buffer (default dtype, 'cpu' if none)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dtype.kind == "f":
            return t.dtype, t.device
    return np.dtype(default_dtype()), "cpu"


def as_batch(x, model=None, name="x"):
    """``x`` (array or Tensor, shape (N, C, H, W)) as a raw floating array on the model's device.

    Integer arrays are cast to the model's dtype (values are kept: pass pixels
    in [0, 1]). A Tensor's data is used as is (it is never modified). Without
    a model the array stays on x's device.
    """
    data = x.data if isinstance(x, Tensor) else x
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError(f"{name} must be a batch of images of shape (N, C, H, W), got shape "
                         f"{tuple(data.shape)}; add a batch axis with x[None] for one image")
    if data.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(data.shape)})")
    if data.dtype.kind != "f":
        dtype = model_dtype_device(model)[0] if model is not None else default_dtype()
        data = data.astype(dtype)
    return data if model is None else to_device(data, model_dtype_device(model)[1])


def on_device_of(x, result):
    """``result`` (an array) on the device of the caller's images ``x``: where every explain result goes."""
    return to_device(result, device_of(x))


def resolve_targets(logits, target):
    """The target class of each image as an int64 array (N,) on the logits' device.

    ``target``: an int (the same class for every image), a sequence of N ints,
    or None (each image's predicted class, the argmax of its logits).
    """
    xp = get_array_module(logits)
    n, k = logits.shape[0], logits.shape[-1]
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits of shape (N, classes), got {tuple(logits.shape)}")
    if target is None:
        return logits.argmax(axis=1).astype(np.int64)
    if isinstance(target, Tensor):
        target = target.data
    if isinstance(target, (bool, np.bool_)):
        raise TypeError(f"target must be a class index, a sequence of {n} indices or None, got {target!r}")
    if isinstance(target, (int, np.integer)):
        t = np.full(n, int(target), dtype=np.int64)
    else:
        t = np.asarray(to_device(target, "cpu") if hasattr(target, "__cuda_array_interface__") else target)
        if t.dtype.kind not in "iu" or t.ndim > 1 or (t.ndim == 1 and t.shape[0] != n):
            raise ValueError(f"target must be a class index, a sequence of {n} integer indices (one "
                             f"per image) or None, got {target!r}")
        t = np.full(n, int(t), dtype=np.int64) if t.ndim == 0 else t.astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"target must lie in [0, {k}) for a model with {k} classes, got {t.tolist()}")
    return xp.asarray(t)


def find_layer(model, layer):
    """(name, module) for ``layer``: a name from ``model.named_modules()`` or the module itself."""
    if isinstance(layer, Module):
        for name, m in model.named_modules():
            if m is layer:
                return name, m
        raise ValueError(f"layer {type(layer).__name__} is not a sub-module of the model")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a name from model.named_modules() or a Module, "
                        f"got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n]
        shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
        raise ValueError(f"layer {layer!r} is not in the model; its layers are: {shown}")
    return layer, modules[layer]


@contextmanager
def capture(modules):
    """Record the output of each module in ``modules`` (a dict name -> module) during forward passes.

    Yields a dict name -> output Tensor (the latest call's output, for a
    module used at several places). The hooks are removed on exit.
    """
    outputs = {}
    handles = []
    try:
        for name, m in modules.items():
            handles.append(m.register_forward_hook(
                lambda mod, inputs, out, name=name: outputs.__setitem__(name, out)))
        yield outputs
    finally:
        for h in handles:
            h.remove()


def normalize_map(maps):
    """Maps (N, h, w) scaled to [0, 1] per image: ``max(m, 0) / max(max(m, 0))``.

    Negative values (evidence against the class) become 0, as Grad-CAM's
    ReLU does. A map with no positive value (all negative or all zero) has
    nothing to show and becomes all zeros, never NaN.
    """
    xp = get_array_module(maps)
    pos = xp.maximum(maps, 0)
    top = pos.reshape(pos.shape[0], -1).max(axis=1).reshape((-1,) + (1,) * (pos.ndim - 1))
    return xp.where(top > 0, pos / xp.where(top > 0, top, 1), 0).astype(maps.dtype, copy=False)


def upsample(maps, size):
    """Bilinear resize of maps (N, h, w) to ``size`` = (H, W), pixel centres aligned.

    Output pixel i samples the input at (i + 0.5) * h / H - 0.5, clamped to
    the edge (PyTorch's ``align_corners=False``, Pillow's bilinear resize):
    a coarse map stretched over the image it came from.
    """
    xp = get_array_module(maps)
    n, h, w = maps.shape
    out_h, out_w = size

    def taps(n_in, n_out):
        pos = (xp.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
        pos = xp.clip(pos, 0, n_in - 1)
        lo = xp.floor(pos).astype(np.int64)
        hi = xp.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(maps.dtype)

    y0, y1, fy = taps(h, out_h)
    x0, x1, fx = taps(w, out_w)
    rows = maps[:, y0, :] * (1 - fy)[None, :, None] + maps[:, y1, :] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]
