"""The gradient checker must pass right backwards and catch wrong ones."""
import numpy as np
import pytest

import minicnn.functional as F
from minicnn import Function, tensor
from minicnn.gradcheck import GradcheckError, gradcheck, numerical_grad


class Normalize(Function):
    """y = (x - mean(x)) / std(x) over the last axis, with the correct backward."""

    def forward(self, x):
        self.mu = x.mean(-1, keepdims=True)
        self.sd = np.sqrt(((x - self.mu) ** 2).mean(-1, keepdims=True) + 1e-5)
        self.xhat = (x - self.mu) / self.sd
        return self.xhat

    def backward(self, g):
        return (g - g.mean(-1, keepdims=True) - self.xhat * (g * self.xhat).mean(-1, keepdims=True)) / self.sd


class NormalizeForgotVarianceTerm(Normalize):
    """A classic batchnorm homework bug: the term that flows through the variance is dropped."""

    def backward(self, g):
        return (g - g.mean(-1, keepdims=True)) / self.sd


class WrongSquare(Function):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return g * self.x          # should be 2 * x * g


def test_passes_correct_backward():
    x = np.random.default_rng(0).standard_normal((3, 5))
    rep = gradcheck(Normalize.apply, [x])
    assert rep.passed and bool(rep)
    assert rep.inputs[0].max_abs_err < 1e-8


def test_catches_planted_wrong_backward():
    x = np.random.default_rng(0).standard_normal((2, 4))
    rep = gradcheck(WrongSquare.apply, [x])
    assert not rep.passed and not bool(rep)
    r = rep.inputs[0]
    assert r.n_failed == 8
    # the worst element's analytic value is half the numeric one
    assert r.worst_analytic == pytest.approx(r.worst_numeric / 2, rel=1e-6)
    text = str(rep)
    assert "FAILED" in text and "input 0 (2, 4)" in text and "worst at" in text


def test_random_upstream_catches_bug_that_sum_hides():
    x = np.random.default_rng(1).standard_normal((3, 6))
    # With an all-ones upstream gradient (checking sum(y)) the missing term is invisible ...
    t = tensor(x, requires_grad=True)
    NormalizeForgotVarianceTerm.apply(t).backward(np.ones((3, 6)))
    np.testing.assert_allclose(t.grad, numerical_grad(lambda a: Normalize.apply(tensor(a)), x), atol=1e-6)
    # ... but gradcheck's random upstream gradient exposes it.
    assert not gradcheck(NormalizeForgotVarianceTerm.apply, [x]).passed


def test_raise_on_fail_carries_report():
    with pytest.raises(GradcheckError, match="FAILED") as info:
        gradcheck(WrongSquare.apply, [np.ones(3)], raise_on_fail=True)
    assert not info.value.report.passed


def test_numerical_grad_of_known_function():
    x = np.array([0.3, -1.2, 2.0])
    np.testing.assert_allclose(numerical_grad(lambda a: (a ** 3).sum(), x), 3 * x ** 2, rtol=1e-8)
    g = np.array([1.0, 2.0, -1.0])
    np.testing.assert_allclose(numerical_grad(lambda a: np.sin(a), x, grad_output=g), np.cos(x) * g, rtol=1e-8)
    with pytest.raises(TypeError, match="float64"):
        numerical_grad(lambda a: a, x.astype(np.float32))


def test_only_flagged_inputs_are_checked_and_originals_untouched():
    rng = np.random.default_rng(2)
    w = tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    x = tensor(rng.standard_normal((2, 4)).astype(np.float32))
    before = w.data.copy()
    rep = gradcheck(lambda x, w: F.linear(x, w), [x, w])
    assert [r.index for r in rep.inputs] == [1] and rep.passed
    np.testing.assert_array_equal(w.data, before)
    assert w.grad is None


def test_missing_gradient_is_reported():
    class Detached(Function):
        def forward(self, x, y):
            return x + y

        def backward(self, g):
            return g, None

    rep = gradcheck(Detached.apply, [np.ones(2), np.ones(2)])
    assert not rep.passed
    assert "no gradient" in str(rep)


def test_no_floating_input():
    with pytest.raises(ValueError, match="no floating input"):
        gradcheck(lambda t: t, [np.arange(3)])
