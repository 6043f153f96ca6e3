"""The gradient checker must pass right backwards and catch wrong ones: inputs and a Module's
parameters (by name, in float64, the caller's module unchanged), the report, kinks, sampling."""
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn
import minicnn.functional as F
from minicnn import Function, nn, no_grad, tensor
from minicnn.gradcheck import GradcheckError, gradcheck, module_in_float64, numerical_grad


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


class Affine(Function):
    """y = x @ w.T + b.   dx = g @ w,  dw = g.T @ x,  db = sum_n g.  ``scale_w``/``scale_b`` plant bugs."""

    scale_w, scale_b = 1.0, 1.0

    def forward(self, x, w, b):
        self.x, self.w = x, w
        return x @ w.T + b

    def backward(self, g):
        return g @ self.w, self.scale_w * (g.T @ self.x), self.scale_b * g.sum(0)


class AffineWrongWeight(Affine):
    scale_w = 2.0              # the weight gradient is twice what it should be


class AffineWrongBias(Affine):
    scale_b = 0.5


class MyLinear(nn.Module):
    """A user's layer: float32 parameters, a user Function inside."""

    op = Affine

    def __init__(self, fin, fout, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.weight = nn.Parameter(rng.standard_normal((fout, fin)).astype(np.float32))
        self.bias = nn.Parameter(rng.standard_normal(fout).astype(np.float32))

    def forward(self, x):
        return self.op.apply(x, self.weight, self.bias)


def relu_apart(rng, shape):
    """Values well away from 0 (no kink within a step)."""
    a = rng.standard_normal(shape)
    return np.where(a >= 0, a + 0.1, a - 0.1)


# ------------------------------------------------------------ functions
def test_passes_correct_backward():
    x = np.random.default_rng(0).standard_normal((3, 5))
    rep = gradcheck(Normalize.apply, [x])
    assert rep.passed and bool(rep)
    assert rep.inputs[0].max_abs_err < 1e-8
    assert rep.inputs[0].worst_ratio < 0.1


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
    assert "analytic/numeric = 0.5" in text


def test_report_names_the_function_class_not_apply():
    x = np.random.default_rng(0).standard_normal((2, 3))
    for fn in (WrongSquare.apply, WrongSquare):       # the class itself works too
        rep = gradcheck(fn, [x])
        assert rep.name == "WrongSquare"
        assert str(rep).startswith("gradcheck WrongSquare: FAILED")
        assert "apply" not in str(rep).splitlines()[0]


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
    np.testing.assert_array_equal(x, [0.3, -1.2, 2.0])      # restored after the perturbations


def test_only_flagged_inputs_are_checked_and_originals_untouched():
    rng = np.random.default_rng(2)
    w = tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    x = tensor(rng.standard_normal((2, 4)).astype(np.float32))
    before = w.data.copy()
    rep = gradcheck(lambda x, w: F.linear(x, w), [x, w])
    assert [r.index for r in rep.inputs] == [1] and rep.passed
    np.testing.assert_array_equal(w.data, before)
    assert w.grad is None and w.dtype == np.float32


def test_unflagged_tensors_are_all_checked_when_none_is_flagged():
    rng = np.random.default_rng(2)
    rep = gradcheck(lambda x, w: F.linear(x, w), [tensor(rng.standard_normal((2, 4))),
                                                  tensor(rng.standard_normal((3, 4)))])
    assert [r.index for r in rep.inputs] == [0, 1] and rep.passed


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


def test_works_inside_no_grad():
    x = np.random.default_rng(0).standard_normal((2, 3))
    with no_grad():
        assert gradcheck(Normalize.apply, [x]).passed
        assert not gradcheck(WrongSquare.apply, [x]).passed


@pytest.mark.parametrize("kw, match", [
    (dict(eps=0), "eps"), (dict(eps=-1e-3), "eps"), (dict(eps=float("nan")), "eps"),
    (dict(atol=-1e-6), "atol"), (dict(rtol=-0.1), "rtol"), (dict(sample=0), "sample"),
    (dict(sample=2.5), "sample")])
def test_bad_settings_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        gradcheck(Normalize.apply, [np.ones((2, 3))], **kw)


# ------------------------------------------------------ the report's numbers
class PlantedError(Function):
    """y = x * c; backward returns c * g + ``err`` (a fixed planted error per element)."""

    err = None

    def forward(self, x, c):
        self.c = c
        return x * c

    def backward(self, g):
        return g * self.c + type(self).err, None


def test_worst_is_the_element_closest_to_failing_not_the_largest_error():
    # Element 0: big gradient (|numeric| ~ 100), abs error 5e-3 -> ratio 5e-3 / (1e-6 + 1e-2) ~ 0.5.
    # Element 1: small gradient (~ 0.01), abs error 9e-7 -> ratio 9e-7 / (1e-6 + 1e-6) = 0.45 ... make it 0.9.
    x = np.array([1.0, 1.0])
    c = np.array([100.0, 0.01])

    class P(PlantedError):
        pass

    # upstream g is random (seed 0); numeric = g * c. Put errors relative to that.
    g = np.random.default_rng(0).standard_normal(2)
    numeric = g * c
    tol = 1e-6 + 1e-4 * np.abs(numeric)
    P.err = np.array([0.5, 0.9]) * tol                 # ratios 0.5 and 0.9: both pass
    rep = gradcheck(P.apply, [tensor(x, requires_grad=True), c], name="planted", seed=0)
    r = rep.inputs[0]
    assert rep.passed
    assert np.abs(P.err[0]) > np.abs(P.err[1])        # the largest absolute error is element 0 ...
    assert r.worst_index == (1,)                       # ... but element 1 is closest to failing
    assert r.worst_ratio == pytest.approx(0.9, rel=1e-3)
    assert "0.9x its tolerance" in str(rep) and "closest to failing" in str(rep)
    # a third of the way over the tolerance fails, and the report says by how much
    P.err = np.array([0.5, 1.3]) * tol
    r = gradcheck(P.apply, [tensor(x, requires_grad=True), c], seed=0).inputs[0]
    assert not r.passed and r.n_failed == 1 and r.worst_index == (1,)
    assert r.worst_ratio == pytest.approx(1.3, rel=1e-3)


def test_large_relative_error_near_zero_is_explained_as_fine():
    x, c = np.array([1.0, 1.0]), np.array([1.0, 2e-9])
    g = np.random.default_rng(0).standard_normal(2)

    class P(PlantedError):
        err = np.array([0.0, 0.15 * abs(g[1] * 2e-9)])   # 15% relative error at |numeric| ~ 1e-9

    rep = gradcheck(P.apply, [tensor(x, requires_grad=True), c], seed=0)
    r = rep.inputs[0]
    assert rep.passed and r.max_rel_err > 0.1 and r.rel_index == (1,)
    text = str(rep)
    assert re.search(r"max rel err \d\.\de-01 at \(1,\), where \|numeric\| is \d\.\de-(09|10): ", text), text
    assert "within atol=1e-06, fine" in text and "near zero" in text


# ------------------------------------------------------ modules
def test_module_in_float32_with_float64_or_float32_input():
    minicnn.nn.init.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    for inp in (x, x.astype(np.float32), tensor(x.astype(np.float32))):
        rep = gradcheck(conv, [inp])
        assert rep.passed, rep
        assert [c.name for c in rep.checks] == ["input 0", "weight", "bias"]
        assert [c.name for c in rep.parameters] == ["weight", "bias"]
        assert [(c.name, c.kind, c.index) for c in rep.inputs] == [
            ("input 0", "input", 0), ("weight", "parameter", None), ("bias", "parameter", None)]
        assert rep["weight"].shape == (3, 2, 3, 3) and rep[0].shape == (2, 2, 4, 4)
        text = str(rep)
        assert "parameter weight (3, 2, 3, 3)" in text and "parameter bias (3,)" in text
        assert "input 1" not in text
    assert conv.weight.dtype == np.float32 and conv.weight.grad is None


@pytest.mark.parametrize("op, bad", [(Affine, None), (AffineWrongWeight, "weight"), (AffineWrongBias, "bias")])
def test_module_with_a_wrong_parameter_gradient_fails_on_that_parameter(op, bad):
    layer = MyLinear(4, 3)
    layer.op = op
    rep = gradcheck(layer, [np.random.default_rng(1).standard_normal((5, 4))])
    assert rep.passed == (bad is None), rep
    for c in rep.checks:
        assert c.passed == (c.name != bad), c
    if bad:
        r = rep[bad]
        assert r.n_failed == r.n_elements and r.kinks == []
        assert r.worst_analytic == pytest.approx(r.worst_numeric * op.scale_w * op.scale_b, rel=1e-6)
        assert f"[FAIL] parameter {bad}" in str(rep)


def test_sequential_parameters_by_dotted_name():
    minicnn.nn.init.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Sequential(nn.Linear(5, 2), nn.Sigmoid()))
    rep = gradcheck(model, [np.random.default_rng(0).standard_normal((3, 4))])
    assert rep.passed, rep
    assert [c.name for c in rep.parameters] == ["0.weight", "0.bias", "2.0.weight", "2.0.bias"]
    assert "parameter 2.0.weight (2, 5)" in str(rep)


