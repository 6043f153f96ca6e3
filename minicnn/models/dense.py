"""Dense prediction: a trained classifier run fully convolutionally, giving a map of class scores.

A linear layer that reads a C x h x w map flattened is a convolution with
an h x w kernel: ``Linear(C*h*w, K)`` with weight W (K, C*h*w) computes, at
the one position where the kernel fits a C x h x w map, exactly what the
convolution with weight ``W.reshape(K, C, h, w)`` computes (the flatten
order is C, then H, then W). On a larger map the convolution slides: it
applies the same classifier at every position (Sermanet et al.,
"OverFeat", ICLR 2014; Long, Shelhamer & Darrell, "Fully Convolutional
Networks for Semantic Segmentation", CVPR 2015). Following linear layers
become 1x1 convolutions.

For a head of global average pooling + linear (the ResNets,
``inception_small``), the pooling over the whole h x w map of a 32x32
image becomes an h x w average pool with stride 1 and the linear layer a
1x1 convolution with the same weights; a fully convolutional head
(``allconv``) keeps its class convolution and gets the same pooling. On a
32x32 image the result is a 1x1 map holding exactly the classifier's
logits; on a larger image, score ``(k, i, j)`` is the classifier's logit
of class k for the 32x32 window at ``(i * stride, j * stride)`` (up to the
zero padding at the window's border, which the big image replaces by
real pixels). ``pool=False`` drops the averaging instead: each cell then
scores one position of the last feature map (the class activation map of
Zhou et al. 2016, before it is averaged into the logits).
"""
import copy
from collections import OrderedDict

import numpy as np

from .. import nn
from ..autograd import Tensor, no_grad
from .resnet import ResNetCifar

__all__ = ["as_fully_convolutional", "linear_to_conv"]

_HEAD_EXTRAS = (nn.Dropout, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Identity)


def linear_to_conv(linear, in_channels, kernel_size):
    """The ``Conv2d`` that computes ``linear`` over a ``in_channels x kh x kw`` map (same weights).

    ``weight (K, C*kh*kw) -> (K, C, kh, kw)``, the bias unchanged; a 1x1
    kernel for ``kernel_size=(1, 1)``.
    """
    kh, kw = kernel_size
    if linear.in_features != in_channels * kh * kw:
        raise ValueError(f"linear_to_conv: the linear layer reads {linear.in_features} features, "
                         f"not in_channels * kh * kw = {in_channels} * {kh} * {kw}")
    conv = nn.Conv2d(in_channels, linear.out_features, (kh, kw), bias=linear.bias is not None)
    conv.weight.data = linear.weight.data.reshape(linear.out_features, in_channels, kh, kw).copy()
    if linear.bias is not None:
        conv.bias.data = linear.bias.data.copy()
    return conv


def _layers(model):
    """The model as an ordered list of (name, layer): Sequential children, or a CIFAR ResNet's stages."""
    if isinstance(model, nn.Sequential):
        return list(model.named_children())
    if isinstance(model, ResNetCifar):
        return [("conv1", model.conv1), ("bn1", model.bn1), ("relu", nn.ReLU()), ("blocks", model.blocks),
                ("pool", model.pool), ("flatten", nn.Flatten()), ("fc", model.fc)]
    raise TypeError(f"as_fully_convolutional: model must be an nn.Sequential (ending in flatten + linear, or "
                    f"global pooling) or a CIFAR ResNet, got {type(model).__name__}")


def _is_global_pool(m):
    return isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1), [1, 1])


