"""Tests of minicnn.attacks: FGSM and PGD (closed forms on a linear model, invariants, bad input).

The helpers at the top (small models, the model-unchanged check) are also
imported by the other test_attacks_*.py files.
"""
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minicnn import Tensor, no_grad, nn
from minicnn.attacks import adversarial_examples, fgsm, pgd


def linear_model(w, b, dtype=np.float64):
    """f(x) = W flatten(x) + b as minicnn layers (Flatten + Linear), weights set to w, b."""
    w = np.asarray(w, dtype=dtype)
    lin = nn.Linear(w.shape[1], w.shape[0])
    model = nn.Sequential(nn.Flatten(), lin)
    if dtype == np.float64:
        model.double()
    lin.weight.data = w.astype(dtype)
    lin.bias.data = np.asarray(b, dtype=dtype)
    model.eval()
    return model


def small_convnet(channels=3, classes=4, seed=0, size=8):
    """conv - BN - ReLU - pool - linear, random weights: a nonlinear model with buffers and a hook point."""
    np.random.seed(seed)
    model = nn.Sequential(OrderedDict([
        ("normalize", nn.Normalize([0.5] * channels, [0.25] * channels)),
        ("net", nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * (size // 2) ** 2, classes))),
    ]))
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = (rng.standard_normal(p.shape) * 0.5).astype(np.float32)
    bn = model.net[1]
    bn.running_mean.data = rng.standard_normal(6).astype(np.float32) * 0.1
    bn.running_var.data = (1 + rng.uniform(0, 1, 6)).astype(np.float32)
    model.eval()
    return model


def snapshot(model, x):
    """Everything an analysis must not change: outputs, parameters, grads, buffers, modes, flags, hooks."""
    with no_grad():
        out = model(Tensor(x)).numpy().copy()
    return {
        "out": out,
        "params": {k: (p.numpy().copy(), None if p.grad is None else np.array(p.grad, copy=True),
                       id(p.grad), p.requires_grad) for k, p in model.named_parameters()},
        "buffers": {k: b.numpy().copy() for k, b in model.named_buffers()},
        "modes": {k: m.training for k, m in model.named_modules()},
        "hooks": {k: list(m._forward_hooks.items()) for k, m in model.named_modules()},
    }


def assert_same_snapshot(a, b):
    np.testing.assert_array_equal(a["out"], b["out"])
    assert a["params"].keys() == b["params"].keys()
    for k in a["params"]:
        (pa, ga, ia, ra), (pb, gb, ib, rb) = a["params"][k], b["params"][k]
        np.testing.assert_array_equal(pa, pb, err_msg=k)
        assert ra == rb, k
        assert ia == ib, k
        assert (ga is None) == (gb is None), k
        if ga is not None:
            np.testing.assert_array_equal(ga, gb, err_msg=k)
    for k in a["buffers"]:
        np.testing.assert_array_equal(a["buffers"][k], b["buffers"][k], err_msg=k)
    assert a["modes"] == b["modes"]
    assert a["hooks"] == b["hooks"]


def prepare_state(model, x):
    """Give the model a non-default state to preserve: grads, a frozen parameter, mixed modes, a hook."""
    from minicnn import functional as F

    model.train()
    xt = Tensor(x)
    loss = F.cross_entropy(model(xt), np.zeros(len(x), dtype=np.int64))
    loss.backward()
    params = list(model.parameters())
    params[-1].requires_grad = False          # a frozen parameter stays frozen
    model.eval()
    list(model.modules())[1].train()          # mixed modes: one child in training mode
    handle = model.register_forward_hook(lambda m, i, o: None)
    return handle


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ce_sum(w, b, x, y):
    z = x.reshape(len(x), -1) @ w.T + b
    p = softmax(z)
    return -np.log(p[np.arange(len(x)), y]).sum()


def ce_grad(w, b, x, y):
    """d/dx of sum_n CE(Wx_n + b, y_n): W^T (softmax(Wx + b) - onehot(y)), per image."""
    z = x.reshape(len(x), -1) @ w.T + b
    q = softmax(z)
    q[np.arange(len(x)), y] -= 1
    return (q @ w).reshape(x.shape)


@pytest.fixture
def linear():
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((3, 12)), rng.standard_normal(3) * 0.1
    x = rng.uniform(0.3, 0.7, (6, 3, 2, 2))
    y = np.array([0, 1, 2, 0, 1, 2])
    return linear_model(w, b), w, b, x, y


# ------------------------------------------------------------------ closed forms (linear model)
def test_fgsm_moves_the_loss_by_eps_times_l1_norm_of_the_gradient(linear):
    model, w, b, x, y = linear
    eps = 1e-5
    x_adv = fgsm(model, x, y, eps)
    g = ce_grad(w, b, x, y)
    np.testing.assert_allclose(x_adv - x, eps * np.sign(g), atol=1e-12)
    rise = np.array([ce_sum(w, b, x_adv[i:i + 1], y[i:i + 1]) - ce_sum(w, b, x[i:i + 1], y[i:i + 1])
                     for i in range(len(x))])
    l1 = np.abs(g).reshape(len(x), -1).sum(axis=1)
    np.testing.assert_allclose(rise, eps * l1, rtol=1e-3)
    # For a linear model the L1 norm of the gradient is ||W^T (p - onehot)||_1; with two classes
    # p - onehot = (p_1, -p_1) and the rise is eps * p_1 * ||w_1 - w_0||_1 exactly to first order.


def test_fgsm_two_class_linear_rise_is_eps_times_l1_of_w():
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((2, 8)), np.zeros(2)
    model = linear_model(w, b)
    x = rng.uniform(0.4, 0.6, (1, 8))
    y = np.array([0])
    eps = 1e-6
    p1 = softmax(x @ w.T + b)[0, 1]
    rise = ce_sum(w, b, fgsm(model, x, y, eps), y) - ce_sum(w, b, x, y)
    np.testing.assert_allclose(rise, eps * p1 * np.abs(w[1] - w[0]).sum(), rtol=1e-3)


def test_fgsm_targeted_steps_down_the_target_loss(linear):
    model, w, b, x, _ = linear
    target = np.full(len(x), 2)
    x_adv = fgsm(model, x, target, 1e-5, targeted=True)
    np.testing.assert_allclose(x_adv - x, -1e-5 * np.sign(ce_grad(w, b, x, target)), atol=1e-12)
    assert ce_sum(w, b, x_adv, target) < ce_sum(w, b, x, target)


@pytest.mark.parametrize("norm", ["inf", 2])
def test_targeted_pgd_reaches_the_target_on_a_linear_model(linear, norm):
    model, w, b, x, y = linear
    for t in range(3):
        target = np.full(len(x), t)
        x_adv = pgd(model, x, target, eps=1.0 if norm == "inf" else 3.0, steps=40, norm=norm, targeted=True)
        assert (np.argmax(x_adv.reshape(len(x), -1) @ w.T + b, axis=1) == t).all()


def test_pgd_one_step_without_random_start_is_a_normalised_gradient_step(linear):
    model, w, b, x, y = linear
    g = ce_grad(w, b, x, y)
    a = 1e-3
    x2 = pgd(model, x, y, eps=1.0, alpha=a, steps=1, norm=2, random_start=False)
    unit = g / np.linalg.norm(g.reshape(len(x), -1), axis=1).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(x2 - x, a * unit, atol=1e-12)
    xi = pgd(model, x, y, eps=1.0, alpha=a, steps=1, norm="inf", random_start=False)
    np.testing.assert_allclose(xi - x, a * np.sign(g), atol=1e-12)


def test_pgd_l2_projection_lands_on_the_sphere_in_the_gradient_direction(linear):
    # A long first step from x along g/||g|| is pulled back to ||d|| = eps along the same direction.
    model, w, b, x, y = linear
    g = ce_grad(w, b, x, y)
    unit = g / np.linalg.norm(g.reshape(len(x), -1), axis=1).reshape(-1, 1, 1, 1)
    x_adv = pgd(model, x, y, eps=0.05, alpha=10.0, steps=1, norm=2, random_start=False)
    np.testing.assert_allclose(x_adv - x, 0.05 * unit, atol=1e-9)


def test_pgd_linf_projection_clips_each_coordinate(linear):
    model, w, b, x, y = linear
    x_adv = pgd(model, x, y, eps=0.05, alpha=10.0, steps=1, norm="inf", random_start=False)
    np.testing.assert_allclose(x_adv - x, 0.05 * np.sign(ce_grad(w, b, x, y)), atol=1e-12)


def test_pgd_raises_the_loss_more_than_fgsm_on_a_nonlinear_model():
    model = small_convnet()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 3, 8, 8)).astype(np.float32)
    with no_grad():
        y = model(Tensor(x)).numpy().argmax(1)
    from minicnn import functional as F

    def loss(z):
        with no_grad():
            return float(F.cross_entropy(model(Tensor(z)), y, reduction="sum").item())

    eps = 0.03
    assert loss(pgd(model, x, y, eps, steps=10)) >= loss(fgsm(model, x, y, eps)) - 1e-3 > loss(x)


