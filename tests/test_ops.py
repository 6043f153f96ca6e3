"""Every basic op: values against NumPy formulas, gradients against central
differences (float64, hypothesis-drawn shapes incl. broadcasting), and
PyTorch as a second oracle when it is installed."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import minicnn.functional as F
from minicnn import gradcheck, tensor
from minicnn.backend import to_device

small_shape = array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
pair_shapes = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=4)
seeds = st.integers(0, 2**16)


def randn(seed, shape, positive=False, apart=False):
    rng = np.random.default_rng(seed)
    if apart:  # distinct values at least 0.1 apart: no ties or kinks within eps
        n = int(np.prod(shape))
        return (rng.permutation(n) - (n - 1) / 2.0).reshape(shape) * 0.1 + 0.037
    a = rng.standard_normal(shape)
    return np.abs(a) + 0.5 if positive else a


def check(fn, *arrays, **kw):
    rep = gradcheck(fn, list(arrays), **kw)
    assert rep.passed, rep


# -------------------------------------------------------------- arithmetic
@given(shapes=pair_shapes, seed=seeds)
def test_binary_ops_broadcast(shapes, seed):
    sa, sb = shapes.input_shapes
    a, b = randn(seed, sa), randn(seed + 1, sb, positive=True)
    np.testing.assert_allclose((tensor(a) + tensor(b)).data, a + b)
    np.testing.assert_allclose((tensor(a) - tensor(b)).data, a - b)
    np.testing.assert_allclose((tensor(a) * tensor(b)).data, a * b)
    np.testing.assert_allclose((tensor(a) / tensor(b)).data, a / b)
    check(lambda x, y: x + y, a, b)
    check(lambda x, y: x - y, a, b)
    check(lambda x, y: x * y, a, b)
    check(lambda x, y: x / y, a, b)
    check(lambda x, y: y ** x, a, b)


@given(shape=small_shape, seed=seeds, p=st.sampled_from([2, 3, 0.5, -1.5]))
def test_pow_scalar_and_unary(shape, seed, p):
    x = randn(seed, shape, positive=True)
    np.testing.assert_allclose((tensor(x) ** p).data, x ** p)
    check(lambda t: t ** p, x)
    check(lambda t: -t, x)
    check(lambda t: t.exp(), x)
    check(lambda t: t.log(), x)
    check(lambda t: t.sqrt(), x)
    check(lambda t: F.abs(t - 1.25), x)
    check(lambda t: 3.0 - t / 2.0 + 1 / t, x)


@given(data=st.data())
def test_matmul_shapes(data):
    n, k, m = (data.draw(st.integers(1, 4)) for _ in range(3))
    batch = data.draw(st.sampled_from([(), (2,), (2, 1), (1, 3)]))
    batch_b = data.draw(st.sampled_from([(), (1,), batch]))
    a = randn(data.draw(seeds), batch + (n, k))
    b = randn(data.draw(seeds), batch_b + (k, m))
    np.testing.assert_allclose((tensor(a) @ tensor(b)).data, a @ b)
    check(lambda x, y: x @ y, a, b)
    v = randn(1, (k,))
    check(lambda x, y: x @ y, a, v)
    check(lambda x, y: x @ y, v, b)
    check(lambda x, y: x @ y, v, randn(2, (k,)))          # vector . vector -> scalar


def test_matmul_error_names_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 6\) do not match"):
        tensor(np.ones((3, 4))) @ tensor(np.ones((5, 6)))


# ------------------------------------------------------------ reductions
@given(shape=small_shape, seed=seeds, data=st.data())
def test_reductions(shape, seed, data):
    x = randn(seed, shape, apart=True)
    nd = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-nd, nd - 1),
                               st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True).map(tuple)))
    keep = data.draw(st.booleans())
    for name in ("sum", "mean", "max"):
        got = getattr(tensor(x), name)(axis=axis, keepdims=keep).data
        np.testing.assert_allclose(got, getattr(np, name)(x, axis=axis, keepdims=keep))
        check(lambda t, name=name: getattr(t, name)(axis=axis, keepdims=keep), x)


def test_torch_style_dim_keepdim():
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(tensor(x).sum(dim=1, keepdim=True).data, x.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(F.mean(tensor(x), dim=0).data, x.mean(axis=0))
    np.testing.assert_allclose(tensor(x).max(dim=-1).data, x.max(axis=-1))


def test_max_ties_split_gradient():
    x = tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad, [0.0, 0.5, 0.5])


def test_axis_out_of_range():
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        tensor(np.ones((2, 2))).sum(axis=2)


# ------------------------------------------------------------ shape ops
@given(shape=array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=3), seed=seeds, data=st.data())
def test_shape_ops(shape, seed, data):
    x = randn(seed, shape)
    perm = data.draw(st.permutations(range(len(shape))))
    np.testing.assert_allclose(tensor(x).permute(*perm).data, x.transpose(perm))
    check(lambda t: t.permute(perm) * 1.0, x)
    check(lambda t: t.reshape(-1) * 1.0, x)
    check(lambda t: t.T, x)
    check(lambda t: t.transpose(0, 1), x)
    check(lambda t: t.flatten(1), x)
    assert F.flatten(tensor(x), 1).shape == (shape[0], int(np.prod(shape[1:])))


def test_reshape_error():
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\) \(6 elements\) into shape \(4,\)"):
        tensor(np.ones((2, 3))).reshape(4)


@given(seed=seeds)
def test_indexing(seed):
    x = randn(seed, (4, 5))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 4, 6)                 # repeats: gradients must add up
    mask = x > 0
    for index in [(slice(1, 3), slice(None, None, 2)), 2, (idx,), (idx, idx % 5), mask, (Ellipsis, None, 1)]:
        np.testing.assert_allclose(tensor(x)[index].data, x[index])
        check(lambda t, index=index: t[index], x)
    check(lambda t: t[tensor(idx)], x)


@given(seed=seeds, axis=st.integers(-2, 1))
def test_concatenate_and_stack(seed, axis):
    a, b = randn(seed, (2, 3)), randn(seed + 1, (2, 3))
    np.testing.assert_allclose(F.concatenate([tensor(a), tensor(b)], axis=axis).data, np.concatenate([a, b], axis))
    np.testing.assert_allclose(F.stack([tensor(a), tensor(b)], axis=axis).data, np.stack([a, b], axis))
    check(lambda x, y: F.concatenate([x, y, x], axis=axis), a, b)
    check(lambda x, y: F.stack([x, y], dim=axis), a, b)


def test_concatenate_error():
    with pytest.raises(ValueError, match="must match except on that axis"):
        F.concatenate([tensor(np.ones((2, 3))), tensor(np.ones((3, 2)))], axis=0)


@given(seed=seeds, pw=st.sampled_from([1, ((0, 1), (2, 0)), ((1, 1), (0, 0))]))
def test_pad(seed, pw):
    x = randn(seed, (2, 3))
    np.testing.assert_allclose(F.pad(tensor(x), pw, value=-1.0).data, np.pad(x, pw, constant_values=-1.0))
    check(lambda t: F.pad(t, pw), x)


@given(shapes=pair_shapes, seed=seeds)
def test_where_and_clip(shapes, seed):
    sa, sb = shapes.input_shapes
    a, b = randn(seed, sa, apart=True), randn(seed + 1, sb)
    cond = np.broadcast_to(a > 0, np.broadcast_shapes(sa, sb))
    np.testing.assert_allclose(F.where(cond, tensor(a), tensor(b)).data, np.where(cond, a, b))
    check(lambda x, y: F.where(cond, x, y), a, b)
    check(lambda x: F.clip(x, -0.33, 0.27), a)
    check(lambda x: x.clamp(min=0.01), a)


def test_where_needs_boolean_condition():
    with pytest.raises(TypeError, match="cond must be boolean"):
        F.where(np.ones(3), tensor(np.ones(3)), tensor(np.zeros(3)))


# ---------------------------------------------------------- activations
@given(shape=small_shape, seed=seeds)
def test_activations(shape, seed):
    x = randn(seed, shape, apart=True)
    np.testing.assert_allclose(F.relu(tensor(x)).data, np.maximum(x, 0))
    np.testing.assert_allclose(F.leaky_relu(tensor(x), 0.2).data, np.where(x > 0, x, 0.2 * x))
    np.testing.assert_allclose(F.sigmoid(tensor(x)).data, 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(F.tanh(tensor(x)).data, np.tanh(x))
    check(F.relu, x)
    check(lambda t: F.leaky_relu(t, 0.2), x)
    check(F.sigmoid, x)
    check(F.tanh, x)


@given(shape=small_shape, seed=seeds, data=st.data())
def test_softmax_family(shape, seed, data):
    x = randn(seed, shape) * 3
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    sm = e / e.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(F.softmax(tensor(x), axis).data, sm)
    np.testing.assert_allclose(F.log_softmax(tensor(x), dim=axis).data, np.log(sm))
    check(lambda t: F.softmax(t, axis), x)
    check(lambda t: F.log_softmax(t, axis), x)


def test_log_softmax_is_stable():
    x = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    y = F.log_softmax(tensor(x)).data
    assert np.isfinite(y).all() and abs(y[0, 0]) < 1e-6
    assert np.isfinite(F.sigmoid(tensor(np.array([-1000.0, 1000.0]))).data).all()


# --------------------------------------------------------------- losses
@given(n=st.integers(1, 5), c=st.integers(2, 5), seed=seeds, s=st.sampled_from([0.0, 0.1]),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy(n, c, seed, s, reduction):
    x = randn(seed, (n, c)) * 2
    t = np.random.default_rng(seed).integers(0, c, n)
    logp = x - x.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    q = np.full((n, c), s / c)
    q[np.arange(n), t] += 1 - s
    per = -(q * logp).sum(1)
    want = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    np.testing.assert_allclose(F.cross_entropy(tensor(x), t, label_smoothing=s, reduction=reduction).data, want)
    check(lambda z: F.cross_entropy(z, t, label_smoothing=s, reduction=reduction), x)


def test_cross_entropy_errors():
    x = tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"targets must have shape \(3,\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\], got values from 0 to 4"):
        F.cross_entropy(x, np.array([0, 1, 4]))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C\)"):
        F.cross_entropy(tensor(np.zeros(3)), np.array([0]))


@given(shape=small_shape, seed=seeds)
def test_mse_and_linear(shape, seed):
    a, b = randn(seed, shape), randn(seed + 1, shape)
    np.testing.assert_allclose(F.mse_loss(tensor(a), tensor(b)).data, ((a - b) ** 2).mean())
    check(lambda x, y: F.mse_loss(x, y), a, b)
    check(lambda x, y: F.mse_loss(x, y, reduction="none"), a, b)
    x, w, bias = randn(seed, (3, 4)), randn(seed + 2, (5, 4)), randn(seed + 3, (5,))
    np.testing.assert_allclose(F.linear(tensor(x), tensor(w), tensor(bias)).data, x @ w.T + bias)
    check(F.linear, x, w, bias)


def test_linear_error():
    with pytest.raises(ValueError, match=r"input has 3 features .* weight expects 4"):
        F.linear(tensor(np.ones((2, 3))), tensor(np.ones((5, 4))))


def test_mse_shape_error():
    with pytest.raises(ValueError, match=r"input shape \(2,\) and target shape \(3,\) must match"):
        F.mse_loss(tensor(np.ones(2)), tensor(np.ones(3)))


# ---------------------------------------------- a 20+ op loss vs PyTorch
def _mixed_loss(lib, x, w, b, v, t):
    """The same 25-op computation written once for minicnn and torch."""
    if lib == "torch":
        import torch
        import torch.nn.functional as TF
        cat, stack, where, relu, pad = torch.cat, torch.stack, torch.where, TF.relu, TF.pad
        lsm, ce = (lambda z: TF.log_softmax(z, dim=1)), (lambda z: TF.cross_entropy(z, t, label_smoothing=0.1))
        sig, leaky = torch.sigmoid, (lambda z: TF.leaky_relu(z, 0.1))
        padw = lambda z: pad(z, (1, 0))       # noqa: E731
        clip = lambda z: torch.clamp(z, -2.0, 2.0)  # noqa: E731
    else:
        cat, stack = F.concatenate, F.stack
        where, relu = F.where, F.relu
        lsm, ce = (lambda z: F.log_softmax(z, axis=1)), (lambda z: F.cross_entropy(z, t, label_smoothing=0.1))
        sig, leaky = F.sigmoid, (lambda z: F.leaky_relu(z, 0.1))
        padw = lambda z: F.pad(z, ((0, 0), (1, 0)))   # noqa: E731
        clip = lambda z: F.clip(z, -2.0, 2.0)          # noqa: E731
    h = relu(x @ w.T + b)                        # matmul, transpose, add, relu
    h2 = leaky(h * 0.5 - v) / (1.0 + sig(h))     # mul, sub, leaky, add, sigmoid, div
    h3 = clip(h2).tanh() + (h ** 2 + 1.0).sqrt()  # clip, tanh, pow, sqrt, add
    z = cat([h3, h3.exp() * 0.1], 1)             # cat, exp, mul
    z = padw(z)[:, :6]                           # pad, index
    s = stack([z, -z], 0).sum(0) + z.mean(1, keepdims=True)   # stack, neg, sum, mean
    m = z.amax(1, keepdim=True) if lib == "torch" else z.max(axis=1, keepdims=True)
    logits = where(z > 0, z, s) - m              # where, max
    r = ce(logits) + lsm(logits).abs().mean() * 0.01 + (logits.reshape(-1) ** 2).mean() * 1e-3
    return r


def test_twenty_op_loss_matches_torch_and_central_differences(torch):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((4, 5)), rng.standard_normal((6, 5))
    b, v = rng.standard_normal(6), rng.standard_normal(6)
    t = rng.integers(0, 6, 4)
    ours = [tensor(a, requires_grad=True) for a in (x, w, b, v)]
    loss = _mixed_loss("minicnn", *ours, t)
    loss.backward()
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b, v)]
    tl = _mixed_loss("torch", *theirs, torch.tensor(t))
    tl.backward()
    np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-7)
    for o, th in zip(ours, theirs):
        np.testing.assert_allclose(o.grad, th.grad.numpy(), rtol=1e-7, atol=1e-12)
    check(lambda *a: _mixed_loss("minicnn", *a, t), x, w, b, v)


def test_ops_match_torch_elementwise(torch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4))
    for ours, theirs in [(F.sigmoid, torch.sigmoid), (F.tanh, torch.tanh),
                         (lambda z: F.softmax(z, 1), lambda z: torch.softmax(z, 1)),
                         (lambda z: F.log_softmax(z, 0), lambda z: torch.log_softmax(z, 0))]:
        a = tensor(x, requires_grad=True)
        b = torch.tensor(x, requires_grad=True)
        g = rng.standard_normal((3, 4))
        ours(a).backward(g)
        theirs(b).backward(torch.tensor(g))
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_mixed_ops_on_each_backend(xp):
    """The 25-op loss on every available backend (cupy when a GPU is present) equals the NumPy result."""
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal((4, 5)), rng.standard_normal((6, 5)), rng.standard_normal(6), rng.standard_normal(6)]
    t = rng.integers(0, 6, 4)
    device = "cpu" if xp is np else "gpu"
    ref = [tensor(a, requires_grad=True) for a in arrays]
    _mixed_loss("minicnn", *ref, t).backward()
    ours = [tensor(a).to(device).requires_grad_() for a in arrays]
    loss = _mixed_loss("minicnn", *ours, tensor(t).to(device))
    loss.backward()
    assert loss.device == device
    for o, r in zip(ours, ref):
        assert o.grad is not None and type(o.grad).__module__.split(".")[0] == xp.__name__
        np.testing.assert_allclose(to_device(o.grad, "cpu"), r.grad, rtol=1e-10, atol=1e-12)
