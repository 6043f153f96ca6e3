"""max_pool2d, avg_pool2d, adaptive_avg_pool2d: loop oracles, gradcheck, ties, PyTorch, errors."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import minicnn
import minicnn.functional as F
from minicnn.backend import to_device
from minicnn.functional.conv import conv_output_size


def np_(a):
    return to_device(a.data if isinstance(a, minicnn.Tensor) else a, "cpu")


def channels_last(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def distinct(shape, rng, spacing=0.5):
    """Values at least ``spacing`` apart (a shuffled arange): no tie sits within a gradcheck step."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * spacing - 3.0


# The definitions, written as loops (minicnn.reference): values and flat indices h*W + w.
from minicnn.reference import avg_pool2d as naive_avg_pool  # noqa: E402
from minicnn.reference import max_pool2d as naive_max_pool  # noqa: E402


@st.composite
def pool_configs(draw, with_dilation=True):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if with_dilation else (1, 1)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    assume(min(conv_output_size(i, k, s, p, d) for i, k, s, p, d in
               zip(shape[2:], kernel, stride, padding, dilation)) > 0)
    return dict(shape=shape, kernel=kernel, stride=stride, padding=padding, dilation=dilation)


# --------------------------------------------------------------------------
# max_pool2d
# --------------------------------------------------------------------------
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=pool_configs())
def test_max_pool_matches_loops_values_and_indices(xp, cfg):
    x = distinct(cfg["shape"], np.random.default_rng(0))
    args = (cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"])
    y_ref, idx_ref = naive_max_pool(x, *args)
    assume((idx_ref >= 0).all())   # no window wholly inside the padding (possible with dilation)
    y, idx = F.max_pool2d(xp.asarray(x), *args, return_indices=True)
    np.testing.assert_array_equal(np_(y), y_ref)
    np.testing.assert_array_equal(np_(idx), idx_ref)
    assert idx.dtype == np.int64 and idx.shape == y.shape


@settings(max_examples=25)
@given(cfg=pool_configs())
def test_max_pool_gradcheck(cfg):
    x = distinct(cfg["shape"], np.random.default_rng(1))
    args = (cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"])
    assume((naive_max_pool(x, *args)[1] >= 0).all())
    report = minicnn.gradcheck(lambda t: F.max_pool2d(t, *args), [x])
    assert report.passed, report


@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (1, 2, 4, 4)])
def test_max_pool_2x2_fast_path_matches_loops_and_gradcheck(shape):
    x = distinct(shape, np.random.default_rng(2))
    y_ref, idx_ref = naive_max_pool(x, (2, 2), (2, 2), (0, 0), (1, 1))
    for layout in (lambda a: a, channels_last):
        y, idx = F.max_pool2d(layout(x), 2, return_indices=True)
        np.testing.assert_array_equal(y.data, y_ref)
        np.testing.assert_array_equal(idx.data, idx_ref)
    assert minicnn.gradcheck(lambda t: F.max_pool2d(t, 2), [x]).passed


@pytest.mark.parametrize("shape, kernel", [((2, 3, 7, 5), (2, 2)), ((1, 2, 7, 8), (3, 3)), ((2, 2, 6, 7), (2, 3)),
                                           ((1, 1, 3, 3), (3, 3))])
def test_max_pool_disjoint_windows_path_sends_g_to_the_argmax_and_zero_elsewhere(shape, kernel):
    # stride = kernel: windows never overlap, and rows/columns past the last window get no gradient.
    rng = np.random.default_rng(7)
    x = distinct(shape, rng)
    _, idx_ref = naive_max_pool(x, kernel, kernel, (0, 0), (1, 1))
    g = rng.standard_normal(idx_ref.shape)
    want = np.zeros(shape)
    N, C, H, W = shape
    for n, c, i, j in np.ndindex(*idx_ref.shape):
        want[n, c].flat[idx_ref[n, c, i, j]] += g[n, c, i, j]
    for layout in (lambda a: a, channels_last):
        xt = minicnn.tensor(layout(x), requires_grad=True)
        F.max_pool2d(xt, kernel).backward(g)
        np.testing.assert_array_equal(xt.grad.data, want)
    assert minicnn.gradcheck(lambda t: F.max_pool2d(t, kernel), [x]).passed


