"""``minicnn synthesize METHOD`` through a subprocess, image files, plots, and the shared sample images."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn.synthesize import class_model, invert, plot, style_transfer
from minicnn.synthesize.images import load_image, save_image, shared_images_dir

SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "minicnn", "synthesize", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """An RGB photo-like PNG (48x40) and a greyscale texture PNG (30x30)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    rgb = np.stack([xx * 5, yy * 6, (xx + yy) * 3], axis=-1) % 256
    Image.fromarray(rgb.astype(np.uint8)).save(d / "photo.png")
    Image.fromarray(rng.integers(0, 256, (30, 30)).astype(np.uint8), mode="L").save(d / "texture.png")
    return d


def test_class_model_cli(trained_checkpoint, tmp_path):
    r = cli("class-model", "--checkpoint", trained_checkpoint, "--classes", "cat", "0", "--steps", "4",
            "--out", tmp_path, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "cat" in r.stdout and "airplane" in r.stdout and "probability" in r.stdout
    for name in ("class_models.png", "class_models_objective.png", "class_model_3_cat.png",
                 "class_model_0_airplane.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_invert_dream_style_cli(trained_checkpoint, pictures, tmp_path):
    r = cli("invert", "--checkpoint", trained_checkpoint, "--image", pictures / "photo.png", "--layers", "net.2",
            "logits", "--steps", "3", "--out", tmp_path, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "relative feature error" in r.stdout
    assert (tmp_path / "inversions.png").exists() and (tmp_path / "invert_logits.png").exists()
    r = cli("dream", "--checkpoint", trained_checkpoint, "--image", pictures / "photo.png", "--size", "40",
            "--steps", "2", "--octaves", "2", "--out", tmp_path)          # with the progress bar
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dream.png").exists() and (tmp_path / "dream_objective.png").exists()
    r = cli("style", "--checkpoint", trained_checkpoint, "--content", pictures / "photo.png", "--style",
            pictures / "texture.png", "--size", "40", "--steps", "3", "--optimizer", "lbfgs", "--out", tmp_path,
            "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "content layer net.6" in r.stdout
    assert (tmp_path / "style.png").exists() and (tmp_path / "style_image.png").exists()


def test_cli_errors_are_one_line(trained_checkpoint, pictures, tmp_path):
    r = cli("invert", "--checkpoint", trained_checkpoint, "--image", pictures / "photo.png", "--layers", "net.99",
            "--steps", "1", "--out", tmp_path, "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'net.99' is not a layer" in r.stderr
    r = cli("dream", "--checkpoint", tmp_path / "missing.npz", "--image", pictures / "photo.png", "--out", tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "does not exist" in r.stderr
    r = cli("style", "--checkpoint", trained_checkpoint, "--content", tmp_path / "nope.png", "--style",
            pictures / "texture.png", "--out", tmp_path)
    assert r.returncode == 2 and "--content" in r.stderr and "Traceback" not in r.stderr
    r = cli("class-model", "--checkpoint", trained_checkpoint, "--classes", "zebra", "--steps", "1",
            "--out", tmp_path)
    assert r.returncode == 2 and "zebra" in r.stderr and "Traceback" not in r.stderr
    r = cli("class-model", "--checkpoint", trained_checkpoint, "--steps", "0")
    assert r.returncode == 2 and "positive integer" in r.stderr


def test_load_and_save_image(pictures, tmp_path):
    x = load_image(pictures / "photo.png")
    assert x.shape == (1, 3, 40, 48) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert load_image(pictures / "photo.png", size=24).shape == (1, 3, 20, 24)
    assert load_image(pictures / "photo.png", size=(8, 9)).shape == (1, 3, 8, 9)
    g = load_image(pictures / "texture.png")
    assert g.shape == (1, 3, 30, 30) and np.array_equal(g[0, 0], g[0, 2])
    assert load_image(pictures / "texture.png", channels=1).shape == (1, 1, 30, 30)
    save_image(tmp_path / "back.png", x)
    np.testing.assert_allclose(load_image(tmp_path / "back.png"), x, atol=1 / 255 + 1e-6)
    save_image(tmp_path / "big.png", x[0], scale=3)
    assert load_image(tmp_path / "big.png").shape == (1, 3, 120, 144)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nothing.png")


def test_plots_write_pngs(tmp_path):
    from minicnn import nn

    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    model.eval()
    model.classes = ["a", "b", "c"]
    imgs, hist = class_model(model, [0, 1, 2], size=(8, 8), steps=3)
    x = np.random.default_rng(0).random((1, 3, 8, 8)).astype(np.float32)
    inv = [(layer, *invert(model, x, layer, steps=2)) for layer in ("1", "")]
    st, sh = style_transfer(model, x, x, "1", ["1"], steps=3)
    figs = {
        "grid.png": lambda p: plot.plot_images(imgs, ["a", "b", "c"], path=p),
        "classes.png": lambda p: plot.plot_class_models(imgs, hist, path=p),
        "history.png": lambda p: plot.plot_history(sh, path=p),
        "inv.png": lambda p: plot.plot_inversions(x, inv, path=p),
        "style.png": lambda p: plot.plot_style_transfer(x, x, st, path=p),
    }
    import matplotlib.pyplot as plt
    for name, draw in figs.items():
        fig = draw(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 1000, name
        plt.close(fig)


def test_shared_images_dir_finds_the_sample_images(monkeypatch, tmp_path):
    monkeypatch.setenv("MINICNN_IMAGES", str(tmp_path))
    assert shared_images_dir() == tmp_path
    monkeypatch.delenv("MINICNN_IMAGES")
    found = shared_images_dir()
    if SHARED_IMAGES.is_dir():
        assert found is not None and (found / "chelsea.png").exists()


@pytest.mark.skipif(not (SHARED_IMAGES / "chelsea.png").exists(), reason="../shared/data/images is absent")
def test_style_transfer_of_shared_photo_and_texture(trained_checkpoint):
    """A real photograph in the style of a real (greyscale) texture, at a size larger than the training size."""
    model = minicnn.load_model(trained_checkpoint)
    content = load_image(SHARED_IMAGES / "chelsea.png", size=48)
    style = load_image(SHARED_IMAGES / "brick.png", size=64)
    img, hist = style_transfer(model, content, style, "net.6", ["net.2", "net.6"], steps=8)
    assert img.shape == content.shape and img.min() >= 0 and img.max() <= 1
    assert hist.terms["style"][-1] < hist.terms["style"][0]
    assert hist[-1] < hist[0]


def test_layers_cli(trained_checkpoint):
    r = cli("layers", "--checkpoint", trained_checkpoint)
    assert r.returncode == 0, r.stderr
    assert "net.2" in r.stdout and "(1, 32, 32, 32)" in r.stdout and "<- ReLU" in r.stdout
    r = cli("layers", "--checkpoint", trained_checkpoint, "--size", "40", "40")
    assert r.returncode == 0 and "not reached at this size" in r.stdout
