"""``minicnn explain`` end to end, through a subprocess, on a checkpoint trained in the tests."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "minicnn", "explain", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def _nontrivial_png(path):
    """A PNG that is not one flat colour (some figure was drawn)."""
    assert os.path.getsize(path) > 2000, path
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert a.shape[0] > 100 and a.shape[1] > 100 and a.std() > 10, path


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """A large RGB photo-like JPEG, a small grayscale PNG, an RGBA PNG, and a text file."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 451, 3), dtype=np.uint8)).save(d / "big.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8), "L").save(d / "gray.png")
    rgba = rng.integers(0, 255, (40, 40, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(d / "alpha.png")
    (d / "notes.png").write_text("this is not an image")
    return d


def test_explain_writes_pngs_and_prints_the_prediction(trained_checkpoint, odd_images, tmp_path):
    out = tmp_path / "explain"
    r = run("--checkpoint", trained_checkpoint, "--images", str(odd_images / "big.jpg"), "--method", "all",
            "--samples", "4", "--steps", "8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if "predicted" in l]
    assert len(lines) == 1 and ("(p = 0." in lines[0] or "(p = 1.000)" in lines[0]), r.stdout
    assert "cam: skipped" in r.stdout           # simple_cnn has no global average pooling
    methods = ["saliency", "gradient", "smoothgrad", "deconvnet", "guided_backprop", "integrated_gradients",
               "occlusion", "grad_cam", "overview", "activations"]
    assert sorted(os.listdir(out)) == sorted(f"big_{m}.png" for m in methods)
    for m in methods:
        _nontrivial_png(out / f"big_{m}.png")


def test_images_of_any_size_and_mode_are_converted(odd_images):
    from minicnn.cli.explain import load_image

    for name in ("big.jpg", "gray.png", "alpha.png"):
        a, original = load_image(str(odd_images / name), channels=3)
        assert a.shape == (3, 32, 32) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    a, original = load_image(str(odd_images / "gray.png"), channels=3)
    assert original == (24, 20) and np.allclose(a[0], a[1]) and np.allclose(a[1], a[2])   # grey stays grey
    a, _ = load_image(str(odd_images / "big.jpg"), channels=1)
    assert a.shape == (1, 32, 32)
    # a fully transparent pixel becomes white
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(odd_images / "clear.png")
    a, _ = load_image(str(odd_images / "clear.png"))
    assert np.allclose(a, 1)


def test_explain_index_layer_target_and_list_layers(trained_checkpoint, tiny_tree, tmp_path):
    r = run("--checkpoint", trained_checkpoint, "--list-layers")
    assert r.returncode == 0, r.stderr
    assert "net.8" in r.stdout and "Conv2d" in r.stdout and "18x18 / 4" in r.stdout
    out = tmp_path / "o"
    r = run("--checkpoint", trained_checkpoint, "--data", tiny_tree, "--index", "0", "7", "--method", "grad_cam",
            "occlusion", "--layer", "net.4", "--target", "cat", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "test image 7: predicted" in r.stdout and "true " in r.stdout and "explaining cat" in r.stdout
    assert sorted(os.listdir(out)) == sorted(f"test{i:05d}_{m}.png" for i in (0, 7)
                                             for m in ("grad_cam", "occlusion", "overview"))
    _nontrivial_png(out / "test00007_overview.png")


@pytest.mark.parametrize("args, message", [
    (["--images", "NOTES"], "not an image"),
    (["--images", "missing.png"], "no such file"),
    (["--index", "100000", "--data", "TREE"], "the test set has 40 images"),
    (["--index", "100000"], "the test set has 40 images"),      # the data the checkpoint was trained on
    (["--images", "GRAY", "ALPHA", "--layer", "net.99"], "--layer net.99: no such layer"),
    (["--images", "GRAY", "--target", "unicorn"], "--target unicorn: not a class"),
    ([], "give --images"),
])
def test_explain_errors_are_one_clear_line(trained_checkpoint, odd_images, tiny_tree, tmp_path, args, message):
    args = [str(odd_images / "notes.png") if a == "NOTES" else str(odd_images / "gray.png") if a == "GRAY"
            else str(odd_images / "alpha.png") if a == "ALPHA" else tiny_tree if a == "TREE" else a for a in args]
    r = run("--checkpoint", trained_checkpoint, *args, "--out", str(tmp_path / "x"))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    r = run("--checkpoint", str(bad), "--list-layers")
    assert r.returncode == 2 and "not a minicnn checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_list_layers_of_a_model_on_the_gpu(xp):
    """--list-layers --device gpu: the layer table's forward pass runs on the model's device."""
    if xp is np:
        pytest.skip("the CPU is covered by test_explain_index_layer_target_and_list_layers")
    from minicnn import nn
    from minicnn.cli.explain import list_layers

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).to("gpu")
    lines = list_layers(model, 3)
    assert lines[1].split()[:4] == ["0", "Conv2d", "4x32x32", "3x3"] and lines[3].split()[2] == "4x16x16"