def test_max_pool_backward_routes_gradient_to_the_argmax():
    x = distinct((2, 3, 5, 6), np.random.default_rng(3))
    xt = minicnn.tensor(x, requires_grad=True)
    y, idx = F.max_pool2d(xt, 3, stride=2, padding=1, return_indices=True)   # overlapping windows
    g = np.random.default_rng(4).standard_normal(y.shape)
    y.backward(g)
    expected = np.zeros(x.shape)
    for n, c, i, j in np.ndindex(*y.shape):
        h, w = divmod(int(idx.data[n, c, i, j]), x.shape[3])
        expected[n, c, h, w] += g[n, c, i, j]
    np.testing.assert_allclose(xt.grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (2, 1)])
def test_max_pool_ties_send_the_whole_gradient_to_one_input(kernel, stride):
    """All-equal windows: one input (the first in scan order) gets g, never split."""
    x = minicnn.tensor(np.zeros((1, 2, 6, 6)), requires_grad=True)
    y, idx = F.max_pool2d(x, kernel, stride, return_indices=True)
    g = np.arange(1.0, y.data.size + 1).reshape(y.shape)
    y.backward(g)
    OH, OW = y.shape[2:]
    for c in range(2):
        for i in range(OH):
            for j in range(OW):
                assert idx.data[0, c, i, j] == (i * stride) * 6 + j * stride    # window's top-left
    np.testing.assert_allclose(x.grad.sum(), g.sum())
    # every gradient value arrives whole: the nonzeros of dx are sums of whole g entries
    if kernel == stride:       # non-overlapping: exactly one nonzero per window, equal to g
        assert np.count_nonzero(x.grad) == g.size
        np.testing.assert_array_equal(np.sort(x.grad[x.grad != 0]), np.sort(g.ravel()))


def assert_max_pool_matches_torch(torch, x, cfg, layout=lambda a: a, seed=6):
    """Values, flat indices and the input gradient of max_pool2d equal PyTorch's."""
    xt = minicnn.tensor(layout(x), requires_grad=True)
    y, idx = F.max_pool2d(xt, return_indices=True, **cfg)
    g = np.random.default_rng(seed).standard_normal(y.shape)
    y.backward(g)
    X = torch.tensor(x, requires_grad=True)
    Y, I = torch.nn.functional.max_pool2d(X, return_indices=True, **cfg)
    Y.backward(torch.tensor(g))
    np.testing.assert_array_equal(y.data, Y.detach().numpy())
    np.testing.assert_array_equal(idx.data, I.numpy())
    np.testing.assert_allclose(xt.grad, X.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_max_pool_ties_match_torch(torch):
    x = np.round(np.random.default_rng(5).standard_normal((2, 3, 7, 7)))   # many ties
    for cfg in [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)]:
        assert_max_pool_matches_torch(torch, x, cfg)


def test_max_pool_nan_takes_the_window_and_its_last_nan_is_the_argmax(xp):
    # PyTorch's rule, on the NumPy path and (with a GPU) the CUDA kernel alike.
    nan = np.nan
    x = np.array([[[[1.0, nan, 3.0, nan], [nan, 5.0, 3.0, 2.0], [1.0, 2.0, 4.0, 3.0]]]])
    y, idx = F.max_pool2d(xp.asarray(x), (1, 4), return_indices=True)
    assert np.isnan(np_(y)[0, 0, :2, 0]).all() and np_(y)[0, 0, 2, 0] == 4.0
    np.testing.assert_array_equal(np_(idx)[0, 0, :, 0], [3, 4, 10])
    xt = minicnn.tensor(xp.asarray(channels_last(np.tile(x, (1, 2, 2, 1)))), requires_grad=True)
    y, idx = F.max_pool2d(xt, 2, return_indices=True)              # the 2x2 fast path
    assert np.isnan(np_(y)[0, :, 0, 0]).all()
    np.testing.assert_array_equal(np_(idx)[0, :, 0, 0], [4, 4])   # NaNs at 1 and 4: the last


