"""minicnn.speed: every speed helper against its one-line contract, and the process settings."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn import speed


@pytest.fixture
def split(monkeypatch):
    """Force the threaded code paths, as after apply_process_settings() on a 2-core machine."""
    monkeypatch.setattr(speed, "_applied", {"keep_freed_memory": False, "blas_threads": 1,
                                            "child_openblas_thread_timeout": "4"})
    monkeypatch.setattr(speed, "cpu_threads", lambda: 2)
    monkeypatch.setattr(speed, "MATMUL_SPLIT_FLOPS", 0)


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("a_shape, b_shape", [((7, 5), (5, 3)), ((1, 40, 6), (1, 6, 4)), ((3, 9, 2), (3, 2, 5))])
def test_matmul_returns_a_at_b(request, threaded, a_shape, b_shape):
    if threaded:
        request.getfixturevalue("split")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    np.testing.assert_allclose(speed.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    assert speed.matmul(a32, b32).dtype == np.float32


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("a_shape, b_shape", [((50, 3), (50, 4)), ((2, 33, 3), (2, 33, 5)), ((1, 8, 2), (1, 8, 1))])
def test_matmul_t_returns_a_transposed_at_b(request, threaded, a_shape, b_shape):
    if threaded:
        request.getfixturevalue("split")
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    np.testing.assert_allclose(speed.matmul_t(a, b), a.swapaxes(-1, -2) @ b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("shape", [(1, 3), (37, 5), (1000, 16)])
def test_column_sums_returns_the_sum_over_rows(request, threaded, shape):
    if threaded:
        request.getfixturevalue("split")
    a = np.random.default_rng(2).standard_normal(shape)
    np.testing.assert_allclose(speed.column_sums(a), a.sum(axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threaded", [False, True])
def test_column_mean_var_returns_mean_and_biased_var(request, monkeypatch, threaded):
    if threaded:
        request.getfixturevalue("split")
        monkeypatch.setattr(speed, "BLOCK_BYTES", 64)    # many blocks
    X = np.random.default_rng(3).standard_normal((301, 7)) * 3 + 2
    mean, var = speed.column_mean_var(X)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var, X.var(axis=0), rtol=1e-12)


def test_column_mean_var_keeps_float32_accurate():
    X = (np.random.default_rng(4).standard_normal((20000, 3)) + 100.0).astype(np.float32)   # mean 100x the spread
    mean, var = speed.column_mean_var(X)
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(mean, X64.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(var, X64.var(axis=0), rtol=1e-3)


@pytest.mark.parametrize("threaded", [False, True])
def test_column_dot_centred_and_affine_rows_return_their_formulas(request, monkeypatch, threaded):
    if threaded:
        request.getfixturevalue("split")
        monkeypatch.setattr(speed, "BLOCK_BYTES", 64)
    rng = np.random.default_rng(5)
    G, X = rng.standard_normal((123, 4)), rng.standard_normal((123, 4))
    mean, a, b, c = (rng.standard_normal(4) for _ in range(4))
    np.testing.assert_allclose(speed.column_dot_centred(G, X, mean), (G * (X - mean)).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(speed.affine_rows(G, a, X, b, c), G * a + X * b + c, rtol=1e-12)
    np.testing.assert_allclose(speed.affine_rows(G, a, c=c), G * a + c, rtol=1e-12)
    np.testing.assert_allclose(speed.affine_rows(G, a), G * a, rtol=1e-12)


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("layout", ["c", "fortran", "strided"])
def test_per_channel_helpers_on_any_memory_layout(request, monkeypatch, threaded, layout):
    # The helpers view blocks of rows as flat runs; inputs that are not C-contiguous must give the same.
    if threaded:
        request.getfixturevalue("split")
        monkeypatch.setattr(speed, "BLOCK_BYTES", 200)   # many blocks, a short last one
    monkeypatch.setattr(speed, "ROW_WIDTH", 24)          # wide rows of 4 rows of 6, and a tail of 1 row
    rng = np.random.default_rng(11)
    G, X = rng.standard_normal((97, 6)), rng.standard_normal((97, 6)) * 2 + 5
    if layout == "fortran":
        G, X = np.asfortranarray(G), np.asfortranarray(X)
    elif layout == "strided":
        G, X = rng.standard_normal((97, 12))[:, ::2], (rng.standard_normal((194, 6)) * 2 + 5)[::2]
    mean, a, b, c = (rng.standard_normal(6) for _ in range(4))
    m, v = speed.column_mean_var(X)
    np.testing.assert_allclose(m, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(v, X.var(axis=0), rtol=1e-12)
    np.testing.assert_allclose(speed.column_dot_centred(G, X, mean), (G * (X - mean)).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(speed.affine_rows(G, a, X, b, c), G * a + X * b + c, rtol=1e-12)
    np.testing.assert_allclose(speed.affine_rows(G, 2.0, c=c), G * 2.0 + c, rtol=1e-12)


def test_column_mean_var_stays_float32_accurate_when_the_first_block_is_unlike_the_rest(monkeypatch):
    # The pass is shifted by the first block's mean; a first block far from the whole mean must not cost accuracy.
    monkeypatch.setattr(speed, "BLOCK_BYTES", 12 * 1000)    # the first block: 1000 of the 20000 rows
    rng = np.random.default_rng(12)
    X = rng.standard_normal((20000, 3)) + 100.0
    X[:1000] += 5.0                                          # five spreads away from the rest
    X = X.astype(np.float32)
    mean, var = speed.column_mean_var(X)
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(mean, X64.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(var, X64.var(axis=0), rtol=1e-3)


def test_column_dot_centred_promotes_like_its_formula():
    G = np.ones((5, 2), dtype=np.float32)
    X = np.arange(10, dtype=np.float32).reshape(5, 2)
    mean = np.array([0.1, 0.2], dtype=np.float64)
    out = speed.column_dot_centred(G, X, mean)
    expected = (G * (X - mean)).sum(axis=0)
    assert out.dtype == expected.dtype
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), perm_seed=st.integers(0, 99),
       dtype=st.sampled_from([np.float32, np.float64, np.int32]), row_width=st.sampled_from([1, 3, 16]),
       threads=st.integers(1, 3), step=st.sampled_from([1, 2]))
def test_positive_part_is_maximum_with_zero(shape, perm_seed, dtype, row_width, threads, step):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speed, "ROW_WIDTH", row_width)     # many rows and a remainder even for small arrays
        mp.setattr(speed, "cpu_threads", lambda: threads)
        check_positive_part(shape, perm_seed, dtype, step)


def check_positive_part(shape, perm_seed, dtype, step):
    rng = np.random.default_rng(perm_seed)
    base = (rng.standard_normal([s * step for s in shape]) * 5).astype(dtype)
    x = base[tuple(slice(None, None, step) for _ in shape)]                     # strided when step is 2
    x = x.transpose(rng.permutation(len(shape)))                                # any memory order
    if dtype != np.int32 and x.size:
        x.reshape(-1)[:1] = np.nan                     # (a copy when x is not one run: then nothing is set)
    out = speed.positive_part(x)
    expected = np.maximum(x, 0)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)      # NaN where x is NaN


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint16, np.float16, np.complex64])
def test_positive_part_of_other_dtypes_matches_numpy(monkeypatch, dtype):
    monkeypatch.setattr(speed, "ROW_WIDTH", 4)
    x = (np.arange(-40, 40) % 7 - 3).astype(dtype)
    expected = np.maximum(x, 0)
    out = speed.positive_part(x)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


def test_positive_part_keeps_the_layout_and_the_special_values():
    x = np.ascontiguousarray(np.random.default_rng(13).standard_normal((4, 8, 8, 3)).astype(np.float32))
    x = x.transpose(0, 3, 1, 2)                        # channels-last memory, as conv outputs are
    x[0, 0, 0, :3] = [-np.inf, np.inf, np.nan]
    out = speed.positive_part(x)
    assert out.strides == x.strides
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 0, 1] == np.inf and np.isnan(out[0, 0, 0, 2])


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 50), threads=st.integers(1, 4))
def test_parallel_chunks_is_the_same_as_one_call(n, threads):
    out = np.zeros(n, dtype=int)

    def work(lo, hi):
        out[lo:hi] += 1
    old = speed.cpu_threads
    speed.cpu_threads = lambda: threads
    try:
        speed.parallel_chunks(n, work)
    finally:
        speed.cpu_threads = old
    assert (out == 1).all()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n_rows, row_bytes", [(10, 1), (1000, 8), (7, 1 << 30), (1, 8)])
def test_row_block_sum_is_the_sum_of_row_blocks(monkeypatch, threads, n_rows, row_bytes):
    # One running sum per core, the cores' sums added: the same as summing every block's result.
    monkeypatch.setattr(speed, "BLOCK_BYTES", 24)
    monkeypatch.setattr(speed, "cpu_threads", lambda: threads)
    values = np.random.default_rng(9).standard_normal((n_rows, 3))
    seen = np.zeros(n_rows, dtype=int)

    def work(lo, hi):
        seen[lo:hi] += 1
        return values[lo:hi].sum(axis=0)
    total = speed.row_block_sum(n_rows, row_bytes, work)
    assert (seen == 1).all()
    np.testing.assert_allclose(total, sum(speed.row_blocks(n_rows, row_bytes, lambda lo, hi: values[lo:hi].sum(axis=0))),
                               rtol=1e-12)
    np.testing.assert_allclose(total, values.sum(axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_rows, row_bytes", [(10, 1), (1000, 8), (7, 1 << 30), (0, 8)])
def test_row_blocks_cover_every_row_once_in_order(monkeypatch, n_rows, row_bytes):
    monkeypatch.setattr(speed, "BLOCK_BYTES", 24)
    seen = np.zeros(n_rows, dtype=int)

    def work(lo, hi):
        seen[lo:hi] += 1
        return (lo, hi)
    spans = speed.row_blocks(n_rows, row_bytes, work)
    assert (seen == 1).all()
    assert [lo for lo, _ in spans] == sorted(lo for lo, _ in spans)
    assert all(hi - lo <= max(1, 24 // row_bytes) for lo, hi in spans)
    assert speed.row_blocks(n_rows, row_bytes, work, arrays_on_gpu=True) == [(0, n_rows)]


def test_parallel_chunks_nested_inside_a_chunk_runs_inline(monkeypatch):
    # A work function that itself splits work must not wait on the pool it runs in.
    monkeypatch.setattr(speed, "cpu_threads", lambda: 2)     # threads even on a 1-core runner
    out = np.zeros(64)

    def inner(lo, hi):
        out[lo:hi] += 1

    def outer(lo, hi):
        speed.parallel_chunks(hi - lo, lambda a, b: inner(lo + a, lo + b))
    speed.parallel_chunks(64, outer)
    assert (out == 1).all()


def test_parallel_chunks_raises_a_chunk_error_after_every_chunk_finished(monkeypatch):
    import time
    monkeypatch.setattr(speed, "cpu_threads", lambda: 2)
    done = []

    def work(lo, hi):
        if lo == 0:
            raise ValueError("chunk 0 failed")
        time.sleep(0.05)
        done.append(lo)
    with pytest.raises(ValueError, match="chunk 0 failed"):
        speed.parallel_chunks(10, work)
    assert done == [5]          # the other chunk had finished writing before the error surfaced



# --------------------------------------------------------------------------
# Process settings: applied by the entry points, never by ``import minicnn``
# --------------------------------------------------------------------------
def run_python(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "MINICNN_BLAS_THREADS")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("numpy_first", [True, False])
def test_import_minicnn_changes_nothing_in_the_process(numpy_first):
    code = ("import os" + ("; import numpy" if numpy_first else "") + "\n"
            "import numpy\n"
            "from minicnn import speed as s\n"
            "before = s.blas_threads()\n"
            "import threading\n"
            "import minicnn, minicnn.nn, minicnn.functional\n"
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), s.blas_threads() == before, s._applied,\n"
            "      threading.active_count())")
    assert run_python(code) == "None True None 1"     # no variable, no BLAS change, no mallopt, no thread


def test_the_issue_command_prints_none():
    code = "import os; import numpy; import minicnn; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    assert run_python(code) == "None"


def test_apply_process_settings_is_idempotent_and_makes_one_thread_pool():
    code = ("import minicnn.speed as s\n"
            "first = s.apply_process_settings(); second = s.apply_process_settings()\n"
            "assert first == second, (first, second)\n"
            "has_blas = s.blas_threads() is not None\n"
            "assert first['blas_threads'] == (1 if has_blas else None), first\n"
            "assert not has_blas or s.blas_threads() == 1\n"
            "import os, subprocess, sys\n"
            "child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"OPENBLAS_THREAD_TIMEOUT\"))'],\n"
            "                       capture_output=True, text=True).stdout.strip()\n"
            "assert child == '4', child\n"
            "print('ok')")
    assert run_python(code) == "ok"


def test_apply_process_settings_respects_the_environment():
    code = ("import minicnn.speed as s\n"
            "r = s.apply_process_settings()\n"
            "print(r['keep_freed_memory'], s.blas_threads() in (None, 2))")
    assert run_python(code, MINICNN_BLAS_THREADS="2", MINICNN_MALLOC_TUNING="0") == "False True"


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(0, 20), min_size=1, max_size=30), k=st.integers(20, 40), seed=st.integers(0, 9))
def test_assign_increasing_is_a_masked_assignment(values, k, seed):
    a = np.array(values, dtype=np.int16)
    mask = np.random.default_rng(seed).random(a.shape) < 0.5
    expected = a.copy()
    expected[mask] = k
    speed.assign_increasing(a, k, mask)
    np.testing.assert_array_equal(a, expected)


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:Degrees of freedom")   # the NumPy reference
def test_column_mean_var_and_dot_centred_of_zero_rows_match_numpy():
    X = np.zeros((0, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, var = speed.column_mean_var(X)
        ref_mean, ref_var = X.mean(axis=0), X.var(axis=0)
    np.testing.assert_array_equal(mean, ref_mean)
    np.testing.assert_array_equal(var, ref_var)
    dot = speed.column_dot_centred(X, X, np.zeros(3))
    np.testing.assert_array_equal(dot, np.zeros(3))
    assert dot.shape == (3,)


@pytest.mark.parametrize("A_dtype, c_dtype", [(np.float32, np.float64), (np.int64, np.float64)])
def test_affine_rows_promotes_like_the_formula_when_only_c_is_wider(A_dtype, c_dtype):
    A = np.arange(6).reshape(2, 3).astype(A_dtype)
    a = np.array([1, 2, 3], dtype=A_dtype)
    c = np.array([0.5, 0.25, 0.125], dtype=c_dtype)
    out = speed.affine_rows(A, a, c=c)
    expected = A * a + c
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint8])
def test_column_sums_of_integer_and_bool_arrays_match_numpy(dtype):
    a = np.full((300, 2), 1, dtype=dtype)
    expected = a.sum(axis=0)
    out = speed.column_sums(a)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


def test_parallel_chunks_called_from_two_threads_at_once_makes_one_pool(monkeypatch):
    import concurrent.futures
    import threading
    import time

    made = []
    real = concurrent.futures.ThreadPoolExecutor

    class SlowToMake(real):
        def __init__(self, *args, **kwargs):
            made.append(self)
            time.sleep(0.05)              # widen the window between "no pool yet" and "pool set"
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", SlowToMake)
    monkeypatch.setattr(speed, "_POOL", None)
    monkeypatch.setattr(speed, "cpu_threads", lambda: 2)
    outs = [np.zeros(10, dtype=int) for _ in range(2)]

    def call(out):
        def work(lo, hi):
            out[lo:hi] += 1
        speed.parallel_chunks(10, work)
    threads = [threading.Thread(target=call, args=(out,)) for out in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(made) == 1, f"{len(made)} thread pools were made; the module keeps one"
        assert all((out == 1).all() for out in outs)
    finally:
        for pool in made:
            pool.shutdown(wait=True)


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=4), threads=st.integers(1, 3),
       transposed=st.booleans())
def test_parallel_copy_is_np_copyto(shape, threads, transposed):
    src = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    if transposed:                                     # a strided, non-contiguous source (like a window view)
        src = src.T
    want = np.empty(src.shape, dtype=np.float32)
    np.copyto(want, src)
    old = speed.cpu_threads
    speed.cpu_threads = lambda: threads
    try:
        dst = np.empty(src.shape, dtype=np.float32)
        assert speed.parallel_copy(dst, src) is dst
    finally:
        speed.cpu_threads = old
    np.testing.assert_array_equal(dst, want)
    with pytest.raises(ValueError, match="parallel_copy: dst has shape"):
        speed.parallel_copy(np.empty((2, 3)), np.empty((3, 2)))


def test_single_threaded_blas_holds_one_thread_inside_and_restores_after():
    code = ("import threading\n"
            "import minicnn.speed as s\n"
            "before = s.blas_threads()\n"
            "if before is not None:\n"
            "    s.set_blas_threads(2); before = 2\n"
            "inside = []\n"
            "with s.single_threaded_blas():\n"
            "    inside.append(s.blas_threads())\n"
            "    with s.single_threaded_blas():\n"
            "        inside.append(s.blas_threads())\n"
            "    inside.append(s.blas_threads())\n"
            "    t = threading.Thread(target=lambda: s.single_threaded_blas().__enter__().__exit__())\n"
            "    t.start(); t.join()\n"
            "    inside.append(s.blas_threads())\n"
            "print(before is None or (inside == [1, 1, 1, 1] and s.blas_threads() == before))")
    assert run_python(code) == "True"


def test_single_threaded_blas_leaves_openblas_alone_when_the_environment_asks_for_its_threads():
    code = ("import minicnn.speed as s\n"
            "before = s.blas_threads()\n"
            "with s.single_threaded_blas():\n"
            "    inside = s.blas_threads()\n"
            "print(inside == before)")
    assert run_python(code, MINICNN_BLAS_THREADS="2") == "True"


def test_a_plain_process_splits_products_over_minicnns_pool_and_keeps_its_blas_threads():
    # Fast by default: no apply_process_settings(), yet a big product runs on minicnn's pool with
    # OpenBLAS single-threaded during it, and the process's own BLAS thread count is back afterwards.
    code = ("import numpy as np\n"
            "import minicnn, minicnn.functional as F\n"
            "from minicnn import speed as s\n"
            "s.cpu_threads.cache_clear()\n"
            "s.cpu_threads = lambda: 2\n"
            "before = s.blas_threads()\n"
            "seen = []\n"
            "real = np.matmul\n"
            "def spy(*a, **k):\n"
            "    seen.append(s.blas_threads()); return real(*a, **k)\n"
            "np.matmul = spy\n"
            "x = minicnn.tensor(np.ones((8, 16, 16, 16), np.float32), requires_grad=True)\n"
            "w = minicnn.tensor(np.ones((16, 16, 3, 3), np.float32), requires_grad=True)\n"
            "F.conv2d(x, w, padding=1).sum().backward()\n"
            "a = np.ones((4096, 256), np.float32)\n"
            "s.matmul(a, a.T[:, :64].copy())\n"
            "np.matmul = real\n"
            "print(s._POOL is not None, s._applied, s.blas_threads() == before,\n"
            "      before is None or set(seen) == {1})")
    assert run_python(code) == "True None True True"


def test_the_first_cpu_product_keeps_freed_memory_once(monkeypatch):
    # The allocator half of a fast step must not wait for an entry point: minicnn's first CPU product
    # calls keep_freed_memory() (once per process); importing minicnn does not (see the subprocess test above).
    calls = []
    monkeypatch.setattr(speed.single_threaded_blas, "_memory_kept", False)
    monkeypatch.setattr(speed, "keep_freed_memory", lambda: calls.append(1) or True)
    a = np.ones((64, 32))
    speed.matmul(a, a.T)
    speed.matmul_t(a, a)
    speed.column_sums(a)
    assert calls == [1]


def test_a_plain_process_keeps_freed_memory_only_after_its_first_product():
    code = ("import numpy as np, minicnn\n"
            "from minicnn import speed as s\n"
            "before = s.single_threaded_blas._memory_kept\n"
            "s.matmul(np.ones((4, 4)), np.ones((4, 4)))\n"
            "print(before, s.single_threaded_blas._memory_kept)")
    assert run_python(code) == "False True"


@given(row_bytes=st.integers(0, 3 * speed.BLOCK_BYTES))
def test_rows_per_block_is_the_most_rows_that_fit_a_block(row_bytes):
    rows = speed.rows_per_block(row_bytes)
    assert rows >= 1
    assert rows == 1 or rows * row_bytes <= speed.BLOCK_BYTES
    assert (rows + 1) * max(1, row_bytes) > speed.BLOCK_BYTES
