"""Tests of DeepFool, minimal_perturbation, one_pixel, universal_perturbation, fooling_image and evaluate."""
import functools

import numpy as np
import pytest

import minicnn
from minicnn import Tensor, no_grad
from minicnn.attacks import (deepfool, evaluate, fgsm, fooling_image, fooling_rate, minimal_perturbation,
                             one_pixel, pgd, universal_perturbation)
from test_attacks import _batch, assert_same_snapshot, linear_model, prepare_state, small_convnet, snapshot


def predict(model, x):
    with no_grad():
        return model(Tensor(x)).numpy().argmax(1)


# ------------------------------------------------------------------ DeepFool
def test_deepfool_one_step_for_two_classes_is_minus_f_w_over_w_squared():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((2, 12)), np.array([0.3, -0.2])
    model = linear_model(w, b)
    x = rng.uniform(0.4, 0.6, (5, 3, 2, 2))
    r = deepfool(model, x, steps=1, overshoot=0.0) - x
    z = x.reshape(5, -1) @ w.T + b
    for i in range(5):
        k0 = z[i].argmax()
        wd = w[1 - k0] - w[k0]                     # the binary classifier f = f_other - f_k0
        f = z[i, 1 - k0] - z[i, k0]
        np.testing.assert_allclose(r[i].ravel(), -f * wd / (wd @ wd), rtol=1e-9, atol=1e-12)


def test_deepfool_on_a_multiclass_linear_model_crosses_the_nearest_boundary():
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((5, 10)), rng.standard_normal(5) * 0.1
    model = linear_model(w, b)
    x = rng.uniform(0.45, 0.55, (6, 10))
    x_adv = deepfool(model, x, overshoot=0.02)
    z = x @ w.T + b
    for i in range(6):
        k0 = z[i].argmax()
        dist = [abs(z[i, k] - z[i, k0]) / np.linalg.norm(w[k] - w[k0]) for k in range(5) if k != k0]
        assert predict(model, x_adv[i:i + 1])[0] != k0
        # linear: one step reaches the nearest boundary exactly, the overshoot goes 2% past it
        np.testing.assert_allclose(np.linalg.norm(x_adv[i] - x[i]), 1.02 * min(dist), rtol=1e-6)


def test_deepfool_fools_a_nonlinear_model_with_small_steps_inside_the_bounds():
    model = small_convnet()
    x, _ = _batch(n=12)
    x_adv = deepfool(model, x)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and x_adv.dtype == x.dtype
    assert (predict(model, x_adv) != predict(model, x)).mean() >= 0.9
    # smaller than what PGD-L2 needs to do the same, typically: the point of DeepFool
    assert np.linalg.norm((x_adv - x).reshape(12, -1), axis=1).mean() < 1.0


def test_deepfool_steps_zero_returns_x_and_bad_input():
    model = small_convnet()
    x, _ = _batch()
    np.testing.assert_array_equal(deepfool(model, x, steps=0), x)
    with pytest.raises(ValueError, match="overshoot"):
        deepfool(model, x, overshoot=-1)
    with pytest.raises(ValueError, match="bounds: the lower bound must be below"):
        deepfool(model, x, bounds=(1, 0))
    with pytest.raises(ValueError, match="x: images must lie inside bounds"):
        deepfool(model, x + 1)


# ------------------------------------------------------------------ minimal perturbation
def test_minimal_perturbation_on_a_linear_model_is_close_to_the_distance_to_the_boundary():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((2, 6)), np.array([0.3, -0.2])
    model = linear_model(w, b)
    x = rng.uniform(0.3, 0.7, (4, 6))
    z = x @ w.T + b
    target = 1 - z.argmax(1)
    x_adv, info = minimal_perturbation(model, x, target, max_iter=50, search_steps=8, return_info=True)
    assert (predict(model, x_adv) == target).all() and info["success"].all()
    wd = w[1] - w[0]
    dist = np.abs(z[:, 1] - z[:, 0]) / np.linalg.norm(wd)
    l2 = np.linalg.norm(x_adv - x, axis=1)
    np.testing.assert_allclose(info["l2"], l2)
    assert (l2 >= dist * (1 - 1e-6)).all() and (l2 <= 1.1 * dist).all()
    cos = np.abs((x_adv - x) @ wd) / (l2 * np.linalg.norm(wd))
    assert (cos > 0.999).all()      # straight towards the boundary, as the closed form says