def _in_channels(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError("as_fully_convolutional: cannot tell the input channels (no Conv2d); pass in_channels")


def _map_shape(body, in_channels, size):
    """(C, h, w) of the body's output for one ``in_channels x size`` image (eval mode, no graph)."""
    xp_zeros = np.zeros((1, in_channels) + tuple(size), dtype=np.float32)
    param = next(iter(body.parameters()), None)
    if param is not None:
        xp_zeros = param.xp.asarray(xp_zeros, dtype=param.dtype)
    with no_grad():
        y = body(Tensor(xp_zeros))
    if y.ndim != 4:
        raise ValueError(f"as_fully_convolutional: the layers before the head give shape {tuple(y.shape)}, "
                         f"not a (N, C, H, W) map")
    return tuple(int(s) for s in y.shape[1:])


def _map_stride(body, in_channels, size, hw, grow=64):
    """Input pixels per feature-map cell: the map grows by ``grow / stride`` cells for ``grow`` more pixels."""
    _, h2, w2 = _map_shape(body, in_channels, (size[0] + grow, size[1] + grow))
    return tuple(grow // d if d and grow % d == 0 else grow / max(d, 1) for d in (h2 - hw[0], w2 - hw[1]))


def as_fully_convolutional(model, input_size=32, pool=True, in_channels=None):
    """A fully convolutional copy of a classifier: images of any size in, class score maps out.

    Args:
        model: an ``nn.Sequential`` whose head is flatten + linear layers over
            a fixed map (``simple_cnn``, ``lenet5``, ``vgg_small``, ...),
            global average pooling + flatten + linear (``inception_small``),
            or global average pooling of class maps (``allconv``); a CIFAR
            ``ResNetCifar``; or ``minicnn.load_model``'s
            ``Sequential(normalize, net)`` around one of these.
        input_size: the image size the classifier was trained on (int or
            (H, W)): it fixes the kernel of the converted head.
        pool: for a global-average-pooling head, average over windows of
            the training-size map (True: each score is the classifier on one
            window), or not at all (False: one score per feature position).
        in_channels: image channels (default: the first convolution's).

    Returns a new ``nn.Sequential`` (the weights are copied; ``model`` is not
    changed) mapping (N, C, H, W) images, H, W >= ``input_size``, to
    (N, classes, H', W') scores. On an ``input_size`` image H' = W' = 1 and
    ``out[:, :, 0, 0]`` equals ``model(x)`` (in eval mode). Attributes:
    ``window`` (the input window each score classifies, ``input_size`` as
    (H, W); None with ``pool=False``) and ``stride`` (pixels between
    neighbouring scores, ``(sy, sx)``); ``classes`` is copied.
    """
    size = (input_size, input_size) if np.isscalar(input_size) else tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"as_fully_convolutional: input_size must be a positive int or pair, got {input_size!r}")
    fcn = _convert(copy.deepcopy(model), size, bool(pool), in_channels)     # the model itself is never touched
    modes = {m.training for m in model.modules()}
    if len(modes) == 1:                           # the usual case: the copy, new layers included, in the model's mode
        fcn.train(modes.pop())
    if hasattr(model, "classes"):
        fcn.classes = list(model.classes)
    return fcn


def _convert(model, size, pool, in_channels):
    layers = _layers(model)
    if in_channels is None:
        in_channels = _in_channels(model)
    last_name, last = layers[-1]
    if isinstance(last, (nn.Sequential, ResNetCifar)) and not any(
            isinstance(m, (nn.Flatten, nn.Linear)) for _, m in layers[:-1]):
        # load_model's Sequential(normalize, net): convert the inner network
        inner = _convert(last, size, pool, in_channels)
        out = nn.Sequential(OrderedDict(layers[:-1] + [(last_name, inner)]))
        out.window, out.stride = inner.window, inner.stride
        return out
    flat = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Flatten)]
    if not flat:
        raise ValueError("as_fully_convolutional: the model has no Flatten layer before its classifier; "
                         "expected flatten + linear or global average pooling + flatten at the end")
    f = flat[-1]
    head = layers[f + 1:]
    for name, m in head:
        if not isinstance(m, (nn.Linear,) + _HEAD_EXTRAS):
            raise ValueError(f"as_fully_convolutional: layer {name!r} ({type(m).__name__}) after the Flatten is "
                             f"neither linear nor elementwise; cannot convert it to a convolution")
    body_layers = layers[:f]
    global_pool = bool(body_layers) and _is_global_pool(body_layers[-1][1])
    features = body_layers[:-1] if global_pool else body_layers
    body = nn.Sequential(OrderedDict(features))
    modes = [(m, m.training) for m in body.modules()]
    body.eval()                                   # measure the map in eval mode (no batchnorm update) ...
    try:
        c, h, w = _map_shape(body, in_channels, size)
        stride = _map_stride(body, in_channels, size, (h, w))
    finally:
        for m, mode in modes:                     # ... then give every layer of the copy its mode back
            m.train(mode)                         # (parents come before their children: each ends as it was)
    new = list(features)
    if global_pool:
        if pool:
            new.append((body_layers[-1][0], nn.AvgPool2d((h, w), stride=1)))
        kernel, window = (1, 1), (size if pool else None)
    else:
        kernel, window = (h, w), size
    first = True
    for name, m in head:
        if isinstance(m, nn.Linear):
            conv = linear_to_conv(m, c, kernel if first else (1, 1))
            conv.train(m.training)
            new.append((name, conv))
            c, first = m.out_features, False
        else:
            new.append((name, m))
    out = nn.Sequential(OrderedDict(new))
    out.window, out.stride = window, stride
    return out
