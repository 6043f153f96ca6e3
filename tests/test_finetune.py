"""Fine-tuning: --init-from (a new head for other classes), --freeze patterns, batchnorm of frozen layers."""
import os
import shutil
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import minicnn
from minicnn import nn, optim
from minicnn.errors import CheckpointError, TrainingError
from minicnn.models import get_model
from minicnn.serialization import load
from minicnn.train import (BACKBONE, TrainConfig, Trainer, fit, freeze, frozen_batchnorm_layers, head_keys,
                           match_patterns, param_groups)

THREE = ["bird", "cat", "deer"]


def run_cli(*args, timeout=120):
    """``python -m minicnn ARGS`` in a subprocess: (exit status, stdout, stderr)."""
    out = subprocess.run([sys.executable, "-m", "minicnn", *map(str, args)], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"), timeout=timeout)
    return out.returncode, out.stdout, out.stderr


@pytest.fixture(scope="module")
def three_class_tree(tiny_tree, tmp_path_factory):
    """Three of tiny_tree's classes: a 'new task' with another number of classes."""
    root = tmp_path_factory.mktemp("three")
    for split in ("train", "test"):
        for c in THREE:
            shutil.copytree(os.path.join(tiny_tree, split, c), root / split / c)
    return str(root)


def _cfg(data, out, **kw):
    base = dict(model="simple_cnn", data=data, epochs=1, batch_size=20, lr=0.05, val_split=0, out=str(out),
                progress=False, schedule="cosine", weight_decay=5e-4, augment=False)
    base.update(kw)
    return TrainConfig(**base)


def _toy_bn_net():
    nn.init.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(2, 3, 3, padding=1)), ("bn1", nn.BatchNorm2d(3)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(3, 4, 3, padding=1)), ("bn2", nn.BatchNorm2d(4)), ("relu2", nn.ReLU()),
        ("bn3", nn.BatchNorm2d(4, affine=False)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(4 * 4 * 4, 3))]))


def _batches(rng, n=3):
    return [(minicnn.tensor((rng.standard_normal((6, 2, 4, 4)) * 2 + 1).astype(np.float32)),
             minicnn.tensor(rng.integers(0, 3, 6))) for _ in range(n)]


# ------------------------------------------------------------------ patterns
def test_patterns_are_globs_over_parameter_names():
    names = [n for n, _ in get_model("resnet20").named_parameters()]
    head = head_keys("resnet20", 10)
    assert head == ["fc.weight", "fc.bias"]
    assert head_keys("simple_cnn", 10) == ["13.weight", "13.bias"]
    assert head_keys("allconv", 10) == ["classifier.weight", "classifier.bias"]
    # '*' crosses dots; the whole name must match
    assert match_patterns(names, ["blocks.*"]) == [n for n in names if n.startswith("blocks.")]
    assert match_patterns(names, ["*.bn1.weight"]) == [n for n in names if n.endswith(".bn1.weight")]
    assert match_patterns(names, ["fc.w?ight"]) == ["fc.weight"]
    # a module's name matches all its parameters, and only whole names match
    assert match_patterns(names, ["blocks.1"]) == [n for n in names if n.startswith("blocks.1.")]
    assert match_patterns(names, ["bn1"]) == ["bn1.weight", "bn1.bias"]
    # patterns combine with "or"; 'backbone' is all but the head
    assert match_patterns(names, ["conv1", "fc"]) == ["conv1.weight", "fc.weight", "fc.bias"]
    assert match_patterns(names, [BACKBONE], head) == names[:-2]
    assert match_patterns(names, "fc") == ["fc.weight", "fc.bias"]          # one pattern as a string
    model = nn.Sequential(OrderedDict(net=get_model("lenet5")))
    assert freeze(model, "net.*") == [n for n, _ in model.named_parameters()]   # load_model's naming
    assert not any(p.requires_grad for p in model.parameters())


def test_a_pattern_matching_nothing_is_a_clear_error():
    names = [n for n, _ in get_model("simple_cnn").named_parameters()]
    with pytest.raises(TrainingError) as info:
        match_patterns(names, ["0.*", "features.*"])
    msg = str(info.value)
    assert "--freeze 'features.*' matches no parameter" in msg and "0.weight" in msg and "13.bias" in msg