def test_wrong_backward_deep_inside_a_model_is_caught():
    layer = MyLinear(4, 3)
    layer.op = AffineWrongWeight
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), layer)
    rep = gradcheck(model, [np.random.default_rng(0).standard_normal((2, 6))])
    assert not rep.passed
    failed = [c.name for c in rep.checks if not c.passed]
    assert failed == ["2.weight"]        # input, 0.weight, 0.bias and 2.bias flow through dx: correct


def test_frozen_parameters_are_listed_and_params_selects():
    layer = MyLinear(4, 3)
    x = np.random.default_rng(0).standard_normal((2, 4))
    layer.bias.requires_grad = False
    rep = gradcheck(layer, [x])
    assert [c.name for c in rep.parameters] == ["weight"] and rep.not_checked == ["bias"]
    assert "not checked (requires_grad=False): bias" in str(rep)
    assert layer.bias.requires_grad is False
    layer.bias.requires_grad = True
    assert [c.name for c in gradcheck(layer, [x], params=["bias"]).parameters] == ["bias"]
    assert [c.name for c in gradcheck(layer, [x], params=False).checks] == ["input 0"]
    with pytest.raises(ValueError, match="'gamma'.*weight, bias"):
        gradcheck(layer, [x], params=["gamma"])
    with pytest.raises(TypeError, match="instance"):
        gradcheck(MyLinear, [x])


