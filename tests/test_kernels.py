"""Tests of the raw CUDA kernels (kernels/*.cu) and their launchers (minicnn.cuda).

Three groups:

* Everywhere: the sources are found (editable checkout and built package),
  the launchers' argument handling (pairs, output sizes, grid sizes, error
  messages) is right, and every ``extern "C"`` signature in the ``.cu`` files
  matches the parameter order the launchers pass (``minicnn.cuda.KERNELS``).
* Where ``nvcc`` is on PATH: every ``.cu`` file compiles to PTX with warnings
  as errors, and the PTX entry points have the expected parameter types.
* On a GPU (``@pytest.mark.gpu``, skipped without CuPy and a device): every
  kernel equals its NumPy twin element by element, float32 and float64,
  over shapes with non-square kernels, odd sizes, strides, paddings and
  dilations; backward kernels equal the CPU autograd gradients.
"""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minicnn
from minicnn import cuda
from minicnn.backend import cupy_or_none

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = shutil.which("nvcc")
CP = cupy_or_none()

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(CP is None, reason="CuPy with a CUDA GPU is not available")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")

C_TYPE = {"f32": "float", "f64": "double"}


# ---------------------------------------------------------------------------
# Finding the sources
# ---------------------------------------------------------------------------

def test_kernel_files_are_found():
    files = cuda.kernel_files()
    names = [os.path.basename(f) for f in files]
    assert "im2col.cu" in names and "pooling.cu" in names
    assert all(os.path.dirname(f) == cuda.kernel_source_dir() for f in files)
    # every file a launcher needs exists
    assert {spec.filename for spec in cuda.KERNELS.values()} <= set(names)


def test_kernel_source_dir_prefers_package_data(tmp_path, monkeypatch):
    package_dir, repo_dir = tmp_path / "pkg", tmp_path / "repo"
    package_dir.mkdir()
    repo_dir.mkdir()
    (repo_dir / "a.cu").write_text("// repo\n")
    monkeypatch.setattr(cuda, "_candidate_dirs", lambda: [str(package_dir), str(repo_dir)])
    assert cuda.kernel_source_dir() == str(repo_dir)        # package folder has no .cu yet
    (package_dir / "a.cu").write_text("// package\n")
    assert cuda.kernel_source_dir() == str(package_dir)     # installed copy wins


def test_kernel_source_dir_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda, "_candidate_dirs", lambda: [str(tmp_path / "nowhere")])
    with pytest.raises(FileNotFoundError, match="no CUDA kernel sources"):
        cuda.kernel_source_dir()


@pytest.mark.skipif(not os.path.exists(os.path.join(REPO, "setup.py")),
                    reason="not running from a source checkout")
