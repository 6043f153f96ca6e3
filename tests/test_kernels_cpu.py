"""The CPU build of the CUDA kernels (``tests/kernel_shim``) checks what it claims.

``tests/test_kernels.py`` runs every kernel against its NumPy twin twice:
on the GPU when there is one, and always on the CPU, where the same
``kernels/*.cu`` source is compiled as C++ with a small shim header and
launched through the unchanged launchers of ``minicnn.cuda``. The tests
here check the shim itself: a simulated launch covers every element for any
grid (the kernels' grid-stride loops), arguments are checked the way a GPU
would need them, and a kernel that writes or reads outside its arrays is
caught rather than silently passing.
"""
import os

import numpy as np
import pytest

from minicnn import cuda

import kernel_shim

needs_compiler = pytest.mark.skipif(
    kernel_shim.find_compiler() is None,
    reason="no C++ compiler (g++, c++, clang++ or $CXX): the CPU build of the CUDA kernels cannot be made")


@pytest.fixture
def cpu_kernels(monkeypatch):
    """``minicnn.cuda``'s launchers running on the CPU build of the kernels."""
    monkeypatch.setattr(cuda, "_require_cupy", lambda fn: kernel_shim.fake_cupy())
    monkeypatch.setattr(cuda, "_check_on_gpu", lambda fn, argname, a: None)
    cuda.load_module.cache_clear()
    cuda._kernel_cached.cache_clear()
    yield
    cuda.load_module.cache_clear()
    cuda._kernel_cached.cache_clear()


def _module(code, *expressions):
    return kernel_shim.RawModule(code=code, name_expressions=list(expressions))


FILL = """
template <typename T>
__global__ void fill(T* __restrict__ y, int n, int offset)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x)
        y[i + offset] = T(i);
}

template <typename T>
__global__ void shift(const T* __restrict__ x, T* __restrict__ y, int n, int offset)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x)
        y[i] = x[i + offset];
}
"""


@needs_compiler
@pytest.mark.parametrize("grid,block", [(1, 1), (3, 5), (1, 256), (40, 32)])
def test_a_launch_covers_every_element_for_any_grid(grid, block):
    fill = _module(FILL, "fill<float>").get_function("fill<float>")
    y = np.full(100, -1.0, np.float32)
    fill((grid,), (block,), (y, np.int32(100), np.int32(0)))
    np.testing.assert_array_equal(y, np.arange(100, dtype=np.float32))


@needs_compiler
@pytest.mark.parametrize("grid,block", [(1, 1), (3, 7), (64, 256)])
def test_launchers_give_the_same_result_for_any_grid(cpu_kernels, monkeypatch, rng, grid, block):
    """Every kernel of minicnn.cuda, with one thread covering everything or a
    grid that makes the grid-stride loops step several times."""
    x = rng.standard_normal((2, 3, 7, 9))
    want = {
        "im2col": cuda.im2col_gpu(x, 3, 2, 1, 2),
        "max": cuda.max_pool2d_forward_gpu(x, 3, 2, 1, 1),
        "avg": cuda.avg_pool2d_forward_gpu(x, 3, 2, 1, False),
    }
    want["col2im"] = cuda.col2im_gpu(want["im2col"], x.shape, 3, 2, 1, 2)
    g = rng.standard_normal(want["max"][0].shape)
    want["max_back"] = cuda.max_pool2d_backward_gpu(g, want["max"][1], x.shape, 3, 2, 1, 1)
    want["avg_back"] = cuda.avg_pool2d_backward_gpu(g, x.shape, 3, 2, 1, False)

    monkeypatch.setattr(cuda, "launch_config", lambda total: ((grid,), (block,)))
    np.testing.assert_array_equal(cuda.im2col_gpu(x, 3, 2, 1, 2), want["im2col"])
    np.testing.assert_array_equal(cuda.col2im_gpu(want["im2col"], x.shape, 3, 2, 1, 2), want["col2im"])
    y, idx = cuda.max_pool2d_forward_gpu(x, 3, 2, 1, 1)
    np.testing.assert_array_equal(y, want["max"][0])
    np.testing.assert_array_equal(idx, want["max"][1])
    np.testing.assert_array_equal(cuda.max_pool2d_backward_gpu(g, idx, x.shape, 3, 2, 1, 1), want["max_back"])
    np.testing.assert_array_equal(cuda.avg_pool2d_forward_gpu(x, 3, 2, 1, False), want["avg"])
    np.testing.assert_array_equal(cuda.avg_pool2d_backward_gpu(g, x.shape, 3, 2, 1, False), want["avg_back"])


