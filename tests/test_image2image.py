"""minicnn.train.image2image and ``minicnn train-image2image``: corruptions, PSNR, evaluation, a run, resume, errors."""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.data import ArrayDataset, DataLoader
from minicnn.train.image2image import (LUMA, build_image2image_model, corrupt, evaluate_image2image,
                                 grayscale, input_channels, load_image2image, psnr)

ROOT = Path(__file__).resolve().parents[1]


def test_corruptions():
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 8, 8)).astype(np.float32)
    g = corrupt(x, "colorize", rng)
    assert g.shape == (4, 1, 8, 8) and g.dtype == np.float32
    np.testing.assert_allclose(g[:, 0], LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2], rtol=1e-6)
    np.testing.assert_array_equal(grayscale(np.ones((1, 3, 2, 2), np.float32)), np.ones((1, 1, 2, 2), np.float32))
    assert corrupt(x, "reconstruct", rng) is x
    mid = np.full((2, 3, 64, 64), 0.5, np.float32)
    noisy = corrupt(mid, "denoise", np.random.default_rng(1), noise_std=0.1)
    assert noisy.dtype == np.float32 and abs((noisy - mid).std() - 0.1) < 0.005
    assert corrupt(x, "denoise", np.random.default_rng(1), 5.0).min() >= 0
    assert corrupt(x, "denoise", np.random.default_rng(1), 5.0).max() <= 1
    # the same generator state gives the same noise
    np.testing.assert_array_equal(corrupt(x, "denoise", np.random.default_rng(7)),
                                  corrupt(x, "denoise", np.random.default_rng(7)))
    assert input_channels("colorize") == 1 and input_channels("denoise") == 3
    with pytest.raises(ValueError, match="task must be one of denoise, colorize, reconstruct"):
        corrupt(x, "inpaint", rng)
    with pytest.raises(ValueError, match="expected RGB images"):
        grayscale(x[:, :1])


def test_psnr_closed_form():
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(1.0) == pytest.approx(0.0)
    assert psnr(0.25, peak=2.0) == pytest.approx(10 * np.log10(16))
    assert np.isinf(psnr(0.0))


def tiny_set(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), np.zeros(n, np.int64), ["a"])


def test_evaluation_of_an_identity_network_equals_the_input_baseline():
    loader = DataLoader(tiny_set(), batch_size=5)
    ident = nn.Identity()
    scores = evaluate_image2image(ident, loader, "denoise", noise_std=0.2, seed=3)
    assert scores["images"] == 12
    assert scores["mse"] == pytest.approx(scores["input_mse"], rel=1e-12)
    assert scores["psnr"] == pytest.approx(scores["input_psnr"], rel=1e-12)
    assert 0.01 < scores["mse"] < 0.05               # about sigma^2 = 0.04, less where clipping helps
    again = evaluate_image2image(ident, loader, "denoise", noise_std=0.2, seed=3)
    assert again == scores                            # the test noise is fixed by the seed
    rec = evaluate_image2image(ident, loader, "reconstruct")
    assert rec["mse"] == 0 and rec["input_mse"] is None and rec["psnr"] == 100.0   # capped for a perfect image


def test_evaluation_of_the_grey_image_per_image_psnr():
    ds = tiny_set(4)
    x = ds.images.astype(np.float32) / 255
    g = np.repeat(grayscale(x), 3, axis=1)
    per_image = ((g - x) ** 2).reshape(4, -1).mean(1)
    model = build_image2image_model("unet_small", "colorize", width=2)
    model.train()
    scores = evaluate_image2image(model, DataLoader(ds, batch_size=3), "colorize")
    assert model.training                             # the caller's mode is restored
    assert scores["input_mse"] == pytest.approx(per_image.mean(), rel=1e-5)
    assert scores["input_psnr"] == pytest.approx(psnr(per_image).mean(), rel=1e-5)


def test_models_for_each_task():
    assert build_image2image_model("conv_autoencoder", "colorize").encoder.conv1.in_channels == 1
    unet = build_image2image_model("unet_small", "denoise", width=4)
    assert unet.down[0].conv1.in_channels == 3 and unet.out.out_channels == 3
    with pytest.raises(minicnn.errors.TrainingError, match="unknown image-to-image model"):
        build_image2image_model("resnet20", "denoise")