def test_minimal_perturbation_targets_bounds_model_unchanged_and_errors():
    model = small_convnet(channels=1)
    x, _ = _batch(channels=1, n=3)
    handle = prepare_state(model, x)
    before = snapshot(model, x)
    target = (predict(model, x) + 1) % 4
    x_adv = minimal_perturbation(model, x, target, max_iter=30, search_steps=3)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (predict(model, x_adv) == target).all()
    assert_same_snapshot(before, snapshot(model, x))
    with pytest.raises(ValueError, match=r"target: class indices must lie in \[0, 3\]"):
        minimal_perturbation(model, x, target + 4)
    assert_same_snapshot(before, snapshot(model, x))
    with pytest.raises(ValueError, match="c: expected a positive number"):
        minimal_perturbation(model, x, target, c=0)
    handle.remove()


# ------------------------------------------------------------------ one-pixel
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("pixels", [1, 3])
def test_one_pixel_changes_at_most_k_pixel_positions(channels, pixels):
    model = small_convnet(channels=channels)
    x, y = _batch(channels=channels, n=4)
    x_adv, info = one_pixel(model, x, y, pixels=pixels, population=20, generations=5, return_info=True)
    changed = (x_adv != x).any(axis=1).reshape(4, -1).sum(axis=1)
    assert (changed <= pixels).all() and (changed >= 1).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and x_adv.dtype == x.dtype
    ok = predict(model, x_adv) != y
    np.testing.assert_array_equal(ok, info["success"])


def test_one_pixel_is_reproducible_and_seeded_and_keeps_the_model():
    model = small_convnet()
    x, y = _batch(n=3)
    handle = prepare_state(model, x)
    before = snapshot(model, x)
    a = one_pixel(model, x, y, population=16, generations=4, seed=5)
    np.testing.assert_array_equal(a, one_pixel(model, x, y, population=16, generations=4, seed=5))
    assert not np.array_equal(a, one_pixel(model, x, y, population=16, generations=4, seed=6))
    assert_same_snapshot(before, snapshot(model, x))
    with pytest.raises(ValueError, match="y: class indices must lie in"):
        one_pixel(model, x, y + 9, population=8, generations=1)
    assert_same_snapshot(before, snapshot(model, x))
    handle.remove()


def test_one_pixel_targeted_and_per_channel_bounds():
    model = small_convnet()
    x, y = _batch(n=4)
    lo = np.array([0.0, 0.2, 0.1], dtype=np.float32).reshape(3, 1, 1)
    hi = np.array([1.0, 0.8, 0.9], dtype=np.float32).reshape(3, 1, 1)
    x = np.clip(x, lo, hi)
    target = (predict(model, x) + 1) % 4
    x_adv, info = one_pixel(model, x, target, pixels=3, population=40, generations=10, targeted=True,
                            bounds=(lo, hi), return_info=True)
    assert (x_adv >= lo).all() and (x_adv <= hi).all()
    np.testing.assert_array_equal(predict(model, x_adv) == target, info["success"])
    with pytest.raises(ValueError, match=r"x: one_pixel needs images of shape \(N, C, H, W\)"):
        one_pixel(model, x.reshape(4, -1), y)
    with pytest.raises(ValueError, match="pixels: expected an integer >= 1"):
        one_pixel(model, x, y, pixels=0)


# ------------------------------------------------------------------ universal perturbation
@pytest.mark.parametrize("norm, eps", [("inf", 0.08), (2, 0.8)])
def test_universal_perturbation_respects_eps_and_reports_held_out_rate(norm, eps):
    model = small_convnet()
    x, _ = _batch(n=50)
    fit, held = x[:30], x[30:]
    handle = prepare_state(model, x)
    before = snapshot(model, x)
    res = universal_perturbation(model, fit, eps, norm=norm, max_passes=2, held_out=held, seed=0)
    assert_same_snapshot(before, snapshot(model, x))
    handle.remove()
    v = res.perturbation
    assert v.shape == x.shape[1:]
    size = np.abs(v).max() if norm == "inf" else np.linalg.norm(v)
    assert size <= eps
    assert res.fooling_rate == fooling_rate(model, fit, v)
    assert res.held_out_fooling_rate == fooling_rate(model, held, v)
    assert res.fooling_rate > 0.2 and 1 <= res.passes <= 2 and len(res.history) == res.passes
    d = res.to_dict()
    assert d["held_out_fooling_rate"] == res.held_out_fooling_rate
    v2, rate, held_rate = res
    assert v2 is v and rate == res.fooling_rate and held_rate == res.held_out_fooling_rate
    again = universal_perturbation(model, fit, eps, norm=norm, max_passes=2, held_out=held, seed=0)
    np.testing.assert_array_equal(again.perturbation, v)


