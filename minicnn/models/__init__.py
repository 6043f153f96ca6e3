"""Model zoo for 32x32 RGB inputs (CIFAR-10): each a plain ``nn.Module``.

``get_model(name, num_classes=10)`` builds one by name; ``MODELS`` lists them.
Also: the inception module (``Inception``), dense prediction
(``as_fully_convolutional``), and networks that output images
(``IMAGE2IMAGE_MODELS``: ``conv_autoencoder``, ``unet_small``; DCGAN's
``dcgan_generator`` and ``dcgan_discriminator``).
"""
from .convnets import alexnet_small, lenet5, simple_cnn, vgg_small
from .resnet import ResNetCifar, resnet20, resnet32, resnet44, resnet56, resnet110
from .inception import Inception, inception_small
from .allconv import allconv
from .fast import fast_cnn
from .dense import as_fully_convolutional
from .generative import (UNet, conv_autoencoder, dcgan_discriminator, dcgan_generator, DCGANDiscriminator,
                         DCGANGenerator, unet_small)

MODELS = {
    "lenet5": lenet5,
    "simple_cnn": simple_cnn,
    "vgg_small": vgg_small,
    "alexnet_small": alexnet_small,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "inception_small": inception_small,
    "allconv": allconv,
    "fast_cnn": fast_cnn,
}

# Image-to-image networks (``minicnn train-image2image``): builders taking (in_channels, out_channels).
IMAGE2IMAGE_MODELS = {
    "conv_autoencoder": conv_autoencoder,
    "unet_small": unet_small,
}


def get_model(name, num_classes=10):
    """Build the model called ``name`` (see ``MODELS``) for ``num_classes`` classes."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
    return builder(num_classes=num_classes)


__all__ = ["MODELS", "get_model", "lenet5", "simple_cnn", "vgg_small", "alexnet_small",
           "ResNetCifar", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
           "Inception", "inception_small", "allconv", "fast_cnn", "as_fully_convolutional", "IMAGE2IMAGE_MODELS",
           "conv_autoencoder", "UNet", "unet_small", "DCGANGenerator", "DCGANDiscriminator", "dcgan_generator",
           "dcgan_discriminator"]
