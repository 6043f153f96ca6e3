"""Residual networks for CIFAR-10 (He, Zhang, Ren & Sun, "Deep Residual Learning
for Image Recognition", CVPR 2016, section 4.2).

depth = 6n + 2: a 3x3 convolution with 16 filters, then three stages of n
basic blocks on 32x32, 16x16 and 8x8 maps with 16, 32 and 64 filters (the
first block of stages 2 and 3 downsamples with stride 2), global average
pooling and a 10-way linear layer. Shortcuts are identities; where the shape
changes they subsample by 2 and pad the new channels with zeros (the paper's
option A, which adds no parameters).

Parameters for 10 classes: ResNet-20 269,722 (the paper: 0.27M),
ResNet-32 464,154, ResNet-44 658,586, ResNet-56 853,018, ResNet-110 1,727,962.
"""
from .. import functional as F
from .. import nn


class BasicBlock(nn.Module):
    """y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), two 3x3 convolutions."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride = stride
        self.extra_channels = c_out - c_in

    def shortcut(self, x):
        """Option A: identity, or subsample by ``stride`` and zero-pad the channels."""
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        half = self.extra_channels // 2
        return F.pad(x, ((0, 0), (half, self.extra_channels - half), (0, 0), (0, 0)))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """The CIFAR ResNet of depth 6n + 2 (see the module docstring)."""

    def __init__(self, depth, num_classes=10):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"ResNetCifar: depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, c_in = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, width, stride))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        return self.fc(F.flatten(self.pool(x), 1))


def resnet20(num_classes=10):
    """ResNet-20 (n=3), 0.27M parameters; the paper reports 8.75% CIFAR-10 test error."""
    return ResNetCifar(20, num_classes)


def resnet32(num_classes=10):
    """ResNet-32 (n=5), 0.46M parameters; the paper reports 7.51% test error."""
    return ResNetCifar(32, num_classes)


def resnet44(num_classes=10):
    """ResNet-44 (n=7), 0.66M parameters; the paper reports 7.17% test error."""
    return ResNetCifar(44, num_classes)


def resnet56(num_classes=10):
    """ResNet-56 (n=9), 0.85M parameters; the paper reports 6.97% test error."""
    return ResNetCifar(56, num_classes)


def resnet110(num_classes=10):
    """ResNet-110 (n=18), 1.7M parameters; the paper reports 6.43% test error."""
    return ResNetCifar(110, num_classes)