def test_setup_build_py_ships_kernels_as_package_data(tmp_path):
    build = tmp_path / "build"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)],
                   cwd=REPO, check=True, capture_output=True)
    shipped = build / "minicnn" / "kernels"
    for path in cuda.kernel_files():
        copy = shipped / os.path.basename(path)
        assert copy.is_file(), f"{copy} missing from the built package"
        assert copy.read_bytes() == open(path, "rb").read()
    # The built package (no top-level kernels/ beside it) finds its own copy.
    env = dict(os.environ, PYTHONPATH=str(build))
    out = subprocess.run(
        [sys.executable, "-c", "import minicnn.cuda as c; print(c.kernel_source_dir())"],
        cwd=str(tmp_path), env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert os.path.realpath(out) == os.path.realpath(str(shipped))


# ---------------------------------------------------------------------------
# C signatures vs. the launchers' argument order
# ---------------------------------------------------------------------------

def _c_entry_points():
    """{kernel name: [(C type, parameter name), ...]} for every extern "C" kernel."""
    found = {}
    pattern = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\((.*?)\)', re.S)
    for path in cuda.kernel_files():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        for name, params in pattern.findall(source):
            parsed = []
            for param in params.split(","):
                words = param.replace("*", " * ").replace("__restrict__", "").split()
                parsed.append((" ".join(words[:-1]).replace("const ", ""), words[-1]))
            found[name] = (os.path.basename(path), parsed)
    return found


def test_every_c_signature_matches_its_launcher():
    entries = _c_entry_points()
    expected_names = {f"{k}_{s}" for k in cuda.KERNELS for s in ("f32", "f64")}
    assert set(entries) == expected_names, "kernels without launcher, or launchers without kernel"
    for base, spec in cuda.KERNELS.items():
        for suffix, ctype in C_TYPE.items():
            filename, params = entries[f"{base}_{suffix}"]
            assert filename == spec.filename
            names = [name for _, name in params]
            assert names == list(spec.arrays) + list(spec.ints), base
            types = [t for t, _ in params]
            for t, name in zip(types, spec.arrays):
                assert t == ("long long *" if name == "indices" else f"{ctype} *"), (base, name, t)
            assert types[len(spec.arrays):] == ["int"] * len(spec.ints), base


# ---------------------------------------------------------------------------
# nvcc: every .cu file compiles (no GPU needed)
# ---------------------------------------------------------------------------

@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_75", "sm_80"])
@pytest.mark.parametrize("path", cuda.kernel_files(), ids=os.path.basename)
def test_kernel_compiles_to_ptx(path, arch, tmp_path):
    ptx = tmp_path / "out.ptx"
    result = subprocess.run(
        [NVCC, "-ptx", f"-arch={arch}", "--Werror", "all-warnings", "-o", str(ptx), path],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr      # no warnings either
    text = ptx.read_text()
    # Each entry point exists with pointer (u64) then int (u32) parameters.
    for base, spec in cuda.KERNELS.items():
        if spec.filename != os.path.basename(path):
            continue
        for suffix in ("f32", "f64"):
            name = f"{base}_{suffix}"
            m = re.search(r"\.entry\s+" + name + r"\((.*?)\)", text, re.S)
            assert m, f"{name} missing from PTX"
            kinds = re.findall(r"\.param\s+\.(\w+)", m.group(1))
            assert kinds == ["u64"] * len(spec.arrays) + ["u32"] * len(spec.ints), name


# ---------------------------------------------------------------------------
# Argument handling (plain functions, no GPU)
# ---------------------------------------------------------------------------

def test_pair_normalisation():
    assert cuda.pair(3, "k", "f", 1) == (3, 3)
    assert cuda.pair((2, 5), "k", "f", 1) == (2, 5)
    assert cuda.pair([0, 1], "p", "f", 0) == (0, 1)
    assert cuda.pair(np.int64(4), "k", "f", 1) == (4, 4)
    for bad in (True, 2.0, (1, 2, 3), (1,), "3", None, (1, 2.5)):
        with pytest.raises(TypeError, match="f: k must be an int or a pair"):
            cuda.pair(bad, "k", "f", 1)
    with pytest.raises(ValueError, match="stride must be positive"):
        cuda.pair(0, "stride", "f", 1)
    with pytest.raises(ValueError, match="padding must be non-negative"):
        cuda.pair((0, -1), "padding", "f", 0)


def _count_positions(size, k, s, p, d):
    """Output length by brute force: window starts o*s (in padded
    coordinates) whose last tap o*s + d*(k-1) stays inside size + 2p."""
    n = 0
    while n * s + d * (k - 1) <= size + 2 * p - 1:
        n += 1
    return n


@given(H=st.integers(1, 20), W=st.integers(1, 20), KH=st.integers(1, 5), KW=st.integers(1, 5),
       SH=st.integers(1, 4), SW=st.integers(1, 4), PH=st.integers(0, 3), PW=st.integers(0, 3),
       DH=st.integers(1, 3), DW=st.integers(1, 3))
def test_conv_geometry_output_size(H, W, KH, KW, SH, SW, PH, PW, DH, DW):
    OH, OW = _count_positions(H, KH, SH, PH, DH), _count_positions(W, KW, SW, PW, DW)
    args = ((2, 3, H, W), (KH, KW), (SH, SW), (PH, PW), (DH, DW))
    if OH == 0 or OW == 0:
        with pytest.raises(ValueError, match="output size would be"):
            cuda.conv_geometry("im2col_gpu", *args)
        return
    g = cuda.conv_geometry("im2col_gpu", *args)
    assert (g.OH, g.OW) == (OH, OW)
    assert g == (2, 3, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)


def test_pool_geometry_defaults_stride_to_kernel():
    g = cuda.pool_geometry("f", (1, 1, 9, 8), (3, 2))
    assert (g.SH, g.SW, g.OH, g.OW) == (3, 2, 3, 4)
    with pytest.raises(ValueError, match="input must be 4-D"):
        cuda.pool_geometry("f", (9, 8), 2)


def test_launch_config():
    assert cuda.launch_config(1) == ((1,), (256,))
    assert cuda.launch_config(256) == ((1,), (256,))
    assert cuda.launch_config(257) == ((2,), (256,))
    assert cuda.launch_config(2**40) == ((cuda.MAX_BLOCKS,), (256,))     # capped; grid-stride loop
    assert cuda.launch_config(1000, block=128) == ((8,), (128,))
    with pytest.raises(ValueError):
        cuda.launch_config(0)


def test_launchers_reject_bad_input_without_a_gpu():
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(TypeError, match="im2col_gpu: x must be a CuPy array on the GPU"):
        cuda.im2col_gpu(x, 3)
    with pytest.raises(TypeError, match="im2col_gpu: x must be float32 or float64, got int32"):
        cuda.im2col_gpu(x.astype(np.int32), 3)
    with pytest.raises(TypeError, match="max_pool2d_forward_gpu: x must be float32 or float64, got float16"):
        cuda.max_pool2d_forward_gpu(x.astype(np.float16), 2)
    with pytest.raises(TypeError, match="must be a float32 or float64 array"):
        cuda.avg_pool2d_forward_gpu([[1.0]], 2)
    with pytest.raises(ValueError, match=r"col2im_gpu: cols must have shape \(72, 27\), got \(72, 26\)"):
        cuda.col2im_gpu(np.zeros((72, 26), np.float32), x.shape, 3)
    with pytest.raises(ValueError, match="output size would be"):
        cuda.im2col_gpu(x, 9)
    g = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(TypeError, match="indices must be an integer array"):
        cuda.max_pool2d_backward_gpu(g, g, x.shape, 2)
    with pytest.raises(ValueError, match=r"indices must have shape \(2, 3, 4, 4\)"):
        cuda.max_pool2d_backward_gpu(g, np.zeros((2, 3, 4), np.int64), x.shape, 2)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 3, 4, 4\)"):
        cuda.avg_pool2d_backward_gpu(g[:1], x.shape, 2)
    with pytest.raises(ValueError, match="unknown kernel"):
        cuda.get_kernel("conv_f32", np.float32)


def test_load_module_without_cupy_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cuda.backend, "cupy_or_none", lambda: None)
    cuda.load_module.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="need CuPy and a CUDA GPU"):
            cuda.load_module("im2col.cu")
    finally:
        cuda.load_module.cache_clear()


