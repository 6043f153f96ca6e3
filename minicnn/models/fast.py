"""``fast_cnn``: a small VGG-like network for the fast CIFAR-10 recipe (``minicnn train --recipe fast``).

The layout follows the fast-training networks of Page ("How to train your
ResNet", 2018) and Jordan (airbench, "94% on CIFAR-10 in 3.29 seconds on a
single GPU", 2024), with widths cut for a 2-core CPU:

    whiten    conv2x2, 3 -> 24, no padding (32 -> 31)   frozen: patch whitening
              ReLU
    group 1   conv3x3 -> maxpool2 -> BN -> ReLU -> conv3x3 -> BN -> ReLU   (31 -> 15)
    group 2   the same                                                     (15 -> 7)
    group 3   the same                                                     (7 -> 3)
    head      maxpool3 (3 -> 1), linear without bias, logits * scale

- The first layer is set by ``nn.init.patch_whitening_`` from training
  images (its 12 principal directions of 2x2 patches and their negatives)
  and not trained (``minicnn train --whiten``, on in the fast recipe):
  "preprocess your data", done by a convolution. Built on its own, it is an
  ordinary trainable convolution.
- Pooling comes right after each group's first convolution, so the second
  one runs at a quarter of the pixels.
- Batchnorm has no learned scale (``weight`` fixed at 1, only the shift is
  trained): with a ReLU after it, a scale only rescales what the next
  batchnorm normalises away.
- Each 3x3 convolution starts as an identity on its first channels
  (``nn.init.dirac_``) plus He-initialised rest, so the untrained network
  passes its input through.
- The logits are scaled down (``scale``, 1/9 in airbench) so that the
  softmax starts nearly uniform.
"""
from .. import nn
from ..nn import init

__all__ = ["fast_cnn", "FAST_CNN_WIDTHS"]

FAST_CNN_WIDTHS = (32, 64, 128)


class _Scale(nn.Module):
    """y = factor * x (a fixed number, not learned)."""

    def __init__(self, factor):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x):
        return x * self.factor

    def extra_repr(self):
        return f"{self.factor:g}"


def _conv(c_in, c_out):
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    k = min(c_in, c_out)
    init.dirac_(conv.weight.data[:k, :k])         # identity on the first k channels (He init elsewhere)
    conv.weight.data[:k, k:] = 0
    return conv


def _bn(c):
    bn = nn.BatchNorm2d(c, momentum=0.4, eps=1e-5)
    bn.weight.requires_grad = False                # no learned scale: only the shift is trained
    return bn


def _group(c_in, c_out):
    return [_conv(c_in, c_out), nn.MaxPool2d(2), _bn(c_out), nn.ReLU(),
            _conv(c_out, c_out), _bn(c_out), nn.ReLU()]


def fast_cnn(num_classes=10, widths=FAST_CNN_WIDTHS, scale=1 / 9):
    """The fast recipe's network (see the module docstring); 3x32x32 inputs.

    ``widths``: the channels of the three groups. With (32, 64, 128) it has
    295,096 parameters for 10 classes; 448 of them are the batchnorm scales,
    fixed at 1, and the fast recipe also freezes the 288 whitening weights.
    """
    if len(widths) != 3 or any(int(w) <= 0 for w in widths):
        raise ValueError(f"fast_cnn: widths must be three positive ints, got {widths!r}")
    w1, w2, w3 = (int(w) for w in widths)
    whiten = nn.Conv2d(3, 24, 2, bias=True)        # minicnn train --whiten sets it from the data and freezes it
    return nn.Sequential(
        whiten, nn.ReLU(),
        *_group(24, w1), *_group(w1, w2), *_group(w2, w3),
        nn.MaxPool2d(3), nn.Flatten(),
        nn.Linear(w3, num_classes, bias=False),
        _Scale(scale),
    )
