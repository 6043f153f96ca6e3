"""What every analysis of a trained model shares: the guard, layers by name, images, the model's device.

``minicnn.explain``, ``minicnn.attacks`` and ``minicnn.synthesize`` look at a
model through gradients with respect to its *input*. They share four rules,
each written once here:

- ``analysis_mode(model)``: an analysis never changes the model (DESIGN.md).
  Each analysis runs inside it::

      with analysis_mode(model):
          x = Tensor(images, requires_grad=True)
          model(x)[:, target].sum().backward()      # x.grad: the input gradient

- ``find_layer(model, layer)``: a layer is named as ``model.named_modules()``
  names it, or passed as the module itself. ``''`` is the whole model: its
  output, the logits (``named_modules()`` names the model itself ``''``).
- ``as_images(x, model)``: the images an analysis takes, checked once. A
  batch (N, C, H, W) (an array or a Tensor) of finite pixels in [0, 1] (or in
  an attack's ``bounds``); 0-255 images are refused with the fix in the
  message. They move to the model's device; results go back to the images'
  device (``on_device_of``).
- ``model_device_dtype(model)``: (device, dtype) of the model, in that order.
- ``predict(model, x)``: the model's classes and probabilities, on the CPU.
"""
from contextlib import contextmanager

import numpy as np

from .autograd import Tensor, enable_grad, no_grad
from .backend import as_array, default_dtype, device_of, get_array_module, to_device
from .functional import relu_backward_rule, softmax
from .nn import Module

__all__ = ["analysis_mode", "find_layer", "layer_names", "capture", "model_device_dtype", "bounds_of",
           "as_images", "predict", "on_device_of"]


@contextmanager
def analysis_mode(model):
    """Eval mode, frozen parameters, grad mode on and ReLU's true derivative; everything restored on exit.

    While the block runs:
    - every module is in eval mode (batchnorm reads its running statistics
      without updating them, dropout is off);
    - no parameter requires a gradient, so backward computes only the input's
      gradient (less work, and the parameters' ``.grad`` stay as they were);
    - grad mode is on, so input gradients work inside a caller's ``no_grad()``;
    - ReLU's backward is its true derivative, whatever ``relu_backward_rule``
      the caller is in (deconvnet and guided backprop nest their own rule).

    On exit, also after an exception: each module's own ``training`` flag (a
    caller's mixed modes survive), each parameter's ``requires_grad`` and its
    ``.grad`` (the very array it held), grad mode and the ReLU rule.
    Buffers are not touched: eval-mode layers never write them.

    A model that is a plain function (images -> logits, not a ``Module``) has
    nothing to guard and is used as it is (grad mode and the ReLU rule still apply).
    """
    if not callable(model):
        raise TypeError(f"model must be a minicnn nn.Module (or a function from images to logits), "
                        f"got {type(model).__name__}")
    modules = model.modules() if isinstance(model, Module) else []
    params = model.parameters() if isinstance(model, Module) else []
    modes = [(m, m.training) for m in modules]
    params = [(p, p.requires_grad, p.grad) for p in params]
    try:
        if isinstance(model, Module):
            model.eval()
        for p, _, _ in params:
            p.requires_grad = False
        with enable_grad(), relu_backward_rule("gradient"):
            yield model
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)
        for p, flag, grad in params:
            p.requires_grad = flag
            p.grad = grad


# ------------------------------------------------------------------ layers
def _module(model, what="model"):
    if not isinstance(model, Module):
        raise TypeError(f"{what} must be a minicnn nn.Module to name its layers, got {type(model).__name__}")
    return model


def layer_names(model):
    """The names ``find_layer`` accepts, in ``model.named_modules()`` order (``''``, the model, first)."""
    return [name for name, _ in _module(model).named_modules()]


def find_layer(model, layer):
    """``(name, module)`` for ``layer``: a name from ``model.named_modules()`` or a module of the model.

    ``''`` is the whole model, i.e. its output, the logits.
    """
    named = list(_module(model).named_modules())
    if isinstance(layer, Module):
        for name, module in named:
            if module is layer:
                return name, module
        raise ValueError(f"layer: the {type(layer).__name__} passed is not part of the model; pass one "
                         f"of its modules or a name from model.named_modules()")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a name from model.named_modules() or a Module of the model, "
                        f"got {type(layer).__name__}")
    for name, module in named:
        if name == layer:
            return name, module
    names = [repr(n) for n, _ in named[1:]]
    shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
    raise ValueError(f"layer {layer!r} is not a layer of the model; layers are named as model.named_modules() "
                     f"names them: {shown} ('' is the whole model, its logits)")


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


# ------------------------------------------------------------------ the model's device and dtype
def model_device_dtype(model):
    """(device, dtype) of the model's first floating parameter or buffer; ('cpu', the default dtype) if none."""
    if isinstance(model, Module):
        for t in list(model.parameters()) + list(model.buffers()):
            if t.dtype.kind == "f":
                return t.device, t.dtype
    return "cpu", np.dtype(default_dtype())


