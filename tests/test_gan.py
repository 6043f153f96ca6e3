"""minicnn.train.gan: the BCE-on-logits loss, one alternating step on a toy problem, sampling, interpolation, the CLI."""
import copy
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn import nn, optim, tensor
from minicnn.train.gan import (bce_with_logits, discriminator_loss, gan_step, generator_loss, interpolate, load_generator,
                         sample)
from minicnn.models import dcgan_generator

ROOT = Path(__file__).resolve().parents[1]


def test_bce_with_logits_formula_stability_and_gradient():
    logits = np.array([-3.0, -0.5, 0.0, 0.7, 4.0])
    for y in (0.0, 1.0):
        s = 1 / (1 + np.exp(-logits))
        expected = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
        assert bce_with_logits(tensor(logits), y).item() == pytest.approx(expected, rel=1e-12)
    # huge logits stay finite: log(1 + exp(-|l|)) never overflows
    big = bce_with_logits(tensor(np.array([1000.0, -1000.0])), np.array([0.0, 1.0]))
    assert big.item() == pytest.approx(1000.0)
    # dBCE/dl = (sigmoid(l) - y) / N
    t = tensor(logits.copy(), requires_grad=True)
    bce_with_logits(t, 1.0).backward()
    np.testing.assert_allclose(t.grad, (1 / (1 + np.exp(-logits)) - 1) / 5, rtol=1e-12)
    x = np.array([-2.0, -0.3, 0.4, 1.5])
    assert minicnn.gradcheck(lambda l: bce_with_logits(l, np.array([0.0, 1.0, 1.0, 0.0])), [x]).passed


# ------------------------------------------------------------------ a toy problem: 2-D Gaussians
def toy_nets(seed=0):
    nn.init.manual_seed(seed)
    G = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    return G.double(), D.double()


def toy_batch(seed, n=64):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, 2)) * 0.5 + np.array([3.0, -2.0])      # the data: N((3, -2), 0.25 I)
    z = rng.standard_normal((n, 2))
    return tensor(real), tensor(z)


def test_gan_step_moves_both_losses_the_expected_way():
    G, D = toy_nets()
    opt_G = optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_D = optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    assert opt_G.param_groups[0]["betas"] == (0.5, 0.999)
    real, z = toy_batch(1)
    with minicnn.no_grad():
        fake_before = G(z)
        loss_d_before = discriminator_loss(D, real, fake_before).item()
    G_before = copy.deepcopy(G)
    out = gan_step(G, D, opt_G, opt_D, real, z)
    assert out["loss_d"] == pytest.approx(loss_d_before, rel=1e-10)          # reported before the D step
    assert 0 < out["d_real"] < 1 and 0 < out["d_fake"] < 1
    with minicnn.no_grad():
        # the D step lowered D's loss on the same real and fake images ...
        assert discriminator_loss(D, real, fake_before).item() < loss_d_before
        # ... and the G step lowered G's loss against the updated D, for the same z
        assert generator_loss(D, G(z)).item() < generator_loss(D, G_before(z)).item()


def test_the_discriminator_step_sends_no_gradient_into_the_generator():
    G, D = toy_nets()
    real, z = toy_batch(2)
    discriminator_loss(D, real, G(z).detach()).backward()
    assert all(p.grad is None for p in G.parameters())
    assert all(p.grad is not None for p in D.parameters())


def test_a_few_hundred_steps_move_the_generated_points_to_the_data():
    G, D = toy_nets(3)
    opt_G = optim.Adam(G.parameters(), lr=5e-3, betas=(0.5, 0.999))
    opt_D = optim.Adam(D.parameters(), lr=5e-3, betas=(0.5, 0.999))
    target = np.array([3.0, -2.0])
    with minicnn.no_grad():
        start = np.linalg.norm(G(toy_batch(0)[1]).data.mean(0) - target)
    for k in range(300):
        gan_step(G, D, opt_G, opt_D, *toy_batch(100 + k))
    with minicnn.no_grad():
        end = np.linalg.norm(G(toy_batch(0, 512)[1]).data.mean(0) - target)
    assert end < 0.3 * start, (start, end)


