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
    env.pop("MINICNN_REQUIRE_GPU")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                         cwd=repo, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and "1 skipped" in run.stdout
