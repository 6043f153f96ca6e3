"""``minicnn.load_model`` and ``nn.Normalize``: a trained model that takes [0, 1] pixels and returns logits."""
import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from minicnn.data import Compose, Normalize as NormalizeBatch, ToFloat
from minicnn.gradcheck import gradcheck


def test_normalize_layer_formula_and_gradient(rng):
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.5])
    layer = nn.Normalize(mean, std).double()
    x = rng.random((2, 3, 4, 5))
    y = layer(minicnn.tensor(x)).numpy()
    np.testing.assert_allclose(y, (x - mean[:, None, None]) / std[:, None, None], rtol=1e-6)   # float32 statistics
    assert gradcheck(layer, [x]).passed
    assert set(layer.state_dict()) == {"mean", "std"} and not list(layer.parameters())


@pytest.mark.parametrize("mean, std, match", [
    ([0.5, 0.5], [0.2], "one length"), ([0.5], [0.0], "positive"), ([], [], "non-empty")])
def test_normalize_rejects_bad_statistics(mean, std, match):
    with pytest.raises(ValueError, match=match):
        nn.Normalize(mean, std)


def test_normalize_names_the_channel_mismatch():
    with pytest.raises(ValueError, match=r"Normalize\(3 channels\).*\(2, 1, 4, 4\)"):
        nn.Normalize([0.5] * 3, [0.2] * 3)(minicnn.tensor(np.zeros((2, 1, 4, 4), np.float32)))


def test_load_model_takes_pixels_and_matches_the_training_pipeline(trained_checkpoint, rng):
    model = minicnn.load_model(trained_checkpoint)
    assert not model.training and all(not m.training for m in model.modules())
    assert model.classes[:2] == ["airplane", "automobile"] and len(model.classes) == 10
    assert list(dict(model.named_children())) == ["normalize", "net"]
    ckpt = load_checkpoint(trained_checkpoint)
    net = model_from_checkpoint(ckpt, trained_checkpoint).eval()
    pixels = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    # What training fed the network: uint8 NCHW -> float [0, 1] -> normalised.
    normalised = Compose([ToFloat(), NormalizeBatch(ckpt["norm_mean"], ckpt["norm_std"])])(pixels)
    expected = net(minicnn.tensor(normalised)).numpy()
    x01 = pixels.astype(np.float32) / 255
    got = model(minicnn.tensor(x01)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # Its state is the checkpoint's.
    for k, v in ckpt["model"].items():
        np.testing.assert_array_equal(model.net.state_dict()[k], v)


def test_load_model_errors(tmp_path, trained_checkpoint):
    text = tmp_path / "notes.npz"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a minicnn checkpoint") as info:
        minicnn.load_model(str(text))
    assert "pickle" not in str(info.value)
    with pytest.raises(CheckpointError, match="is a directory"):
        minicnn.load_model(str(tmp_path))
    with pytest.raises(CheckpointError, match="does not exist"):
        minicnn.load_model(str(tmp_path / "missing.npz"))


def test_every_kind_of_checkpoint_is_read_through_one_checker(tmp_path, trained_checkpoint):
    """Training, GAN and image-to-image checkpoints: one reader, one message per kind of wrong file."""
    from minicnn.train.gan import load_generator
    from minicnn.train.image2image import load_image2image

    text = tmp_path / "notes.npz"
    text.write_text("not a checkpoint")
    for load in (minicnn.load_model, load_generator, load_image2image):
        with pytest.raises(CheckpointError, match="not a minicnn checkpoint"):
            load(str(text))
        with pytest.raises(CheckpointError, match="is a directory"):
            load(str(tmp_path))
    with pytest.raises(CheckpointError, match="is not a GAN checkpoint"):
        load_generator(trained_checkpoint)
    with pytest.raises(CheckpointError, match="is not an image-to-image checkpoint"):
        load_image2image(trained_checkpoint)
