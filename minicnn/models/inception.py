"""GoogLeNet's inception module and a small GoogLeNet-style CIFAR network.

Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke & Rabinovich,
"Going Deeper with Convolutions", CVPR 2015 (GoogLeNet, figure 2(b) and
table 1).

An inception module looks at its input through four parallel branches and
stacks their outputs along the channels::

    x ──┬── 1x1 conv (c1) ──────────────────────────┐
        ├── 1x1 conv (c3r) ── 3x3 conv (c3) ────────┤
        ├── 1x1 conv (c5r) ── 5x5 conv (c5) ────────┼── concatenate: c1 + c3 + c5 + cp channels
        └── 3x3 max pool, stride 1 ── 1x1 conv (cp) ┘

Every branch keeps the height and width (padding 1 for 3x3, 2 for 5x5), so
the maps can be concatenated. A 1x1 convolution is not "just a
multiplication": at every pixel it is a linear layer across the channels,
y[:, o, i, j] = sum_c W[o, c] x[:, c, i, j] + b[o]. Placed before the 3x3
and 5x5 convolutions ("reduce") it shrinks the channels they see, which is
what makes the module affordable: a 5x5 convolution from c_in to c5 costs
25 c_in c5 multiply-adds per pixel, with a reduction to c5r it costs
c_in c5r + 25 c5r c5.

Each convolution here is followed by batch normalisation (Ioffe & Szegedy
2015, the "Inception-v2" change; the convolution then has no bias) and a
ReLU.

``inception_small``: GoogLeNet's inception layers 3a, 3b, 4a and 4b with a
quarter of the channels, on CIFAR's 32x32 images::

    3x3 conv 48 - BN - ReLU                         48 x 32 x 32
    2x2 max pool                                    48 x 16 x 16
    inception 3a (16, 24/32, 4/8, 8)                64 x 16 x 16
    inception 3b (32, 32/48, 8/24, 16)             120 x 16 x 16
    2x2 max pool                                   120 x 8 x 8
    inception 4a (48, 24/52, 4/12, 16)             128 x 8 x 8
    inception 4b (40, 28/56, 6/16, 16)             128 x 8 x 8
    global average pooling, linear 128 -> classes

(each module: c1, c3r/c3, c5r/c5, cp). 89,790 parameters for 10
classes, 13.4 M multiply-adds per image (simple_cnn: 10.3 M).
"""
from collections import OrderedDict

from .. import functional as F
from .. import nn

__all__ = ["Inception", "conv_bn_relu", "inception_small", "INCEPTION_SMALL_CONFIG"]


def conv_bn_relu(c_in, c_out, k, stride=1):
    """``k x k`` convolution (padding k // 2, no bias) - BatchNorm - ReLU, as one Sequential."""
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)),
        ("bn", nn.BatchNorm2d(c_out)),
        ("relu", nn.ReLU()),
    ]))


class Inception(nn.Module):
    """The inception module (GoogLeNet figure 2(b)): four branches, concatenated on the channels.

    Args:
        in_channels: C_in.
        c1: output channels of the 1x1 branch.
        c3_reduce, c3: the 1x1 reduction and the output channels of the 3x3 branch.
        c5_reduce, c5: the same for the 5x5 branch.
        pool_proj: output channels of the 1x1 projection after the 3x3 max pool.

    Shapes: x (N, C_in, H, W) -> y (N, c1 + c3 + c5 + pool_proj, H, W)
    (``out_channels``). Parameters (convolutions without bias, each followed
    by a batchnorm with 2 parameters per channel)::

        C_in c1 + C_in c3r + 9 c3r c3 + C_in c5r + 25 c5r c5 + C_in cp
        + 2 (c1 + c3r + c3 + c5r + c5 + cp)

    Branches: ``branch1`` (1x1), ``branch3`` (1x1 then 3x3), ``branch5``
    (1x1 then 5x5), ``branch_pool`` (3x3 max pool, stride 1, padding 1, then
    1x1).
    """

    def __init__(self, in_channels, c1, c3_reduce, c3, c5_reduce, c5, pool_proj):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("c1", c1), ("c3_reduce", c3_reduce), ("c3", c3),
                        ("c5_reduce", c5_reduce), ("c5", c5), ("pool_proj", pool_proj)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"Inception: {name} must be a positive int, got {v!r}")
        self.in_channels = in_channels
        self.out_channels = c1 + c3 + c5 + pool_proj
        self.branch1 = conv_bn_relu(in_channels, c1, 1)
        self.branch3 = nn.Sequential(conv_bn_relu(in_channels, c3_reduce, 1), conv_bn_relu(c3_reduce, c3, 3))
        self.branch5 = nn.Sequential(conv_bn_relu(in_channels, c5_reduce, 1), conv_bn_relu(c5_reduce, c5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn_relu(in_channels, pool_proj, 1))

    def forward(self, x):
        branches = [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)]
        return F.concatenate(branches, axis=1)

    def extra_repr(self):
        return f"{self.in_channels} -> {self.out_channels}"


# (c1, c3_reduce, c3, c5_reduce, c5, pool_proj): GoogLeNet's table 1, channels divided by 4 (rounded).
INCEPTION_SMALL_CONFIG = OrderedDict([
    ("inception3a", (16, 24, 32, 4, 8, 8)),       # GoogLeNet: 64, 96, 128, 16, 32, 32
    ("inception3b", (32, 32, 48, 8, 24, 16)),     # 128, 128, 192, 32, 96, 64
    ("inception4a", (48, 24, 52, 4, 12, 16)),     # 192, 96, 208, 16, 48, 64
    ("inception4b", (40, 28, 56, 6, 16, 16)),     # 160, 112, 224, 24, 64, 64
])


def inception_small(num_classes=10):
    """GoogLeNet-style CIFAR network of four inception modules (Szegedy et al., "Going
    Deeper with Convolutions", CVPR 2015), a quarter of GoogLeNet's widths.

    3x3 conv 48 - pool - inception 3a, 3b - pool - inception 4a, 4b - global
    average pooling - linear (see ``minicnn.models.inception``). Batchnorm
    after every convolution. 89,790 parameters for 10 classes.
    """
    layers = OrderedDict([("stem", conv_bn_relu(3, 48, 3)), ("pool1", nn.MaxPool2d(2))])
    c = 48
    for name, widths in INCEPTION_SMALL_CONFIG.items():
        if name == "inception4a":
            layers["pool2"] = nn.MaxPool2d(2)
        layers[name] = Inception(c, *widths)
        c = layers[name].out_channels
    layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(c, num_classes)
    return nn.Sequential(layers)
