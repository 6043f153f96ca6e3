"""Networks that output images: a convolutional autoencoder, a small U-Net, and DCGAN's generator and discriminator.

- ``conv_autoencoder``: an encoder of strided convolutions squeezes the
  image through a small bottleneck; a decoder of transposed convolutions
  ("up-convolutions") reconstructs it (Hinton & Salakhutdinov, Science 2006,
  for the idea; Masci et al., "Stacked Convolutional Auto-Encoders", ICANN
  2011, for the convolutional form).
- ``UNet`` / ``unet_small``: Ronneberger, Fischer & Brox, "U-Net:
  Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015.
  A contracting path (two 3x3 convolutions, then 2x2 max pooling, doubling
  the channels) and an expanding path (a 2x2 transposed convolution with
  stride 2, the "up-conv", halving the channels, then concatenation with
  the contracting path's map of the same size, the skip connection, and
  two 3x3 convolutions). Here with padding (output size = input size) and
  batchnorm.
- ``DCGANGenerator`` / ``DCGANDiscriminator``: Radford, Metz & Chintala,
  "Unsupervised Representation Learning with Deep Convolutional Generative
  Adversarial Networks", ICLR 2016, at 32x32: no pooling (strided and
  transposed convolutions), batchnorm in both nets (not on the generator's
  output nor the discriminator's input), ReLU in the generator with tanh on
  its output, LeakyReLU(0.2) in the discriminator, weights drawn from
  N(0, 0.02).

Image outputs: the autoencoder and U-Net end in a sigmoid (pixels in
[0, 1], as ``DataLoader`` gives them); the generator in tanh (pixels in
[-1, 1], as DCGAN trains).
"""
from collections import OrderedDict

import numpy as np

from .. import functional as F
from .. import nn

__all__ = ["conv_autoencoder", "UNet", "unet_small", "DCGANGenerator", "DCGANDiscriminator",
           "dcgan_generator", "dcgan_discriminator", "dcgan_init_"]


def _check_positive(who, **values):
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{who}: {name} must be a positive int, got {v!r}")


# ------------------------------------------------------------------ autoencoder
def conv_autoencoder(in_channels=3, out_channels=None, width=32, latent_channels=16):
    """Convolutional autoencoder for 32x32 images (Masci et al., ICANN 2011).

    Encoder: three 4x4 convolutions with stride 2 (padding 1), each halving
    the size: C_in -> width (16x16) -> 2 width (8x8) -> latent_channels
    (4x4), batchnorm and ReLU after the first two. The code is
    latent_channels x 4 x 4 numbers (256 for the default 16, against 3,072
    in an RGB image: a 12x compression). Decoder: three 4x4 transposed
    convolutions with stride 2 (padding 1), each doubling the size, back to
    ``out_channels`` (default: ``in_channels``), then a sigmoid.

    Parameters (defaults, RGB): 101,747 = encoder 3*32*16 + 32 + 32*64*16 +
    2*64 (batchnorm) + 64*16*16 + 16, decoder 16*64*16 + 2*64 + 64*32*16 +
    2*32 + 32*3*16 + 3 (the convolutions before a batchnorm have no bias).
    """
    out_channels = in_channels if out_channels is None else out_channels
    _check_positive("conv_autoencoder", in_channels=in_channels, out_channels=out_channels, width=width,
                    latent_channels=latent_channels)
    w, z = width, latent_channels
    encoder = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, w, 4, stride=2, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, bias=False)), ("bn2", nn.BatchNorm2d(2 * w)),
        ("relu2", nn.ReLU()),
        ("conv3", nn.Conv2d(2 * w, z, 4, stride=2, padding=1)),
    ]))
    decoder = nn.Sequential(OrderedDict([
        ("up1", nn.ConvTranspose2d(z, 2 * w, 4, stride=2, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(2 * w)),
        ("relu1", nn.ReLU()),
        ("up2", nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False)), ("bn2", nn.BatchNorm2d(w)),
        ("relu2", nn.ReLU()),
        ("up3", nn.ConvTranspose2d(w, out_channels, 4, stride=2, padding=1)), ("sigmoid", nn.Sigmoid()),
    ]))
    return nn.Sequential(OrderedDict([("encoder", encoder), ("decoder", decoder)]))


