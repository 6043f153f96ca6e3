"""minicnn.synthesize: images from a CNN's gradients.

Gradient descent on the pixels of an image through a fixed, trained network:

- ``class_model``: the image a class scores highest for (Simonyan et al.
  2014, with Yosinski et al.'s 2015 regularisers);
- ``invert``: an image from its features at a layer (Mahendran & Vedaldi 2015);
- ``deep_dream``: boost what a layer sees, over octaves (Mordvintsev et al. 2015);
- ``style_transfer``: the content of one image in the style of another
  (Gatys, Ecker & Bethge 2016).

Building blocks (functions of Tensors, gradient-checked): ``total_variation``,
``gram_matrix``, ``content_loss``, ``style_loss``, ``feature_loss``; composable
objectives in ``minicnn.synthesize.objectives``; figures in
``minicnn.synthesize.plot``; image files in ``minicnn.synthesize.images``.
Every method returns ``(image, history)``: the image (N, C, H, W) in [0, 1]
and the objective it minimised at each step. The model is never changed
(``minicnn.analysis.analysis_mode``); layers are found by ``minicnn.analysis.find_layer``.
"""
from . import objectives
from .core import History, layer_features, optimize_image, relu_layers
from .losses import content_loss, feature_loss, gram_matrix, style_loss, total_variation
from .methods import class_model, deep_dream, invert, style_transfer

__all__ = ["class_model", "invert", "deep_dream", "style_transfer", "total_variation", "gram_matrix",
           "content_loss", "style_loss", "feature_loss", "objectives", "History",
           "layer_features", "optimize_image", "relu_layers"]