def test_max_pool_nan_matches_torch(torch):
    x = distinct((2, 3, 7, 8), np.random.default_rng(17), spacing=0.01)
    x[np.random.default_rng(18).random(x.shape) < 0.08] = np.nan
    for cfg in [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(2, 3), stride=(1, 2))]:
        for layout in (lambda a: a, channels_last):
            assert_max_pool_matches_torch(torch, x, cfg, layout, seed=19)


@pytest.mark.parametrize("cfg", [
    dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(2, 3), stride=(1, 2)),
    dict(kernel_size=3, stride=1, padding=1, dilation=2), dict(kernel_size=2, stride=2),
])
def test_max_pool_matches_torch(torch, cfg):
    x = distinct((2, 3, 7, 8), np.random.default_rng(7), spacing=0.01)
    assert_max_pool_matches_torch(torch, x, cfg, seed=8)


def test_max_pool_float32_stays_float32():
    for args in [(2,), (3, 2, 1)]:
        x = minicnn.tensor(distinct((2, 3, 6, 6), np.random.default_rng(9)).astype(np.float32), requires_grad=True)
        y = F.max_pool2d(x, *args)
        assert y.dtype == np.float32
        y.backward(np.ones(y.shape, np.float32))
        assert x.grad.dtype == np.float32


# --------------------------------------------------------------------------
# avg_pool2d / adaptive_avg_pool2d
# --------------------------------------------------------------------------
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=pool_configs(with_dilation=False), count_include_pad=st.booleans())
def test_avg_pool_matches_loops(xp, cfg, count_include_pad):
    x = np.random.default_rng(10).standard_normal(cfg["shape"])
    y = F.avg_pool2d(xp.asarray(x), cfg["kernel"], cfg["stride"], cfg["padding"],
                     count_include_pad=count_include_pad)
    expected = naive_avg_pool(x, cfg["kernel"], cfg["stride"], cfg["padding"], count_include_pad)
    np.testing.assert_allclose(np_(y), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=20)
@given(cfg=pool_configs(with_dilation=False), count_include_pad=st.booleans())
def test_avg_pool_gradcheck(cfg, count_include_pad):
    x = np.random.default_rng(11).standard_normal(cfg["shape"])
    report = minicnn.gradcheck(lambda t: F.avg_pool2d(t, cfg["kernel"], cfg["stride"], cfg["padding"],
                                                      count_include_pad=count_include_pad), [x])
    assert report.passed, report


@pytest.mark.parametrize("cfg", [
    dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0)), dict(kernel_size=2, divisor_override=3),
])
def test_avg_pool_matches_torch(torch, cfg):
    x = np.random.default_rng(12).standard_normal((2, 3, 7, 8))
    xt = minicnn.tensor(channels_last(x), requires_grad=True)
    y = F.avg_pool2d(xt, **cfg)
    g = np.random.default_rng(13).standard_normal(y.shape)
    y.backward(g)
    X = torch.tensor(x, requires_grad=True)
    Y = torch.nn.functional.avg_pool2d(X, **cfg)
    Y.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, Y.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xt.grad, X.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("output_size", [1, (1, 1), (2, 3), (None, 2), 2])
def test_adaptive_avg_pool_matches_torch_and_gradcheck(torch, output_size):
    x = np.random.default_rng(14).standard_normal((2, 3, 4, 6))
    xt = minicnn.tensor(x, requires_grad=True)
    y = F.adaptive_avg_pool2d(xt, output_size)
    g = np.random.default_rng(15).standard_normal(y.shape)
    y.backward(g)
    X = torch.tensor(x, requires_grad=True)
    Y = torch.nn.functional.adaptive_avg_pool2d(X, output_size)
    Y.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, Y.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xt.grad, X.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("output_size", [1, (2, 3)])