@pytest.mark.parametrize("training", [True, False])
def test_small_model_with_batchnorm_dropout_and_a_user_function(training):
    """What ``doctor`` does: a whole small model in float64, in train or eval mode."""
    minicnn.nn.init.manual_seed(2)
    head = MyLinear(8, 3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.25), head)
    model.train(training)
    x = np.random.default_rng(3).random((3, 1, 4, 4)).astype(np.float32)
    bn = model[1]
    bn.running_mean.data[...] = [0.1, -0.2]
    bn.running_var.data[...] = [1.5, 0.7]
    state = {k: v.copy() for k, v in model.state_dict().items()}
    rng_state = np.random.get_state()
    rep = gradcheck(model, [x])
    assert rep.passed, rep
    assert [c.name for c in rep.parameters] == ["0.weight", "0.bias", "1.weight", "1.bias", "6.weight", "6.bias"]
    for k, v in model.state_dict().items():       # running statistics untouched, float32 kept
        np.testing.assert_array_equal(v, state[k])
        assert v.dtype == state[k].dtype
    assert model.training is training and bn.training is training
    after = np.random.get_state()
    assert after[0] == rng_state[0] and np.array_equal(after[1], rng_state[1]) and after[2] == rng_state[2]


def test_dropout_in_train_mode_sees_one_mask_per_check():
    """The global random state is replayed before each evaluation, so dropout's mask is fixed."""
    model = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5)).train()
    assert gradcheck(model, [np.random.default_rng(0).standard_normal((4, 6))]).passed
    assert gradcheck(lambda t: F.dropout(t, 0.4), [np.random.default_rng(1).standard_normal((3, 5))]).passed


# --------------------------------------------- the caller's module is unchanged
def snapshot(model):
    """Everything a check must not change."""
    out = {"mode": [m.training for m in model.modules()],
           "hooks": [dict(m._forward_hooks) for m in model.modules()],
           "attrs": [set(m.__dict__) for m in model.modules()]}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        out[name] = (t, t.data, t.data.copy(), t.dtype, None if t.grad is None else (t.grad, t.grad.copy()),
                     t.requires_grad)
    return out


