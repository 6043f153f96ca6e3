"""Sanity checks (Adebayo et al. 2018) on a trained model: a map that explains the model must
change when the model's top layers are randomised, and differ from an untrained model's map."""
import numpy as np
import pytest

import minicnn
from minicnn import explain as E
from minicnn import nn


def _rank_corr(a, b):
    """Mean over images of Spearman's rank correlation of two (N, ...) maps."""
    from scipy.stats import spearmanr
    return float(np.mean([spearmanr(np.ravel(u), np.ravel(v))[0] for u, v in zip(a, b)]))


@pytest.fixture(scope="module")
def trained_and_randomised(trained_checkpoint, tiny_tree):
    from minicnn.data import ImageFolder

    model = minicnn.load_model(trained_checkpoint)
    test = ImageFolder(f"{tiny_tree}/test", progress=False)
    x = test.images[::4][:8].astype(np.float32) / 255
    # cascading randomisation of the top: the classifier and the last convolution (+ its batchnorm)
    rand = minicnn.load_model(trained_checkpoint)
    nn.init.manual_seed(0)
    for name in ("net.13", "net.8"):
        dict(rand.named_modules())[name].reset_parameters()
    dict(rand.named_modules())["net.9"].reset_parameters()
    nn.init.manual_seed(1)
    untrained = nn.Sequential(rand.normalize, minicnn.models.get_model("simple_cnn")).eval()
    return model, rand, untrained, x


def test_randomised_top_layers_change_gradient_and_grad_cam(trained_and_randomised):
    model, rand, _, x = trained_and_randomised
    target = E.gradient(model, x, None), E.grad_cam(model, x, None, "net.10")
    pred = model(minicnn.tensor(x)).data.argmax(1)
    after = E.gradient(rand, x, pred), E.grad_cam(rand, x, pred, "net.10")
    corr_grad = _rank_corr(np.abs(target[0]).max(1), np.abs(after[0]).max(1))
    corr_cam = _rank_corr(target[1], after[1])
    # identical maps would give 1; a map blind to the top layers stays near 1
    assert corr_grad < 0.6 and corr_cam < 0.6, (corr_grad, corr_cam)
    assert _rank_corr(target[0], target[0]) == pytest.approx(1)


def test_trained_saliency_differs_from_an_untrained_models(trained_and_randomised):
    model, _, untrained, x = trained_and_randomised
    pred = model(minicnn.tensor(x)).data.argmax(1)
    corr = _rank_corr(E.saliency(model, x, pred), E.saliency(untrained, x, pred))
    assert corr < 0.6, corr