# ------------------------------------------------------------------ U-Net
def double_conv(c_in, c_out):
    """(3x3 convolution, padding 1, no bias - BatchNorm - ReLU) twice: U-Net's unit at one level."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(c_out)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)), ("bn2", nn.BatchNorm2d(c_out)),
        ("relu2", nn.ReLU()),
    ]))


class UNet(nn.Module):
    """U-Net (Ronneberger et al., MICCAI 2015) with ``depth`` poolings, padded convolutions and batchnorm.

    Level l = 0 .. depth has ``width * 2**l`` channels on maps of size
    H / 2**l::

        down[0]  = double_conv(x)                         width       x H
        down[l]  = double_conv(maxpool2(down[l-1]))        width 2^l   x H / 2^l   (l = 1 .. depth)
        up at level l = depth-1 .. 0:
            u = upconv[l](y)                               2x2 transposed conv, stride 2: 2^(l+1) w -> 2^l w
            y = double_conv(concatenate(down[l], u))       the skip connection: 2^(l+1) w -> 2^l w channels
        out = sigmoid(1x1 conv(y))                         out_channels x H

    H and W must be divisible by 2**depth. The concatenation is what lets
    the fine detail of ``down[l]`` reach the output without passing through
    the bottleneck (its gradient flows back the same way).
    """

    def __init__(self, in_channels=3, out_channels=3, width=16, depth=2, sigmoid=True):
        super().__init__()
        _check_positive("UNet", in_channels=in_channels, out_channels=out_channels, width=width, depth=depth)
        self.depth = depth
        self.down = nn.ModuleList([double_conv(in_channels if l == 0 else width * 2 ** (l - 1), width * 2 ** l)
                                   for l in range(depth + 1)])
        self.upconv = nn.ModuleList([nn.ConvTranspose2d(width * 2 ** (l + 1), width * 2 ** l, 2, stride=2)
                                     for l in range(depth)])
        self.up = nn.ModuleList([double_conv(width * 2 ** (l + 1), width * 2 ** l) for l in range(depth)])
        self.out = nn.Conv2d(width, out_channels, 1)
        self.sigmoid = bool(sigmoid)

    def forward(self, x):
        size = 2 ** self.depth
        if x.ndim != 4 or x.shape[2] % size or x.shape[3] % size:
            raise ValueError(f"UNet: input must be (N, C, H, W) with H and W divisible by 2**depth = {size}, "
                             f"got {tuple(x.shape)}")
        skips = []
        y = x
        for l in range(self.depth + 1):
            y = self.down[l](y if l == 0 else F.max_pool2d(y, 2))
            skips.append(y)
        for l in reversed(range(self.depth)):
            u = self.upconv[l](y)
            y = self.up[l](F.concatenate([skips[l], u], axis=1))
        y = self.out(y)
        return F.sigmoid(y) if self.sigmoid else y


def unet_small(in_channels=3, out_channels=3, width=16, depth=2):
    """U-Net for 32x32 images: 16, 32, 64 channels on 32x32, 16x16, 8x8 maps (see ``UNet``).

    Parameters (defaults): 117,395 (``UNet``'s table; each 3x3
    convolution c_in*c_out*9 with no bias plus 2 c_out of batchnorm, each
    up-conv c_in*c_out*4 + c_out, the 1x1 output 16*3 + 3).
    """
    return UNet(in_channels, out_channels, width, depth)


# ------------------------------------------------------------------ DCGAN
def dcgan_init_(module, std=0.02):
    """DCGAN's initialisation, in place: conv weights ~ N(0, std), batchnorm scale ~ N(1, std), biases 0."""
    for m in module.modules():       # draws from nn.init's generator (nn.init.manual_seed makes it repeatable)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


