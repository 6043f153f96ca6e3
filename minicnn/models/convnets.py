"""Plain (non-residual) ConvNets at CIFAR size: LeNet-5, a simple ConvNet, VGG- and AlexNet-style nets."""
from .. import nn


def lenet5(num_classes=10):
    """LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied
    to document recognition", Proc. IEEE 1998), for 3x32x32 inputs.

    conv5x5(6) - pool2 - conv5x5(16) - pool2 - fc120 - fc84 - fc(num_classes).
    The modern reading: ReLU and max pooling instead of the paper's scaled
    tanh and trainable average subsampling, and a full C3 connection table.
    62,006 parameters for 10 classes.
    """
    return nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2),          # 6 x 14 x 14
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),         # 16 x 5 x 5
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def _conv_bn_relu(c_in, c_out):
    """3x3 convolution (no bias: the batchnorm's shift replaces it) - BatchNorm - ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def simple_cnn(num_classes=10):
    """A simple ConvNet: (conv3x3 - BN - ReLU - maxpool2) x 3 with 32, 64, 128
    channels, then one linear layer 128*4*4 = 2048 -> num_classes.

    The standard "first CNN" of CIFAR-10 courses (e.g. Stanford CS231n's
    assignments); 113,962 parameters for 10 classes.
    """
    return nn.Sequential(
        *_conv_bn_relu(3, 32), nn.MaxPool2d(2),       # 32 x 16 x 16
        *_conv_bn_relu(32, 64), nn.MaxPool2d(2),      # 64 x 8 x 8
        *_conv_bn_relu(64, 128), nn.MaxPool2d(2),     # 128 x 4 x 4
        nn.Flatten(),
        nn.Linear(128 * 4 * 4, num_classes),
    )


def vgg_small(num_classes=10):
    """VGG-style network (Simonyan & Zisserman, "Very Deep Convolutional Networks
    for Large-Scale Image Recognition", ICLR 2015) at CIFAR size, with
    batchnorm after every convolution (Ioffe & Szegedy 2015).

    Stacks of 3x3 convolutions, doubling the width after each 2x2 max pool:
    [64, 64] - pool - [128, 128] - pool - [256, 256] - pool, then dropout and
    a linear classifier on the 256 x 4 x 4 map. 1,187,274 parameters for 10 classes.
    """
    layers = []
    c_in = 3
    for width in (64, 128, 256):
        layers += _conv_bn_relu(c_in, width) + _conv_bn_relu(width, width) + [nn.MaxPool2d(2)]
        c_in = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.5), nn.Linear(256 * 4 * 4, num_classes))


def alexnet_small(num_classes=10):
    """AlexNet's ideas (Krizhevsky, Sutskever & Hinton, "ImageNet Classification
    with Deep Convolutional Neural Networks", NIPS 2012) at CIFAR size.

    ReLU non-linearities, overlapping 3x3/stride-2 max pooling, five
    convolutions (5x5, 5x5, then three 3x3) and a dropout-regularised
    classifier of two hidden fully connected layers. Widths are reduced for
    32x32 inputs and local response normalisation is left out, as later work
    found it unnecessary. 2,167,434 parameters for 10 classes.
    """
    return nn.Sequential(
        nn.Conv2d(3, 64, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),                  # 64 x 16 x 16
        nn.Conv2d(64, 128, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),                  # 128 x 8 x 8
        nn.Conv2d(128, 192, 3, padding=1), nn.ReLU(),
        nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(),
        nn.Conv2d(192, 128, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),                  # 128 x 4 x 4
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(128 * 4 * 4, 512), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, num_classes),
    )
