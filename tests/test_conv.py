"""conv2d, conv_transpose2d, im2col and col2im: naive-loop oracles, gradcheck, PyTorch, errors."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import minicnn
import minicnn.functional as F
from minicnn.backend import to_device
from minicnn.functional.conv import conv_output_size


def np_(a):
    """Any array or Tensor as a NumPy array."""
    return to_device(a.data if isinstance(a, minicnn.Tensor) else a, "cpu")


def channels_last(a):
    """The same NCHW values with channels-last memory (what a conv layer outputs)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


# --------------------------------------------------------------------------
# Naive oracles: the definitions, written as loops (minicnn.reference)
# --------------------------------------------------------------------------
from minicnn.reference import conv2d as naive_conv2d  # noqa: E402
from minicnn.reference import conv_transpose2d as naive_conv_transpose2d  # noqa: E402
from minicnn.reference import im2col as naive_im2col  # noqa: E402


# --------------------------------------------------------------------------
# Random configurations (tiny: numerical gradients loop over every element)
# --------------------------------------------------------------------------
@st.composite
def conv_configs(draw, transpose=False):
    groups = draw(st.sampled_from([1, 1, 2]))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 1)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    bias = draw(st.booleans())
    cfg = dict(n=n, c_in=c_in, c_out=c_out, hw=(h, w), kernel=kernel, stride=stride, padding=padding,
               dilation=dilation, groups=groups, bias=bias)
    if transpose:
        cfg["hw"] = (min(h, 4), min(w, 4))
        cfg["output_padding"] = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
        ho = [(i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, s, p, d, k, op in
              zip(cfg["hw"], stride, padding, dilation, kernel, cfg["output_padding"])]
        assume(min(ho) > 0)
    else:
        assume(min(conv_output_size(i, k, s, p, d) for i, k, s, p, d in
                   zip((h, w), kernel, stride, padding, dilation)) > 0)
    return cfg


def conv_arrays(cfg, rng, transpose=False):
    h, w = cfg["hw"]
    g = cfg["groups"]
    x = rng.standard_normal((cfg["n"], cfg["c_in"], h, w))
    wshape = ((cfg["c_in"], cfg["c_out"] // g) if transpose else (cfg["c_out"], cfg["c_in"] // g)) + cfg["kernel"]
    weight = rng.standard_normal(wshape)
    b = rng.standard_normal(cfg["c_out"]) if cfg["bias"] else None
    return x, weight, b


def conv_kwargs(cfg, transpose=False):
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    if transpose:
        kw["output_padding"] = cfg["output_padding"]
    return kw


def with_xp(xp, *arrays):
    return [None if a is None else xp.asarray(a) for a in arrays]


# --------------------------------------------------------------------------
# im2col / col2im
# --------------------------------------------------------------------------
def test_im2col_docstring_example():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(
        F.im2col(x, 2), [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]])
    np.testing.assert_array_equal(
        F.col2im(np.ones((4, 4)), (1, 1, 3, 3), 2)[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_im2col_layout_channels_innermost():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    cols = F.im2col(x, (2, 3), stride=(1, 2), padding=1)
    OH, OW = conv_output_size(4, 2, 1, 1), conv_output_size(5, 3, 2, 1)
    n, oh, ow, kh, kw, c = 1, 2, 1, 1, 2, 2
    assert cols.shape == (2 * OH * OW, 2 * 3 * 3)
    assert cols[(n * OH + oh) * OW + ow, (kh * 3 + kw) * 3 + c] == x[n, c, oh - 1 + kh, ow * 2 - 1 + kw]


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=conv_configs())
def test_im2col_matches_loops_and_col2im_is_its_adjoint(xp, cfg):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((cfg["n"], cfg["c_in"]) + cfg["hw"])
    args = dict(kernel_size=cfg["kernel"], stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"])
    cols = F.im2col(xp.asarray(x), **args)
    np.testing.assert_array_equal(np_(cols), naive_im2col(x, cfg["kernel"], cfg["stride"], cfg["padding"],
                                                          cfg["dilation"]))
    # channels-last memory gives the same columns
    np.testing.assert_array_equal(np_(F.im2col(xp.asarray(channels_last(x)), **args)), np_(cols))
    # <im2col(x), c> == <x, col2im(c)> for random x and c
    c = rng.standard_normal(cols.shape)
    dx = F.col2im(xp.asarray(c), x.shape, **args)
    assert dx.shape == x.shape
    np.testing.assert_allclose(float((np_(cols) * c).sum()), float((x * np_(dx)).sum()), rtol=1e-10, atol=1e-10)


def test_col2im_rejects_wrong_cols_shape():
    with pytest.raises(ValueError, match=r"col2im: cols must have shape"):
        F.col2im(np.zeros((5, 4)), (1, 1, 3, 3), 2)


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=conv_configs())
def test_conv2d_forward_matches_loops(xp, cfg):
    x, w, b = conv_arrays(cfg, np.random.default_rng(2))
    y = F.conv2d(*with_xp(xp, x, w, b), **conv_kwargs(cfg))
    expected = naive_conv2d(x, w, b, cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
    np.testing.assert_allclose(np_(y), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=40)
@given(cfg=conv_configs())
def test_conv2d_gradcheck(cfg):
    x, w, b = conv_arrays(cfg, np.random.default_rng(3))
    inputs = [x, w] + ([b] if b is not None else [])
    kw = conv_kwargs(cfg)
    report = minicnn.gradcheck(lambda *t: F.conv2d(*t, **kw), inputs)
    assert report.passed, report


@pytest.mark.parametrize("cfg", [
    dict(shape=(2, 4, 7, 6), w=(6, 2, 3, 2), stride=(1, 2), padding=(1, 0), dilation=(1, 2), groups=2),
    dict(shape=(2, 3, 5, 5), w=(4, 3, 3, 3), stride=1, padding=1, dilation=1, groups=1),
    dict(shape=(1, 4, 6, 7), w=(4, 1, 2, 3), stride=2, padding=(0, 1), dilation=1, groups=4),
    dict(shape=(2, 3, 8, 8), w=(5, 3, 1, 1), stride=2, padding=0, dilation=1, groups=1),
])
def test_conv2d_matches_torch(torch, cfg):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(cfg["shape"])
    w = rng.standard_normal(cfg["w"])
    b = rng.standard_normal(cfg["w"][0])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    xt, wt, bt = (minicnn.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, **kw)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    X, W, B = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    Y = torch.nn.functional.conv2d(X, W, B, **kw)
    Y.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, Y.detach().numpy(), rtol=1e-10, atol=1e-10)
    for mine, theirs in ((xt, X), (wt, W), (bt, B)):
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-10)


@settings(max_examples=30)
@given(cfg=conv_configs())
def test_conv2d_dx_by_col2im_equals_the_per_tap_dx(cfg):
    # The contract of the speed helper on conv2d's backward path:
    # col2im_of_product(a, b, ...) == col2im(merge_groups(a @ b), ...), i.e. dx = col2im(dcols)
    # with dcols = G_y @ W2 (the GPU computes exactly that; the CPU tap by tap).
    from minicnn.functional.conv import Conv2d, col2im_of_product, merge_groups, split_groups
    x, w, _ = conv_arrays(cfg, np.random.default_rng(2))
    fn = Conv2d()
    fn.needs_input_grad = (True, True, False)
    y = fn.forward(x, w, None, stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                   groups=cfg["groups"])
    g = np.random.default_rng(3).standard_normal(y.shape)
    dx_taps, _, _ = fn.backward(g)
    G_y = split_groups(g.transpose(0, 2, 3, 1).reshape(-1, g.shape[1]), cfg["groups"])
    kw = dict(kernel_size=w.shape[2:], stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"])
    dcols = merge_groups(G_y @ fn.W2, w.shape[2] * w.shape[3])
    dx_col2im = F.col2im(dcols, x.shape, **kw)
    np.testing.assert_allclose(dx_col2im, dx_taps, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(col2im_of_product(G_y, fn.W2, x.shape, **kw), dx_col2im, rtol=1e-10, atol=1e-10)


def test_conv2d_channels_last_input_gives_same_result_and_grads():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((2, 4, 3, 3))
    results = []
    for layout in (lambda a: a, channels_last):
        xt, wt = minicnn.tensor(layout(x), requires_grad=True), minicnn.tensor(w, requires_grad=True)
        y = F.conv2d(xt, wt, stride=2, padding=1)
        y.backward(layout(g))
        results.append((y.data, xt.grad, wt.grad))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_conv2d_output_is_channels_last_memory():
    x = channels_last(np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32))
    y = F.conv2d(x, np.ones((4, 3, 3, 3), np.float32), padding=1)
    assert y.data.transpose(0, 2, 3, 1).flags.c_contiguous


def test_conv2d_skips_grad_of_inputs_that_need_none():
    rng = np.random.default_rng(6)
    x = minicnn.tensor(rng.standard_normal((2, 3, 5, 5)))              # like the images fed to layer 1
    w = minicnn.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    assert x.grad is None
    cols = F.im2col(x.data, 3, padding=1)
    expected = (g.transpose(0, 2, 3, 1).reshape(-1, 4).T @ cols).reshape(4, 3, 3, 3).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(w.grad, expected, rtol=1e-12, atol=1e-12)
    # frozen weights: only dx
    x2 = minicnn.tensor(rng.standard_normal((2, 3, 5, 5)), requires_grad=True)
    w2 = minicnn.tensor(rng.standard_normal((4, 3, 3, 3)))
    F.conv2d(x2, w2, padding=1).backward(g)
    assert w2.grad is None and x2.grad.shape == (2, 3, 5, 5)


def test_conv2d_float32_stays_float32():
    rng = np.random.default_rng(7)
    x = minicnn.tensor(rng.standard_normal((2, 4, 6, 6)).astype(np.float32), requires_grad=True)
    w = minicnn.tensor(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), requires_grad=True)
    b = minicnn.tensor(np.zeros(4, np.float32), requires_grad=True)
    y = F.conv2d(x, w, b, stride=2, padding=1, groups=2)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32


# --------------------------------------------------------------------------
# conv_transpose2d
# --------------------------------------------------------------------------
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=conv_configs(transpose=True))
def test_conv_transpose2d_forward_matches_scatter_loops(xp, cfg):
    x, w, b = conv_arrays(cfg, np.random.default_rng(8), transpose=True)
    y = F.conv_transpose2d(*with_xp(xp, x, w, b), **conv_kwargs(cfg, transpose=True))
    expected = naive_conv_transpose2d(x, w, b, cfg["stride"], cfg["padding"], cfg["output_padding"],
                                      cfg["dilation"], cfg["groups"])
    np.testing.assert_allclose(np_(y), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=30)
@given(cfg=conv_configs(transpose=True))
def test_conv_transpose2d_gradcheck(cfg):
    x, w, b = conv_arrays(cfg, np.random.default_rng(9), transpose=True)
    inputs = [x, w] + ([b] if b is not None else [])
    kw = conv_kwargs(cfg, transpose=True)
    report = minicnn.gradcheck(lambda *t: F.conv_transpose2d(*t, **kw), inputs)
    assert report.passed, report


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    """<conv2d(y, w), x> == <y, conv_transpose2d(x, w)> for the same weight and settings."""
    rng = np.random.default_rng(10)
    kw = dict(stride=2, padding=1, dilation=1, groups=1)
    w = rng.standard_normal((3, 2, 3, 3))         # conv2d: 2 -> 3 channels; transposed: 3 -> 2
    x = rng.standard_normal((2, 3, 4, 4))
    yt = F.conv_transpose2d(x, w, output_padding=1, **kw)
    assert yt.shape == (2, 2, 8, 8)
    y = rng.standard_normal(yt.shape)
    lhs = (F.conv2d(y, w, **kw).data * x).sum()
    np.testing.assert_allclose(lhs, (y * yt.data).sum(), rtol=1e-12)


@pytest.mark.parametrize("cfg", [
    dict(shape=(2, 4, 3, 4), w=(4, 3, 3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
         dilation=1, groups=2),
    dict(shape=(1, 3, 4, 4), w=(3, 2, 4, 4), stride=2, padding=1, output_padding=0, dilation=1, groups=1),
    dict(shape=(2, 2, 3, 3), w=(2, 3, 2, 3), stride=1, padding=0, output_padding=1, dilation=2, groups=1),
])
def test_conv_transpose2d_matches_torch(torch, cfg):
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal(cfg["shape"]), rng.standard_normal(cfg["w"])
    b = rng.standard_normal(cfg["w"][1] * cfg["groups"])
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"],
              groups=cfg["groups"], dilation=cfg["dilation"])
    xt, wt, bt = (minicnn.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv_transpose2d(xt, wt, bt, **kw)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    X, W, B = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    Y = torch.nn.functional.conv_transpose2d(X, W, B, **kw)
    Y.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, Y.detach().numpy(), rtol=1e-10, atol=1e-10)
    for mine, theirs in ((xt, X), (wt, W), (bt, B)):
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_conv_transpose2d_float32_stays_float32():
    x = minicnn.tensor(np.ones((1, 2, 3, 3), np.float32), requires_grad=True)
    w = minicnn.tensor(np.ones((2, 3, 2, 2), np.float32), requires_grad=True)
    b = minicnn.tensor(np.ones(3, np.float32), requires_grad=True)
    y = F.conv_transpose2d(x, w, b, stride=2)
    assert y.dtype == np.float32 and y.shape == (1, 3, 6, 6)
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------
def test_conv2d_errors():
    x = np.zeros((1, 3, 5, 5))
    w = np.zeros((4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"C_in = 2 .* weight\.shape\[1\] \* groups = 3"):
        F.conv2d(np.zeros((1, 2, 5, 5)), w)
    with pytest.raises(ValueError, match=r"not divisible by groups = 2"):
        F.conv2d(x, np.zeros((4, 1, 3, 3)), groups=2)
    with pytest.raises(ValueError, match=r"output channels C_out = 4 are not divisible by groups = 3"):
        F.conv2d(np.zeros((1, 6, 5, 5)), np.zeros((4, 2, 3, 3)), groups=3)
    with pytest.raises(ValueError, match=r"larger than the padded input .* output size would be"):
        F.conv2d(x, np.zeros((4, 3, 8, 8)), padding=1)
    with pytest.raises(ValueError, match=r"effective 7x7\) is larger than the padded input 5x5"):
        F.conv2d(x, w, dilation=3)
    with pytest.raises(ValueError, match=r"input must be 4-D \(N, C, H, W\), got shape \(3, 5, 5\)"):
        F.conv2d(np.zeros((3, 5, 5)), w)
    with pytest.raises(ValueError, match=r"weight must be 4-D"):
        F.conv2d(x, np.zeros((4, 27)))
    with pytest.raises(ValueError, match=r"stride must be positive, got 0"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match=r"stride must be positive"):
        F.conv2d(x, w, stride=(1, -1))
    with pytest.raises(ValueError, match=r"padding must be non-negative"):
        F.conv2d(x, w, padding=-1)
    with pytest.raises(ValueError, match=r"groups must be a positive int"):
        F.conv2d(x, w, groups=0)
    with pytest.raises(ValueError, match=r"bias must have shape \(C_out,\) = \(4,\)"):
        F.conv2d(x, w, np.zeros(3))
    # float32 with float64: promoted as NumPy does, the one rule of every op (Function.apply)
    assert F.conv2d(x.astype(np.float32), w).dtype == np.float64
    with pytest.raises(TypeError, match=r"stride must be an int or a pair"):
        F.conv2d(x, w, stride=1.5)


def test_conv_transpose2d_errors():
    x = np.zeros((1, 3, 4, 4))
    w = np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"C_in = 2 .* weight\.shape\[0\] = 3"):
        F.conv_transpose2d(np.zeros((1, 2, 4, 4)), w)
    with pytest.raises(ValueError, match=r"output_padding .* must be smaller than stride"):
        F.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"output size would be -?\d+x-?\d+"):
        F.conv_transpose2d(np.zeros((1, 3, 1, 1)), np.zeros((3, 2, 1, 1)), padding=1)
    with pytest.raises(ValueError, match=r"stride must be positive"):
        F.conv_transpose2d(x, w, stride=0)