class DCGANGenerator(nn.Module):
    """z (N, nz) -> image (N, channels, 32, 32) in [-1, 1] (Radford et al. 2016, figure 1 at 32x32).

    ::

        z as (N, nz, 1, 1)
        4x4 transposed conv, stride 1      -> 4 g x 4 x 4     BN, ReLU
        4x4 transposed conv, stride 2, p1  -> 2 g x 8 x 8     BN, ReLU
        4x4 transposed conv, stride 2, p1  ->   g x 16 x 16   BN, ReLU
        4x4 transposed conv, stride 2, p1  -> channels x 32 x 32, tanh

    (g = ``width``; transposed convolutions before a batchnorm have no bias.)
    """

    def __init__(self, nz=100, width=64, channels=3):
        super().__init__()
        _check_positive("DCGANGenerator", nz=nz, width=width, channels=channels)
        self.nz, g = nz, width
        self.net = nn.Sequential(OrderedDict([
            ("up1", nn.ConvTranspose2d(nz, 4 * g, 4, stride=1, padding=0, bias=False)),
            ("bn1", nn.BatchNorm2d(4 * g)), ("relu1", nn.ReLU()),
            ("up2", nn.ConvTranspose2d(4 * g, 2 * g, 4, stride=2, padding=1, bias=False)),
            ("bn2", nn.BatchNorm2d(2 * g)), ("relu2", nn.ReLU()),
            ("up3", nn.ConvTranspose2d(2 * g, g, 4, stride=2, padding=1, bias=False)),
            ("bn3", nn.BatchNorm2d(g)), ("relu3", nn.ReLU()),
            ("up4", nn.ConvTranspose2d(g, channels, 4, stride=2, padding=1)), ("tanh", nn.Tanh()),
        ]))
        dcgan_init_(self)

    def forward(self, z):
        if z.ndim != 2 or z.shape[1] != self.nz:
            raise ValueError(f"DCGANGenerator: z must have shape (N, nz={self.nz}), got {tuple(z.shape)}")
        return self.net(F.reshape(z, (z.shape[0], self.nz, 1, 1)))


class DCGANDiscriminator(nn.Module):
    """image (N, channels, 32, 32) -> one logit per image, (N,) (Radford et al. 2016 at 32x32).

    ::

        4x4 conv, stride 2, p1 ->   d x 16 x 16    LeakyReLU(0.2)   (no batchnorm on the input layer)
        4x4 conv, stride 2, p1 -> 2 d x 8 x 8      BN, LeakyReLU(0.2)
        4x4 conv, stride 2, p1 -> 4 d x 4 x 4      BN, LeakyReLU(0.2)
        4x4 conv, no padding   ->   1 x 1 x 1      the logit (sigmoid of it: P(real))

    (d = ``width``.) The logit, not the probability, is returned: the loss
    is binary cross-entropy on logits (``minicnn.train.gan.bce_with_logits``),
    which stays finite when the discriminator is very sure.
    """

    def __init__(self, width=64, channels=3):
        super().__init__()
        _check_positive("DCGANDiscriminator", width=width, channels=channels)
        d = width
        self.net = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(channels, d, 4, stride=2, padding=1)), ("lrelu1", nn.LeakyReLU(0.2)),
            ("conv2", nn.Conv2d(d, 2 * d, 4, stride=2, padding=1, bias=False)), ("bn2", nn.BatchNorm2d(2 * d)),
            ("lrelu2", nn.LeakyReLU(0.2)),
            ("conv3", nn.Conv2d(2 * d, 4 * d, 4, stride=2, padding=1, bias=False)), ("bn3", nn.BatchNorm2d(4 * d)),
            ("lrelu3", nn.LeakyReLU(0.2)),
            ("conv4", nn.Conv2d(4 * d, 1, 4, stride=1, padding=0)),
        ]))
        dcgan_init_(self)

    def forward(self, x):
        if x.ndim != 4 or tuple(x.shape[2:]) != (32, 32):
            raise ValueError(f"DCGANDiscriminator: images must be (N, C, 32, 32), got {tuple(x.shape)}")
        return F.reshape(self.net(x), (x.shape[0],))


def dcgan_generator(nz=100, width=64, channels=3):
    """DCGAN generator for 32x32 images (see ``DCGANGenerator``).

    Parameters: nz*4g*16 + 4g*2g*16 + 2g*g*16 + g*c*16 + c + 2*(4g + 2g + g);
    1,068,931 for the defaults (nz 100, g 64, RGB).
    """
    return DCGANGenerator(nz, width, channels)


def dcgan_discriminator(width=64, channels=3):
    """DCGAN discriminator for 32x32 images (see ``DCGANDiscriminator``).

    Parameters: c*d*16 + d + d*2d*16 + 2d*4d*16 + 4d*16 + 1 + 2*(2d + 4d);
    663,361 for the defaults (d 64, RGB).
    """
    return DCGANDiscriminator(width, channels)
