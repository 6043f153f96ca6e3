"""batch_norm: gradcheck in train and eval modes, running statistics, PyTorch, float32, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn
import minicnn.functional as F
from minicnn.backend import to_device


def np_(a):
    return to_device(a.data if isinstance(a, minicnn.Tensor) else a, "cpu")


def channels_last(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


shapes = st.sampled_from([(4, 3), (7, 2), (2, 3, 3, 2), (3, 2, 4, 3), (2, 4, 1, 5), (2, 2, 3)])


def bn_inputs(shape, rng):
    C = shape[1]
    x = rng.standard_normal(shape) * 2.0 + 0.5
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    rm, rv = rng.standard_normal(C), rng.random(C) + 0.5
    return x, w, b, rm, rv


# --------------------------------------------------------------------------
# gradcheck, train and eval separately
# --------------------------------------------------------------------------
@settings(max_examples=20)
@given(shape=shapes, affine=st.sampled_from(["both", "weight", "bias", "none"]))
def test_batch_norm_train_gradcheck(shape, affine):
    x, w, b, rm, rv = bn_inputs(shape, np.random.default_rng(0))
    w = w if affine in ("both", "weight") else None
    b = b if affine in ("both", "bias") else None
    params = [p for p in (w, b) if p is not None]

    def fn(xt, *ps):
        ps = list(ps)
        wt = ps.pop(0) if w is not None else None
        bt = ps.pop(0) if b is not None else None
        return F.batch_norm(xt, rm.copy(), rv.copy(), wt, bt, training=True)
    report = minicnn.gradcheck(fn, [x] + params)
    assert report.passed, report


@settings(max_examples=15)
@given(shape=shapes)
def test_batch_norm_eval_gradcheck(shape):
    x, w, b, rm, rv = bn_inputs(shape, np.random.default_rng(1))
    report = minicnn.gradcheck(lambda xt, wt, bt: F.batch_norm(xt, rm, rv, wt, bt, training=False), [x, w, b])
    assert report.passed, report


def test_batch_norm_eval_is_the_affine_map_of_the_running_statistics():
    x, w, b, rm, rv = bn_inputs((3, 4, 2, 2), np.random.default_rng(2))
    xt = minicnn.tensor(x, requires_grad=True)
    y = F.batch_norm(xt, rm, rv, w, b, training=False, eps=1e-3)
    c = (slice(None), None, None)
    scale = w / np.sqrt(rv + 1e-3)
    np.testing.assert_allclose(y.data, (x - rm[c]) * scale[c] + b[c], rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(3).standard_normal(y.shape)
    y.backward(g)
    np.testing.assert_allclose(xt.grad, g * scale[c], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# running statistics
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 3)])
def test_running_statistics_update_in_place(xp, shape):
    x, w, b, rm, rv = bn_inputs(shape, np.random.default_rng(4))
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    rm_x, rv_x = xp.asarray(rm.copy()), xp.asarray(rv.copy())
    F.batch_norm(xp.asarray(x), rm_x, rv_x, xp.asarray(w), xp.asarray(b), training=True, momentum=0.3)
    np.testing.assert_allclose(np_(rm_x), 0.7 * rm + 0.3 * x.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(np_(rv_x), 0.7 * rv + 0.3 * x.var(axis=axes, ddof=1), rtol=1e-12)  # unbiased
    # eval leaves them alone
    before = np_(rm_x).copy(), np_(rv_x).copy()
    F.batch_norm(xp.asarray(x), rm_x, rv_x, xp.asarray(w), xp.asarray(b), training=False)
    np.testing.assert_array_equal(np_(rm_x), before[0])
    np.testing.assert_array_equal(np_(rv_x), before[1])


def test_running_statistics_as_grad_less_tensors():
    x, w, b, rm, rv = bn_inputs((6, 2), np.random.default_rng(5))
    rmt, rvt = minicnn.tensor(rm.copy()), minicnn.tensor(rv.copy())
    F.batch_norm(x, rmt, rvt, w, b, training=True)
    np.testing.assert_allclose(rmt.data, 0.9 * rm + 0.1 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rvt.data, 0.9 * rv + 0.1 * x.var(0, ddof=1), rtol=1e-12)


def test_training_normalises_with_batch_statistics_and_no_running_stats():
    x = np.random.default_rng(6).standard_normal((8, 3, 2, 2)) * 3 + 1
    y = F.batch_norm(x, None, None, training=True, eps=0.0 + 1e-12).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-9)
    # with running stats None, eval mode also uses batch statistics (as PyTorch)
    np.testing.assert_allclose(F.batch_norm(x, None, None, training=False, eps=1e-12).data, y, rtol=1e-9)


# --------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5, 2)])
def test_batch_norm_matches_torch(torch, training, shape):
    x, w, b, rm, rv = bn_inputs(shape, np.random.default_rng(7))
    xt, wt, bt = (minicnn.tensor(a, requires_grad=True) for a in (x, w, b))
    rm1, rv1 = rm.copy(), rv.copy()
    y = F.batch_norm(xt, rm1, rv1, wt, bt, training=training, momentum=0.2, eps=1e-4)
    g = np.random.default_rng(8).standard_normal(y.shape)
    y.backward(g)
    X, W, B = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    rm2, rv2 = torch.tensor(rm), torch.tensor(rv)
    Y = torch.nn.functional.batch_norm(X, rm2, rv2, W, B, training=training, momentum=0.2, eps=1e-4)
    Y.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, Y.detach().numpy(), rtol=1e-10, atol=1e-10)
    for mine, theirs in ((xt, X), (wt, W), (bt, B)):
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rm1, rm2.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv1, rv2.numpy(), rtol=1e-12)


def test_batch_norm_float32_channels_last_matches_torch(torch):
    x, w, b, _, _ = bn_inputs((8, 4, 5, 5), np.random.default_rng(9))
    x, w, b = (a.astype(np.float32) for a in (x, w, b))
    xt = minicnn.tensor(channels_last(x), requires_grad=True)
    wt, bt = minicnn.tensor(w, requires_grad=True), minicnn.tensor(b, requires_grad=True)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    y = F.batch_norm(xt, rm, rv, wt, bt, training=True)
    g = np.random.default_rng(10).standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    X, W, B = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    rm2, rv2 = torch.zeros(4), torch.ones(4)
    Y = torch.nn.functional.batch_norm(X, rm2, rv2, W, B, training=True)
    Y.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, Y.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(xt.grad, X.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(wt.grad, W.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rv, rv2.numpy(), rtol=1e-5)


# --------------------------------------------------------------------------
# float32, layout
# --------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_float32_stays_float32(training):
    x, w, b, rm, rv = bn_inputs((4, 3, 3, 3), np.random.default_rng(11))
    x, w, b, rm, rv = (a.astype(np.float32) for a in (x, w, b, rm, rv))
    xt = minicnn.tensor(x, requires_grad=True)
    wt, bt = minicnn.tensor(w, requires_grad=True), minicnn.tensor(b, requires_grad=True)
    y = F.batch_norm(xt, rm, rv, wt, bt, training=training)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert xt.grad.dtype == wt.grad.dtype == bt.grad.dtype == rm.dtype == rv.dtype == np.float32


def test_batch_norm_channels_last_input_gives_same_result():
    x, w, b, rm, rv = bn_inputs((3, 4, 2, 5), np.random.default_rng(12))
    g = np.random.default_rng(13).standard_normal(x.shape)
    outs = []
    for layout in (lambda a: a, channels_last):
        xt = minicnn.tensor(layout(x), requires_grad=True)
        y = F.batch_norm(xt, rm.copy(), rv.copy(), w, b, training=True)
        y.backward(layout(g))
        outs.append((y.data, xt.grad))
    for a, c in zip(*outs):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_in_many_row_blocks_equals_one_block(monkeypatch, training):
    # The op works through row blocks on all cores (speed.row_blocks); tiny blocks
    # (7 rows each; 30 rows, so the last block is ragged) must give one block's numbers.
    x, w, b, rm, rv = bn_inputs((3, 4, 5, 2), np.random.default_rng(14))
    g = np.random.default_rng(15).standard_normal(x.shape)
    monkeypatch.setattr(minicnn.speed, "cpu_threads", lambda: 2)     # threads even on a 1-core runner
    outs = []
    for block_bytes in (1 << 30, 7 * 4 * 8):
        monkeypatch.setattr(minicnn.speed, "BLOCK_BYTES", block_bytes)
        xt = minicnn.tensor(channels_last(x), requires_grad=True)
        wt, bt = minicnn.tensor(w, requires_grad=True), minicnn.tensor(b, requires_grad=True)
        rm2, rv2 = rm.copy(), rv.copy()
        y = F.batch_norm(xt, rm2, rv2, wt, bt, training=training)
        y.backward(channels_last(g))
        outs.append((y.data, xt.grad, wt.grad, bt.grad, rm2, rv2))
    for a, c in zip(*outs):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


def test_batch_norm_float32_with_a_large_mean_stays_close_to_float64():
    # A float32 mean of values around 100 is off by ~1e-5 of the spread, and
    # sum(g * X) - mu * sum(g) cancels two numbers 100 times larger than dgamma.
    # The corrected two-pass mean and dgamma summed from g * (X - mu) keep y within
    # 3e-6 and dgamma within 4e-6 of float64 (without them: 2.6e-5 and 1e-4 to 3e-4).
    rng = np.random.default_rng(16)
    x = 100.0 + rng.standard_normal((128, 4, 16, 16))
    w, b = rng.random(4) + 0.5, rng.random(4)
    g = rng.standard_normal(x.shape)
    results = []
    for dtype in (np.float64, np.float32):
        xt = minicnn.tensor(x.astype(dtype), requires_grad=True)
        wt, bt = minicnn.tensor(w.astype(dtype), requires_grad=True), minicnn.tensor(b.astype(dtype), requires_grad=True)
        y = F.batch_norm(xt, None, None, wt, bt, training=True)
        y.backward(g.astype(dtype))
        results.append((y.data, xt.grad, wt.grad, bt.grad))
    for name, a64, a32 in zip(("y", "dx", "dgamma", "dbeta"), *results):
        assert np.abs(a32 - a64).max() < 1e-5 * np.abs(a64).max(), name


def test_batch_norm_eval_backward_uses_the_statistics_of_its_forward():
    # A training step may update the running buffers in place between an eval-mode
    # forward and its backward; the backward must still use the forward's statistics.
    x, w, b, rm, rv = bn_inputs((4, 3, 2, 2), np.random.default_rng(20))
    g = np.random.default_rng(21).standard_normal(x.shape)
    grads = []
    for update_in_between in (False, True):
        rm2, rv2 = rm.copy(), rv.copy()
        wt = minicnn.tensor(w, requires_grad=True)
        y = F.batch_norm(minicnn.tensor(x, requires_grad=True), rm2, rv2, wt, None, training=False)
        if update_in_between:
            F.batch_norm(minicnn.tensor(x * 3 + 1), rm2, rv2, training=True, momentum=0.9)
        y.backward(g)
        grads.append(wt.grad)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------
def test_batch_norm_errors():
    x = np.zeros((4, 3, 2, 2))
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\) .* got \(4,\)"):
        F.batch_norm(x, np.zeros(4), rv, training=True)
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.batch_norm(x, rm, rv, np.ones(2), training=True)
    with pytest.raises(ValueError, match=r"more than one value per channel"):
        F.batch_norm(np.zeros((1, 3)), rm, rv, training=True)
    with pytest.raises(ValueError, match=r"input must be \(N, C\) or \(N, C, H, W\), got shape \(3,\)"):
        F.batch_norm(np.zeros(3), rm, rv)
    with pytest.raises(ValueError, match=r"give both running_mean and running_var"):
        F.batch_norm(x, rm, None, training=True)
    with pytest.raises(ValueError, match=r"running_var is a buffer and must not require grad"):
        F.batch_norm(x, rm, minicnn.tensor(rv, requires_grad=True))
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        F.batch_norm(x, rm, rv, training=True, momentum=1.5)