# ------------------------------------------------------------------ invariants
def _other(y):
    """Another class as the target (labels out of range stay out of range, for the error tests)."""
    return np.where(y < 4, (y + 1) % 4, y)


ATTACKS = {
    "fgsm": lambda m, x, y, eps, seed: fgsm(m, x, y, eps),
    "fgsm-targeted": lambda m, x, y, eps, seed: fgsm(m, x, _other(y), eps, targeted=True),
    "pgd-inf": lambda m, x, y, eps, seed: pgd(m, x, y, eps, steps=3, seed=seed),
    "pgd-2": lambda m, x, y, eps, seed: pgd(m, x, y, eps, steps=3, norm=2, seed=seed),
    "pgd-inf-no-start": lambda m, x, y, eps, seed: pgd(m, x, y, eps, steps=3, random_start=False),
    "pgd-2-targeted": lambda m, x, y, eps, seed: pgd(m, x, _other(y), eps, steps=3, norm=2, targeted=True,
                                                      seed=seed),
    "adv-fgsm": lambda m, x, y, eps, seed: adversarial_examples(m, x, y, "fgsm", eps),
    "adv-pgd": lambda m, x, y, eps, seed: adversarial_examples(m, x, y, "pgd", eps, steps=3, seed=seed),
}
NORM_OF = {k: (2 if "-2" in k else np.inf) for k in ATTACKS}


