"""End to end: ``minicnn train`` / ``minicnn eval`` on a tiny generated CIFAR-like image tree."""
import os
import signal

import numpy as np
import pytest
from PIL import Image

from minicnn.cli import main
from minicnn.serialization import load
from minicnn.train import TrainConfig, Trainer, TrainingError, resolve_data

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """A 10-class image-folder tree, 8 train and 3 test PNGs per class; each class has its own colour."""
    root = tmp_path_factory.mktemp("tiny_cifar")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 3)):
        for k, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (32, 32, 3))
                img[..., k % 3] += 40 + 15 * k            # a learnable colour cue
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i:04d}.png")
    os.environ["MINICNN_CACHE"] = str(root / "cache")
    return str(root)


def _cfg(data, out, **kw):
    base = dict(model="lenet5", data=data, epochs=2, batch_size=16, lr=0.05, val_split=10,
                out=str(out), progress=False, schedule="cosine", weight_decay=5e-4)
    base.update(kw)
    return TrainConfig(**base)


def _params(trainer):
    return {k: v.copy() for k, v in trainer.model.state_dict().items()}


def test_train_writes_everything(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "simple_cnn", "--data", tiny_cifar, "--epochs", "2", "--batch-size", "16",
               "--val-split", "10", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "epoch   2/2" in text and "test accuracy:" in text and "confusion matrix" in text
    for name in ("metrics.csv", "curves.png", "last.npz", "best.npz", "confusion.png", "test.json"):
        assert (out / name).is_file(), name
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss,train_acc,val_loss,val_acc") and len(rows) == 3
    ckpt = load(str(out / "last.npz"))
    assert ckpt["model_name"] == "simple_cnn" and ckpt["epoch"] == 2 and ckpt["step"] == 0
    # eval reads the checkpoint back and reports the same kind of result
    assert main(["eval", "--checkpoint", str(out / "last.npz"), "--data", tiny_cifar]) == 0
    assert "test accuracy:" in capsys.readouterr().out


def test_same_seed_same_run(tiny_cifar, tmp_path):
    a = Trainer(_cfg(tiny_cifar, tmp_path / "a", epochs=1), log=lambda *_: None)
    a.run()
    b = Trainer(_cfg(tiny_cifar, tmp_path / "b", epochs=1), log=lambda *_: None)
    b.run()
    pa, pb = _params(a), _params(b)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_resume_after_ctrl_c_matches_uninterrupted(tiny_cifar, tmp_path, monkeypatch):
    cfg = dict(model="alexnet_small", epochs=2, lr=0.005)   # has dropout: its randomness must resume too
    full = Trainer(_cfg(tiny_cifar, tmp_path / "full", **cfg), log=lambda *_: None)
    full.run()

    out = tmp_path / "cut"
    cut = Trainer(_cfg(tiny_cifar, out, **cfg), log=lambda *_: None)
    real_step, calls = cut.optimizer.step, {"n": 0}

    def step_then_interrupt():
        real_step()
        calls["n"] += 1
        if calls["n"] == 6:        # mid-epoch 2 (epoch 1 has 5 steps of 16 from 70 images)
            os.kill(os.getpid(), signal.SIGINT)     # a real Ctrl-C, in the middle of a step
    monkeypatch.setattr(cut.optimizer, "step", step_then_interrupt)
    assert cut.run() is None
    ckpt = load(str(out / "last.npz"))
    assert (ckpt["epoch"], ckpt["step"]) == (1, 1)

    resumed = Trainer(_cfg(tiny_cifar, out, resume=True, **cfg), log=lambda *_: None)
    resumed.run()
    pf, pr = _params(full), _params(resumed)
    for k in pf:
        np.testing.assert_array_equal(pf[k], pr[k], err_msg=k)
    # The interrupted epoch reports all of its steps, as the uninterrupted one did.
    for a, b in zip(full.history, resumed.history):
        for key in ("lr", "train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == b[key], (key, a, b)


def test_ctrl_c_on_the_last_step_of_an_epoch(tiny_cifar, tmp_path, monkeypatch):
    out = tmp_path / "edge"
    t = Trainer(_cfg(tiny_cifar, out, epochs=2), log=lambda *_: None)
    real_step, calls = t.optimizer.step, {"n": 0}

    def step():
        real_step()
        calls["n"] += 1
        if calls["n"] == 5:        # the last of epoch 1's 5 steps
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(t.optimizer, "step", step)
    assert t.run() is None
    ckpt = load(str(out / "last.npz"))
    assert (ckpt["epoch"], ckpt["step"]) == (1, 0)          # epoch 1 was finished and recorded
    assert t.history[0]["train_loss"] > 0 and len(t.history) == 1


def test_existing_run_is_not_overwritten(tiny_cifar, tmp_path):
    out = tmp_path / "keep"
    Trainer(_cfg(tiny_cifar, out, epochs=1), log=lambda *_: None).run()
    before = (out / "last.npz").read_bytes()
    with pytest.raises(TrainingError, match="already holds a run .* --resume"):
        Trainer(_cfg(tiny_cifar, out, epochs=1), log=lambda *_: None)
    assert (out / "last.npz").read_bytes() == before


def test_nonfinite_loss_stops_with_message_and_keeps_checkpoint(tiny_cifar, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    trainer = Trainer(_cfg(tiny_cifar, out, epochs=3, lr=0.01), log=lambda *_: None)
    real_epoch, epochs_done = trainer.train_epoch, []

    def epoch_then_explode():
        result = real_epoch()
        epochs_done.append(1)
        if len(epochs_done) == 1:          # after epoch 1, make the learning rate absurd
            monkeypatch.setattr(type(trainer.scheduler), "step", lambda self: None)
            for group in trainer.optimizer.param_groups:
                group["lr"] = 1e30
        return result
    monkeypatch.setattr(trainer, "train_epoch", epoch_then_explode)
    snapshot = {}
    real_ckpt = trainer.checkpoint

    def checkpoint(path=None):
        real_ckpt(path)
        snapshot[path or trainer.last_path] = open(path or trainer.last_path, "rb").read()
    monkeypatch.setattr(trainer, "checkpoint", checkpoint)
    with pytest.raises(TrainingError) as info:
        trainer.run()
    msg = str(info.value)
    assert "at epoch 2, step" in msg and "lower learning rate" in msg
    assert (out / "last.npz").read_bytes() == snapshot[trainer.last_path]     # epoch 1's, intact
    assert load(str(out / "last.npz"))["epoch"] == 1


def test_resume_refuses_changed_settings(tiny_cifar, tmp_path):
    out = tmp_path / "r"
    Trainer(_cfg(tiny_cifar, out, epochs=1), log=lambda *_: None).run()
    with pytest.raises(TrainingError, match=r"--epochs 3 \(checkpoint: 1\)"):
        Trainer(_cfg(tiny_cifar, out, epochs=3, resume=True), log=lambda *_: None)


def test_user_errors_are_messages_not_tracebacks(tiny_cifar, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "--data download" in err

    (tmp_path / "flat").mkdir()
    assert main(["train", "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "x")]) == 2
    assert "not a CIFAR-10 layout" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        main(["train", "--model", "resnet7"])
    assert "invalid choice: 'resnet7'" in capsys.readouterr().err

    for bad, msg in ((["--momentum", "-1"], "must be >= 0"), (["--label-smoothing", "2"], "label-smoothing"),
                     (["--nesterov", "--momentum", "0"], "--nesterov needs")):
        assert main(["train", "--data", tiny_cifar, "--out", str(tmp_path / "bad")] + bad) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err

    assert main(["eval", "--checkpoint", str(tmp_path / "none.npz"), "--data", tiny_cifar]) == 2
    assert "does not exist" in capsys.readouterr().err

    bogus = tmp_path / "bogus.npz"
    np.savez(bogus, a=np.ones(2))
    assert main(["eval", "--checkpoint", str(bogus), "--data", tiny_cifar]) == 2
    assert "not a minicnn" in capsys.readouterr().err


def test_checkpoint_from_another_model(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "l5"
    Trainer(_cfg(tiny_cifar, out, epochs=1), log=lambda *_: None).run()
    assert main(["eval", "--checkpoint", str(out / "last.npz"), "--data", tiny_cifar,
                 "--model", "simple_cnn"]) == 2
    err = capsys.readouterr().err
    assert "lenet5 checkpoint, which does not fit model simple_cnn" in err
    with pytest.raises(TrainingError, match="is a lenet5 run, but --model is simple_cnn"):
        Trainer(_cfg(tiny_cifar, out, model="simple_cnn", resume=True), log=lambda *_: None)


def test_default_data_search_explains_how_to_get_cifar(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(TrainingError) as info:
        resolve_data(None)
    msg = str(info.value)
    assert "CIFAR-10 was not found" in msg and "--data download" in msg and "cifar-10-batches-py" in msg
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "d"))
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "test").mkdir()
    assert resolve_data(None) == ("folder", str(tmp_path / "d"))


def test_gradcheck_command_checks_all_builtin_layers(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "conv2d" in out and "max_pool2d" in out and "batch_norm train" in out
    assert "0 failed" in out


def test_gradcheck_command_on_a_homework_layer(tmp_path, capsys):
    hw = tmp_path / "homework.py"
    hw.write_text(
        "import minicnn\n"
        "class Square(minicnn.Function):\n"
        "    def forward(self, x):\n"
        "        self.x = x\n"
        "        return x * x\n"
        "    def backward(self, g):\n"
        "        return g * self.x   # bug: should be 2 * x * g\n"
        "class Scale(minicnn.nn.Module):\n"
        "    def __init__(self, n):\n"
        "        super().__init__()\n"
        "        self.w = minicnn.nn.Parameter(minicnn.tensor([1.0] * n))\n"
        "    def forward(self, x):\n"
        "        return x * self.w\n")
    assert main(["gradcheck", "--layer", f"{hw}:Square", "--shapes", "2x3"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main(["gradcheck", "--layer", f"{hw}:Scale", "--shapes", "2x3", "--args", "3"]) == 0
    out = capsys.readouterr().out
    assert "Scale.w" in out and "2 passed, 0 failed" in out
