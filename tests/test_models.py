"""The model zoo: shapes, parameter counts as documented, a gradient check, errors."""

import numpy as np
import pytest

import minicnn
from minicnn import models, tensor

DOCUMENTED = {"lenet5": 62006, "simple_cnn": 113962, "vgg_small": 1187274, "alexnet_small": 2167434,
              "resnet20": 269722, "resnet32": 464154, "resnet44": 658586, "resnet56": 853018,
              "resnet110": 1727962}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_parameter_count_matches_docstring(name):
    model = models.get_model(name)
    assert model.num_parameters() == DOCUMENTED[name]
    doc = (models.MODELS[name].__doc__ or "") + (models.resnet.__doc__ if name.startswith("resnet") else "")
    assert f"{DOCUMENTED[name]:,}" in doc


@pytest.mark.parametrize("name", ["lenet5", "simple_cnn", "vgg_small", "alexnet_small", "resnet20"])
def test_forward_shape_and_dtype(name):
    model = models.get_model(name, num_classes=7)
    model.eval()
    x = tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    with minicnn.no_grad():
        y = model(x)
    assert y.shape == (2, 7) and y.dtype == np.float32


def test_resnet20_paper_size():
    assert abs(models.resnet20().num_parameters() / 1e6 - 0.27) < 0.005


def test_resnet_depth_error():
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 2"):
        models.ResNetCifar(21)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'resnet7'; choose one of: lenet5"):
        models.get_model("resnet7")


def test_resnet_block_gradients_float64():
    """Input and parameter gradients of a downsampling ResNet block against central differences."""
    from minicnn.models.resnet import BasicBlock
    minicnn.nn.init.manual_seed(0)
    block = BasicBlock(2, 4, stride=2).double()
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4))
    rep = minicnn.gradcheck(block, [x])
    assert rep.passed, rep


def test_training_step_stays_float32():
    """A whole step with int64 labels: every gradient and the loss stay float32."""
    import minicnn.functional as F
    model = models.simple_cnn()
    opt = minicnn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    y = tensor(np.array([1, 2, 3, 4], dtype=np.int64))
    loss = F.cross_entropy(model(x), y)
    assert loss.dtype == np.float32
    opt.zero_grad()
    loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32, name
    for name, b in model.named_buffers():
        assert b.dtype == np.float32, name
