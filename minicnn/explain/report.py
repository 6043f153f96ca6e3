"""Every method on a batch of images at once: what ``minicnn explain`` and the overview figure show."""
from collections import OrderedDict

from ..analysis import analysis_mode, as_images, on_device_of, predict
from ..autograd import Tensor, no_grad
from .attribution import deconvnet, gradient, guided_backprop, integrated_gradients, occlusion, saliency, smoothgrad
from .class_activation import cam, default_cam_layer, grad_cam
from ._common import resolve_targets

__all__ = ["METHODS", "predict", "explain_all"]

# The methods ``explain_all`` and ``minicnn explain --method`` know, in the overview's order.
METHODS = ("saliency", "gradient", "smoothgrad", "deconvnet", "guided_backprop", "integrated_gradients",
           "occlusion", "cam", "grad_cam")


def explain_all(model, x, target=None, methods=METHODS, layer=None, samples=25, steps=50, window=None,
                stride=None, seed=0):
    """Run each of ``methods`` on images ``x`` for ``target``; returns (results, skipped).

    results: an OrderedDict method -> its output, as each function returns it
    (x-shaped for gradient-like methods, (N, H, W) for saliency and occlusion,
    (N, H, W) raw maps upsampled to the image for CAM/Grad-CAM).
    skipped: method -> the reason it does not apply (CAM on a network without
    global average pooling). ``layer``: the CAM/Grad-CAM layer (default
    ``default_cam_layer``); ``window``/``stride`` for occlusion default to a
    quarter and an eighth of the image side (8 and 4 at 32x32).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)} or 'all'")
    data = as_images(x, model)
    side = min(data.shape[2:])
    window = window or max(1, side // 4)
    stride = stride or max(1, side // 8)
    with analysis_mode(model), no_grad():
        targets = resolve_targets(model(Tensor(data)).data, target)
    if layer is None and ("cam" in methods or "grad_cam" in methods):
        layer = default_cam_layer(model, data)
    calls = {      # each method for these targets (a lambda per name: only the chosen ones run)
        "saliency": lambda: saliency(model, data, targets),
        "gradient": lambda: gradient(model, data, targets),
        "smoothgrad": lambda: smoothgrad(model, data, targets, samples=samples, seed=seed),
        "deconvnet": lambda: deconvnet(model, data, targets),
        "guided_backprop": lambda: guided_backprop(model, data, targets),
        "integrated_gradients": lambda: integrated_gradients(model, data, targets, steps=steps),
        "occlusion": lambda: occlusion(model, data, targets, window=window, stride=stride),
        "cam": lambda: cam(model, data, targets, layer, upsample=True),
        "grad_cam": lambda: grad_cam(model, data, targets, layer, upsample=True),
    }
    results, skipped = OrderedDict(), OrderedDict()
    for m in methods:
        try:
            results[m] = on_device_of(x, calls[m]())
        except ValueError as e:
            if m != "cam":
                raise
            skipped[m] = str(e)
    return results, skipped