# ------------------------------------------------------------------ frozen parameters and batchnorm
def test_frozen_parameters_do_not_change_and_are_not_optimised(rng):
    model = _toy_bn_net()
    frozen = freeze(model, ["conv1", "bn1"])
    assert frozen == ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias"]
    groups = param_groups(model, 1e-3)
    in_opt = {id(p) for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert all(id(params[n]) not in in_opt for n in frozen)
    assert all(id(p) in in_opt for n, p in params.items() if n not in frozen)
    opt = optim.SGD(groups, lr=0.1, momentum=0.9)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    fit(model, _batches(rng), opt, epochs=1)
    after = model.state_dict()
    for n in frozen:
        np.testing.assert_array_equal(after[n], before[n], err_msg=n)
        assert params[n].grad is None or not params[n].requires_grad
    for n in ("conv2.weight", "bn2.weight", "fc.weight", "fc.bias"):
        assert not np.array_equal(after[n], before[n]), n


def test_batchnorm_of_frozen_layers_keeps_its_statistics(rng, xp):
    """The rule: a batchnorm layer whose parameters are all frozen runs in eval mode during training."""
    from minicnn.backend import to_device

    device = "cpu" if xp is np else "gpu"
    model = _toy_bn_net()
    freeze(model, ["conv1", "bn1", "bn2.weight"])        # bn1 wholly frozen; bn2 half frozen
    assert [n for n, _ in frozen_batchnorm_layers(model)] == ["bn1"]
    model.to(device)
    opt = optim.SGD(param_groups(model, 0.0), lr=0.05)
    before = {k: to_device(v, "cpu") for k, v in model.state_dict().items()}
    fit(model, [(x.to(device), y.to(device)) for x, y in _batches(rng)], opt, epochs=1)
    after = {k: to_device(v, "cpu") for k, v in model.state_dict().items()}
    model.to("cpu")
    for k in ("bn1.running_mean", "bn1.running_var"):
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    for k in ("bn2.running_mean", "bn2.running_var", "bn3.running_mean", "bn3.running_var"):
        assert not np.allclose(after[k], before[k]), k         # still training: statistics move
    assert model.bn1.training is False and model.bn2.training and model.bn3.training and model.training
    # frozen bn1 normalised with its running statistics: its output is the eval-mode function
    x = _batches(rng, 1)[0][0]
    with minicnn.no_grad():
        model.eval()
        ref = model.bn1(model.conv1(x)).data
        model.train()
        from minicnn.train import keep_frozen_statistics
        keep_frozen_statistics(model)
        np.testing.assert_array_equal(model.bn1(model.conv1(x)).data, ref)
    # nothing frozen: fit is the plain loop (every batchnorm in training mode)
    plain = _toy_bn_net()
    fit(plain, _batches(rng, 1), optim.SGD(plain.parameters(), lr=0.01), epochs=1)
    assert all(m.training for m in plain.modules())


def test_trainer_freezes_and_keeps_frozen_batchnorm_statistics(tiny_tree, tmp_path):
    t = Trainer(_cfg(tiny_tree, tmp_path / "f", freeze=["0", "1"]), log=lambda *_: None)
    before = {k: v.copy() for k, v in t.model.state_dict().items()}
    params = dict(t.model.named_parameters())
    in_opt = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert t.frozen == ["0.weight", "1.weight", "1.bias"]
    assert all(not params[n].requires_grad and id(params[n]) not in in_opt for n in t.frozen)
    assert all(id(p) in in_opt for n, p in params.items() if n not in t.frozen)
    t.run()
    assert all(params[n].grad is None for n in t.frozen)
    after = t.model.state_dict()
    for k in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        if k in before:
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert not np.array_equal(after["4.weight"], before["4.weight"])
    assert not np.allclose(after["5.running_mean"], before["5.running_mean"])
    # resume keeps the freeze; changing it is refused
    with pytest.raises(TrainingError, match=r"--freeze \[\] \(checkpoint: \['0', '1'\]\)"):
        Trainer(_cfg(tiny_tree, tmp_path / "f", resume=True), log=lambda *_: None)
    with pytest.raises(TrainingError, match="freezes every parameter"):
        Trainer(_cfg(tiny_tree, tmp_path / "all", freeze=["*"]), log=lambda *_: None)


# ------------------------------------------------------------------ --init-from
def test_init_from_with_another_number_of_classes(trained_checkpoint, three_class_tree, tmp_path):
    lines = []
    t = Trainer(_cfg(three_class_tree, tmp_path / "ft", init_from=trained_checkpoint, freeze=[BACKBONE]),
                log=lines.append)
    saved = load(trained_checkpoint)
    state = t.model.state_dict()
    assert t.reinitialised == ["13.weight", "13.bias"]
    head_w = state["13.weight"]
    assert head_w.shape == (3, saved["model"]["13.weight"].shape[1]) and state["13.bias"].shape == (3,)
    for k, v in state.items():
        if k not in t.reinitialised:
            np.testing.assert_array_equal(v, saved["model"][k], err_msg=k)    # loaded, statistics included
    np.testing.assert_array_equal(t.norm[0], saved["norm_mean"])              # the loaded layers' statistics
    trainable = head_w.size + 3
    assert t.model.num_parameters(trainable_only=True) == trainable
    text = "\n".join(lines)
    assert f"loaded {len(saved['model']) - 2} entries" in text
    assert "re-initialised the head for 3 classes: 13.weight, 13.bias" in text
    assert "frozen (--freeze backbone)" in text and f"{trainable:,} trained" in text
    t.run()
    after = t.model.state_dict()
    for k in after:
        if k not in t.reinitialised:
            np.testing.assert_array_equal(after[k], saved["model"][k], err_msg=k)  # backbone incl. BN stats
    assert not np.array_equal(after["13.weight"], state["13.weight"])

    # the same classes: everything is loaded, the head too
    same = Trainer(_cfg(_tree_of(trained_checkpoint), tmp_path / "same", init_from=trained_checkpoint),
                   log=lambda *_: None)
    assert same.reinitialised == []
    for k, v in same.model.state_dict().items():
        np.testing.assert_array_equal(v, saved["model"][k], err_msg=k)


def _tree_of(checkpoint):
    """The data folder the trained_checkpoint fixture was trained on (from its saved config)."""
    import json
    return json.loads(load(checkpoint)["config"])["data"]


def test_init_from_another_architecture_names_the_first_mismatch(trained_checkpoint, three_class_tree, tmp_path):
    with pytest.raises(CheckpointError) as info:
        Trainer(_cfg(three_class_tree, tmp_path / "x", model="lenet5", init_from=trained_checkpoint),
                log=lambda *_: None)
    msg = str(info.value)
    assert "holds a simple_cnn checkpoint, which does not fit --model lenet5" in msg
    assert "'0.weight' has shape (32, 3, 3, 3) in the checkpoint but (6, 3, 5, 5) in the model" in msg
    assert not (tmp_path / "x").exists()


def test_cli_init_from_and_freeze(trained_checkpoint, three_class_tree, tmp_path):
    out = tmp_path / "cli"
    rc, stdout, stderr = run_cli("train", "--data", three_class_tree, "--init-from", trained_checkpoint,
                                 "--freeze", "backbone", "--epochs", "1", "--batch-size", "30", "--val-split", "0",
                                 "--no-augment", "--out", out, "--no-progress")
    assert rc == 0, stderr
    assert "model: simple_cnn" in stdout
    assert "re-initialised the head for 3 classes: 13.weight, 13.bias" in stdout
    assert "batchnorm layers in eval mode (statistics kept): 1, 5, 9" in stdout
    ckpt = load(str(out / "last.npz"))
    assert list(ckpt["classes"]) == THREE and ckpt["model"]["13.weight"].shape[0] == 3
    rc, stdout, stderr = run_cli("train", "--data", three_class_tree, "--init-from", trained_checkpoint,
                                 "--freeze", "features.*", "--val-split", "0", "--out", tmp_path / "bad",
                                 "--no-progress")
    assert rc == 2 and "--freeze 'features.*' matches no parameter" in stderr and "Traceback" not in stderr