def assert_unchanged(model, snap):
    assert [m.training for m in model.modules()] == snap["mode"]
    assert [dict(m._forward_hooks) for m in model.modules()] == snap["hooks"]
    assert [set(m.__dict__) for m in model.modules()] == snap["attrs"]
    now = dict(list(model.named_parameters()) + list(model.named_buffers()))
    assert set(now) == {k for k in snap if k not in ("mode", "hooks", "attrs")}
    for name, t in now.items():
        obj, arr, values, dtype, grad, rg = snap[name]
        assert t is obj and t.data is arr and t.dtype == dtype and t.requires_grad == rg, name
        np.testing.assert_array_equal(t.data, values)
        if grad is None:
            assert t.grad is None, name
        else:
            assert t.grad is grad[0], name
            np.testing.assert_array_equal(t.grad, grad[1])


def model_for_state_tests(training, freeze, with_grads):
    minicnn.nn.init.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 2))
    model.train(training)
    if freeze:
        model[0].bias.requires_grad = False
    if with_grads:
        for p in model.parameters():
            p.grad = np.full(p.shape, 0.25, dtype=p.dtype)
    model[4].register_forward_hook(lambda m, i, o: None)
    return model


@settings(max_examples=8)
@given(training=st.booleans(), freeze=st.booleans(), with_grads=st.booleans(), seed=st.integers(0, 100))
def test_caller_module_unchanged_after_a_check(training, freeze, with_grads, seed):
    model = model_for_state_tests(training, freeze, with_grads)
    x = np.random.default_rng(seed).standard_normal((2, 2, 4, 4)).astype(np.float32)
    snap = snapshot(model)
    rep = gradcheck(model, [x], sample=6, seed=seed)
    assert rep.passed, rep
    assert_unchanged(model, snap)


class Exploding(nn.Module):
    """Changes itself in forward (a cache, a new buffer, its mode, a parameter array), then raises on the
    n-th call."""

    def __init__(self, fail_at):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        self.cache = x
        self.lin.weight = nn.Parameter(self.lin.weight.data * 1.0)     # replaces the Parameter object
        self.bn.eval()
        if self.calls >= self.fail_at:
            raise RuntimeError("boom")
        return self.bn(self.lin(x))


@pytest.mark.parametrize("fail_at", [1, 4])
def test_caller_module_unchanged_when_the_check_raises(fail_at):
    model = Exploding(fail_at)
    model.lin.weight.grad = np.ones((2, 3), dtype=np.float32)
    snap = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        gradcheck(model, [np.random.default_rng(0).standard_normal((4, 3))])
    assert_unchanged(model, snap)
    assert model.calls == 0 and not hasattr(model, "cache")


def test_module_in_float64_context_restores_on_error():
    model = model_for_state_tests(True, False, True)
    snap = snapshot(model)
    with pytest.raises(KeyError):
        with module_in_float64(model):
            assert all(p.dtype == np.float64 and p.grad is None for p in model.parameters())
            assert model[1].running_mean.dtype == np.float64
            model[1].running_mean.data += 1.0
            model.eval()
            raise KeyError("inside")
    assert_unchanged(model, snap)


def test_module_on_the_gpu_stays_there(xp):
    model = model_for_state_tests(True, False, False)
    if xp is not np:
        model.to("gpu")
    snap = snapshot(model)
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 2, 4, 4)), dtype=xp.float32)
    assert gradcheck(model, [x], sample=5).passed
    assert_unchanged(model, snap)
    assert all(minicnn.get_array_module(p.data) is xp for p in model.parameters())


# ---------------------------------------------------------------- kinks
class MyReLU(Function):
    """y = max(x, 0).   dx = g * [x > 0]   (``factor`` plants a bug at x > 0)."""

    factor = 1.0

    def forward(self, x):
        self.x = x
        return np.maximum(x, 0)

    def backward(self, g):
        return self.factor * g * (self.x > 0)


class MyReLUTwice(MyReLU):
    factor = 2.0


def kinky_input(rng):
    x = relu_apart(rng, (3, 4))
    x[0, 0], x[1, 1], x[2, 2] = 1e-7, 0.0, -4e-7      # within eps = 1e-6 of the kink at 0
    return x


