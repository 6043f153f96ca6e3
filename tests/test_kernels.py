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
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minicnn
from minicnn import cuda
from minicnn.backend import cupy_or_none

import kernel_shim      # tests/kernel_shim: kernels/*.cu built as C++ for the CPU

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = shutil.which("nvcc")
CP = cupy_or_none()

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(CP is None, reason="CuPy with a CUDA GPU is not available")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")



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

def _kernel_templates():
    """{kernel name: (file, [(C type, parameter name), ...])} for every
    ``template <typename T> __global__ void name(...)`` in the sources."""
    found = {}
    pattern = re.compile(r"template\s*<\s*typename\s+T\s*>\s*__global__\s+void\s+(\w+)\s*\((.*?)\)", re.S)
    for path in cuda.kernel_files():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        for name, params in pattern.findall(source):
            parsed = []
            for param in params.split(","):
                words = param.replace("*", " * ").replace("__restrict__", "").split()
                parsed.append((" ".join(words[:-1]).replace("const ", ""), words[-1]))
            assert name not in found, f"kernel {name} defined twice"
            found[name] = (os.path.basename(path), parsed)
    return found


def test_every_kernel_template_matches_its_launcher():
    entries = _kernel_templates()
    assert set(entries) == set(cuda.KERNELS), "kernels without launcher, or launchers without kernel"
    for base, spec in cuda.KERNELS.items():
        filename, params = entries[base]
        assert filename == spec.filename
        names = [name for _, name in params]
        assert names == list(spec.arrays) + list(spec.ints), base
        types = [t for t, _ in params]
        for t, name in zip(types, spec.arrays):
            assert t == ("long long *" if name == "indices" else "T *"), (base, name, t)
        assert types[len(spec.arrays):] == ["int"] * len(spec.ints), base


def test_kernels_are_written_once_as_templates():
    """No per-dtype copies: every __global__ function is a template, and the
    sources include no headers (NVRTC compiles them as they are)."""
    for path in cuda.kernel_files():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        assert 'extern "C"' not in source, path
        assert not re.search(r"^\s*#\s*include", source, re.M), path
        n_global = len(re.findall(r"__global__", source))
        n_templates = len(re.findall(r"template\s*<\s*typename\s+T\s*>\s*__global__", source))
        assert n_global == n_templates, path


def test_name_expressions():
    assert cuda.name_expressions("im2col.cu") == [
        "im2col<float>", "im2col<double>", "col2im<float>", "col2im<double>"]
    assert len(cuda.name_expressions("pooling.cu")) == 8
    assert cuda.name_expression("max_pool2d_backward", np.float64) == "max_pool2d_backward<double>"


# ---------------------------------------------------------------------------
# nvcc: every .cu file compiles (no GPU needed)
# ---------------------------------------------------------------------------