# ------------------------------------------------------------------ the CLI
def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "minicnn", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_trains_reports_writes_and_resumes(tiny_tree, tmp_path):
    out = tmp_path / "run"
    common = ["train-image2image", "--task", "denoise", "--data", tiny_tree, "--width", "4", "--batch-size", "50",
              "--out", str(out), "--no-progress"]
    r = run_cli(*common, "--epochs", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stdout and "(input " in r.stdout
    for f in ("metrics.csv", "curves.png", "grid.png", "test.json", "last.npz"):
        assert (out / f).is_file(), f
    result = json.loads((out / "test.json").read_text())
    assert result["test_images"] == 40 and result["test_psnr"] > 0 and result["input_psnr"] > 0
    r = run_cli(*common, "--epochs", "2", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    model, cfg = load_image2image(out / "last.npz")
    assert cfg.task == "denoise" and cfg.width == 4 and not model.training
    r = run_cli(*common, "--epochs", "3", "--resume", "--noise-std", "0.3", cwd=tmp_path)
    assert r.returncode == 2 and "--noise-std 0.3 (checkpoint: 0.1)" in r.stderr and "Traceback" not in r.stderr


def test_cli_errors_are_one_line(tiny_tree, tmp_path):
    r = run_cli("train-image2image", "--task", "inpaint", cwd=tmp_path)
    assert r.returncode == 2 and "invalid choice: 'inpaint'" in r.stderr
    r = run_cli("train-image2image", "--data", tiny_tree, "--noise-std", "-1", "--out", str(tmp_path / "x"),
                cwd=tmp_path)
    assert r.returncode == 2 and "--noise-std must be >= 0, got -1.0" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train-image2image", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y"), cwd=tmp_path)
    assert r.returncode == 2 and "no such folder" in r.stderr
    r = run_cli("train-image2image", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "colorize" in r.stdout and "(default: denoise)" in r.stdout


def test_resume_after_ctrl_c_mid_epoch_ends_with_the_same_weights(tiny_tree, tmp_path, monkeypatch):
    """Ctrl-C after 6 steps (mid-epoch 2), then resume: bit for bit the model and Adam of a run never stopped."""
    import minicnn.train.image2image as i2i
    from conftest import assert_same_state
    from minicnn.serialization import load

    def cfg(out, **kw):
        return i2i.Image2ImageConfig(task="denoise", model="unet_small", width=4, data=tiny_tree, epochs=2,
                                     batch_size=50, test_subset=10, out=str(out), progress=False, **kw)
    assert i2i.train_image2image(cfg(tmp_path / "full"), log=lambda *_: None) is not None
    calls = []

    class InterruptingAdam(minicnn.optim.Adam):
        def step(self):
            super().step()
            calls.append(1)
            if len(calls) == 6:                 # epoch 1 has 4 steps of 50 (200 images): epoch 2, step 2
                os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(i2i, "Adam", InterruptingAdam)
    assert i2i.train_image2image(cfg(tmp_path / "cut"), log=lambda *_: None) is None
    cut = load(str(tmp_path / "cut" / "last.npz"))
    assert (cut["epoch"], cut["step"]) == (1, 2)
    monkeypatch.undo()
    assert i2i.train_image2image(cfg(tmp_path / "cut", resume=True), log=lambda *_: None) is not None
    full, resumed = load(str(tmp_path / "full" / "last.npz")), load(str(tmp_path / "cut" / "last.npz"))
    for part in ("model", "optimizer"):
        assert_same_state(full[part], resumed[part], part)
    rows_full, rows_resumed = (list(csv.DictReader(open(d / "metrics.csv"))) for d in (tmp_path / "full", tmp_path / "cut"))
    assert [r["train_loss"] for r in rows_full] == [r["train_loss"] for r in rows_resumed]
    assert [r["test_mse"] for r in rows_full] == [r["test_mse"] for r in rows_resumed]