def test_universal_perturbation_zero_eps_and_errors():
    model = small_convnet()
    x, _ = _batch(n=6)
    res = universal_perturbation(model, x, 0.0, max_passes=1)
    assert not res.perturbation.any() and res.fooling_rate == 0 and res.held_out_fooling_rate is None
    with pytest.raises(ValueError, match="eps: must be a finite number >= 0"):
        universal_perturbation(model, x, -0.1)
    with pytest.raises(ValueError, match="held_out: expected images of shape"):
        universal_perturbation(model, x, 0.1, held_out=x[:, :1])
    with pytest.raises(ValueError, match="images: images must lie inside bounds"):
        universal_perturbation(model, x * 3, 0.1)


# ------------------------------------------------------------------ fooling images
def test_fooling_image_on_a_toy_model_one_channel():
    model = small_convnet(channels=1)
    handle = prepare_state(model, _batch(channels=1)[0])
    before = snapshot(model, _batch(channels=1)[0])
    img, p = fooling_image(model, 3, shape=(1, 8, 8), seed=1)
    assert img.shape == (1, 8, 8) and p >= 0.99 and img.min() >= 0 and img.max() <= 1
    with no_grad():
        q = minicnn.functional.softmax(model(Tensor(img[None])), axis=1).numpy()[0, 3]
    np.testing.assert_allclose(q, p, rtol=1e-5)
    imgs, ps = fooling_image(model, [0, 1, 2, 3], start="gray", shape=(1, 8, 8))
    assert imgs.shape == (4, 1, 8, 8) and (ps >= 0.99).all()
    again, _ = fooling_image(model, 3, shape=(1, 8, 8), seed=1)
    np.testing.assert_array_equal(again, img)
    assert_same_snapshot(before, snapshot(model, _batch(channels=1)[0]))
    with pytest.raises(ValueError, match="start: expected 'noise' or 'gray'"):
        fooling_image(model, 1, start="white", shape=(1, 8, 8))
    with pytest.raises(ValueError, match="target: class indices must lie in"):
        fooling_image(model, 7, shape=(1, 8, 8))
    assert_same_snapshot(before, snapshot(model, _batch(channels=1)[0]))
    handle.remove()


# ------------------------------------------------------------------ evaluate
def test_evaluate_recomputes_norms_from_the_returned_images():
    model = small_convnet()
    x, y = _batch(n=10)
    x = np.clip(x, 0.1, 0.9)

    def shift(model, x, y, eps):            # moves 3 pixel positions of each image by eps/2
        out = x.copy()
        out[:, :, 0, :3] += eps / 2
        return out

    rep = evaluate(model, shift, x, y, epsilons=[0.1, 0.2], batch_size=4)
    for row, eps in zip(rep.rows, [0.1, 0.2]):
        assert row["eps"] == eps
        np.testing.assert_allclose([row["linf_mean"], row["linf_max"]], eps / 2, rtol=1e-5)
        np.testing.assert_allclose(row["l2_max"], eps / 2 * np.sqrt(9), rtol=1e-5)
        assert row["l0_mean"] == row["l0_max"] == 3
    d = rep.to_dict()
    assert d["n"] == 10 and len(d["rows"]) == 2 and set(d["rows"][0]) >= {
        "eps", "robust_accuracy", "success_rate", "linf_mean", "l2_mean", "l0_mean", "time_s"}
    text = str(rep)
    assert "clean accuracy" in text and "robust acc" in text and "L0" in text