def _demangle(names):
    tool = shutil.which("c++filt") or shutil.which("cu++filt")
    if tool is None:
        return None
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])
@pytest.mark.parametrize("path", cuda.kernel_files(), ids=os.path.basename)
def test_kernel_compiles_to_ptx(path, arch, tmp_path):
    """Each template instantiated for the launcher's name expressions (as
    NVRTC does for CuPy's ``name_expressions``), warnings as errors; the PTX
    has one entry per instance with pointer (u64) then int (u32) parameters,
    and its demangled C++ signature has the launcher's types."""
    filename = os.path.basename(path)
    expressions = cuda.name_expressions(filename)
    unit = tmp_path / "instances.cu"
    unit.write_text(f'#include "{path}"\n'
                    + "void* minicnn_instances[] = {"
                    + ", ".join(f"(void*)&{e}" for e in expressions) + "};\n")
    ptx = tmp_path / "out.ptx"
    result = subprocess.run(
        [NVCC, "-ptx", f"-arch={arch}", "--Werror", "all-warnings", "-o", str(ptx), str(unit)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr      # no warnings either
    text = ptx.read_text()
    entries = dict(re.findall(r"\.entry\s+(\w+)\((.*?)\)", text, re.S))
    assert len(entries) == len(expressions)
    demangled = _demangle(list(entries))
    by_expression = {}
    for k, (mangled, params) in enumerate(entries.items()):
        if demangled is None:          # no c++filt: match by the mangled template name
            expr = next(e for e in expressions if mangled.startswith(
                f"_Z{len(e.split('<')[0])}{e.split('<')[0]}I{'f' if 'float' in e else 'd'}E"))
            signature = None
        else:
            expr = demangled[k].split("(")[0].replace("void ", "", 1).strip()
            signature = demangled[k]
        by_expression[expr] = (params, signature)
    assert set(by_expression) == set(expressions)
    for expr, (params, signature) in by_expression.items():
        base, ctype = expr.rstrip(">").split("<")
        spec = cuda.KERNELS[base]
        kinds = re.findall(r"\.param\s+\.(\w+)", params)
        assert kinds == ["u64"] * len(spec.arrays) + ["u32"] * len(spec.ints), expr
        if signature is not None:
            types = [t.strip().replace(" const", "") for t in signature.split("(", 1)[1].rstrip(")").split(",")]
            want = [("long long*" if a == "indices" else f"{ctype}*") for a in spec.arrays] + ["int"] * len(spec.ints)
            assert types == want, (expr, signature)


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
# Each kernel against its NumPy twin: on the GPU, and on the CPU through the
# C++ build of the same source (tests/kernel_shim)
# ---------------------------------------------------------------------------

class KernelRunner(NamedTuple):
    """Where the launchers of ``minicnn.cuda`` run: ``to_device`` moves a NumPy
    array there, ``to_numpy`` brings a result back."""
    name: str
    to_device: object
    to_numpy: object


def _cpu_check_array(fn, argname, a):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {argname} must be a NumPy array in the CPU build, got {type(a).__name__}")


@pytest.fixture(params=[
    pytest.param("cpu", id="cpu-shim"),
    pytest.param("gpu", id="gpu", marks=[gpu, needs_gpu]),
])
def kernels(request, monkeypatch):
    """The kernel launchers on the GPU (CuPy), or on the CPU: the same
    launchers, with ``kernels/*.cu`` compiled as C++ by ``tests/kernel_shim``
    standing in for CuPy's ``RawModule`` (skipped without a C++ compiler)."""
    if request.param == "cpu":
        if kernel_shim.find_compiler() is None:
            pytest.skip("no C++ compiler (g++, c++, clang++ or $CXX): "
                        "the CPU build of the CUDA kernels cannot be made")
        monkeypatch.setattr(cuda, "_require_cupy", lambda fn: kernel_shim.fake_cupy())
        monkeypatch.setattr(cuda, "_check_on_gpu", _cpu_check_array)
        runner = KernelRunner("cpu", np.array, np.asarray)
    else:
        runner = KernelRunner("gpu", CP.asarray, CP.asnumpy)
    cuda.load_module.cache_clear()
    cuda._kernel_cached.cache_clear()
    yield runner
    cuda.load_module.cache_clear()      # no CPU-built module stays behind for a GPU test
    cuda._kernel_cached.cache_clear()


DTYPES = [np.float32, np.float64]

# (x shape, kernel, stride, padding, dilation): non-square kernels, odd sizes,
# stride larger than the kernel (pixels no window reads), dilation with padding
CONV_CASES = [
    ((2, 3, 7, 9), (3, 2), (2, 1), (1, 0), (1, 2)),
    ((1, 4, 8, 8), 3, 1, 1, 1),
    ((3, 2, 11, 6), (2, 3), (3, 2), (1, 1), (2, 1)),
    ((2, 5, 5, 5), 1, 2, 0, 1),
    ((1, 1, 6, 7), (4, 1), 1, (2, 0), 1),
    ((2, 16, 9, 9), 3, 2, 1, 1),
    ((1, 2, 9, 8), 2, 3, 0, 1),
    ((2, 3, 10, 11), 3, (2, 3), 2, 3),
]

# pooling keeps padding <= kernel // 2 (PyTorch's rule); stride None = kernel
POOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0, 1),
    ((2, 3, 7, 9), (3, 2), (2, 1), (1, 1), (1, 2)),
    ((1, 4, 9, 6), 3, 1, 1, 1),
    ((3, 2, 11, 10), (2, 3), (3, 2), (1, 1), (2, 1)),
    ((2, 2, 5, 7), (1, 3), None, (0, 1), 1),
    ((2, 3, 3, 3), 3, 1, 1, 1),
]

# max-pooling inputs: normal values; small integers (ties inside windows);
# NaNs (often two in a window: the last one wins); -inf entries and planes
# that are -inf everywhere (windows whose every real input is -inf); both in
# one plane (an all -inf window beside a NaN window: each keeps its own rule)
MAX_VALUES = ["random", "ties", "nan", "neg_inf", "mixed"]