def test_kink_is_reported_not_counted_as_failure():
    rep = gradcheck(MyReLU.apply, [kinky_input(np.random.default_rng(0))])
    assert rep.passed, rep
    r = rep.inputs[0]
    assert sorted(k["index"] for k in r.kinks) == [(0, 0), (1, 1), (2, 2)]
    assert all(k["accepted"] for k in r.kinks)
    assert rep.kinks == [("input 0", (0, 0)), ("input 0", (1, 1)), ("input 0", (2, 2))]
    text = str(rep)
    assert "non-differentiable point at index (0, 0)" in text
    assert "not counted as a failure of the backward" in text
    # without the detection the same correct backward looks wrong at those elements
    plain = gradcheck(MyReLU.apply, [kinky_input(np.random.default_rng(0))], detect_kinks=False)
    assert not plain.passed and plain.inputs[0].n_failed >= 2


def test_wrong_gradient_at_smooth_points_still_fails_beside_kinks():
    x = kinky_input(np.random.default_rng(0))
    rep = gradcheck(MyReLUTwice.apply, [x])
    assert not rep.passed
    r = rep.inputs[0]
    smooth_positive = np.abs(x) > 1e-3
    smooth_positive &= x > 0
    assert r.n_failed >= smooth_positive.sum() >= 4     # every positive element away from the kink fails
    np.testing.assert_allclose(r.analytic[smooth_positive], 2 * r.numeric[smooth_positive], rtol=1e-6)


def test_wrong_gradient_at_a_kink_outside_both_sides_fails():
    x = np.array([1e-7, 0.5, -0.5])
    rep = gradcheck(MyReLUTwice.apply, [x], seed=3)
    k = rep.inputs[0].kinks
    assert len(k) == 1 and k[0]["index"] == (0,) and not k[0]["accepted"]
    assert not rep.passed and "NOT between them" in str(rep)
    # 1e-7 (the rejected kink) and 0.5 (twice the slope) fail; -0.5 (gradient 0) passes
    assert rep.inputs[0].n_failed == 2 and "2 out of tolerance" in str(rep)


def test_max_pool_tie_within_eps_is_a_kink():
    rng = np.random.default_rng(4)
    x = rng.permutation(16).reshape(1, 1, 4, 4) * 0.1         # values 0.1 apart: no ties ...
    x[0, 0, 0, 0] = 5.0
    x[0, 0, 0, 1] = 5.0 + 3e-7                                 # ... except a near-tie for the first max
    rep = gradcheck(lambda t: F.max_pool2d(t, 2), [x])
    assert rep.passed, rep
    kinks = {k["index"] for k in rep.inputs[0].kinks}
    assert kinks and kinks <= {(0, 0, 0, 0), (0, 0, 0, 1)}
    assert "non-differentiable point at index (0, 0, 0, " in str(rep)


def test_relu_model_with_values_near_zero_passes():
    minicnn.nn.init.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].bias.data[...] = 0
    x = np.zeros((2, 3))
    x[1] = [0.5, -0.3, 0.8]
    rep = gradcheck(model, [x])       # the first row gives pre-activations of exactly 0: kinks
    assert rep.passed, rep
    assert rep.kinks


# ------------------------------------------------------------- sampling
def test_sampled_mode_checks_k_seeded_elements_and_says_so():
    minicnn.nn.init.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    rep = gradcheck(conv, [x], sample=7, seed=11)
    assert rep.passed and rep.sampled
    for c in rep.checks:
        expected = min(7, c.n_elements)
        assert c.n_checked == expected and c.sampled == (expected < c.n_elements)
        assert np.isfinite(c.numeric).sum() == expected
    assert "sampled 7 of 384 elements (seed 11)" in str(rep) and "sampled 7 of 108" in str(rep)
    same = gradcheck(conv, [x], sample=7, seed=11)
    other = gradcheck(conv, [x], sample=7, seed=12)
    idx = lambda r: np.flatnonzero(np.isfinite(r["weight"].numeric))        # noqa: E731
    np.testing.assert_array_equal(idx(rep), idx(same))
    assert not np.array_equal(idx(rep), idx(other))


def test_sampled_mode_still_catches_a_wrong_weight():
    layer = MyLinear(30, 20)
    layer.op = AffineWrongWeight
    rep = gradcheck(layer, [np.random.default_rng(0).standard_normal((4, 30))], sample=5)
    assert not rep.passed and not rep["weight"].passed and rep["bias"].passed
    assert rep["weight"].n_checked == 5 and rep["weight"].n_failed == 5


# ---------------------------------------------------- property-based
@settings(max_examples=10)
@given(n=st.integers(1, 4), fin=st.integers(1, 5), fout=st.integers(1, 4), seed=st.integers(0, 10_000),
       scale=st.sampled_from([0.0, 0.5, 1.5, 2.0, -1.0]), which=st.sampled_from(["weight", "bias"]))