def test_evaluate_accuracies_on_a_random_model():
    model = small_convnet()
    x, _ = _batch(n=24)
    y = predict(model, x)
    y[:4] = (y[:4] + 1) % 4                 # four wrong labels: clean accuracy 20/24
    rep = evaluate(model, "fgsm", x, y, epsilons=[0, 0.05], batch_size=10)
    assert rep.clean_accuracy == pytest.approx(20 / 24)
    assert rep.rows[0]["robust_accuracy"] == pytest.approx(20 / 24) and rep.rows[0]["success_rate"] == 0
    r = rep.rows[1]
    assert r["robust_accuracy"] <= rep.clean_accuracy
    assert r["success_rate"] == pytest.approx(1 - r["robust_accuracy"] / rep.clean_accuracy)
    assert r["linf_max"] <= 0.05 and rep.robust_accuracy[0.05] == r["robust_accuracy"]
    one = evaluate(model, "one-pixel", x[:3], y[:3], batch_size=3)
    assert len(one.rows) == 1 and one.rows[0]["eps"] is None and one.rows[0]["l0_max"] <= 1
    df = evaluate(model, deepfool, x, y, epsilons=[0.1])     # the function itself: no eps, one row
    assert len(df.rows) == 1 and df.rows[0]["eps"] is None and df.rows[0]["robust_accuracy"] < rep.clean_accuracy
    import json
    assert json.loads(json.dumps(rep.to_dict()))["robust_accuracy"]["0.05"] == r["robust_accuracy"]
    with pytest.raises(ValueError, match="attack: expected one of"):
        evaluate(model, "cw", x, y)
    with pytest.raises(ValueError, match="labels: class indices must lie in"):
        evaluate(model, "fgsm", x, y + 4)
    with pytest.raises(ValueError, match="eps: must be a finite number >= 0"):
        evaluate(model, "fgsm", x, y, epsilons=[-1])


# ------------------------------------------------------------------ on a trained model
@pytest.fixture(scope="module")
def trained(trained_checkpoint, tiny_tree):
    import os

    from minicnn.data import ImageFolder

    model = minicnn.load_model(trained_checkpoint)
    test = ImageFolder(os.path.join(tiny_tree, "test"), progress=False)
    x = test.images.astype(np.float32) / 255
    return model, x, test.labels


def test_pgd_accuracy_at_most_fgsm_at_most_clean_on_a_trained_model(trained):
    model, x, y = trained
    before = snapshot(model, x[:4])
    eps = 4 / 255
    f = evaluate(model, "fgsm", x, y, epsilons=[eps])
    p = evaluate(model, functools.partial(pgd, steps=10), x, y, epsilons=[eps])
    assert f.clean_accuracy > 0.5
    assert p.rows[0]["robust_accuracy"] <= f.rows[0]["robust_accuracy"] <= f.clean_accuracy
    assert p.rows[0]["robust_accuracy"] < f.clean_accuracy
    assert_same_snapshot(before, snapshot(model, x[:4]))
    assert not model.training


def test_fooling_image_reaches_99_percent_on_a_trained_model(trained):
    model, _, _ = trained
    img, p = fooling_image(model, 4, steps=300, lr=0.05)
    assert img.shape == (3, 32, 32) and p >= 0.99


def test_one_pixel_and_universal_on_a_trained_model(trained):
    model, x, y = trained
    x_adv = one_pixel(model, x[:4], y[:4], pixels=2, population=40, generations=5)
    assert ((x_adv != x[:4]).any(axis=1).reshape(4, -1).sum(axis=1) <= 2).all()
    res = universal_perturbation(model, x[:20], 16 / 255, max_passes=1, held_out=x[20:], candidates=3,
                                 deepfool_steps=5)
    assert res.held_out_fooling_rate is not None and 0 <= res.held_out_fooling_rate <= 1
    assert np.abs(res.perturbation).max() <= 16 / 255


@pytest.mark.parametrize("name", ["deepfool", "universal", "one_pixel", "fooling", "evaluate", "minimal"])
def test_the_model_is_restored_when_the_model_itself_raises_mid_attack(name):
    """A forward pass that fails part-way through an attack leaves the model as it was."""
    model = small_convnet()
    x, y = _batch(n=3)
    handle = prepare_state(model, x)
    armed = {"calls": None}

    def bomb(module, inputs, output):
        if armed["calls"] is not None:
            armed["calls"] += 1
            if armed["calls"] > 2:
                raise RuntimeError("boom")

    bomb_handle = model.net.register_forward_hook(bomb)
    before = snapshot(model, x)
    calls = {
        "deepfool": lambda: deepfool(model, x),
        "universal": lambda: universal_perturbation(model, x, 0.1, max_passes=2),
        "one_pixel": lambda: one_pixel(model, x, y, population=8, generations=3),
        "fooling": lambda: fooling_image(model, 1, shape=(3, 8, 8), steps=5),
        "evaluate": lambda: evaluate(model, "pgd", x, y, epsilons=[0.1]),
        "minimal": lambda: minimal_perturbation(model, x, y, max_iter=5, search_steps=2),
    }
    armed["calls"] = 0
    with pytest.raises(RuntimeError, match="boom"):
        calls[name]()
    armed["calls"] = None
    assert_same_snapshot(before, snapshot(model, x))
    bomb_handle.remove()
    handle.remove()
