"""dropout: inverted scaling, statistics, the mask in backward, eval identity, seeding, errors."""
import numpy as np
import pytest

import minicnn
import minicnn.functional as F
from minicnn.backend import to_device


def np_(a):
    return to_device(a.data if isinstance(a, minicnn.Tensor) else a, "cpu")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(xp, p):
    minicnn.backend.seed_global(1234)          # the global RNG, seeded: the same draw whatever ran before
    x = xp.ones((200, 500), dtype=np.float32)
    y = np_(F.dropout(x, p, training=True))
    values = np.unique(y)
    np.testing.assert_allclose(values, [0.0, 1.0 / (1.0 - p)], rtol=1e-6)
    kept = (y != 0).mean()
    assert abs(kept - (1 - p)) < 4 * np.sqrt(p * (1 - p) / y.size)     # within 4 standard errors
    # inverted dropout keeps E[y] = x; y = mask / (1 - p) has variance p / (1 - p)
    assert abs(y.mean() - 1.0) < 4 * np.sqrt(p / (1 - p) / y.size)


def test_dropout_backward_uses_the_forward_mask():
    rng = np.random.default_rng(0)
    x = minicnn.tensor(rng.standard_normal((6, 7)) + 5.0, requires_grad=True)   # no zeros in x
    y = F.dropout(x, 0.4)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    mask = y.data / x.data          # 0 or 1/(1-p)
    np.testing.assert_allclose(x.grad, g * mask, rtol=1e-12)
    assert set(np.round(np.unique(mask), 9)) <= {0.0, round(1 / 0.6, 9)}


def test_dropout_gradcheck_with_a_fixed_mask():
    x = np.random.default_rng(1).standard_normal((3, 4, 2))
    report = minicnn.gradcheck(lambda t: F.dropout(t, 0.3, rng=np.random.default_rng(7)), [x])
    assert report.passed, report


def test_dropout_eval_and_p0_are_the_identity():
    x = minicnn.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    y = F.dropout(np.ones(3), 0.5, training=False)
    assert isinstance(y, minicnn.Tensor)
    np.testing.assert_array_equal(y.data, np.ones(3))


def test_dropout_is_seedable():
    x = np.ones((50, 50), np.float32)
    np.random.seed(123)
    a = F.dropout(x, 0.5).data
    np.random.seed(123)
    b = F.dropout(x, 0.5).data
    np.testing.assert_array_equal(a, b)
    c = F.dropout(x, 0.5, rng=np.random.default_rng(5)).data
    d = F.dropout(x, 0.5, rng=np.random.default_rng(5)).data
    np.testing.assert_array_equal(c, d)
    assert not np.array_equal(a, c)


def test_dropout_float32_stays_float32():
    x = minicnn.tensor(np.ones((4, 5), np.float32), requires_grad=True)
    y = F.dropout(x, 0.25)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == np.float32


def test_dropout_statistics_match_torch(torch):
    p = 0.3
    minicnn.backend.seed_global(4321)
    torch.manual_seed(4321)
    ours = F.dropout(np.ones((400, 400), np.float32), p).data
    theirs = torch.nn.functional.dropout(torch.ones(400, 400), p, training=True).numpy()
    np.testing.assert_allclose(np.unique(ours), np.unique(theirs), rtol=1e-6)      # {0, 1/(1-p)}
    assert abs((ours == 0).mean() - (theirs == 0).mean()) < 0.01
    assert abs(ours.mean() - theirs.mean()) < 0.02


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, "0.5", True])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match=r"dropout: p must be a probability in \[0, 1\)"):
        F.dropout(np.ones(3), p)


def test_dropout_rejects_integer_input():
    with pytest.raises(TypeError, match=r"dropout: input must be floating"):
        F.dropout(np.ones(3, dtype=np.int64), 0.5)
