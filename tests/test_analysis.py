"""minicnn.analysis: the one toolbox of explain, attacks and synthesize (guard, layers, images, device)."""
from collections import OrderedDict

import numpy as np
import pytest

from minicnn import Tensor, nn
from minicnn import explain as E
from minicnn.analysis import analysis_mode, as_images, find_layer, layer_names, model_device_dtype
from minicnn.attacks import deepfool, fgsm
from minicnn.synthesize import invert


def net():
    return nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 4, 3, padding=1)), ("relu", nn.ReLU()),
                                      ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()),
                                      ("fc", nn.Linear(4, 3))]))


def test_find_layer_names_modules_and_the_empty_name_is_the_whole_model():
    model = net()
    assert find_layer(model, "conv") == ("conv", model.conv)
    assert find_layer(model, model.relu) == ("relu", model.relu)
    assert find_layer(model, "") == ("", model)                  # '' is the model: its output, the logits
    assert layer_names(model) == ["", "conv", "relu", "pool", "flat", "fc"]
    with pytest.raises(ValueError, match=r"'conv9' is not a layer of the model.*'conv', 'relu'.*'' is the whole"):
        find_layer(model, "conv9")
    with pytest.raises(ValueError, match="not part of the model"):
        find_layer(model, nn.ReLU())
    with pytest.raises(TypeError, match="layer must be a name"):
        find_layer(model, None)
    with pytest.raises(TypeError, match="model must be a minicnn nn.Module"):
        find_layer(lambda x: x, "conv")
    # explain and synthesize follow the one rule: '' gives the logits in both
    x = np.random.default_rng(0).random((2, 3, 6, 6)).astype(np.float32)
    logits = model(Tensor(x)).data
    np.testing.assert_allclose(E.activations(model, x, ""), logits, rtol=1e-6)


def test_model_device_dtype_is_device_then_dtype():
    model = net()
    assert model_device_dtype(model) == ("cpu", np.dtype(np.float32))
    assert model_device_dtype(model.double()) == ("cpu", np.dtype(np.float64))
    assert model_device_dtype(nn.Flatten()) == ("cpu", np.dtype(np.float32))   # no parameter: the default


def test_as_images_one_rule_with_the_fix_in_the_message():
    x = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    x[0, 0, 0, :2] = 0, 1
    assert as_images(x) is x and as_images(Tensor(x)) is x       # no copy, a Tensor's data as is
    ints = as_images((x * 0).astype(np.uint8), net().double())
    assert ints.dtype == np.float64                               # integers become the model's dtype
    with pytest.raises(ValueError, match=r"x: images must lie inside bounds \(0, 1\), got values from 0 to 2.*"
                                         r"divide 8-bit images by 255\)$"):
        as_images(x * 2)
    with pytest.raises(ValueError, match=r"or pass bounds="):     # an attack takes bounds: say so
        as_images(x + 2, bounds=(0, 1))
    assert as_images(x + 2, bounds=(2, 3)) is not None
    with pytest.raises(ValueError, match=r"add a batch axis with x\[None\]"):
        as_images(x[0])
    with pytest.raises(ValueError, match="NaN or infinity"):
        as_images(np.full((1, 3, 2, 2), np.nan))
    with pytest.raises(ValueError, match="bounds: the lower bound must be below"):
        as_images(x, bounds=(1, 0))


@pytest.mark.parametrize("analysis", ["saliency", "grad_cam", "activations", "fgsm", "deepfool", "invert"])
def test_every_analysis_refuses_0_255_images_alike(analysis):
    model = net()
    x = np.random.default_rng(1).integers(0, 256, (2, 3, 6, 6)).astype(np.float32)
    x[0, 0, 0, :2] = 0, 255
    run = {"saliency": lambda x: E.saliency(model, x), "grad_cam": lambda x: E.grad_cam(model, x, layer="relu"),
           "activations": lambda x: E.activations(model, x, "conv"), "fgsm": lambda x: fgsm(model, x, 0, 8 / 255),
           "deepfool": lambda x: deepfool(model, x), "invert": lambda x: invert(model, x, "conv", steps=2)[0]}[analysis]
    with pytest.raises(ValueError, match=r"^x: images must lie inside bounds \(0, 1\), got values from 0 to 255; "
                                         r"scale pixels to \[0, 1\] \(divide 8-bit images by 255\)"):
        run(x)
    assert np.isfinite(run(x / 255)).all()                # the fix the message gives works


def test_analysis_mode_guards_modules_and_passes_plain_functions():
    model = net()
    model.train()
    with analysis_mode(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())
    f = lambda x: x                                       # noqa: E731  a plain function: nothing to guard
    with analysis_mode(f) as g:
        assert g is f
    with pytest.raises(TypeError, match="model must be"):
        with analysis_mode(3):
            pass
