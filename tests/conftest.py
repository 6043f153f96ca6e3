"""Shared test fixtures.

``xp`` parameterises a test over the available array backends: NumPy
always, CuPy when a GPU is present (otherwise that case is skipped cleanly).
``torch`` is the PyTorch module, or the test is skipped when it is missing.

``MINICNN_REQUIRE_GPU=1`` (set by ``bench/gpu_checks.sh`` on a GPU machine)
turns every skipped test marked ``gpu`` into a failure that gives the skip's
reason, so a GPU run cannot pass with its GPU cases quietly skipped.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from minicnn.backend import cupy_or_none

settings.register_profile(
    "minicnn", deadline=None, max_examples=25, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("minicnn")


def _backends():
    yield pytest.param(np, id="numpy")
    cp = cupy_or_none()
    yield pytest.param(cp, id="cupy", marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(cp is None, reason="CuPy with a CUDA GPU is not available")])


@pytest.fixture(params=list(_backends()))
def xp(request):
    """The array module under test (numpy, or cupy when a GPU is present)."""
    return request.param


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    params = getattr(getattr(item, "callspec", None), "params", {})
    numpy_case = any(value is np for value in params.values())    # a gpu-marked test's xp=numpy case
    if (report.skipped and os.environ.get("MINICNN_REQUIRE_GPU") == "1" and not numpy_case
            and item.get_closest_marker("gpu") is not None and not hasattr(report, "wasxfail")):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"MINICNN_REQUIRE_GPU=1, but this GPU test was skipped: {reason}"


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_image_tree(root, n_train=8, n_test=3, seed=0):
    """A 10-class CIFAR-like image-folder tree of 32x32 PNGs; each class has its own colour cue."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, name in enumerate(CIFAR_CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (32, 32, 3))
                img[..., k % 3] += 40 + 15 * k
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory):
    """Path of a tiny generated CIFAR-like image tree (20 train, 4 test images per class)."""
    import os

    root = make_image_tree(tmp_path_factory.mktemp("tiny_tree"), n_train=20, n_test=4)
    os.environ.setdefault("MINICNN_CACHE", str(root / "cache"))
    return str(root)


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_tree, tmp_path_factory):
    """A simple_cnn checkpoint trained for a few epochs on ``tiny_tree`` (seconds on a CPU).

    ``minicnn.load_model(trained_checkpoint)`` gives a model that takes [0, 1]
    pixels; it separates the tiny tree's classes well above chance.
    """
    from minicnn.train import TrainConfig, Trainer

    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = TrainConfig(model="simple_cnn", data=tiny_tree, epochs=4, batch_size=20, lr=0.05, val_split=0,
                      out=str(out), progress=False, schedule="cosine", weight_decay=5e-4, seed=0)
    Trainer(cfg, log=lambda *_: None).run()
    return str(out / "last.npz")


def assert_same_state(a, b, where="state"):
    """Two nested dicts of arrays (a state_dict as ``minicnn.load`` gives it back) are equal bit for bit."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)
