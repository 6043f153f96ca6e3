"""minicnn.nn.utils: L1/L2 penalties equal their formulas and gradients; max-norm keeps rows inside the ball."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn
import minicnn.functional as F
from minicnn import nn, optim, tensor
from minicnn.models import resnet20, simple_cnn
from minicnn.nn.utils import l1_penalty, l2_penalty, max_norm_, penalized_parameters


def test_penalized_parameters_leave_out_biases_and_batchnorm_by_default():
    model = simple_cnn()
    chosen = penalized_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in chosen] == ["0.weight", "4.weight", "8.weight", "13.weight"]
    with_bias = {names[id(p)] for p in penalized_parameters(model, include_bias=True)}
    assert "13.bias" in with_bias and "1.weight" not in with_bias
    with_norm = {names[id(p)] for p in penalized_parameters(model, include_norm=True)}
    assert {"1.weight", "1.bias"} <= with_norm and "13.bias" not in with_norm
    everything = penalized_parameters(model, include_bias=True, include_norm=True)
    assert len(everything) == len(list(model.parameters()))
    # frozen parameters are left out; every chosen one of a ResNet is a conv or linear weight
    model[0].weight.requires_grad = False
    assert names[id(penalized_parameters(model)[0])] == "4.weight"
    assert all(p.ndim >= 2 for p in penalized_parameters(resnet20()))


def test_penalties_equal_their_formulas_and_gradients():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((2, 3, 3, 3))
    pa, pb = nn.Parameter(a.copy()), nn.Parameter(b.copy())
    l2 = l2_penalty([pa, pb])
    l1 = l1_penalty([pa, pb])
    assert l2.item() == pytest.approx((a ** 2).sum() + (b ** 2).sum(), rel=1e-12)
    assert l1.item() == pytest.approx(np.abs(a).sum() + np.abs(b).sum(), rel=1e-12)
    (2.0 * l2 + 3.0 * l1).backward()
    np.testing.assert_allclose(pa.grad, 4 * a + 3 * np.sign(a), rtol=1e-12)
    np.testing.assert_allclose(pb.grad, 4 * b + 3 * np.sign(b), rtol=1e-12)
    assert l2_penalty(pa).item() == pytest.approx((a ** 2).sum())           # a single Tensor works too


def test_penalties_gradcheck_float64():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.2, 1.0, (3, 4)) * rng.choice([-1, 1], (3, 4))        # away from |w|'s kink at 0
    b = rng.uniform(0.2, 1.0, (2, 5)) * rng.choice([-1, 1], (2, 5))
    assert minicnn.gradcheck(lambda x, y: l2_penalty([x, y]), [a, b]).passed
    assert minicnn.gradcheck(lambda x, y: l1_penalty([x, y]), [a, b]).passed


def test_l2_penalty_is_sgd_weight_decay():
    """loss + lambda/2 * sum w^2 with plain SGD takes exactly the step of SGD(weight_decay=lambda)."""
    rng = np.random.default_rng(2)
    x, y = tensor(rng.standard_normal((8, 5))), tensor(rng.integers(0, 3, 8))
    w0 = rng.standard_normal((3, 5))
    lam = 0.1
    p1, p2 = nn.Parameter(w0.copy()), nn.Parameter(w0.copy())
    loss1 = F.cross_entropy(F.matmul(x, F.transpose(p1)), y) + lam / 2 * l2_penalty([p1])
    loss1.backward()
    optim.SGD([p1], lr=0.5).step()
    F.cross_entropy(F.matmul(x, F.transpose(p2)), y).backward()
    optim.SGD([p2], lr=0.5, weight_decay=lam).step()
    np.testing.assert_allclose(p1.data, p2.data, rtol=1e-12, atol=1e-14)


def test_penalty_errors_are_clear():
    with pytest.raises(ValueError, match="params is empty"):
        l2_penalty([])
    with pytest.raises(TypeError, match="must be Tensors"):
        l1_penalty([np.ones(3)])
    with pytest.raises(TypeError, match="must be an nn.Module"):
        penalized_parameters([1, 2])


@settings(max_examples=40, deadline=None)
@given(shape=st.sampled_from([(5, 7), (4, 3, 3, 3), (6, 2), (3, 1, 5, 5)]), c=st.floats(0.05, 5.0),
       scale=st.floats(0.01, 3.0), seed=st.integers(0, 10 ** 6), dtype=st.sampled_from([np.float32, np.float64]))
def test_max_norm_keeps_every_row_inside_and_leaves_inside_rows_alone(shape, c, scale, seed, dtype):
    w = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
    p = nn.Parameter(w.copy())
    before = np.sqrt((w.astype(np.float64) ** 2).reshape(shape[0], -1).sum(1))
    n = max_norm_([p], c)
    after_rows = p.data.astype(np.float64).reshape(shape[0], -1)
    after = np.sqrt((after_rows ** 2).sum(1))
    assert np.all(after <= c)
    inside = before <= c
    assert n == int((~inside).sum())
    np.testing.assert_array_equal(p.data.reshape(shape[0], -1)[inside], w.reshape(shape[0], -1)[inside])
    # rows outside are scaled onto the sphere, direction kept
    np.testing.assert_allclose(after[~inside], c, rtol=1e-5)
    out = ~inside
    np.testing.assert_allclose(after_rows[out] * (before[out] / after[out])[:, None],
                               w.reshape(shape[0], -1)[out].astype(np.float64), rtol=1e-4, atol=1e-6)
    assert p.data.dtype == dtype


def test_max_norm_other_dims_whole_tensor_and_errors():
    w = np.arange(12, dtype=np.float64).reshape(3, 4) - 5
    p = nn.Parameter(w.copy())
    max_norm_(p, 2.0, dim=1)                       # each column
    assert np.all(np.sqrt((p.data ** 2).sum(0)) <= 2.0)
    q = nn.Parameter(w.copy())
    assert max_norm_([q], 1.0, dim=None) == 1      # the whole tensor is one vector
    assert np.sqrt((q.data ** 2).sum()) <= 1.0
    np.testing.assert_allclose(q.data / np.linalg.norm(q.data), w / np.linalg.norm(w))
    with pytest.raises(ValueError, match="c must be a positive number, got 0"):
        max_norm_([p], 0)
    with pytest.raises(ValueError, match="dim 2 is out of range"):
        max_norm_([p], 1.0, dim=2)


def test_max_norm_after_a_training_step():
    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    opt = optim.SGD(model.parameters(), lr=5.0)
    rng = np.random.default_rng(0)
    loss = F.cross_entropy(model(tensor(rng.standard_normal((16, 10)).astype(np.float32))),
                           tensor(rng.integers(0, 3, 16)))
    loss.backward()
    opt.step()
    params = penalized_parameters(model)
    max_norm_(params, 1.0)
    for p in params:
        assert np.all(np.linalg.norm(p.data.astype(np.float64), axis=1) <= 1.0)
