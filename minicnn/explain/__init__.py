"""minicnn.explain: looking inside a trained CNN.

Every function takes a model that maps pixels in [0, 1] to logits (as
``minicnn.load_model`` returns it), images ``x`` (N, C, H, W) as a NumPy/CuPy
array or Tensor, and ``target``: a class index, N indices, or None for the
predicted class. The model is never changed (mode, parameters, their
gradients, ``requires_grad``, hooks), also when a function raises; results
are arrays on x's device. Layers are named as in ``model.named_modules()``
(``'net.8'``, ``'net.blocks'``) or passed as the module.

Attributions (``attribution``): ``gradient``, ``saliency``, ``deconvnet``,
``guided_backprop`` (one switch at each ReLU: ``F.relu_backward_rule``),
``smoothgrad``, ``integrated_gradients`` (+ ``completeness_gap``),
``occlusion``.
All of them at once (``report``): ``explain_all``, ``predict``.
Class activation maps (``class_activation``): ``cam``, ``grad_cam``.
Units (``features``): ``activations``, ``top_activating``, ``filters``.
Receptive fields (``receptive_field``): ``receptive_field``,
``layer_geometry`` (every layer at once), ``effective_receptive_field``.
Figures: ``minicnn.explain.plot`` (imported on its own: it needs matplotlib).
"""
from ._common import normalize_map, upsample
from .attribution import (completeness_gap, deconvnet, gradient, guided_backprop, integrated_gradients,
                          occlusion, saliency, saliency_map, smoothgrad)
from .class_activation import cam, default_cam_layer, grad_cam
from .features import TopActivating, activations, filters, top_activating
from .receptive_field import Geometry, Pair, effective_receptive_field, layer_geometry, receptive_field
from .report import METHODS, explain_all, predict

__all__ = ["gradient", "saliency", "saliency_map", "deconvnet", "guided_backprop", "smoothgrad",
           "integrated_gradients", "completeness_gap", "occlusion", "cam", "grad_cam", "default_cam_layer",
           "activations", "top_activating", "TopActivating", "filters", "receptive_field", "layer_geometry",
           "effective_receptive_field", "Geometry", "Pair", "normalize_map", "upsample", "METHODS", "explain_all", "predict"]