def _batch(channels=3, n=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, channels, 8, 8)).astype(np.float32)
    x[0, 0, :2] = 0.0           # pixels at the bounds: clipping must keep them inside
    x[1, -1, -2:] = 1.0
    return x, rng.integers(0, 4, n)


@pytest.mark.parametrize("name", list(ATTACKS))
@given(eps=st.floats(0, 0.6), seed=st.integers(0, 3), channels=st.sampled_from([1, 3]))
def test_outputs_lie_in_the_bounds_and_the_eps_ball(name, eps, seed, channels):
    model = small_convnet(channels)
    x, y = _batch(channels, seed=seed)
    x_adv = ATTACKS[name](model, x, y, eps, seed)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and isinstance(x_adv, np.ndarray)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv.astype(np.float64) - x).reshape(len(x), -1)
    assert np.linalg.norm(d, ord=NORM_OF[name], axis=1).max() <= eps


@pytest.mark.parametrize("name", list(ATTACKS))
def test_eps_zero_returns_x(name):
    model = small_convnet()
    x, y = _batch()
    np.testing.assert_array_equal(ATTACKS[name](model, x, y, 0.0, 0), x)


@pytest.mark.parametrize("name", ["pgd-inf", "pgd-2", "adv-pgd"])
def test_same_seed_same_result_other_seed_other_start(name):
    model = small_convnet()
    x, y = _batch()
    a, b = ATTACKS[name](model, x, y, 0.1, 7), ATTACKS[name](model, x, y, 0.1, 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, ATTACKS[name](model, x, y, 0.1, 8))


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_model_is_unchanged(name):
    model = small_convnet()
    x, y = _batch()
    handle = prepare_state(model, x)
    before = snapshot(model, x)
    ATTACKS[name](model, x, y, 0.1, 0)
    assert_same_snapshot(before, snapshot(model, x))
    handle.remove()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_model_is_unchanged_when_the_attack_raises(name):
    model = small_convnet()
    x, y = _batch()
    handle = prepare_state(model, x)
    before = snapshot(model, x)
    with pytest.raises(ValueError, match="y: class indices must lie in"):
        ATTACKS[name](model, x, y + 10, 0.1, 0)      # raised after the forward pass, inside the guard
    assert_same_snapshot(before, snapshot(model, x))
    handle.remove()