def test_any_planted_factor_on_one_parameter_is_caught(n, fin, fout, seed, scale, which):
    op = type("Planted", (Affine,), {"scale_w": scale if which == "weight" else 1.0,
                                     "scale_b": scale if which == "bias" else 1.0})
    layer = MyLinear(fin, fout, seed=seed)
    layer.op = op
    x = np.random.default_rng(seed + 1).standard_normal((n, fin))
    good = MyLinear(fin, fout, seed=seed)
    assert gradcheck(good, [x], seed=seed).passed
    rep = gradcheck(layer, [x], seed=seed)
    assert not rep.passed and not rep[which].passed
    assert all(c.passed for c in rep.checks if c.name != which)


def test_a_forward_that_casts_to_float32_is_warned_about():
    x = np.random.default_rng(0).standard_normal((2, 3))
    rep = gradcheck(lambda t: t.astype(np.float32) * 3.0, [x])
    assert rep.warnings and "output 0 has dtype float32, not float64" in str(rep)
    assert not gradcheck(Normalize.apply, [x]).warnings


def test_report_lookup_by_name_and_position():
    rep = gradcheck(MyLinear(3, 2), [np.ones((2, 3))])
    assert rep["input 0"] is rep[0] is rep.checks[0] and rep["bias"] is rep.parameters[1]
    with pytest.raises(KeyError, match="checked: input 0, weight, bias"):
        rep["gamma"]
    with pytest.raises(KeyError):
        rep[1]


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), offsets=st.lists(st.sampled_from([0.0, 1e-7, -1e-7, 6e-7, -6e-7, 1.5e-6, -1.5e-6]),
                                                     min_size=1, max_size=4))
def test_kinks_anywhere_within_the_step_never_fail_a_correct_relu_nor_hide_a_wrong_one(seed, offsets):
    rng = np.random.default_rng(seed)
    x = relu_apart(rng, (3, 5))
    x[0, 0] = 0.7                                       # at least one smooth positive element
    spots = rng.choice(np.arange(1, 15), size=len(offsets), replace=False)
    x.reshape(-1)[spots] = offsets
    good = gradcheck(MyReLU.apply, [x], seed=seed)
    assert good.passed, good
    assert all(k["accepted"] for k in good.inputs[0].kinks)
    bad = gradcheck(MyReLUTwice.apply, [x], seed=seed)
    assert not bad.passed and bad.inputs[0].n_failed >= 1


class NanInBackward(Function):
    """y = x**2 with a correct backward except one NaN element (a 0/0 in a student's formula)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        grad = 2 * self.x * g
        grad[0, 1] = np.nan
        return grad


def test_nan_or_inf_gradient_fails_and_is_shown_as_worst():
    x = np.random.default_rng(0).standard_normal((2, 3))
    rep = gradcheck(NanInBackward.apply, [x])
    r = rep.inputs[0]
    assert not rep.passed and r.n_failed == 1 and r.worst_index == (0, 1), rep
    # a forward that gives NaN (log of a negative number) cannot be checked: it fails, never passes
    with np.errstate(invalid="ignore"):
        assert not gradcheck(F.log, [-np.abs(x) - 0.1]).passed


class ShiftDoublingInPlace(Function):
    """y = x + 1 (dx = g), with a backward that doubles g IN PLACE: wrong by a factor 2."""

    def forward(self, x):
        return x + 1

    def backward(self, g):
        g *= 2
        return g


def test_a_backward_writing_into_its_upstream_gradient_cannot_fool_the_check():
    x = np.random.default_rng(0).standard_normal((2, 3))
    rep = gradcheck(ShiftDoublingInPlace.apply, [x])
    assert not rep.passed and rep.inputs[0].n_failed == 6, rep       # the numbers are wrong too


def test_gradients_all_below_atol_are_warned_about():
    """x ~ 1e-8: WrongSquare's gradient (x instead of 2x) is within atol everywhere, so the check passes;
    the report must say that it could not have seen the bug."""
    x = np.random.default_rng(0).standard_normal((2, 3)) * 1e-8
    rep = gradcheck(WrongSquare.apply, [x])
    assert rep.passed and any("input 0: every checked gradient is within atol=1e-06 of 0" in w for w in rep.warnings)
    assert "a wrong backward would pass here too" in str(rep)
    assert not gradcheck(WrongSquare.apply, [x], atol=1e-12).passed       # the advice works
    frozen_bias = MyLinear(3, 2)
    rep = gradcheck(frozen_bias, [np.ones((2, 3))])
    assert not rep.warnings, rep


# ------------------------------------------------------------ ops that write into what they are given
class InPlaceReLU(Function):
    """The forward overwrites its input: the backward is right for the values it saw, the op is not."""

    def forward(self, x):
        self.mask = x > 0
        return np.maximum(x, 0, out=x)

    def backward(self, g):
        return g * self.mask


class InPlaceScale(Function):
    """y = 3x computed by scaling x in place (and returning it)."""

    def forward(self, x):
        x *= 3
        return x

    def backward(self, g):
        return 3 * g


class BackwardScalesSavedInput(Function):
    """y = x * x; the backward doubles the saved x in place (its input array) on the way."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        self.x *= 2
        return g * self.x