# ---------------------------------------------------------------------------
# GPU: each kernel against its NumPy twin
# ---------------------------------------------------------------------------

DTYPES = [np.float32, np.float64]

# (x shape, kernel, stride, padding, dilation): non-square kernels, odd sizes
CONV_CASES = [
    ((2, 3, 7, 9), (3, 2), (2, 1), (1, 0), (1, 2)),
    ((1, 4, 8, 8), 3, 1, 1, 1),
    ((3, 2, 11, 6), (2, 3), (3, 2), (1, 1), (2, 1)),
    ((2, 5, 5, 5), 1, 2, 0, 1),
    ((1, 1, 6, 7), (4, 1), 1, (2, 0), 1),
    ((2, 16, 9, 9), 3, 2, 1, 1),
]

# pooling keeps padding <= kernel // 2 (PyTorch's rule); stride None = kernel
POOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0, 1),
    ((2, 3, 7, 9), (3, 2), (2, 1), (1, 1), (1, 2)),
    ((1, 4, 9, 6), 3, 1, 1, 1),
    ((3, 2, 11, 10), (2, 3), (3, 2), (1, 1), (2, 1)),
    ((2, 2, 5, 7), (1, 3), None, (0, 1), 1),
]


def _raw(a):
    """Unwrap a Tensor (or pass an array through) to a NumPy array."""
    a = getattr(a, "data", a)
    return CP.asnumpy(a) if type(a).__module__.startswith("cupy") else np.asarray(a)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def _ties(rng, shape, dtype):
    """Small integers: many equal values inside a window (tests the tie rule)."""
    return rng.integers(-3, 4, size=shape).astype(dtype)


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p,d", CONV_CASES)
def test_im2col_matches_twin(shape, k, s, p, d, dtype, rng):
    from minicnn.functional.conv import im2col
    x = rng.standard_normal(shape).astype(dtype)
    want = _raw(im2col(x, k, stride=s, padding=p, dilation=d))
    got = cuda.im2col_gpu(CP.asarray(x), k, s, p, d)
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(CP.asnumpy(got), want)
    # Channels-last input in memory (the CPU path's layout) gives the same.
    x_cl = CP.asarray(np.ascontiguousarray(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(CP.asnumpy(cuda.im2col_gpu(x_cl, k, s, p, d)), want)


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p,d", CONV_CASES)
def test_col2im_matches_twin_and_is_the_adjoint(shape, k, s, p, d, dtype, rng):
    from minicnn.functional.conv import col2im
    g = cuda.conv_geometry("test", shape, k, s, p, d)
    cols = rng.standard_normal((g.N * g.OH * g.OW, g.KH * g.KW * g.C)).astype(dtype)
    want = _raw(col2im(cols, shape, k, stride=s, padding=p, dilation=d))
    got = cuda.col2im_gpu(CP.asarray(cols), shape, k, s, p, d)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_allclose(CP.asnumpy(got), want, **_tol(dtype))
    # <im2col(x), cols> == <x, col2im(cols)>: col2im is im2col's transpose.
    x = CP.asarray(rng.standard_normal(shape).astype(dtype))
    lhs = float(CP.sum(cuda.im2col_gpu(x, k, s, p, d) * CP.asarray(cols)))
    rhs = float(CP.sum(x * got))
    assert np.isclose(lhs, rhs, rtol=1e-4 if dtype == np.float32 else 1e-11)


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p,d", POOL_CASES)
@pytest.mark.parametrize("values", ["random", "ties"])
def test_max_pool2d_forward_matches_twin(shape, k, s, p, d, dtype, values, rng):
    from minicnn.functional.pooling import max_pool2d
    x = rng.standard_normal(shape).astype(dtype) if values == "random" else _ties(rng, shape, dtype)
    y_want, idx_want = max_pool2d(minicnn.tensor(x), k, stride=s, padding=p, dilation=d,
                                  return_indices=True)
    y, idx = cuda.max_pool2d_forward_gpu(CP.asarray(x), k, s, p, d)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(CP.asnumpy(y), _raw(y_want))
    np.testing.assert_array_equal(CP.asnumpy(idx), _raw(idx_want))


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p,d", POOL_CASES)
@pytest.mark.parametrize("values", ["random", "ties"])
def test_max_pool2d_backward_matches_autograd(shape, k, s, p, d, dtype, values, rng):
    from minicnn.functional.pooling import max_pool2d
    x = rng.standard_normal(shape).astype(dtype) if values == "random" else _ties(rng, shape, dtype)
    xt = minicnn.tensor(x, requires_grad=True)
    y = max_pool2d(xt, k, stride=s, padding=p, dilation=d)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(g)
    _, idx = cuda.max_pool2d_forward_gpu(CP.asarray(x), k, s, p, d)
    dx = cuda.max_pool2d_backward_gpu(CP.asarray(g), idx, shape, k, s, p, d)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_allclose(CP.asnumpy(dx), _raw(xt.grad), **_tol(dtype))


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p,d", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_matches_twin_forward_and_backward(shape, k, s, p, d, dtype,
                                                      count_include_pad, rng):
    from minicnn.functional.pooling import avg_pool2d
    x = rng.standard_normal(shape).astype(dtype)
    xt = minicnn.tensor(x, requires_grad=True)
    y_want = avg_pool2d(xt, k, stride=s, padding=p, count_include_pad=count_include_pad)
    g = rng.standard_normal(y_want.shape).astype(dtype)
    y_want.backward(g)
    y = cuda.avg_pool2d_forward_gpu(CP.asarray(x), k, s, p, count_include_pad)
    assert y.dtype == dtype
    np.testing.assert_allclose(CP.asnumpy(y), _raw(y_want), **_tol(dtype))
    dx = cuda.avg_pool2d_backward_gpu(CP.asarray(g), shape, k, s, p, count_include_pad)
    np.testing.assert_allclose(CP.asnumpy(dx), _raw(xt.grad), **_tol(dtype))


@gpu
@needs_gpu
def test_kernels_handle_non_contiguous_and_empty_input(rng):
    from minicnn.functional.pooling import max_pool2d
    x = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)[:, :, ::2, 1::2]   # strided view
    y_want, idx_want = max_pool2d(minicnn.tensor(np.ascontiguousarray(x)), 2, return_indices=True)
    y, idx = cuda.max_pool2d_forward_gpu(CP.asarray(x), 2)
    np.testing.assert_array_equal(CP.asnumpy(y), _raw(y_want))
    np.testing.assert_array_equal(CP.asnumpy(idx), _raw(idx_want))
    empty = CP.zeros((0, 3, 8, 8), np.float32)
    assert cuda.im2col_gpu(empty, 3, padding=1).shape == (0, 27)
    assert cuda.max_pool2d_forward_gpu(empty, 2)[0].shape == (0, 3, 4, 4)
    assert cuda.col2im_gpu(CP.zeros((0, 27), np.float32), (0, 3, 8, 8), 3, padding=1).shape == (0, 3, 8, 8)


