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
    real_save, last = trainer.job.save, trainer.job.last_path

    def save(path=None):
        real_save(path)
        snapshot[path or last] = open(path or last, "rb").read()
    monkeypatch.setattr(trainer.job, "save", save)
    with pytest.raises(TrainingError) as info:
        trainer.run()
    msg = str(info.value)
    assert "at epoch 2, step" in msg and "lower learning rate" in msg
    assert (out / "last.npz").read_bytes() == snapshot[last]     # epoch 1's, intact
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
    with pytest.raises(TrainingError, match=r"--model simple_cnn \(checkpoint: lenet5\)"):
        Trainer(_cfg(tiny_cifar, out, model="simple_cnn", resume=True), log=lambda *_: None)


def test_default_data_search_explains_how_to_get_cifar(tmp_path, monkeypatch):
    import minicnn.train.datasets as datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "CHECKOUT", str(tmp_path / "clone"))
    with pytest.raises(TrainingError) as info:
        resolve_data(None)
    msg = str(info.value)
    assert "CIFAR-10 was not found" in msg and "--data download" in msg and "cifar-10-batches-py" in msg
    # every place tried is named, the current folder's as the path it meant, and how to pass --data
    assert "$MINICNN_DATA (not set)" in msg and f"./data/cifar10-jpeg (here: {tmp_path}/data/cifar10-jpeg)" in msg
    assert f"{tmp_path}/clone/data/cifar10-jpeg" in msg and f"{tmp_path}/shared/data/cifar10-jpeg" in msg
    assert "Pass --data PATH" in msg
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "d"))
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "test").mkdir()
    assert resolve_data(None) == ("folder", str(tmp_path / "d"))


def test_data_beside_the_checkout_is_found_from_any_folder(tmp_path, monkeypatch):
    import minicnn.train.datasets as datasets

    assert os.path.isdir(os.path.join(datasets.CHECKOUT, "minicnn", "train"))   # the folder above the package
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    clone = tmp_path / "work" / "minicnn"
    for where in (clone / "data" / "cifar10-jpeg", tmp_path / "work" / "shared" / "data" / "cifar10-jpeg"):
        (where / "train").mkdir(parents=True)
        (where / "test").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setattr(datasets, "CHECKOUT", str(clone))
    assert resolve_data(None) == ("folder", str(clone / "data" / "cifar10-jpeg"))
    (clone / "data" / "cifar10-jpeg" / "train").rmdir()       # ... and the shared folder beside the clone
    assert resolve_data(None) == ("folder", str(tmp_path / "work" / "shared" / "data" / "cifar10-jpeg"))


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


