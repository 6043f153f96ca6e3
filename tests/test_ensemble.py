"""Ensembles: the mean of the members' probabilities; ``minicnn eval --checkpoint a.npz b.npz``."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.data import ArrayDataset, DataLoader
from minicnn.errors import CheckpointError
from minicnn.gradcheck import gradcheck
from minicnn.train import (Ensemble, TrainConfig, Trainer, evaluate, evaluate_checkpoints, evaluate_ensemble)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _members(k=3, seed=0):
    nn.init.manual_seed(seed)
    return [nn.Sequential(nn.Flatten(), nn.Linear(12, 4)) for _ in range(k)]


def test_ensemble_probabilities_are_the_mean_of_the_members(rng, xp):
    from minicnn.backend import to_device

    device = "cpu" if xp is np else "gpu"
    models = [m.to(device) for m in _members()]
    x_host = rng.standard_normal((5, 3, 2, 2)).astype(np.float32) * 3
    x = minicnn.tensor(to_device(x_host, device))
    with minicnn.no_grad():
        member_p = [_softmax(to_device(m(x).data, "cpu").astype(np.float64)) for m in models]
        ens = Ensemble(models)
        out = ens.probabilities(x).data
        assert isinstance(out, xp.ndarray)                               # on the input's device
        p = to_device(out, "cpu")
        logp = to_device(ens(x).data, "cpu")
    x = x_host
    np.testing.assert_allclose(p, np.mean(member_p, axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(logp, np.log(np.mean(member_p, axis=0)), rtol=1e-5, atol=1e-6)  # forward: log p
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    # one member: the ensemble is that model's log-softmax
    with minicnn.no_grad():
        one = to_device(Ensemble(models[:1])(minicnn.tensor(to_device(x, device))).data, "cpu")
    np.testing.assert_allclose(one, np.log(member_p[0]), rtol=1e-5, atol=1e-6)


def test_ensemble_log_probabilities_do_not_underflow():
    """Very confident, disagreeing members: log of the mean probability stays finite (log-mean-exp)."""
    a, b = nn.Linear(1, 2), nn.Linear(1, 2)
    a.weight.data[...] = [[300.0], [-300.0]]
    b.weight.data[...] = [[-300.0], [300.0]]
    a.bias.data[...] = b.bias.data[...] = 0
    with minicnn.no_grad():
        out = Ensemble([a, b])(minicnn.tensor(np.ones((1, 1), np.float32))).data
    np.testing.assert_allclose(out, np.log([[0.5, 0.5]]), rtol=1e-6)


def test_ensemble_backward_is_the_gradient_of_log_mean_probability(rng):
    models = [m.double() for m in _members(2)]
    ens = Ensemble(models)
    x = minicnn.tensor(rng.standard_normal((3, 3, 2, 2)), requires_grad=True)
    result = gradcheck(ens, [x])
    assert result.passed, result


def test_members_with_different_classes_are_refused():
    a, b = _members(2)
    a.classes, b.classes = ["cat", "dog", "emu", "fox"], ["cat", "dog", "emu", "gnu"]
    with pytest.raises(ValueError, match=r"models\[1\] predicts classes .*'gnu'.* but models\[0\] predicts"):
        Ensemble([a, b])
    b.classes = list(a.classes)
    assert Ensemble([a, b]).classes == a.classes
    with pytest.raises(ValueError, match="models is empty"):
        Ensemble([])


def test_evaluate_ensemble_reports_members_and_ensemble(rng):
    models = _members(3)
    images = rng.integers(0, 256, (40, 3, 2, 2), dtype=np.uint8)
    labels = rng.integers(0, 4, 40)
    loader = DataLoader(ArrayDataset(images, labels, classes=list("abcd")), batch_size=16,
                        transform=lambda b, rng=None: b.astype(np.float32) / 255.0)
    models[0].eval()
    result = evaluate_ensemble(models, loader, 4)
    assert [m.training for m in models] == [False, True, True]          # the callers' modes are restored
    x = images.astype(np.float32) / 255.0
    with minicnn.no_grad():
        member_p = [_softmax(m(minicnn.tensor(x)).data.astype(np.float64)) for m in models]
    for m, acc, p in zip(models, result.member_accuracies, member_p):
        assert acc == pytest.approx(np.mean(p.argmax(1) == labels))
        assert acc == pytest.approx(evaluate(m, loader, 4)[1])
        m.train()
    mean_p = np.mean(member_p, axis=0)
    assert result.accuracy == pytest.approx(np.mean(mean_p.argmax(1) == labels))
    assert result.loss == pytest.approx(-np.mean(np.log(mean_p[np.arange(40), labels])), rel=1e-4)
    assert result.confusion.sum() == 40 and np.trace(result.confusion) == round(result.accuracy * 40)
    again = evaluate_ensemble(Ensemble(models), loader)                  # an Ensemble; classes from the output
    assert again.member_accuracies == result.member_accuracies and again.confusion.shape == (4, 4)


@pytest.fixture(scope="module")
def second_checkpoint(tiny_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("second") / "run"
    Trainer(TrainConfig(model="lenet5", data=tiny_tree, epochs=1, batch_size=40, lr=0.05, val_split=0,
                        out=str(out), progress=False, schedule="cosine", seed=1), log=lambda *_: None).run()
    return str(out / "last.npz")


def test_eval_of_several_checkpoints_through_the_cli(trained_checkpoint, second_checkpoint, tiny_tree):
    out = subprocess.run([sys.executable, "-m", "minicnn", "eval", "--checkpoint", trained_checkpoint,
                          second_checkpoint, "--data", tiny_tree, "--no-progress"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"), timeout=120)
    assert out.returncode == 0, out.stderr
    table = out.stdout
    assert "test accuracy" in table and "ensemble of 2 (mean probability)" in table
    assert f"{trained_checkpoint} (simple_cnn" in table and f"{second_checkpoint} (lenet5" in table
    # the printed numbers are those of the Python API
    result = evaluate_checkpoints([trained_checkpoint, second_checkpoint], data=tiny_tree, log=lambda *_: None,
                                  progress=False)
    assert f"{100 * result.accuracy:12.2f}%" in table
    for acc in result.member_accuracies:
        assert f"{100 * acc:12.2f}%" in table


def test_checkpoints_with_different_class_lists_are_refused(trained_checkpoint, tmp_path, tiny_tree, capsys):
    from minicnn.serialization import load, save

    ckpt = load(trained_checkpoint)
    ckpt["classes"] = ["c%d" % i for i in range(10)]
    other = str(tmp_path / "other.npz")
    save(ckpt, other)
    with pytest.raises(CheckpointError) as info:
        evaluate_checkpoints([trained_checkpoint, other], data=tiny_tree, log=lambda *_: None, progress=False)
    msg = str(info.value)
    assert f"{other} was trained on classes ['c0'" in msg and trained_checkpoint in msg and "same classes" in msg
    from minicnn.cli import main
    assert main(["eval", "--checkpoint", trained_checkpoint, other, "--data", tiny_tree, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "minicnn eval: error:" in err and "same classes" in err and "Traceback" not in err