def test_batch_of_one_matches_the_batch():
    model = small_convnet()
    x, y = _batch()
    whole = fgsm(model, x, y, 0.05)
    for i in range(len(x)):
        np.testing.assert_array_equal(fgsm(model, x[i:i + 1], y[i:i + 1], 0.05), whole[i:i + 1])


def test_tensor_inputs_and_scalar_labels():
    model = small_convnet()
    x, y = _batch()
    a = fgsm(model, Tensor(x), Tensor(y), 0.05)
    np.testing.assert_array_equal(a, fgsm(model, x, y, 0.05))
    t = pgd(model, x, 2, 0.5, steps=10, targeted=True)       # one int: the same target for all
    with no_grad():
        assert (model(Tensor(t)).numpy().argmax(1) == 2).mean() >= 0.6


def test_per_channel_bounds():
    model = small_convnet()
    x, y = _batch()
    lo = np.array([0.0, 0.1, 0.2], dtype=np.float32).reshape(3, 1, 1)
    hi = np.array([1.0, 0.9, 0.8], dtype=np.float32).reshape(3, 1, 1)
    x = np.clip(x, lo, hi)
    for x_adv in (fgsm(model, x, y, 0.2, bounds=(lo, hi)), pgd(model, x, y, 0.2, bounds=(lo, hi))):
        assert (x_adv >= lo).all() and (x_adv <= hi).all()


def test_adversarial_examples_is_fgsm_or_pgd_and_restores_training_mode():
    model = small_convnet()
    model.train()
    x, y = _batch()
    np.testing.assert_array_equal(adversarial_examples(model, x, y, method="fgsm", eps=8 / 255),
                                  fgsm(model, x, y, 8 / 255))
    model.train()
    np.testing.assert_array_equal(
        adversarial_examples(model, x, y, method="pgd", eps=8 / 255, steps=7, alpha=None, seed=3, bounds=(0, 1)),
        pgd(model, x, y, 8 / 255, steps=7, norm="inf", random_start=True, seed=3))
    assert all(m.training for m in model.modules())
    # It runs the model in eval mode: batchnorm statistics are not updated, dropout is off.
    bn = model.net[1]
    before = bn.running_mean.numpy().copy()
    adversarial_examples(model, x, y, method="pgd", eps=8 / 255, steps=2)
    np.testing.assert_array_equal(before, bn.running_mean.numpy())
    with pytest.raises(ValueError, match="method: expected 'fgsm' or 'pgd'"):
        adversarial_examples(model, x, y, method="cw", eps=0.1)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: fgsm(m, x, y, -0.1), "eps: must be a finite number >= 0"),
    (lambda m, x, y: pgd(m, x, y, -1), "eps: must be a finite number >= 0"),
    (lambda m, x, y: fgsm(m, x, y, 0.1, bounds=(1, 0)), "bounds: the lower bound must be below"),
    (lambda m, x, y: pgd(m, x, y, 0.1, bounds=(0.5, 0.5)), "bounds: the lower bound must be below"),
    (lambda m, x, y: fgsm(m, x, y + 4, 0.1), r"y: class indices must lie in \[0, 3\]"),
    (lambda m, x, y: pgd(m, x, -y - 1, 0.1), r"y: class indices must lie in \[0, 3\]"),
    (lambda m, x, y: fgsm(m, x * 2, y, 0.1), r"x: images must lie inside bounds \(0, 1\)"),
    (lambda m, x, y: pgd(m, x - 0.5, y, 0.1), r"x: images must lie inside bounds"),
    (lambda m, x, y: fgsm(m, x, y[:2], 0.1), r"y: expected 5 class indices"),
    (lambda m, x, y: pgd(m, x, y, 0.1, norm=1), r"norm: expected 'inf' or 2, got 1"),
    (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), r"steps: expected an integer >= 1"),
    (lambda m, x, y: fgsm(m, x, y, float("nan")), r"eps: must be a finite number"),
])
def test_bad_input_gives_a_clear_error(call, match):
    model = small_convnet()
    x, y = _batch()
    with pytest.raises(ValueError, match=match):
        call(model, x, y)
    with pytest.raises(TypeError, match="y: expected integer class indices"):
        fgsm(model, x, y + 0.5, 0.1)


