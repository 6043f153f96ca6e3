"""Shared test fixtures.

``xp`` parameterises a test over the available array backends: NumPy
always, CuPy when a GPU is present (otherwise that case is skipped cleanly).
``torch`` is the PyTorch module, or the test is skipped when it is missing.
"""
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


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