@needs_compiler
def test_writing_outside_an_array_is_caught():
    fill = _module(FILL, "fill<double>").get_function("fill<double>")
    y = np.zeros(10)
    with pytest.raises(AssertionError, match="wrote outside an array of shape"):
        fill((1,), (1,), (y, np.int32(10), np.int32(3)))        # y[10..12] written
    with pytest.raises(AssertionError, match="wrote outside"):
        fill((1,), (1,), (y, np.int32(10), np.int32(-1)))       # y[-1] written


@needs_compiler
def test_reading_outside_an_array_reads_nan():
    shift = _module(FILL, "shift<float>").get_function("shift<float>")
    x, y = np.arange(8, dtype=np.float32), np.zeros(8, np.float32)
    shift((1,), (4,), (x, y, np.int32(8), np.int32(2)))
    np.testing.assert_array_equal(y[:6], x[2:])
    assert np.isnan(y[6:]).all()          # the guard zone: a twin comparison then fails


@needs_compiler
def test_arguments_are_checked_as_a_gpu_needs_them():
    module = _module(FILL, "fill<float>", "shift<float>")
    fill, shift = module.get_function("fill<float>"), module.get_function("shift<float>")
    assert fill.signature == "Fii" and shift.signature == "FFii"
    y = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="pass numpy.int32, got int"):
        fill((1,), (1,), (y, 4, np.int32(0)))             # CuPy would pass a Python int as 64 bits
    with pytest.raises(TypeError, match="has dtype float64, the kernel wants the pointer type 'F'"):
        fill((1,), (1,), (y.astype(np.float64), np.int32(4), np.int32(0)))
    with pytest.raises(ValueError, match="not C-contiguous"):
        fill((1,), (1,), (np.zeros(8, np.float32)[::2], np.int32(4), np.int32(0)))
    with pytest.raises(TypeError, match="takes 3 arguments"):
        fill((1,), (1,), (y, np.int32(4)))
    with pytest.raises(KeyError, match="not one of the name expressions"):
        module.get_function("fill<double>")


@needs_compiler
def test_signatures_of_the_real_kernels(cpu_kernels):
    """The C types the compiler sees equal minicnn.cuda.KERNELS, for both instances."""
    for name, spec in cuda.KERNELS.items():
        for dtype, letter in ((np.float32, "F"), (np.float64, "D")):
            pointers = "".join("Q" if a == "indices" else letter for a in spec.arrays)
            assert cuda.get_kernel(name, dtype).signature == pointers + "i" * len(spec.ints), name


@needs_compiler
def test_the_library_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICNN_SHIM_CACHE", str(tmp_path))
    code = FILL + "\n// a variant only this test builds\n"
    _module(code, "fill<float>").get_function("fill<float>")
    built = [n for n in os.listdir(tmp_path) if n.endswith(".so")]
    assert len(built) == 1
    again = _module(code, "fill<float>")
    again.get_function("fill<float>")
    assert [n for n in os.listdir(tmp_path) if n.endswith(".so")] == built