def test_every_attack_runs_on_the_inputs_device_and_matches_numpy(xp):
    """Results are arrays on the input's device; on the GPU they match the CPU up to float rounding."""
    from minicnn.attacks import deepfool, evaluate, fooling_image, one_pixel, universal_perturbation

    model = small_convnet()
    x, y = _batch(n=4)
    cpu = {"fgsm": fgsm(model, x, y, 0.05), "pgd": pgd(model, x, y, 0.05, steps=3),
           "pgd2": pgd(model, x, y, 0.5, steps=3, norm=2), "deepfool": deepfool(model, x)}
    if xp is not np:
        model.to("gpu")
    xd = xp.asarray(x)
    try:
        dev = {"fgsm": fgsm(model, xd, xp.asarray(y), 0.05), "pgd": pgd(model, xd, y, 0.05, steps=3),
               "pgd2": pgd(model, xd, y, 0.5, steps=3, norm=2), "deepfool": deepfool(model, xd)}
        for k, a in dev.items():
            assert isinstance(a, xp.ndarray), k
            got = a.get() if xp is not np else a
            assert np.abs(got - cpu[k]).mean() < 1e-3, k
        op = one_pixel(model, xd, y, population=8, generations=2)
        assert isinstance(op, xp.ndarray)
        uni = universal_perturbation(model, xd, 0.05, max_passes=1)
        assert isinstance(uni.perturbation, xp.ndarray)
        img, p = fooling_image(model, 1, shape=(3, 8, 8), steps=5, device="gpu" if xp is not np else "cpu")
        assert isinstance(img, xp.ndarray) and 0 <= p <= 1
        assert 0 <= evaluate(model, "fgsm", xd, y, epsilons=[0.05]).rows[0]["robust_accuracy"] <= 1
    finally:
        model.to("cpu")


def test_fgsm_and_pgd_match_pytorch(torch):
    """The same conv net in PyTorch: FGSM and iterative FGSM (PGD without random start) agree."""
    tnn = torch.nn
    model = small_convnet()
    conv, bn, lin = model.net[0], model.net[1], model.net[5]
    tmodel = tnn.Sequential(tnn.Conv2d(3, 6, 3, padding=1), tnn.BatchNorm2d(6), tnn.ReLU(), tnn.MaxPool2d(2),
                            tnn.Flatten(), tnn.Linear(6 * 16, 4)).double().eval()
    with torch.no_grad():
        for t, m in ((tmodel[0], conv), (tmodel[5], lin)):
            t.weight.copy_(torch.from_numpy(m.weight.numpy().astype(np.float64)))
            t.bias.copy_(torch.from_numpy(m.bias.numpy().astype(np.float64)))
        tmodel[1].weight.copy_(torch.from_numpy(bn.weight.numpy().astype(np.float64)))
        tmodel[1].bias.copy_(torch.from_numpy(bn.bias.numpy().astype(np.float64)))
        tmodel[1].running_mean.copy_(torch.from_numpy(bn.running_mean.numpy().astype(np.float64)))
        tmodel[1].running_var.copy_(torch.from_numpy(bn.running_var.numpy().astype(np.float64)))
    model.double()
    x, y = _batch(n=6)
    x = x.astype(np.float64)
    mean, std = 0.5, 0.25

    def torch_step(xa, alpha, x0, eps):
        xt = torch.from_numpy(xa).requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(tmodel((xt - mean) / std), torch.from_numpy(y), reduction="sum")
        loss.backward()
        out = xt.detach().numpy() + alpha * np.sign(xt.grad.numpy())
        return np.clip(np.clip(out, x0 - eps, x0 + eps), 0, 1)

    np.testing.assert_allclose(fgsm(model, x, y, 0.03), torch_step(x, 0.03, x, 0.03), atol=1e-12)
    xa = x.copy()
    for _ in range(4):
        xa = torch_step(xa, 0.01, x, 0.03)
    np.testing.assert_allclose(pgd(model, x, y, 0.03, alpha=0.01, steps=4, random_start=False), xa, atol=1e-12)