def test_adaptive_avg_pool_gradcheck(xp, output_size):
    x = np.random.default_rng(16).standard_normal((2, 3, 4, 6))
    y = F.adaptive_avg_pool2d(xp.asarray(x), output_size)
    np.testing.assert_allclose(np_(y), naive_avg_pool(x, (4 // y.shape[2], 6 // y.shape[3]),
                                                      (4 // y.shape[2], 6 // y.shape[3]), (0, 0)), rtol=1e-12)
    assert minicnn.gradcheck(lambda t: F.adaptive_avg_pool2d(t, output_size), [x]).passed


def test_avg_pools_float32_stay_float32():
    for op in (lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False), lambda t: F.adaptive_avg_pool2d(t, 1),
               lambda t: F.adaptive_avg_pool2d(t, 2)):
        x = minicnn.tensor(np.ones((2, 3, 6, 6), np.float32), requires_grad=True)
        y = op(x)
        assert y.dtype == np.float32
        y.backward(np.ones(y.shape, np.float32))
        assert x.grad.dtype == np.float32


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------
def test_pooling_errors():
    x = np.zeros((1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"max_pool2d: padding \(2, 2\) must be at most half the kernel size"):
        F.max_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError, match=r"avg_pool2d: padding .* at most half"):
        F.avg_pool2d(x, 2, padding=(0, 2))
    with pytest.raises(ValueError, match=r"max_pool2d: the kernel 6x6 .* larger than the padded input 5x5"):
        F.max_pool2d(x, 6)
    with pytest.raises(ValueError, match=r"max_pool2d: input must be 4-D \(N, C, H, W\), got shape \(2, 5, 5\)"):
        F.max_pool2d(np.zeros((2, 5, 5)), 2)
    with pytest.raises(ValueError, match=r"stride must be positive, got 0"):
        F.max_pool2d(x, 2, stride=0)
    with pytest.raises(ValueError, match=r"avg_pool2d: stride must be positive"):
        F.avg_pool2d(x, 2, stride=-1)
    with pytest.raises(ValueError, match=r"ceil_mode=True is not supported"):
        F.max_pool2d(x, 2, ceil_mode=True)
    with pytest.raises(ValueError, match=r"kernel_size must be positive"):
        F.avg_pool2d(x, 0)
    with pytest.raises(ValueError, match=r"output_size \(2, 2\) must divide the input size \(5, 5\)"):
        F.adaptive_avg_pool2d(x, 2)
    with pytest.raises(ValueError, match=r"adaptive_avg_pool2d: input must be 4-D"):
        F.adaptive_avg_pool2d(np.zeros((2, 5)), 1)


# --------------------------------------------------------------------------
# Windows whose real inputs are all -inf (PyTorch's rule: the first real input)
# --------------------------------------------------------------------------
def test_max_pool_all_minus_inf_plane_picks_the_first_real_input(xp):
    # The case: on an all -inf 3x3 plane, kernel 3, stride 1, padding 1, every
    # window's index is its first real input (never a padding tap) and all 9 gradients arrive.
    x = minicnn.tensor(xp.full((1, 1, 3, 3), -np.inf), requires_grad=True)
    y, idx = F.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(np_(idx)[0, 0], [[0, 0, 1], [0, 0, 1], [3, 3, 4]])
    assert np.all(np_(y) == -np.inf)
    y.backward(xp.ones(y.shape))
    assert np_(x.grad).sum() == 9.0
    np.testing.assert_array_equal(np_(x.grad)[0, 0], [[4, 2, 0], [2, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("cfg", [dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2),
                                 dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1)),
                                 dict(kernel_size=3, stride=2, padding=1, dilation=2)])
def test_max_pool_minus_inf_windows_match_torch(torch, cfg):
    rng = np.random.default_rng(31)
    x = distinct((2, 3, 6, 7), rng, spacing=0.01)
    x[rng.random(x.shape) < 0.6] = -np.inf           # many windows all -inf, some mixed
    x[0, 0] = -np.inf                                # one whole plane
    for layout in (lambda a: a, channels_last):
        assert_max_pool_matches_torch(torch, x, cfg, layout, seed=32)


def test_max_pool_minus_inf_windows_match_the_definition():
    rng = np.random.default_rng(33)
    x = distinct((2, 2, 5, 6), rng, spacing=0.01)
    x[rng.random(x.shape) < 0.7] = -np.inf
    for kernel, stride, padding, dilation in [((3, 3), (1, 1), (1, 1), (1, 1)), ((2, 2), (2, 2), (0, 0), (1, 1)),
                                              ((3, 3), (2, 2), (1, 1), (2, 2))]:
        y, idx = F.max_pool2d(channels_last(x), kernel, stride, padding, dilation, return_indices=True)
        y_ref, idx_ref = naive_max_pool(x, kernel, stride, padding, dilation)
        np.testing.assert_array_equal(y.data, y_ref)
        np.testing.assert_array_equal(idx.data, idx_ref)


# --------------------------------------------------------------------------
# NaN, -inf and finite values mixed in one array: each window follows its own rule
# --------------------------------------------------------------------------
def test_max_pool_minus_inf_window_keeps_its_gradient_when_another_window_holds_a_nan(xp):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0], x[0, 0, 3, 3] = -np.inf, np.nan      # window (0, 0) is all -inf; window (2, 2) is NaN
    xt = minicnn.tensor(xp.asarray(x), requires_grad=True)
    y, idx = F.max_pool2d(xt, 2, stride=2, padding=1, return_indices=True)
    y.backward(xp.ones(y.shape))
    assert np_(idx)[0, 0, 0, 0] == 0 and np_(y)[0, 0, 0, 0] == -np.inf and np.isnan(np_(y)[0, 0, 2, 2])
    assert np_(xt.grad)[0, 0, 0, 0] == 1.0                 # as PyTorch and minicnn.reference route it
    assert np_(xt.grad)[0, 0, 3, 3] == 1.0


def mixed_values(shape, seed, p_nan, p_neg_inf):
    """Distinct finite values with NaN and -inf sprinkled in (whole -inf windows are common)."""
    rng = np.random.default_rng(seed)
    x = distinct(shape, rng, spacing=0.01)
    u = rng.random(shape)
    x[u < p_neg_inf] = -np.inf
    x[(u >= p_neg_inf) & (u < p_neg_inf + p_nan)] = np.nan
    return x


def routed_gradient(idx, g, x_shape):
    """dx of max pooling from its flat indices: each g[n, c, i, j] goes to pixel idx[n, c, i, j]."""
    dx = np.zeros(x_shape)
    W = x_shape[3]
    for n, c, i, j in np.ndindex(*idx.shape):
        if idx[n, c, i, j] >= 0:
            dx[(n, c) + divmod(int(idx[n, c, i, j]), W)] += g[n, c, i, j]
    return dx


mixed_cases = dict(cfg=pool_configs(), seed=st.integers(0, 2 ** 16), p_nan=st.sampled_from([0.0, 0.05, 0.2]),
                   p_neg_inf=st.sampled_from([0.2, 0.5, 0.8]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**mixed_cases)
def test_max_pool_with_nan_and_minus_inf_matches_the_definition(xp, cfg, seed, p_nan, p_neg_inf):
    x = mixed_values(cfg["shape"], seed, p_nan, p_neg_inf)
    args = (cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"])
    y_ref, idx_ref = naive_max_pool(x, *args)
    assume((idx_ref >= 0).all())
    for layout in (lambda a: a, channels_last):
        xt = minicnn.tensor(xp.asarray(layout(x)), requires_grad=True)
        y, idx = F.max_pool2d(xt, *args, return_indices=True)
        np.testing.assert_array_equal(np_(y), y_ref)          # NaN == NaN here
        np.testing.assert_array_equal(np_(idx), idx_ref)
        g = np.random.default_rng(seed + 1).standard_normal(y.shape)
        y.backward(xp.asarray(g))
        np.testing.assert_allclose(np_(xt.grad), routed_gradient(idx_ref, g, x.shape), rtol=1e-12, atol=0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**mixed_cases)
def test_max_pool_with_nan_and_minus_inf_matches_torch(torch, cfg, seed, p_nan, p_neg_inf):
    x = mixed_values(cfg["shape"], seed, p_nan, p_neg_inf)
    assume((naive_max_pool(x, cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"])[1] >= 0).all())
    torch_cfg = dict(kernel_size=cfg["kernel"], stride=cfg["stride"], padding=cfg["padding"],
                     dilation=cfg["dilation"])
    assert_max_pool_matches_torch(torch, x, torch_cfg, seed=seed + 1)
