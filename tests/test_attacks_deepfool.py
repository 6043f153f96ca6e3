"""DeepFool on real CIFAR-10 test images: every image crosses the boundary inside the box.

Real photographs have many pixels at 0 or 1. A DeepFool step that is
clipped to the box after the fact loses the part of the step those pixels
would have taken, lands short of the boundary, and some images never cross.
These tests train a tiny network for a few seconds on real training images
and attack real test images (some of every class).
"""
from pathlib import Path

import numpy as np
import pytest

from minicnn import Tensor, nn, no_grad
from minicnn.attacks import deepfool
from minicnn.attacks.deepfool import deepfool_with_info
from minicnn.analysis import analysis_mode

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"
needs_cifar = pytest.mark.skipif(not (CIFAR / "test").is_dir(), reason="needs ../shared/data/cifar10-jpeg")


def load_split(split, per_class, start=0):
    """``per_class`` images of every class of ``split`` as float32 (N, 3, 32, 32) in [0, 1], and labels."""
    from PIL import Image

    classes = sorted(p.name for p in (CIFAR / split).iterdir())
    images, labels = [], []
    for k, name in enumerate(classes):
        for f in sorted((CIFAR / split / name).iterdir())[start:start + per_class]:
            images.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(k)
    return np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255, np.array(labels)


@pytest.fixture(scope="module")
def cifar_model():
    """A two-conv network trained for a few epochs on 1,000 real training images (well above chance)."""
    from minicnn.optim import Adam
    from minicnn.train import fit

    x, y = load_split("train", 100)
    nn.init.manual_seed(0)                                   # the same weights every run
    model = nn.Sequential(nn.Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]),
                          nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    order = np.random.default_rng(0).permutation(len(x))
    batches = [(Tensor(x[order[i:i + 50]]), y[order[i:i + 50]]) for i in range(0, len(x), 50)]
    fit(model, batches, Adam(model.parameters(), lr=2e-3), epochs=4)
    model.eval()
    return model


def predict(model, x):
    with no_grad():
        return model(Tensor(x)).numpy().argmax(1)


@needs_cifar
def test_deepfool_fools_every_real_test_image_inside_the_box(cifar_model):
    x, y = load_split("test", 5)                                  # 50 images, 5 of every class
    pinned = ((x == 0) | (x == 1)).reshape(len(x), -1).any(axis=1)
    assert pinned.sum() >= 10                                     # the case at hand: pixels at the bounds
    assert (predict(cifar_model, x) == y).mean() > 0.2            # a model that learnt something
    with analysis_mode(cifar_model):
        x_adv, fooled, taken = deepfool_with_info(cifar_model, x)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and x_adv.dtype == x.dtype
    k0, k1 = predict(cifar_model, x), predict(cifar_model, x_adv)
    np.testing.assert_array_equal(fooled, k1 != k0)               # the flag is the model's own verdict
    assert fooled.all(), f"not fooled: images {np.flatnonzero(~fooled).tolist()}"
    assert taken.max() < 50                                       # crossed, not stopped by the step limit
    # minimal: a small L2 step (the images' own norm is about 30)
    assert np.median(np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1)) < 1.0
    np.testing.assert_array_equal(deepfool(cifar_model, x), x_adv)   # the public function: the same result


@needs_cifar
def test_deepfool_steps_never_leave_the_box_and_pinned_pixels_stay_put(cifar_model):
    """Pixels at a bound that the step would push outwards are left out of the step: they do not move."""
    x, _ = load_split("test", 2, start=5)
    with analysis_mode(cifar_model):
        one, fooled, _ = deepfool_with_info(cifar_model, x, steps=1)
    assert one.min() >= 0 and one.max() <= 1
    k0, k1 = predict(cifar_model, x), predict(cifar_model, one)
    np.testing.assert_array_equal(fooled, k1 != k0)
    # after one step the image moved (unless already fooled): some pixel at a bound stayed there
    at_bound = (x == 0) | (x == 1)
    assert (one[at_bound] == x[at_bound]).any()


def test_fooled_flag_agrees_with_the_model_when_steps_run_out():
    """With too few steps some images stay unfooled: the flag says so, image by image."""
    from test_attacks import _batch, small_convnet

    model = small_convnet()
    x, _ = _batch(n=8)
    for steps in (0, 1, 2):
        with analysis_mode(model):
            x_adv, fooled, _ = deepfool_with_info(model, x, steps=steps)
        np.testing.assert_array_equal(fooled, predict(model, x_adv) != predict(model, x))
    assert not fooled_at_zero(model, x).any()


def fooled_at_zero(model, x):
    with analysis_mode(model):
        return deepfool_with_info(model, x, steps=0)[1]