# ------------------------------------------------------------------ images
def _short(a):
    a = np.asarray(to_device(a, "cpu"))
    return f"{float(a):g}" if a.size == 1 else np.array2string(a.ravel()[:4], precision=4)


def bounds_of(bounds, x):
    """(lo, hi): the pixel box ``bounds`` as arrays of x's dtype on x's device, broadcastable to x.

    Each bound is a number or an array broadcastable to one image (per-channel
    bounds such as ``(lo.reshape(C, 1, 1), hi.reshape(C, 1, 1))`` work); both
    finite, lower < upper.
    """
    xp = get_array_module(x)
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise ValueError(f"bounds: expected a pair (lower, upper), got {bounds!r}") from None
    lo = to_device(as_array(lo, dtype=x.dtype), device_of(x))
    hi = to_device(as_array(hi, dtype=x.dtype), device_of(x))
    try:
        np.broadcast_shapes(lo.shape, hi.shape, x.shape)
    except ValueError:
        raise ValueError(f"bounds: each bound must be a number or broadcast to the images' shape "
                         f"{tuple(x.shape)}, got shapes {lo.shape} and {hi.shape}") from None
    if not (bool(xp.isfinite(lo).all()) and bool(xp.isfinite(hi).all())):
        raise ValueError(f"bounds: must be finite, got {bounds!r}")
    if not bool((lo < hi).all()):
        raise ValueError(f"bounds: the lower bound must be below the upper bound, got "
                         f"lower {_short(lo)} and upper {_short(hi)}")
    return lo, hi


def as_images(x, model=None, name="x", bounds=None, spatial=True):
    """``x`` checked as a batch of images: the raw floating array an analysis works on.

    Args:
        x: an array (NumPy/CuPy) or a Tensor of shape (N, C, H, W) (any N >= 1,
            any number of channels; with ``spatial=False`` any (N, ...), for
            toy models on vectors). A Tensor's data is used as is; nothing is
            written into it.
        model: when given, the images move to the model's device, and
            integer images become the model's floating dtype. Without it they
            stay where they are (integers become the default dtype).
        name: the argument's name, for the error messages.
        bounds: ``None`` for the analyses that take pixels in [0, 1]
            (explain, synthesize); an attack passes its ``bounds`` argument
            (lower, upper), see ``bounds_of``.
        spatial: require (N, C, H, W).

    Raises ValueError (naming ``name``, the expected and the actual value) for
    an empty batch, a wrong shape, NaN or infinity, and pixels outside the
    bounds: 0-255 images are refused with the fix, "divide by 255".
    """
    data = x.data if isinstance(x, Tensor) else x
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = as_array(data)
    xp = get_array_module(data)
    if data.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric array of images, got dtype {data.dtype}")
    if data.dtype.kind != "f":
        data = data.astype(model_device_dtype(model)[1] if model is not None else default_dtype())
    if (data.ndim != 4 if spatial else data.ndim < 2) or data.shape[0] == 0:
        want = "(N, C, H, W)" if spatial else "(N, C, H, W) (or (N, D))"
        hint = "; add a batch axis with x[None] for one image" if data.ndim == 3 and spatial else ""
        raise ValueError(f"{name}: expected a non-empty batch of images of shape {want}, got shape "
                         f"{tuple(data.shape)}{hint}")
    if not bool(xp.isfinite(data).all()):
        raise ValueError(f"{name}: the images contain NaN or infinity")
    lo, hi = bounds_of((0.0, 1.0) if bounds is None else bounds, data)
    tol = 1e-6
    if bool((data < lo - tol).any()) or bool((data > hi + tol).any()):
        fix = "scale pixels to [0, 1] (divide 8-bit images by 255)" + (" or pass bounds=" if bounds is not None else "")
        raise ValueError(f"{name}: images must lie inside bounds ({_short(lo)}, {_short(hi)}), got values "
                         f"from {float(data.min()):.4g} to {float(data.max()):.4g}; {fix}")
    return data if model is None else to_device(data, model_device_dtype(model)[0])


def predict(model, x, bounds=None):
    """(classes (N,), probabilities (N,), all probabilities (N, K)) of the model on images x, NumPy on the CPU.

    The model's softmax over its logits, in ``analysis_mode``; ``x`` is checked
    by ``as_images`` (``bounds`` as there).
    """
    data = as_images(x, model, bounds=bounds, spatial=False)
    with analysis_mode(model), no_grad():
        p = softmax(model(Tensor(data)), axis=1).data
    p = np.asarray(to_device(p, "cpu"), dtype=np.float64)
    return p.argmax(1), p.max(1), p


def on_device_of(x, result):
    """``result`` (an array) on the device of the caller's images ``x``: where every analysis result goes."""
    return to_device(result, device_of(x))
