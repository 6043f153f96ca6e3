"""``use``: the student's ops in place of the package's, through ``F.use_implementation``."""
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import minicnn.functional as F
from minicnn import homework
from minicnn.autograd import Tensor
from minicnn.models import simple_cnn

from homework_catalogue import SOLUTIONS

ROOT = pathlib.Path(__file__).resolve().parent.parent
STUDENT = ("conv2d", "max_pool", "batchnorm", "activations")


@pytest.fixture
def work(tmp_path):
    for name in STUDENT:
        shutil.copy(SOLUTIONS / f"{name}.py", tmp_path / f"{name}.py")
    return tmp_path


def test_use_implementation_switches_an_op_and_restores_it():
    calls = []

    def my_relu(x):
        calls.append(x.shape)
        return F.relu(x) * 2          # inside the replacement, F.relu is the package's own
    x = Tensor(np.array([-1.0, 2.0]))
    with F.use_implementation("relu", my_relu):
        assert F.implementations() == {"relu": my_relu}
        np.testing.assert_array_equal(F.relu(x).data, [0, 4])
    np.testing.assert_array_equal(F.relu(x).data, [0, 2])
    assert calls == [(2,)] and F.implementations() == {}
    with pytest.raises(ValueError, match="must be one of"):
        F.use_implementation("softmax", my_relu)


def run_step(model, x, g):
    model.zero_grad()
    y = model(x)
    (y * Tensor(g)).sum().backward()
    return y.data.copy(), {n: p.grad.copy() for n, p in model.named_parameters()}


def test_simple_cnn_gives_the_same_outputs_gradients_and_statistics_on_the_students_ops(work):
    import copy
    models = [simple_cnn()]
    models.append(copy.deepcopy(models[0]))
    x = Tensor(np.random.default_rng(1).random((4, 3, 32, 32)).astype(np.float32))
    g = np.random.default_rng(2).standard_normal((4, 10)).astype(np.float32)
    y0, grads0 = run_step(models[0], x, g)
    with homework.use(str(work), verbose=False) as used:
        assert set(used) >= {"conv2d", "max_pool2d", "batch_norm", "relu"}
        y1, grads1 = run_step(models[1], x, g)
        e1 = models[1].eval()(x).data
    assert F.implementations() == {}
    assert y1.dtype == np.float32                 # the student's arithmetic never changes the network's dtype
    np.testing.assert_allclose(y1, y0, rtol=1e-4, atol=1e-4)
    for name in grads0:
        np.testing.assert_allclose(grads1[name], grads0[name], rtol=1e-3, atol=1e-4 * np.abs(grads0[name]).max())
    for (name, b0), (_, b1) in zip(models[0].named_buffers(), models[1].named_buffers()):
        np.testing.assert_allclose(b1.data, b0.data, rtol=1e-4, atol=1e-5, err_msg=name)   # running statistics
    np.testing.assert_allclose(e1, models[0].eval()(x).data, rtol=1e-4, atol=1e-4)


def test_the_package_conv2d_runs_on_the_students_im2col(tmp_path):
    shutil.copy(SOLUTIONS / "im2col.py", tmp_path / "im2col.py")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    expected = F.conv2d(x, w, stride=2, padding=1).data
    with homework.use(str(tmp_path), verbose=False) as used:
        assert used == {"im2col": str(tmp_path / "im2col.py")}
        got = F.conv2d(x, w, stride=2, padding=1).data
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_students_grouped_conv2d_runs_grouped_and_depthwise_layers(tmp_path):
    shutil.copy(SOLUTIONS / "conv2d_groups.py", tmp_path / "conv2d_groups.py")
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 4, 6, 6)).astype(np.float32), requires_grad=True)
    for groups in (2, 4):
        w = Tensor(rng.standard_normal((4, 4 // groups, 3, 3)).astype(np.float32), requires_grad=True)
        results = []
        for student in (False, True):
            x.grad = w.grad = None
            with homework.use(str(tmp_path), verbose=False) if student else contextlib.nullcontext():
                y = F.conv2d(x, w, padding=1, groups=groups)
                y.sum().backward()
            results.append((y.data, x.grad.copy(), w.grad.copy()))
        for a, b in zip(*results):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_use_skips_what_is_not_full_marks_yet(tmp_path, capsys):
    (tmp_path / "conv2d.py").write_text((SOLUTIONS / "conv2d.py").read_text().replace("+ b)", ")"))
    with homework.use(str(tmp_path)) as used:
        assert used == {}
    out = capsys.readouterr().out
    assert "not used (not full marks yet): conv2d" in out


@pytest.mark.slow
def test_training_simple_cnn_on_the_students_ops_matches_the_package(work, tmp_path):
    """One epoch on 5000 CIFAR-10 images, same seed: the test accuracy within 0.5 points."""
    data = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
    if not data.exists():
        pytest.skip(f"CIFAR-10 is not at {data}")
    common = ["train", "--model", "simple_cnn", "--data", str(data), "--subset", "5000", "--epochs", "1",
              "--seed", "0", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    results = {}
    for label, prefix in (("package", []), ("student", ["homework", "use", str(work), "--"])):
        start = time.time()
        r = subprocess.run([sys.executable, "-m", "minicnn", *prefix, *common, "--out", str(tmp_path / label)],
                           env=env, capture_output=True, text=True, timeout=3600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        results[label] = (json.load(open(tmp_path / label / "test.json"))["test_accuracy"], time.time() - start)
        print(f"{label}: test accuracy {results[label][0]:.4f} in {results[label][1]:.0f} s")
    if prefix:
        assert "your " in r.stdout and "conv2d" in r.stdout
    acc = {k: v[0] for k, v in results.items()}
    scale = 100 if acc["package"] <= 1 else 1
    assert abs(acc["student"] - acc["package"]) * scale <= 0.5, results
