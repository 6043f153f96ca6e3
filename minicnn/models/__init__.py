"""Model zoo for 32x32 RGB inputs (CIFAR-10): each a plain ``nn.Module``.

``get_model(name, num_classes=10)`` builds one by name; ``MODELS`` lists them.
"""
from .convnets import alexnet_small, lenet5, simple_cnn, vgg_small
from .resnet import ResNetCifar, resnet20, resnet32, resnet44, resnet56, resnet110

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
}


def get_model(name, num_classes=10):
    """Build the model called ``name`` (see ``MODELS``) for ``num_classes`` classes."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
    return builder(num_classes=num_classes)


__all__ = ["MODELS", "get_model", "lenet5", "simple_cnn", "vgg_small", "alexnet_small",
           "ResNetCifar", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