@settings(max_examples=40, deadline=None)
@given(cfg=conv_configs(), n=st.integers(1, 5), block_bytes=st.sampled_from([1, 200, 10**9]),
       threads=st.sampled_from([1, 2]))
def test_im2col_product_and_its_transpose_return_their_formulas(cfg, n, block_bytes, threads):
    # The contracts of conv2d's two forward-side speed helpers, on any number of image blocks
    # (block_bytes=1: one image per block) and cores:
    #   im2col_product(x, b)   == merge_groups(split_groups(im2col(x), G, taps) @ b)
    #   im2col_t_product(x, g) == split_groups(im2col(x), G, taps).swapaxes(1, 2) @ g
    from unittest import mock

    from minicnn import speed
    from minicnn.functional.conv import im2col_product, im2col_t_product, merge_groups, split_groups
    cfg = dict(cfg, n=n)
    x, w, _ = conv_arrays(cfg, np.random.default_rng(7))
    kw = dict(kernel_size=w.shape[2:], stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"])
    taps, G = w.shape[2] * w.shape[3], cfg["groups"]
    cols = split_groups(F.im2col(x, **kw), G, taps)                     # (G, M, K/G)
    rng = np.random.default_rng(8)
    b = rng.standard_normal((G, cols.shape[2], 3))
    g = rng.standard_normal((G, cols.shape[1], 2))
    with mock.patch.object(speed, "BLOCK_BYTES", block_bytes), mock.patch.object(speed, "cpu_threads", lambda: threads), \
            mock.patch.object(speed, "MATMUL_SPLIT_FLOPS", 0):
        Y = im2col_product(x, b, **kw)
        dWT = im2col_t_product(x, g, **kw)
    np.testing.assert_allclose(Y, merge_groups(cols @ b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dWT, cols.swapaxes(1, 2) @ g, rtol=1e-12, atol=1e-12)
    assert Y.dtype == dWT.dtype == np.float64


def test_a_replaced_im2col_unfolds_every_block_of_the_blocked_convolution():
    # The blocks check im2col's arguments once and then call ``unfold``; a student's im2col
    # (F.use_implementation) must still be the one that unfolds each block, forward and weight gradient.
    from unittest import mock

    from minicnn import speed
    from minicnn.functional.conv import im2col_product, im2col_t_product, unfold
    calls = []

    def students_im2col(x, kernel_size, stride, padding, dilation):
        calls.append(x.shape[0])
        return unfold(x, kernel_size, stride, padding, dilation,
                      F.windows.output_hw("im2col", x.shape, kernel_size, stride, padding, dilation)) * 2
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2, 5, 5))
    b, g = rng.standard_normal((1, 18, 3)), rng.standard_normal((1, 6 * 25, 4))
    kw = dict(kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    cols = F.im2col(x, **kw)
    with mock.patch.object(speed, "BLOCK_BYTES", 1), mock.patch.object(speed, "cpu_threads", lambda: 2), \
            F.use_implementation("im2col", students_im2col):
        Y, dWT = im2col_product(x, b, **kw), im2col_t_product(x, g, **kw)
    assert sorted(calls) == [1] * 12                         # one image per block, 6 blocks, twice
    np.testing.assert_allclose(Y, 2 * cols @ b[0], rtol=1e-12)
    np.testing.assert_allclose(dWT[0], 2 * cols.T @ g[0], rtol=1e-12)


def test_conv2d_keeps_its_input_not_the_unfolded_cols():
    # The forward pass keeps x for dW2 (im2col_t_product unfolds it again, block by block), never the (M, K) cols.
    from minicnn.functional.conv import Conv2d
    x = np.random.default_rng(0).standard_normal((4, 8, 16, 16)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((8, 8, 3, 3)).astype(np.float32)
    fn = Conv2d()
    fn.needs_input_grad = (True, True, False)
    fn.forward(x, w, None, padding=(1, 1))
    kept = [v for v in vars(fn).values() if isinstance(v, np.ndarray)]
    assert any(v is x for v in kept)
    assert sum(v.nbytes for v in kept) < 2 * x.nbytes        # cols would be 9x x