# ------------------------------------------------------------------ sampling and interpolation
def test_sample_and_interpolate_leave_the_generator_as_it_was():
    nn.init.manual_seed(0)
    G = dcgan_generator(nz=8, width=4)
    G.train()
    z = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with minicnn.no_grad():
        G(tensor(z))                                    # some running statistics
    state = copy.deepcopy(G.state_dict())
    imgs = sample(G, z)
    assert imgs.shape == (4, 3, 32, 32) and imgs.min() >= 0 and imgs.max() <= 1
    line = interpolate(G, z[0], z[1], steps=5, batch_stats=False)
    assert line.shape == (5, 3, 32, 32)
    assert G.training
    for k, v in G.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    # the ends of the line are G(z0) and G(z1); the middle is G of the midpoint
    ends = sample(G, z[[0, 1]], batch_stats=False)
    np.testing.assert_allclose(line[[0, -1]], ends, atol=1e-6)
    mid = sample(G, ((z[0] + z[1]) / 2)[None], batch_stats=False)
    np.testing.assert_allclose(line[2], mid[0], atol=1e-6)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        interpolate(G, z[0], z[1], steps=1)


# ------------------------------------------------------------------ the CLI
def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "minicnn", *args], cwd=cwd, capture_output=True, text=True,
                           env=env, timeout=300)


def test_gan_cli_trains_writes_figures_and_resumes(tiny_tree, tmp_path):
    out = tmp_path / "gan"
    common = ["gan", "--data", tiny_tree, "--batch-size", "32", "--width", "4", "--nz", "8", "--samples", "9",
              "--out", str(out), "--no-progress"]
    r = run_cli(*common, "--epochs", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "epoch   1/1" in r.stdout
    for f in ("samples_epoch001.png", "metrics.csv", "losses.png", "interpolation.png", "last.npz"):
        assert (out / f).is_file(), f
    r = run_cli(*common, "--epochs", "2", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and (out / "samples_epoch002.png").is_file()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["loss_d"]) > 0 and float(r["loss_g"]) > 0 for r in rows)
    G, cfg = load_generator(out / "last.npz")
    assert cfg.nz == 8 and not G.training
    # a resume with other run-defining options is refused, by name
    r = run_cli(*common[:-1], "--epochs", "3", "--resume", "--lr", "1e-3", cwd=tmp_path)
    assert r.returncode == 2 and "--lr 0.001 (checkpoint: 0.0002)" in r.stderr and "Traceback" not in r.stderr


def test_gan_cli_errors_are_one_line(tiny_tree, tmp_path):
    r = run_cli("gan", "--data", tiny_tree, "--classes", "horse,unicorn", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert r.returncode == 2 and "unicorn not in the data's classes" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("gan", "--beta1", "1.5", "--data", tiny_tree, "--out", str(tmp_path / "y"), cwd=tmp_path)
    assert r.returncode == 2 and "--beta1 must be in [0, 1), got 1.5" in r.stderr
    r = run_cli("gan", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "beta1" in r.stdout and "(default: 0.0002)" in r.stdout


def test_resume_after_ctrl_c_mid_epoch_ends_with_the_same_weights(tiny_tree, tmp_path, monkeypatch):
    """Ctrl-C after 5 steps (mid-epoch 2), then --resume: bit for bit the networks of a run never stopped."""
    import signal

    import minicnn.train.gan as gan_mod
    from conftest import assert_same_state
    from minicnn.serialization import load

    def cfg(out, **kw):
        return gan_mod.GANConfig(data=tiny_tree, epochs=2, batch_size=64, width=4, nz=8, samples=4, out=str(out),
                                 progress=False, **kw)
    assert gan_mod.train_gan(cfg(tmp_path / "full"), log=lambda *_: None) is not None
    real_step, calls = gan_mod.gan_step, []

    def step_then_interrupt(*args):
        out = real_step(*args)
        calls.append(1)
        if len(calls) == 5:                    # epoch 1 has 3 steps of 64 (200 images): this is epoch 2, step 2
            os.kill(os.getpid(), signal.SIGINT)
        return out
    monkeypatch.setattr(gan_mod, "gan_step", step_then_interrupt)
    assert gan_mod.train_gan(cfg(tmp_path / "cut"), log=lambda *_: None) is None
    assert (load(str(tmp_path / "cut" / "last.npz"))["epoch"], load(str(tmp_path / "cut" / "last.npz"))["step"]) == (1, 2)
    monkeypatch.setattr(gan_mod, "gan_step", real_step)
    assert gan_mod.train_gan(cfg(tmp_path / "cut", resume=True), log=lambda *_: None) is not None
    full, resumed = load(str(tmp_path / "full" / "last.npz")), load(str(tmp_path / "cut" / "last.npz"))
    for part in ("generator", "discriminator", "opt_g", "opt_d"):
        assert_same_state(full[part], resumed[part], part)
    rows_full, rows_resumed = (list(csv.DictReader(open(d / "metrics.csv"))) for d in (tmp_path / "full", tmp_path / "cut"))
    for a, b in zip(rows_full, rows_resumed):
        assert [a[k] for k in ("loss_d", "loss_g", "d_real", "d_fake")] == [b[k] for k in ("loss_d", "loss_g", "d_real", "d_fake")]