# ------------------------------------------------------------------ the loop, the split, new options
def test_fit_is_the_hand_written_loop(rng):
    """``fit`` takes exactly the steps of forward, loss, zero_grad, backward, step, scheduler.step."""
    import minicnn
    from minicnn import nn, optim
    from minicnn import functional as F
    from minicnn.train import fit

    x = rng.standard_normal((12, 5)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    batches = [(minicnn.tensor(x[i:i + 4]), minicnn.tensor(y[i:i + 4])) for i in range(0, 12, 4)]

    def make():
        nn.init.manual_seed(3)
        model = nn.Linear(5, 3)
        opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        return model, opt, optim.StepLR(opt, step_size=2, gamma=0.5)

    model, opt, sched = make()
    losses = fit(model, batches, opt, epochs=2, scheduler=sched)
    ref, ref_opt, ref_sched = make()
    ref_losses = []
    for _ in range(2):
        total = 0.0
        for images, labels in batches:
            loss = F.cross_entropy(ref(images), labels)
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
            ref_sched.step()
            total += loss.item() * 4
        ref_losses.append(total / 12)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    for (k, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert losses[1] < losses[0]

    calls = []
    model, opt, _ = make()

    def on_step(logits, labels, loss):
        calls.append(loss)
        return len(calls) == 2
    out = fit(model, batches, opt, epochs=3, on_step=on_step)
    assert len(calls) == 2 and len(out) == 1            # on_step returning True stops after that step


def test_trainer_trains_through_fit_and_applies_process_settings(tiny_cifar, tmp_path, monkeypatch):
    import minicnn.train.trainer as trainer_mod

    fits, settings = [], []
    real_fit = trainer_mod.fit
    monkeypatch.setattr(trainer_mod, "fit", lambda *a, **k: fits.append(k["epochs"]) or real_fit(*a, **k))
    monkeypatch.setattr(trainer_mod, "apply_process_settings", lambda: settings.append(1) or {})
    t = Trainer(_cfg(tiny_cifar, tmp_path / "fit", epochs=2), log=lambda *_: None)
    assert settings                                      # before any work, in __init__
    assert t.run() is not None
    assert fits == [1, 1]                                # one fit call per epoch


def test_default_model_is_quick_and_resnets_keep_the_paper_recipe():
    from minicnn.train import DEFAULT_MODEL, complete_config

    cfg = complete_config(TrainConfig())
    assert cfg.model == "fast_cnn" and cfg.recipe == "fast" and cfg.epochs <= 15
    standard = complete_config(TrainConfig(recipe="standard"))
    assert standard.model == DEFAULT_MODEL == "simple_cnn" and standard.epochs <= 15 and standard.schedule == "onecycle"
    paper = complete_config(TrainConfig(model="resnet20"))
    assert (paper.epochs, paper.lr, paper.schedule) == (182, 0.1, "step")


def test_time_estimate_says_hours_and_how_to_stop():
    from minicnn.train import estimate_message, format_duration

    assert format_duration(8) == "8 s" and format_duration(75) == "1 min 15 s"
    assert format_duration(5 * 3600 + 12 * 60 + 10) == "5 h 12 min" and format_duration(2 * 86400 + 3600) == "2 d 1 h"
    line = estimate_message(0.3, 62_400, 182, hint="for a run of minutes on the CPU, use --model simple_cnn")
    assert line.startswith("estimated 5 h 12 min remaining (5 h 12 min in all for 182 epochs")
    assert "long run" in line and "--max-minutes" in line and "--resume" in line and "simple_cnn" in line
    short = estimate_message(0.01, 500, 15)
    assert short.startswith("estimated 5 s remaining (5 s in all for 15 epochs") and "long run" not in short
    # after the first steps, or in a resumed run, the time left is not the whole run's: both are said
    later = estimate_message(6.0, 120, 15, steps_done=10)
    assert later.startswith("estimated 12 min 0 s remaining (13 min 0 s in all for 15 epochs")


def test_max_minutes_stops_checkpoints_and_tests(tiny_cifar, tmp_path):
    out = tmp_path / "capped"
    lines = []
    t = Trainer(_cfg(tiny_cifar, out, epochs=50, max_minutes=1e-9), log=lines.append)
    acc = t.run()
    assert acc is not None and 0.0 <= acc <= 1.0 and t.stop_reason == "max-minutes"
    ckpt = load(str(out / "last.npz"))
    assert (ckpt["epoch"], ckpt["step"]) == (0, 1)        # stopped after the first step
    assert (out / "test.json").is_file() and (out / "confusion.png").is_file()
    assert any("--max-minutes" in line and "--resume" in line for line in lines)
    # ... and the run continues from there.
    resumed = Trainer(_cfg(tiny_cifar, out, epochs=50, max_minutes=1e-9, resume=True), log=lambda *_: None)
    resumed.run()
    assert (load(str(out / "last.npz"))["epoch"], load(str(out / "last.npz"))["step"]) == (0, 2)


def test_diverged_first_epoch_says_no_checkpoint_and_leaves_no_folder(tiny_cifar, tmp_path):
    out = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(TrainingError) as info:
        Trainer(_cfg(tiny_cifar, out, lr=1e30), log=lambda *_: None).run()
    assert "no checkpoint was written yet" in str(info.value) and "last good" not in str(info.value)
    assert not (tmp_path / "new").exists()


def test_out_is_checked_before_any_work(tiny_cifar, tmp_path, monkeypatch):
    import minicnn.train.run
    import minicnn.train.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "load_datasets", lambda *a, **k: pytest.fail("decoded data before --out"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TrainingError, match="--out .*afile is a file"):
        Trainer(_cfg(tiny_cifar, tmp_path / "afile"))
    with pytest.raises(TrainingError, match=r"--out .*afile.*run: cannot create it, .*afile is a file"):
        Trainer(_cfg(tiny_cifar, tmp_path / "afile" / "run"))
    (tmp_path / "exists").mkdir()

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    with monkeypatch.context() as m:                       # what a read-only folder does (also when tests run as root)
        m.setattr(minicnn.train.run.tempfile, "mkstemp", denied)
        with pytest.raises(TrainingError, match=r"--out .*exists: the folder is not writable \(Permission denied\)"):
            Trainer(_cfg(tiny_cifar, tmp_path / "exists"))
        with pytest.raises(TrainingError, match=r"--out .*new: cannot create it: .* is not writable"):
            Trainer(_cfg(tiny_cifar, tmp_path / "exists" / "new"))
    if os.geteuid() != 0:                                  # root may write anywhere
        ro = tmp_path / "readonly"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(TrainingError, match="not writable"):
                Trainer(_cfg(tiny_cifar, ro))
            with pytest.raises(TrainingError, match="not writable"):
                Trainer(_cfg(tiny_cifar, ro / "run"))
        finally:
            ro.chmod(0o700)


def _fake_attack(calls):
    def adversarial_examples(model01, images01, labels, method, eps, steps, seed):
        x = images01.data if hasattr(images01, "data") else images01
        calls.append(dict(model=model01, lo=float(x.min()), hi=float(x.max()), method=method, eps=eps,
                          steps=steps, seed=seed, training=model01.training))
        return np.clip(x + eps * np.sign(np.random.default_rng(seed).standard_normal(x.shape)), 0, 1).astype(x.dtype)
    return adversarial_examples


def test_adversarial_training_feeds_pixels_to_a_normalising_model(tiny_cifar, tmp_path, monkeypatch):
    import minicnn
    import minicnn.attacks

    calls = []
    monkeypatch.setattr(minicnn.attacks, "adversarial_examples", _fake_attack(calls))
    out = tmp_path / "adv"
    t = Trainer(_cfg(tiny_cifar, out, epochs=1, model="simple_cnn", adversarial="pgd", adv_eps=4 / 255,
                     adv_steps=3), log=lambda *_: None)
    assert t.run() is not None
    assert len(calls) == len(t.train_loader)
    c = calls[0]
    assert c["method"] == "pgd" and c["eps"] == 4 / 255 and c["steps"] == 3
    assert 0.0 <= c["lo"] and c["hi"] <= 1.0                       # [0, 1] pixels, not normalised ones
    assert list(dict(c["model"].named_children())) == ["normalize", "net"] and c["model"].net is t.model
    assert len({call["seed"] for call in calls}) == len(calls)     # a seed per step
    ckpt = load(str(out / "last.npz"))
    assert set(ckpt["model"]) == set(t.model.state_dict())         # the plain network's keys: compatible
    assert minicnn.load_model(str(out / "last.npz")).classes == CLASSES
    with pytest.raises(TrainingError, match=r"--adversarial none \(checkpoint: pgd\)"):
        Trainer(_cfg(tiny_cifar, out, epochs=1, model="simple_cnn", resume=True), log=lambda *_: None)


def test_adversarial_training_end_to_end(tiny_cifar, tmp_path):
    pytest.importorskip("minicnn.attacks")
    out = tmp_path / "adv_real"
    t = Trainer(_cfg(tiny_cifar, out, epochs=1, model="simple_cnn", adversarial="fgsm"), log=lambda *_: None)
    assert t.run() is not None and np.isfinite(t.history[0]["train_loss"])
    import minicnn
    model = minicnn.load_model(str(out / "last.npz"))
    assert model(minicnn.tensor(np.zeros((1, 3, 32, 32), np.float32))).shape == (1, 10)


def test_the_training_page_shows_fit_as_it_is():
    """docs/04-training.md prints fit's code: it must be the code that runs."""
    import inspect
    import pathlib

    from minicnn.train import fit

    page = (pathlib.Path(__file__).parent.parent / "docs" / "04-training.md").read_text()
    shown = page.split("```py\n", 1)[1].split("```", 1)[0]
    source = inspect.getsource(fit)
    code = [line for line in source.splitlines() if line.strip()]
    body = code[code.index(next(line for line in code if line.strip() == "losses = []")):]
    assert shown.splitlines()[0] == code[0]
    assert [line for line in shown.splitlines()[1:] if line.strip()] == body


@pytest.mark.parametrize("field, value, option", [
    ("momentum", -1.0, "--momentum"), ("weight_decay", -0.1, "--weight-decay"), ("seed", -2, "--seed"),
    ("epochs", 0, "--epochs"), ("lr", 0.0, "--lr"), ("max_minutes", 0, "--max-minutes"),
    ("adversarial", "cw", "--adversarial"), ("adv_eps", 2.0, "--adv-eps"), ("adv_steps", 0, "--adv-steps"),
    ("val_split", -1, "--val-split"), ("label_smoothing", 1.5, "--label-smoothing")])
def test_config_errors_name_the_option_and_the_value(field, value, option):
    from minicnn.train import complete_config

    with pytest.raises(TrainingError) as info:
        complete_config(TrainConfig(**{field: value}))
    msg = str(info.value)
    assert msg.startswith(option) and (repr(value) in msg or str(value) in msg)


def test_sigterm_in_process_saves_like_ctrl_c(tiny_cifar, tmp_path, monkeypatch):
    out = tmp_path / "term"
    t = Trainer(_cfg(tiny_cifar, out, epochs=2), log=lambda *_: None)
    real_step, calls = t.optimizer.step, {"n": 0}

    def step():
        real_step()
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(t.optimizer, "step", step)
    previous = signal.getsignal(signal.SIGTERM)
    assert t.run() is None and t.stop_reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous          # the handler is put back
    ckpt = load(str(out / "last.npz"))
    assert (ckpt["epoch"], ckpt["step"]) == (0, 2)


# ------------------------------------------------------------------ regularisers (--l1, --l2, --max-norm)
def test_penalties_enter_the_loss_as_their_formulas(tiny_cifar, tmp_path):
    """loss = CE + l1 * sum|w| + l2 * sum w^2 over conv/linear weights; gradient CE' + l1 sign(w) + 2 l2 w."""
    from minicnn import functional as F

    l1, l2 = 3e-3, 2e-2
    t = Trainer(_cfg(tiny_cifar, tmp_path / "pen", model="simple_cnn", l1=l1, l2=l2), log=lambda *_: None)
    names = {id(p): n for n, p in t.model.named_parameters()}
    assert sorted(names[id(p)] for p in t.regularised) == ["0.weight", "13.weight", "4.weight", "8.weight"]
    t.train_loader.set_epoch(0)
    images, labels = next(iter(t.train_loader))
    t.model.train()
    logits = t.model(images)
    weights = [p.data.astype(np.float64) for p in t.regularised]
    expected = F.cross_entropy(logits, labels).item() + l1 * sum(np.abs(w).sum() for w in weights) \
        + l2 * sum((w ** 2).sum() for w in weights)
    loss = t.loss_fn(logits, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    t.model.zero_grad()
    loss.backward()
    with_penalty = {n: p.grad.copy() for n, p in t.model.named_parameters()}
    t.model.zero_grad()
    F.cross_entropy(t.model(images), labels).backward()
    for n, p in t.model.named_parameters():
        extra = l1 * np.sign(p.data) + 2 * l2 * p.data if id(p) in {id(q) for q in t.regularised} else 0.0
        np.testing.assert_allclose(with_penalty[n], p.grad + extra, rtol=1e-4, atol=1e-6, err_msg=n)


def test_l2_is_weight_decay_times_two(rng):
    """--l2 lambda makes the same SGD (momentum) and Adam updates as --weight-decay 2 * lambda."""
    import minicnn
    from minicnn import functional as F
    from minicnn import nn, optim
    from minicnn.train import fit, param_groups, regularised_loss

    x = rng.standard_normal((12, 6)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    batches = [(minicnn.tensor(x[i:i + 4]), minicnn.tensor(y[i:i + 4])) for i in range(0, 12, 4)]
    for make_opt in (lambda g: optim.SGD(g, lr=0.3, momentum=0.9), lambda g: optim.Adam(g, lr=0.05)):
        runs = []
        for l2, wd in ((0.05, 0.0), (0.0, 0.1)):
            nn.init.manual_seed(1)
            model = nn.Linear(6, 3)
            fit(model, batches, make_opt(param_groups(model, wd)),
                loss_fn=regularised_loss(F.cross_entropy, [model.weight], l2=l2),
                epochs=2)
            runs.append(model.state_dict())
        for k in runs[0]:
            np.testing.assert_allclose(runs[0][k], runs[1][k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_max_norm_keeps_every_unit_inside_the_ball_after_each_step(tiny_cifar, tmp_path, monkeypatch):
    import minicnn.train.trainer as trainer_mod

    c = 0.5
    t = Trainer(_cfg(tiny_cifar, tmp_path / "mn", max_norm=c, epochs=1), log=lambda *_: None)

    def norms(p):
        return np.sqrt((p.data.astype(np.float64) ** 2).reshape(p.shape[0], -1).sum(axis=1))

    assert any((norms(p) > c).any() for p in t.regularised)            # He init: rows start outside
    checked = []
    real = trainer_mod.apply_max_norm

    def checking(params, cc):
        n = real(params, cc)
        checked.append(all((norms(p) <= c).all() for p in params))     # right after each step
        return n
    monkeypatch.setattr(trainer_mod, "apply_max_norm", checking)
    biases = {n: p.data.copy() for n, p in t.model.named_parameters() if n.endswith("bias")}
    t.run()
    assert len(checked) == len(t.train_loader) and all(checked)
    for p in t.regularised:
        assert (norms(p) <= c).all()
    assert {id(p) for p in t.regularised}.isdisjoint(id(p) for n, p in t.model.named_parameters()
                                                     if n in biases)           # biases are not constrained


def test_regulariser_options_through_the_cli(tiny_cifar, tmp_path):
    """``minicnn train --l1 --l2 --max-norm`` as a user runs it; they define the run for --resume."""
    import subprocess
    import sys

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "minicnn", "train", "--model", "lenet5", "--data", tiny_cifar,
                              "--epochs", "1", "--batch-size", "40", "--val-split", "0", "--out", str(tmp_path / "r"),
                              "--no-progress", *args], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return out.returncode, out.stdout, out.stderr

    rc, out, err = run("--l1", "1e-5", "--l2", "2e-4", "--max-norm", "3", "--weight-decay", "0")
    assert rc == 0, err
    assert "regularisers: l1 1e-05, l2 0.0002, max-norm 3 per unit on 5 weight tensors" in out
    import json
    config = json.loads(load(str(tmp_path / "r" / "last.npz"))["config"])
    assert (config["l1"], config["l2"], config["max_norm"]) == (1e-5, 2e-4, 3.0)
    rc, out, err = run("--l1", "1e-5", "--l2", "1e-3", "--max-norm", "3", "--weight-decay", "0", "--resume")
    assert rc == 2 and "--l2 0.001 (checkpoint: 0.0002)" in err and "Traceback" not in err
    rc, out, err = run("--l1", "-1")
    assert rc == 2 and "argument --l1: must be a number >= 0" in err


@pytest.mark.parametrize("field, value, option", [
    ("l1", -1e-3, "--l1"), ("l2", float("nan"), "--l2"), ("max_norm", 0.0, "--max-norm"),
    ("max_norm", -2.0, "--max-norm")])
def test_regulariser_config_errors_name_the_option(field, value, option):
    from minicnn.train import complete_config

    with pytest.raises(TrainingError, match=option):
        complete_config(TrainConfig(**{field: value}))


def test_curves_after_one_epoch_are_readable():
    """One epoch: a marked point on a whole-number epoch axis, the loss axis from 0, the values written."""
    import matplotlib.pyplot as plt

    from minicnn.train.reports import curves_figure

    fig = curves_figure([{"epoch": 1, "train_loss": 2.2387, "train_acc": 0.211, "val_loss": "", "val_acc": ""}])
    loss_ax, acc_ax = fig.axes
    for ax in (loss_ax, acc_ax):
        lo, hi = ax.get_xlim()
        assert lo <= 0.5 and hi >= 1.5                       # not 0.945 to 1.05
        assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1.0]
        assert ax.lines[0].get_marker() == "o"
    assert loss_ax.get_ylim()[0] == 0 and loss_ax.get_ylim()[1] > 2.2387
    lo, hi = acc_ax.get_ylim()
    assert 0 <= lo < 21.1 < hi <= 101
    assert [t.get_text() for t in loss_ax.texts] == ["2.239"] and [t.get_text() for t in acc_ax.texts] == ["21.1%"]
    plt.close(fig)