class ClipsLabels(Function):
    """y = x[labels]-like: the forward clips its integer second input in place."""

    def forward(self, x, labels):
        np.clip(labels, 0, 0, out=labels)
        return x * 2

    def backward(self, g):
        return 2 * g, None


class ClippedLinear(MyLinear):
    """A module whose forward clips its own weight in place (a "weight constraint" done wrong)."""

    def forward(self, x):
        np.clip(self.weight.data, -0.5, 0.5, out=self.weight.data)
        return super().forward(x)


@pytest.mark.parametrize("fn, inputs, stage, what", [
    (InPlaceReLU.apply, [np.random.default_rng(1).standard_normal((3, 4))], "forward", "input 0"),
    (InPlaceScale.apply, [np.random.default_rng(2).standard_normal((2, 3))], "forward", "input 0"),
    (BackwardScalesSavedInput.apply, [np.random.default_rng(3).standard_normal((2, 3))], "backward", "input 0"),
    (ClipsLabels.apply, [np.random.default_rng(4).standard_normal(3), np.array([2, 1, 0])], "forward", "input 1"),
    (ClippedLinear(3, 2), [np.random.default_rng(5).standard_normal((4, 3))], "forward", "parameter weight"),
])
def test_a_pass_that_writes_into_its_inputs_fails_and_says_so(fn, inputs, stage, what):
    originals = [a.copy() for a in inputs]
    rep = gradcheck(fn, inputs)
    assert not rep.passed and not rep and rep.kinks == [], rep          # damage is never a "kink"
    assert any(e.startswith(f"the {stage} pass changed {what} in place") for e in rep.errors), rep.errors
    text = str(rep)
    assert f"FAIL: the {stage} pass changed {what} in place" in text and "non-differentiable" not in text
    for a, a0 in zip(inputs, originals):                                   # the caller's arrays: untouched
        np.testing.assert_array_equal(a, a0)
    with pytest.raises(GradcheckError, match=f"the {stage} pass changed {what} in place"):
        gradcheck(fn, inputs, raise_on_fail=True)


def test_in_place_relu_fails_even_where_its_damage_looked_like_kinks():
    """Inputs near 0 made the damage look like non-differentiable points; it must fail all the same."""
    x = np.random.default_rng(6).standard_normal((4, 5)) * 1e-6
    rep = gradcheck(InPlaceReLU.apply, [x])
    assert not rep.passed and rep.kinks == [] and "non-differentiable" not in str(rep)
    assert gradcheck(F.relu, [x]).passed                # the out-of-place ReLU there: kinks, and a pass


def test_a_backward_writing_into_its_upstream_gradient_is_named():
    rep = gradcheck(ShiftDoublingInPlace.apply, [np.random.default_rng(7).standard_normal((2, 3))])
    assert not rep.passed
    assert "the backward pass wrote into the upstream gradient it was given (output 0)" in str(rep)


def test_ops_that_leave_their_inputs_alone_report_no_error():
    x = relu_apart(np.random.default_rng(8), (2, 3, 4, 4))
    for fn, inputs in [(F.relu, [x]), (lambda t: F.max_pool2d(t, 2), [x]), (MyLinear(4, 2), [x[:, 0, 0]]),
                       (nn.BatchNorm2d(3), [x])]:
        rep = gradcheck(fn, inputs)
        assert rep.passed and rep.errors == [], rep
