"""A fully convolutional classifier: no pooling layers but strided convolutions, no linear layer.

Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The
All Convolutional Net", ICLR 2015 (workshop track), model All-CNN-C
(table 2): max pooling is replaced by 3x3 convolutions with stride 2, the
fully connected layers by 1x1 convolutions, and the last 1x1 convolution
has one channel per class; global average pooling of those class maps
gives the logits. Because every layer is a convolution the network takes
images of any size; on a larger image, dropping the final average gives a
map of class scores (dense prediction, see ``as_fully_convolutional``).

``allconv``: All-CNN-C with a third of the widths (96 -> 32, 192 -> 64)
and batch normalisation after every convolution but the last (instead of
the paper's dropout; it trains in a few epochs on a CPU)::

    3x3 conv 32, 3x3 conv 32                   32 x 32 x 32
    3x3 conv 32, stride 2                      32 x 16 x 16
    3x3 conv 64, 3x3 conv 64                   64 x 16 x 16
    3x3 conv 64, stride 2                      64 x 8 x 8
    3x3 conv 64, no padding                    64 x 6 x 6
    1x1 conv 64                                64 x 6 x 6
    1x1 conv classes (with bias)               10 x 6 x 6
    global average pooling                     10

The paper's All-CNN-C has 1.37 M parameters and 9.08% CIFAR-10 test error
(with augmentation). This one has 153,898 parameters for 10 classes and
costs 30.7 M multiply-adds per image.
"""
from collections import OrderedDict

from .. import nn

__all__ = ["allconv", "ALLCONV_LAYERS"]

# (out_channels, kernel, stride, padding) of each conv-BN-ReLU layer, before the class layer.
ALLCONV_LAYERS = (
    (32, 3, 1, 1), (32, 3, 1, 1), (32, 3, 2, 1),
    (64, 3, 1, 1), (64, 3, 1, 1), (64, 3, 2, 1),
    (64, 3, 1, 0), (64, 1, 1, 0),
)


def allconv(num_classes=10):
    """All-CNN-C (Springenberg et al., "Striving for Simplicity: The All Convolutional Net",
    ICLR 2015) at a third of its width, with batchnorm: strided 3x3 convolutions
    instead of pooling, 1x1 convolutions, global average pooling, no linear layer.
    153,898 parameters for 10 classes.
    """
    layers = OrderedDict()
    c_in = 3
    for i, (c_out, k, s, p) in enumerate(ALLCONV_LAYERS):
        layers[f"conv{i + 1}"] = nn.Conv2d(c_in, c_out, k, stride=s, padding=p, bias=False)
        layers[f"bn{i + 1}"] = nn.BatchNorm2d(c_out)
        layers[f"relu{i + 1}"] = nn.ReLU()
        c_in = c_out
    layers["classifier"] = nn.Conv2d(c_in, num_classes, 1)        # one score map per class
    layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    return nn.Sequential(layers)
