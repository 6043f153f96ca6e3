"""Backend dispatch: array modules, devices, dtypes; CuPy is optional."""
import subprocess
import sys

import numpy as np
import pytest

import minicnn
from minicnn import backend, tensor


def test_get_array_module_cpu():
    assert backend.get_array_module(np.ones(2)) is np
    assert backend.get_array_module(tensor([1.0])) is np
    assert backend.get_array_module(1.0, None, np.ones(1)) is np
    assert minicnn.get_array_module() is np


def test_is_gpu_available_is_bool():
    assert isinstance(minicnn.is_gpu_available(), bool)


def test_as_array_dtypes():
    assert backend.as_array(1.0).dtype == np.float32
    assert backend.as_array([[1, 2]]).dtype.kind == "i"
    assert backend.as_array(np.ones(2, np.float64)).dtype == np.float64
    with pytest.raises(TypeError, match="cannot make a tensor"):
        backend.as_array(["a", "b"])


def test_default_dtype_roundtrip():
    assert minicnn.default_dtype() == np.float32
    minicnn.set_default_dtype(np.float64)
    try:
        assert tensor(1.0).dtype == np.float64
    finally:
        minicnn.set_default_dtype(np.float32)
    with pytest.raises(ValueError, match="must be floating"):
        minicnn.set_default_dtype(np.int32)


def test_to_device_cpu_and_errors():
    a = np.ones(3)
    assert backend.to_device(a, "cpu") is a
    t = tensor(a, requires_grad=True)
    assert t.to("cpu") is t and t.cpu() is t
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu', got 'tpu'"):
        backend.to_device(a, "tpu")


@pytest.mark.skipif(minicnn.is_gpu_available(), reason="checks the no-GPU message")
def test_gpu_request_without_gpu_is_clear():
    with pytest.raises(RuntimeError, match="no GPU is available"):
        tensor([1.0]).to("gpu")


def test_imports_without_cupy():
    code = ("import sys; sys.modules['cupy'] = None\n"
            "import minicnn, numpy as np\n"
            "assert not minicnn.is_gpu_available()\n"
            "x = minicnn.tensor(np.ones(3), requires_grad=True); (x * 2).sum().backward()\n"
            "assert 'cupy' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_importing_minicnn_does_not_import_cupy():
    code = "import sys, minicnn; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# ------------------------------------------------------------ GPU (skipped on CI)
@pytest.mark.gpu
def test_gpu_roundtrip_and_device_mixing(xp):
    if xp is np:
        pytest.skip("GPU-only check")
    t = tensor(np.arange(4.0), requires_grad=True)
    g = t.to("gpu")
    assert g.device == "gpu" and g.xp is xp
    (g * 2).sum().backward()
    np.testing.assert_allclose(t.grad, 2.0)
    assert isinstance(g.numpy(), np.ndarray)
    with pytest.raises(RuntimeError, match="same device.*input 0 on gpu, input 1 on cpu"):
        g + tensor(np.ones(4))


def test_device_mixing_check_without_gpu():
    class FakeGpuArray:  # looks like a cupy array to the dispatcher
        pass
    FakeGpuArray.__module__ = "cupy._core.core"
    with pytest.raises(RuntimeError, match="Add: all inputs must be on the same device, got input 0 on cpu, input 1 on gpu"):
        backend.check_device("Add", [np.ones(2), FakeGpuArray()])


# row_blocks and parallel_chunks moved to minicnn.speed: their tests are in tests/test_speed.py.