@gpu
@needs_gpu
def test_kernel_modules_are_loaded_once():
    cuda.im2col_gpu(CP.ones((1, 1, 4, 4), np.float32), 2)
    first = cuda.load_module("im2col.cu")
    assert cuda.load_module("im2col.cu") is first
    assert cuda.get_kernel("im2col", np.float32) is cuda.get_kernel("im2col", np.float32)


@gpu
@needs_gpu
@pytest.mark.slow
def test_im2col_col2im_index_math_past_2_to_the_31():
    """cols with more than 2**31 elements (about 9.7 GB float32): the rows of
    the last image must equal im2col of that image alone, and col2im of the
    whole must equal col2im of the last image's rows (64-bit flat indices)."""
    shape = (16, 64, 512, 512)
    free, _ = CP.cuda.Device().mem_info
    if free < 16 * 2**30:
        pytest.skip("needs about 16 GiB of free GPU memory")
    x = CP.random.standard_normal(shape, dtype=np.float32)
    cols = cuda.im2col_gpu(x, 3, 1, 1, 1)
    assert cols.size > 2**31
    rows_per_image = 512 * 512
    tail = cols[-rows_per_image:]
    assert bool(CP.array_equal(tail, cuda.im2col_gpu(x[-1:], 3, 1, 1, 1)))
    del x
    dx = cuda.col2im_gpu(cols, shape, 3, 1, 1, 1)
    dx_last = cuda.col2im_gpu(CP.ascontiguousarray(tail), (1,) + shape[1:], 3, 1, 1, 1)
    assert bool(CP.array_equal(dx[-1:], dx_last))
