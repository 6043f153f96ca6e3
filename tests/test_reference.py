"""minicnn.reference, the definitions: closed-form cases, PyTorch, and the fast ops against them."""
import numpy as np
import pytest

import minicnn
import minicnn.functional as F
from minicnn import reference as ref


def test_im2col_worked_example_and_col2im_counts_the_windows():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(ref.im2col(x, 2), [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]])
    np.testing.assert_array_equal(ref.col2im(np.ones((4, 4)), (1, 1, 3, 3), 2)[0, 0],
                                  [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


@pytest.mark.parametrize("kw", [dict(kernel=3, padding=1), dict(kernel=(2, 3), stride=(2, 1), dilation=(1, 2)),
                                dict(kernel=1)])
def test_col2im_is_the_adjoint_of_im2col_and_the_fast_ops_agree(kw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6))
    cols = ref.im2col(x, kw["kernel"], kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1))
    c = rng.standard_normal(cols.shape)
    dx = ref.col2im(c, x.shape, kw["kernel"], kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1))
    assert np.isclose((cols * c).sum(), (x * dx).sum())       # <im2col(x), c> = <x, col2im(c)>
    fast = dict(kernel_size=kw["kernel"], stride=kw.get("stride", 1), padding=kw.get("padding", 0),
                dilation=kw.get("dilation", 1))
    np.testing.assert_allclose(F.im2col(x, **fast), cols, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.col2im(c, x.shape, **fast), dx, rtol=1e-12, atol=1e-12)


def test_conv2d_definition_closed_form():
    # A 1x1 input channel of ones, a 2x2 kernel of ones: each output counts the real taps.
    y = ref.conv2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), np.array([0.5]), padding=1)
    np.testing.assert_array_equal(y[0, 0], [[1.5, 2.5, 1.5], [2.5, 4.5, 2.5], [1.5, 2.5, 1.5]])


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(dilation=2, groups=2), dict(padding=(0, 1))])
def test_conv_definitions_match_torch(torch, kw):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 2)), rng.standard_normal(6)
    expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), **kw).numpy()
    np.testing.assert_allclose(ref.conv2d(x, w, b, **kw), expected, rtol=1e-10, atol=1e-10)
    wt = rng.standard_normal((4, 6 // kw.get("groups", 1), 3, 2))
    expected = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(wt), torch.tensor(b), **kw).numpy()
    np.testing.assert_allclose(ref.conv_transpose2d(x, wt, b, **kw), expected, rtol=1e-10, atol=1e-10)


def test_max_pool_definition_special_windows():
    # All -inf: the first real input (the 3x3 example); NaN: the last NaN; ties: the first.
    y, idx = ref.max_pool2d(np.full((1, 1, 3, 3), -np.inf), 3, 1, 1)
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1], [0, 0, 1], [3, 3, 4]])
    assert np.all(y == -np.inf)
    y, idx = ref.max_pool2d(np.array([[[[1.0, np.nan, 3.0, np.nan]]]]), (1, 4))
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 3
    y, idx = ref.max_pool2d(np.zeros((1, 1, 2, 2)), 2)
    assert idx[0, 0, 0, 0] == 0


def test_max_pool_definition_matches_torch(torch):
    rng = np.random.default_rng(2)
    x = np.round(rng.standard_normal((2, 2, 6, 7)))
    x[rng.random(x.shape) < 0.3] = -np.inf
    x[rng.random(x.shape) < 0.05] = np.nan
    for kw in [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=3, stride=2, padding=1, dilation=2)]:
        Y, I = torch.nn.functional.max_pool2d(torch.tensor(x), return_indices=True, **kw)
        y, idx = ref.max_pool2d(x, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0), kw.get("dilation", 1))
        np.testing.assert_array_equal(y, Y.numpy())
        np.testing.assert_array_equal(idx, I.numpy())


def test_avg_pool_definition_matches_torch(torch):
    x = np.random.default_rng(3).standard_normal((2, 2, 5, 6))
    for kw in [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
               dict(kernel_size=3, stride=1, padding=1, divisor_override=2)]:
        expected = torch.nn.functional.avg_pool2d(torch.tensor(x), **kw).numpy()
        got = ref.avg_pool2d(x, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0),
                             kw.get("count_include_pad", True), kw.get("divisor_override"))
        np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_fast_op_equals_the_definition(training):
    rng = np.random.default_rng(4)
    x, g = rng.standard_normal((3, 4, 5, 2)) * 2 + 1, rng.standard_normal((3, 4, 5, 2))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    rm, rv = rng.standard_normal(4), rng.random(4) + 0.5
    y_ref, rm_ref, rv_ref = ref.batch_norm(x, gamma, beta, rm, rv, training=training)
    dx_ref, dgamma_ref, dbeta_ref = ref.batch_norm_backward(x, g, gamma, training, rm, rv)
    xt = minicnn.tensor(x, requires_grad=True)
    wt, bt = minicnn.tensor(gamma, requires_grad=True), minicnn.tensor(beta, requires_grad=True)
    rm2, rv2 = rm.copy(), rv.copy()
    y = F.batch_norm(xt, rm2, rv2, wt, bt, training=training)
    y.backward(g)
    for mine, theirs in [(y.data, y_ref), (rm2, rm_ref), (rv2, rv_ref), (xt.grad, dx_ref), (wt.grad, dgamma_ref),
                         (bt.grad, dbeta_ref)]:
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-10)


def test_batch_norm_definition_matches_torch(torch):
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal((4, 3, 2, 3)), rng.standard_normal((4, 3, 2, 3))
    gamma, beta, rm, rv = rng.standard_normal(3), rng.standard_normal(3), np.zeros(3), np.ones(3)
    X = torch.tensor(x, requires_grad=True)
    Gm, Bt = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    RM, RV = torch.tensor(rm), torch.tensor(rv)
    Y = torch.nn.functional.batch_norm(X, RM, RV, Gm, Bt, training=True)
    Y.backward(torch.tensor(g))
    y, new_rm, new_rv = ref.batch_norm(x, gamma, beta, rm, rv, training=True)
    dx, dgamma, dbeta = ref.batch_norm_backward(x, g, gamma, training=True)
    for mine, theirs in [(y, Y), (new_rm, RM), (new_rv, RV), (dx, X.grad), (dgamma, Gm.grad), (dbeta, Bt.grad)]:
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-10, atol=1e-10)