def test_without_a_compiler_the_reason_is_clear(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", "")
    assert kernel_shim.find_compiler() is None
    with pytest.raises(kernel_shim.CompilerMissing, match="no C\\+\\+ compiler found"):
        _module(FILL + "// unbuilt\n", "fill<float>").get_function("fill<float>")


@pytest.mark.skipif(cuda.backend.cupy_or_none() is not None, reason="a GPU is present: its tests do not skip")
def test_require_gpu_turns_a_skipped_gpu_test_into_a_failure():
    """bench/gpu_checks.sh sets MINICNN_REQUIRE_GPU=1 so that no GPU case can pass by skipping."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    test = "tests/test_kernels.py::test_kernel_modules_are_loaded_once"
    env = dict(os.environ, MINICNN_REQUIRE_GPU="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                         cwd=repo, env=env, capture_output=True, text=True)
    assert run.returncode != 0
    assert "MINICNN_REQUIRE_GPU=1, but this GPU test was skipped" in run.stdout
    assert "1 passed" in run.stdout                      # the cpu-shim case still runs and passes


# ---------------------------------------------------------------------------
# The fake GPU (tests/kernel_shim/fake_gpu): minicnn's GPU code paths on a CPU
# ---------------------------------------------------------------------------

FAKE_GPU = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_shim", "fake_gpu")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEPS_ON_BOTH_DEVICES = r"""
import json, sys
import numpy as np
import minicnn
import minicnn.functional as F
from minicnn import models, optim
from minicnn.backend import cupy_or_none, to_device
assert getattr(cupy_or_none(), "FAKE", False), "the fake GPU is not the cupy in use"

def run(name, device):
    minicnn.nn.init.manual_seed(0)
    model = models.get_model(name).to(device)
    model.train()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = minicnn.tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32)).to(device)
    y = minicnn.tensor(rng.integers(0, 10, 2)).to(device)
    losses = []
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.device == device for p in model.parameters())
    state = {k: to_device(getattr(v, "data", v), "cpu") for k, v in model.state_dict().items()}
    return losses, state

result = {}
for name in sys.argv[1:]:
    (lc, sc), (lg, sg) = run(name, "cpu"), run(name, "gpu")
    result[name] = {"losses": [lc, lg], "state_diff": max(float(np.abs(sc[k] - sg[k]).max()) for k in sc)}
print(json.dumps(result))
"""


def _fake_gpu_env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([FAKE_GPU, REPO, os.environ.get("PYTHONPATH", "")]))


@needs_compiler
def test_training_steps_on_the_fake_gpu_equal_the_cpu():
    """Two SGD steps of simple_cnn and resnet20 through every GPU branch (device moves,
    conv by the im2col and col2im kernels, the pooling kernels, batchnorm, the optimizer)
    give the CPU's losses and weights."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", STEPS_ON_BOTH_DEVICES, "simple_cnn", "resnet20"],
                         cwd=REPO, env=_fake_gpu_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    for name, r in json.loads(run.stdout.strip().splitlines()[-1]).items():
        np.testing.assert_allclose(r["losses"][1], r["losses"][0], rtol=1e-5, err_msg=name)
        assert r["state_diff"] < 1e-4, (name, r["state_diff"])     # float32, two paths of dx


@needs_compiler
@pytest.mark.slow
def test_gpu_suite_on_the_fake_gpu():
    """Every GPU-parametrised test of the suite, through minicnn's GPU branches on the fake GPU;
    none may skip (MINICNN_REQUIRE_GPU=1)."""
    import subprocess
    import sys

    env = dict(_fake_gpu_env(), MINICNN_REQUIRE_GPU="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu and not slow", "-p", "no:cacheprovider",
                          "tests"], cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-5000:]


def test_the_fake_gpu_refuses_to_mix_devices_like_cupy():
    import subprocess
    import sys

    code = ("import numpy as np, cupy\n"
            "x = cupy.ones(3)\n"
            "assert type(x).__module__ == 'cupy' and type(x * 2) is type(x) and type(x.sum()) is type(x)\n"
            "assert isinstance(x.get(), np.ndarray) and type(x.get()) is np.ndarray\n"
            "for bad in (lambda: x + np.ones(3), lambda: np.concatenate([x, np.ones(3)])):\n"
            "    try:\n"
            "        bad()\n"
            "    except TypeError as e:\n"
            "        assert 'mixes a GPU array with a NumPy array' in str(e)\n"
            "    else:\n"
            "        raise SystemExit('no error')\n"
            "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_fake_gpu_env(), capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