def _raw(a):
    """Unwrap a Tensor (or pass an array through) to a NumPy array."""
    a = getattr(a, "data", a)
    return CP.asnumpy(a) if type(a).__module__.startswith("cupy") else np.asarray(a)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def _ties(rng, shape, dtype):
    """Small integers: many equal values inside a window (tests the tie rule)."""
    return rng.integers(-3, 4, size=shape).astype(dtype)


def _pool_input(values, rng, shape, dtype):
    if values == "random":
        return rng.standard_normal(shape).astype(dtype)
    x = _ties(rng, shape, dtype)
    if values == "nan":
        x[rng.random(shape) < 0.2] = np.nan
    elif values == "neg_inf":
        x[rng.random(shape) < 0.4] = -np.inf
        x[0, 0] = -np.inf                       # a whole plane of -inf
    elif values == "mixed":
        u = rng.random(shape)
        x[u < 0.6] = -np.inf
        x[u > 0.9] = np.nan
        x[0, 0, :2, :2] = -np.inf               # a first window of -inf only,
        x[0, 0, -1, -1] = np.nan                # and a NaN in the same plane
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p,d", CONV_CASES)
def test_im2col_matches_twin(kernels, shape, k, s, p, d, dtype, rng):
    from minicnn.functional import im2col
    x = rng.standard_normal(shape).astype(dtype)
    want = _raw(im2col(x, k, stride=s, padding=p, dilation=d))
    got = cuda.im2col_gpu(kernels.to_device(x), k, s, p, d)
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(kernels.to_numpy(got), want)
    # Channels-last input in memory (the layout conv outputs have) gives the same.
    x_cl = kernels.to_device(np.ascontiguousarray(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(kernels.to_numpy(cuda.im2col_gpu(x_cl, k, s, p, d)), want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p,d", CONV_CASES)
def test_col2im_matches_twin_and_is_the_adjoint(kernels, shape, k, s, p, d, dtype, rng):
    from minicnn.functional import col2im
    g = cuda.conv_geometry("test", shape, k, s, p, d)
    cols = rng.standard_normal((g.N * g.OH * g.OW, g.KH * g.KW * g.C)).astype(dtype)
    want = _raw(col2im(cols, shape, k, stride=s, padding=p, dilation=d))
    got = cuda.col2im_gpu(kernels.to_device(cols), shape, k, s, p, d)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_allclose(kernels.to_numpy(got), want, **_tol(dtype))
    # <im2col(x), cols> == <x, col2im(cols)>: col2im is im2col's transpose.
    x = rng.standard_normal(shape).astype(dtype)
    lhs = float(np.sum(kernels.to_numpy(cuda.im2col_gpu(kernels.to_device(x), k, s, p, d)) * cols))
    rhs = float(np.sum(x * kernels.to_numpy(got)))
    assert np.isclose(lhs, rhs, rtol=1e-4 if dtype == np.float32 else 1e-11)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p,d", POOL_CASES)
@pytest.mark.parametrize("values", MAX_VALUES)
def test_max_pool2d_forward_matches_twin(kernels, shape, k, s, p, d, dtype, values, rng):
    from minicnn.functional import max_pool2d
    x = _pool_input(values, rng, shape, dtype)
    y_want, idx_want = max_pool2d(minicnn.tensor(x), k, stride=s, padding=p, dilation=d,
                                  return_indices=True)
    y, idx = cuda.max_pool2d_forward_gpu(kernels.to_device(x), k, s, p, d)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(kernels.to_numpy(y), _raw(y_want))      # NaN == NaN here
    np.testing.assert_array_equal(kernels.to_numpy(idx), _raw(idx_want))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p,d", POOL_CASES)
@pytest.mark.parametrize("values", MAX_VALUES)
def test_max_pool2d_backward_matches_autograd(kernels, shape, k, s, p, d, dtype, values, rng):
    from minicnn.functional import max_pool2d
    x = _pool_input(values, rng, shape, dtype)
    xt = minicnn.tensor(x, requires_grad=True)
    y = max_pool2d(xt, k, stride=s, padding=p, dilation=d)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(g)
    _, idx = cuda.max_pool2d_forward_gpu(kernels.to_device(x), k, s, p, d)
    dx = cuda.max_pool2d_backward_gpu(kernels.to_device(g), idx, shape, k, s, p, d)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_allclose(kernels.to_numpy(dx), _raw(xt.grad), **_tol(dtype))


@pytest.mark.parametrize("shape,k,s,p,d", POOL_CASES)
@pytest.mark.parametrize("values", MAX_VALUES)
def test_max_pool2d_kernels_match_pytorch(kernels, torch, shape, k, s, p, d, values, rng):
    """PyTorch as a second oracle, also for NaN and all -inf windows."""
    x = _pool_input(values, rng, shape, np.float64)
    xt = torch.tensor(x, requires_grad=True)
    y_want, idx_want = torch.nn.functional.max_pool2d(xt, k, stride=s, padding=p, dilation=d,
                                                      return_indices=True)
    g = rng.standard_normal(tuple(y_want.shape))
    y_want.backward(torch.tensor(g))
    y, idx = cuda.max_pool2d_forward_gpu(kernels.to_device(x), k, s, p, d)
    np.testing.assert_array_equal(kernels.to_numpy(y), y_want.detach().numpy())
    np.testing.assert_array_equal(kernels.to_numpy(idx), idx_want.numpy())
    dx = cuda.max_pool2d_backward_gpu(kernels.to_device(g), idx, shape, k, s, p, d)
    np.testing.assert_allclose(kernels.to_numpy(dx), xt.grad.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p,d", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_matches_twin_forward_and_backward(kernels, shape, k, s, p, d, dtype,
                                                      count_include_pad, rng):
    from minicnn.functional import avg_pool2d
    x = rng.standard_normal(shape).astype(dtype)
    xt = minicnn.tensor(x, requires_grad=True)
    y_want = avg_pool2d(xt, k, stride=s, padding=p, count_include_pad=count_include_pad)
    g = rng.standard_normal(y_want.shape).astype(dtype)
    y_want.backward(g)
    y = cuda.avg_pool2d_forward_gpu(kernels.to_device(x), k, s, p, count_include_pad)
    assert y.dtype == dtype
    np.testing.assert_allclose(kernels.to_numpy(y), _raw(y_want), **_tol(dtype))
    dx = cuda.avg_pool2d_backward_gpu(kernels.to_device(g), shape, k, s, p, count_include_pad)
    np.testing.assert_allclose(kernels.to_numpy(dx), _raw(xt.grad), **_tol(dtype))


def test_kernels_handle_non_contiguous_and_empty_input(kernels, rng):
    from minicnn.functional import max_pool2d
    x = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)[:, :, ::2, 1::2]   # strided view
    y_want, idx_want = max_pool2d(minicnn.tensor(np.ascontiguousarray(x)), 2, return_indices=True)
    x_dev = kernels.to_device(np.ascontiguousarray(x.transpose(1, 0, 2, 3))).transpose(1, 0, 2, 3)
    assert not x_dev.flags.c_contiguous
    y, idx = cuda.max_pool2d_forward_gpu(x_dev, 2)
    np.testing.assert_array_equal(kernels.to_numpy(y), _raw(y_want))
    np.testing.assert_array_equal(kernels.to_numpy(idx), _raw(idx_want))
    dx = cuda.max_pool2d_backward_gpu(kernels.to_device(np.ones((3, 2, 2, 3), np.float32)).transpose(1, 0, 2, 3),
                                      idx, x.shape, 2)
    assert dx.shape == x.shape and float(kernels.to_numpy(dx).sum()) == y.size
    empty = kernels.to_device(np.zeros((0, 3, 8, 8), np.float32))
    assert cuda.im2col_gpu(empty, 3, padding=1).shape == (0, 27)
    assert cuda.max_pool2d_forward_gpu(empty, 2)[0].shape == (0, 3, 4, 4)
    assert cuda.avg_pool2d_forward_gpu(empty, 2).shape == (0, 3, 4, 4)
    assert cuda.col2im_gpu(kernels.to_device(np.zeros((0, 27), np.float32)), (0, 3, 8, 8), 3,
                           padding=1).shape == (0, 3, 8, 8)


def test_kernel_modules_are_loaded_once(kernels):
    cuda.im2col_gpu(kernels.to_device(np.ones((1, 1, 4, 4), np.float32)), 2)
    first = cuda.load_module("im2col.cu")
    assert cuda.load_module("im2col.cu") is first
    assert cuda.get_kernel("im2col", np.float32) is cuda.get_kernel("im2col", np.float32)
    assert cuda.get_kernel("im2col", np.float64) is not cuda.get_kernel("im2col", np.float32)


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
