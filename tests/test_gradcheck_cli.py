"""``minicnn gradcheck`` through a subprocess, as a student runs it: homework layers from the current
directory, parameter rows by name, clear errors for bad options, exit status."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

HOMEWORK = '''
import numpy as np
import minicnn


class MySigmoid(minicnn.Function):
    """y = 1 / (1 + exp(-x)).   dx = g * y * (1 - y)."""

    def forward(self, x):
        self.y = 1 / (1 + np.exp(-x))
        return self.y

    def backward(self, g):
        return g * self.y * (1 - self.y)


class Square(minicnn.Function):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return g * self.x        # bug: should be 2 * x * g


class Affine(minicnn.Function):
    scale_w = 1.0

    def forward(self, x, w, b):
        self.x, self.w = x, w
        return x @ w.T + b

    def backward(self, g):
        return g @ self.w, self.scale_w * (g.T @ self.x), g.sum(0)


class AffineWrongWeight(Affine):
    scale_w = 2.0                # bug: the weight gradient is doubled


class MyLinear(minicnn.nn.Module):
    op = Affine

    def __init__(self, fin, fout):
        super().__init__()
        rng = np.random.default_rng(0)
        self.weight = minicnn.nn.Parameter(rng.standard_normal((fout, fin)).astype(np.float32))
        self.bias = minicnn.nn.Parameter(np.zeros(fout, dtype=np.float32))

    def forward(self, x):
        return self.op.apply(x, self.weight, self.bias)


class BadLinear(MyLinear):
    op = AffineWrongWeight


def doubled(x):
    return x * 2.0


class InPlaceReLU(minicnn.Function):
    def forward(self, x):
        self.mask = x > 0
        return np.maximum(x, 0, out=x)          # bug: writes into its input

    def backward(self, g):
        return g * self.mask


class DoubleInPlace(minicnn.Function):
    def forward(self, x):
        return 2 * x

    def backward(self, g):
        g *= 2                                  # bug: writes into the upstream gradient
        return g
'''


@pytest.fixture
def homework(tmp_path):
    (tmp_path / "homework.py").write_text(HOMEWORK)
    return tmp_path


def run(args, cwd, isolated=False):
    """``python -m minicnn gradcheck ARGS`` in ``cwd``; ``isolated`` (-P) keeps cwd off sys.path, as
    the installed ``minicnn`` script does."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    flags = ["-P"] if isolated else []
    out = subprocess.run([sys.executable, *flags, "-m", "minicnn", "gradcheck", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    return out


def test_help_shows_defaults_and_examples(tmp_path):
    out = run(["--help"], tmp_path)
    assert out.returncode == 0
    text = out.stdout
    for expected in ("default: 1e-06", "default: 0.0001", "default: 2x3x6x6", "--sample K", "examples:",
                     "minicnn gradcheck --layer homework.py:MySigmoid"):
        assert expected in text, expected
    assert "%%" not in text and "default: None" not in text


def test_builtin_layers_all_pass_with_parameters_by_name(tmp_path):
    out = run([], tmp_path)
    assert out.returncode == 0, out.stdout
    text = out.stdout
    assert "conv2d" in text and "max_pool2d" in text and "batch_norm train" in text
    assert "parameter 0.weight (4, 3, 3, 3)" in text and "Conv2d-BatchNorm2d-ReLU-MaxPool2d-Linear.5.bias" in text
    assert text.rstrip().endswith(" passed, 0 failed")
    assert "warning" not in text        # every built-in check can see a wrong backward


@pytest.mark.parametrize("spec, isolated", [
    ("homework:MySigmoid", False), ("homework:MySigmoid", True), ("homework.py:MySigmoid", True),
    ("homework:doubled", True)])
def test_layer_from_the_current_directory(homework, spec, isolated):
    if isolated and sys.version_info < (3, 11):
        pytest.skip("python -P needs Python 3.11")
    out = run(["--layer", spec, "--shapes", "2x3"], homework, isolated)
    assert out.returncode == 0, out.stdout + out.stderr
    name = spec.split(":")[1]
    assert f"gradcheck {name}: PASSED" in out.stdout and "1 passed, 0 failed" in out.stdout


def test_layer_by_path_from_elsewhere(homework, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    out = run(["--layer", f"{homework / 'homework.py'}:MySigmoid", "--shapes", "3"], elsewhere, isolated=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_wrong_function_fails_with_exit_status_1(homework):
    out = run(["--layer", "homework:Square", "--shapes", "2x3"], homework)
    assert out.returncode == 1
    assert "gradcheck Square: FAILED" in out.stdout and "[FAIL] input 0 (2, 3)" in out.stdout
    assert "analytic/numeric = 0.5" in out.stdout and "0 passed, 1 failed" in out.stdout


def test_module_parameters_print_by_name_and_a_wrong_weight_fails(homework):
    good = run(["--layer", "homework:MyLinear", "--args", "4, 3", "--shapes", "5x4"], homework)
    assert good.returncode == 0, good.stdout
    bad = run(["--layer", "homework.py:BadLinear", "--args", "4, 3", "--shapes", "5x4"], homework)
    assert bad.returncode == 1
    text = bad.stdout
    assert "[ok  ] input 0 (5, 4)" in text and "[FAIL] parameter weight (3, 4)" in text
    assert "[ok  ] parameter bias (3,)" in text and "input 1" not in text
    assert "FAIL  BadLinear.weight" in text and "ok    BadLinear.bias" in text and "2 passed, 1 failed" in text


def test_sample_option(homework):
    out = run(["--layer", "homework:BadLinear", "--args", "30, 20", "--shapes", "4x30", "--sample", "5",
               "--seed", "3"], homework)
    assert out.returncode == 1
    assert "sampled 5 of 600 elements (seed 3)" in out.stdout and "sampled 5 of 120 elements" in out.stdout


@pytest.mark.parametrize("args, option", [
    (["--eps", "0"], "--eps"), (["--eps", "-1e-3"], "--eps"), (["--eps=-1"], "--eps"), (["--eps", "abc"], "--eps"),
    (["--atol", "-1"], "--atol"), (["--rtol", "nan"], "--rtol"), (["--sample", "0"], "--sample"),
    (["--sample", "x"], "--sample")])
def test_bad_numbers_name_the_option(tmp_path, args, option):
    out = run(args, tmp_path)
    assert out.returncode == 2
    assert f"argument {option}: must be" in out.stderr
    assert repr(args[-1].split("=")[-1]) in out.stderr
    for internal in ("_number", "invalid step", "invalid count", "invalid tolerance", "ZeroDivisionError"):
        assert internal not in out.stderr


@pytest.mark.parametrize("spec, message", [
    ("nothere.py:X", "no file nothere.py"), ("nothere:X", "cannot import nothere"),
    ("homework:Nope", "homework has no Nope"), ("homework", "write module:Name")])
def test_bad_layer_spec_is_a_plain_message(homework, spec, message):
    out = run(["--layer", spec], homework)
    assert out.returncode == 2 and message in out.stderr and "--layer" in out.stderr


def test_broken_homework_file_and_crashing_layer(homework):
    (homework / "broken.py").write_text("def f(:\n")
    out = run(["--layer", "broken.py:f"], homework)
    assert out.returncode == 2 and "SyntaxError" in out.stderr
    out = run(["--layer", "homework:MyLinear", "--args", "4, 3", "--shapes", "5x7"], homework)
    assert out.returncode == 1 and "gradcheck MyLinear: ERROR" in out.stdout and "--shapes" in out.stdout


@pytest.mark.parametrize("name, message", [
    ("InPlaceReLU", "FAIL: the forward pass changed input 0 in place"),
    ("DoubleInPlace", "FAIL: the backward pass wrote into the upstream gradient it was given"),
])
def test_a_layer_that_writes_into_what_it_is_given_fails(homework, name, message):
    out = run(["--layer", f"homework.py:{name}", "--shapes", "3x4"], homework)
    assert out.returncode == 1, out.stdout
    assert f"gradcheck {name}: FAILED" in out.stdout and message in out.stdout
    assert "non-differentiable" not in out.stdout and out.stdout.rstrip().endswith("passed, 1 failed")
