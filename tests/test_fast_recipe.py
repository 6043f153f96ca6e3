"""The fast CIFAR-10 recipe's parts, each on its own: patch whitening, dirac init, translations,
alternating flips, the weight average (EMA), test-time augmentation, the triangle schedule, the
recipe's configuration, fast_cnn, and a tiny end-to-end run (reproducible, resumable)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minicnn
from minicnn import nn, optim
from minicnn.autograd import Tensor
from minicnn.data import (AlternatingFlip, BatchPosition, Compose, DataLoader, ArrayDataset, RandomCrop,
                          RandomTranslate, ToFloat)
from minicnn.models import fast_cnn, get_model
from minicnn.nn import init
from minicnn.train import TrainConfig, Trainer, TrainingError, complete_config
from minicnn.train.config import RECIPES, build_optimizer, build_scheduler
from minicnn.train.evaluation import evaluate, tta_logits, tta_views


# ------------------------------------------------------------------ patch whitening
def _patches(x, k):
    """Every k x k patch of x (N, C, H, W), flattened in (C, KH, KW) order: the loop definition."""
    n, c, h, w = x.shape
    rows = [x[i, :, a:a + k, b:b + k].reshape(-1) for i in range(n) for a in range(h - k + 1)
            for b in range(w - k + 1)]
    return np.array(rows)


@given(c=st.integers(1, 3), k=st.integers(1, 3), seed=st.integers(0, 1000))
def test_patch_statistics_equal_the_loop_definition(c, k, seed):
    x = np.random.default_rng(seed).normal(size=(5, c, 6, 7))
    mean, cov = init.patch_statistics(x, k, chunk=2)
    p = _patches(x, k)
    np.testing.assert_allclose(mean, p.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(p.T, bias=True).reshape(cov.shape), atol=1e-10)


@pytest.mark.parametrize("k, doubled", [(2, True), (2, False), (3, True)])
def test_the_whitening_layer_whitens_its_patches(k, doubled):
    """On the patches it was computed from, the outputs have mean 0 and covariance I (up to eps)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3, 12, 12)).cumsum(axis=3) * [[[2.0]], [[1.0]], [[0.5]]]   # correlated, scaled
    d = 3 * k * k
    conv = nn.Conv2d(3, 2 * d if doubled else d, k)
    init.patch_whitening_(conv, x, eps=1e-8)
    y = conv(Tensor(x.astype(np.float32))).data.astype(np.float64)
    flat = y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])
    np.testing.assert_allclose(flat.mean(axis=0), 0, atol=1e-3)
    cov = np.cov(flat[:, :d].T, bias=True)
    np.testing.assert_allclose(cov, np.eye(d), atol=2e-3)
    if doubled:
        np.testing.assert_allclose(flat[:, d:], -flat[:, :d], atol=1e-5)


def test_whitening_orders_directions_by_variance_and_eps_shrinks_weak_ones():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 1, 8, 8)).cumsum(axis=2)
    conv = nn.Conv2d(1, 4, 2)
    mean, cov = init.patch_statistics(x, 2)
    lam = np.sort(np.linalg.eigvalsh(cov))[::-1]
    init.patch_whitening_(conv, x, eps=lam[-1])          # the weakest direction gets variance 1/2
    y = conv(Tensor(x.astype(np.float32))).data.astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 4)
    np.testing.assert_allclose(y.var(axis=0), lam / (lam + lam[-1]), rtol=1e-3)


def test_whitening_refuses_a_conv_it_cannot_fill():
    x = np.zeros((2, 3, 8, 8))
    with pytest.raises(ValueError, match="out_channels 12 or 24, got 16"):
        init.patch_whitening_(nn.Conv2d(3, 16, 2), x)
    with pytest.raises(ValueError, match="padding 0"):
        init.patch_whitening_(nn.Conv2d(3, 12, 2, padding=1), x)
    with pytest.raises(ValueError, match=r"images must be \(N, 3, H, W\)"):
        init.patch_whitening_(nn.Conv2d(3, 12, 2), np.zeros((2, 1, 8, 8)))
    with pytest.raises(ValueError, match="eps must be > 0"):
        init.patch_whitening_(nn.Conv2d(3, 12, 2), x, eps=0)
    with pytest.raises(TypeError, match="must be a Conv2d"):
        init.patch_whitening_(nn.Linear(3, 12), x)


def test_dirac_init_makes_a_same_conv_copy_its_input():
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 5)).astype(np.float32)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    init.dirac_(conv.weight)
    y = conv(Tensor(x)).data
    np.testing.assert_array_equal(y[:, :3], x)
    np.testing.assert_array_equal(y[:, 3:], 0)
    with pytest.raises(ValueError, match="4-D"):
        init.dirac_(np.zeros((3, 3)))


# ------------------------------------------------------------------ augmentation
@given(shift=st.integers(0, 3), mode=st.sampled_from(["constant", "reflect"]), seed=st.integers(0, 100))
def test_translate_is_a_shift_of_the_padded_image(shift, mode, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (4, 2, 7, 6)).astype(np.uint8)
    y = RandomTranslate(shift, padding_mode=mode)(x, np.random.default_rng(seed))
    assert y.shape == x.shape and y.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (0, 0), (shift, shift), (shift, shift)), mode=mode)
    for n in range(4):
        found = [(a, b) for a in range(2 * shift + 1) for b in range(2 * shift + 1)
                 if np.array_equal(padded[n, :, a:a + 7, b:b + 6], y[n])]
        assert found, "every output is the image shifted by at most `shift` pixels"


def test_translate_zero_is_the_identity_and_bad_arguments_are_named():
    x = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    np.testing.assert_array_equal(RandomTranslate(0)(x, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="shift must be an int >= 0"):
        RandomTranslate(-1)
    with pytest.raises(ValueError, match="padding_mode must be 'constant' or 'reflect'"):
        RandomCrop(4, padding=1, padding_mode="edge")
    with pytest.raises(ValueError, match="reflect padding 4 needs images larger"):
        RandomTranslate(4)(x, np.random.default_rng(0))


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    x = np.random.default_rng(0).integers(0, 255, (64, 3, 4, 5)).astype(np.uint8)
    flip = AlternatingFlip(seed=3)
    idx = np.arange(64)
    flipped = []
    for epoch in range(4):
        y = flip(x, None, BatchPosition(idx, epoch))
        is_flipped = np.array([np.array_equal(y[i], x[i, :, :, ::-1]) for i in range(64)])
        assert all(np.array_equal(y[i], x[i, :, :, ::-1] if f else x[i]) for i, f in enumerate(is_flipped))
        flipped.append(is_flipped)
    assert 16 < flipped[0].sum() < 48                          # epoch 0: a random part
    assert np.all(flipped[0] != flipped[1]) and np.all(flipped[1] != flipped[2])
    np.testing.assert_array_equal(flipped[0], flipped[2])
    other = AlternatingFlip(seed=4)(x, None, BatchPosition(idx, 0))
    assert not np.array_equal(other, flipped[0])               # the seed chooses the first half
    with pytest.raises(ValueError, match="needs position=BatchPosition"):
        flip(x, None)
    with pytest.raises(ValueError, match="3 indices for a batch of 64"):
        flip(x, None, BatchPosition([0, 1, 2], 0))


def test_the_loader_tells_alternating_flip_which_images_it_holds():
    """Through a shuffling DataLoader, each image is seen mirrored in exactly one of two epochs."""
    n = 40
    images = np.random.default_rng(0).integers(0, 255, (n, 1, 3, 4)).astype(np.uint8)
    ds = ArrayDataset(images, np.arange(n))
    loader = DataLoader(ds, 7, shuffle=True, transform=Compose([AlternatingFlip(seed=1), ToFloat()]), seed=5,
                        prefetch=False)
    seen = []
    for _ in range(2):
        mirrored = np.zeros(n, dtype=bool)
        for x, y in loader:
            for img, label in zip(x.data, y.data):
                original = images[label].astype(np.float32) / 255
                mirrored[label] = not np.allclose(img, original) or np.allclose(original, original[..., ::-1])
        seen.append(mirrored)
    assert np.all(seen[0] != seen[1])


# ------------------------------------------------------------------ EMA
def _tiny_model():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_ema_follows_the_closed_form():
    """With weights w_1, w_2, ... after each step: avg_n = d_n avg_{n-1} + (1 - d_n) w_n, d_n as documented."""
    model = _tiny_model()
    w0 = model[0].weight.data.astype(np.float64).copy()
    ema = optim.EMA(model, decay=0.9)
    expected = w0.copy()
    for step in range(1, 30):
        model[0].weight.data[...] = step
        ema.update()
        d = min(0.9, step / (9 + step))
        expected = d * expected + (1 - d) * step
    np.testing.assert_allclose(ema.avg["0.weight"], expected, rtol=1e-5)


def test_ema_every_k_steps_uses_decay_to_the_k():
    model = _tiny_model()
    ema = optim.EMA(model, decay=0.99, every=5)
    start = ema.avg["0.bias"].copy()
    for _ in range(4):
        model[0].bias.data[...] += 1
        ema.update()
    np.testing.assert_array_equal(ema.avg["0.bias"], start)     # not yet
    model[0].bias.data[...] += 1
    ema.update()
    d = min(0.99 ** 5, 1 / 10)
    np.testing.assert_allclose(ema.avg["0.bias"], d * start + (1 - d) * model[0].bias.data, rtol=1e-6)
    assert ema.updates == 1 and ema.steps == 5


def test_ema_applied_swaps_in_the_average_and_puts_the_weights_back():
    model = _tiny_model()
    ema = optim.EMA(model, decay=0.5)
    for _ in range(20):
        for p in model.parameters():
            p.data[...] += 1.0
        model[1].running_mean.data[...] += 2.0
        ema.update()
    own = {k: v.copy() for k, v in model.state_dict().items()}
    with ema.applied():
        np.testing.assert_allclose(model[0].weight.data, ema.avg["0.weight"])
        np.testing.assert_allclose(model[1].running_mean.data, ema.avg["1.running_mean"])
        assert not np.allclose(model[0].weight.data, own["0.weight"])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, own[k])
    ema.copy_to()
    np.testing.assert_allclose(model[0].weight.data, ema.avg["0.weight"])


def test_ema_state_round_trips_and_bad_arguments_are_named(tmp_path):
    model = _tiny_model()
    ema = optim.EMA(model, decay=0.9, every=2)
    for _ in range(7):
        model[0].weight.data[...] += 0.5
        ema.update()
    minicnn.save({"ema": ema.state_dict()}, str(tmp_path / "e.npz"))
    other = optim.EMA(model, decay=0.9, every=2)
    other.load_state_dict(minicnn.load(str(tmp_path / "e.npz"))["ema"])
    assert (other.steps, other.updates) == (7, 3)
    for k in ema.avg:
        np.testing.assert_array_equal(other.avg[k], ema.avg[k])
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match="decay must be a number in"):
            optim.EMA(model, decay=bad)
    with pytest.raises(ValueError, match="every must be a positive int"):
        optim.EMA(model, every=0)


# ------------------------------------------------------------------ test-time augmentation
def test_tta_views_are_the_documented_ones():
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 5)).astype(np.float32)
    assert len(tta_views(x, "none")) == 1
    views = tta_views(x, "flip")
    np.testing.assert_array_equal(views[1], x[..., ::-1])
    views = tta_views(x, "flip-translate")
    assert len(views) == 6
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    np.testing.assert_array_equal(views[2], padded[:, :, :5, :5])
    np.testing.assert_array_equal(views[4], padded[:, :, 2:, 2:])
    with pytest.raises(ValueError, match="tta must be one of"):
        tta_views(x, "crops")


def test_tta_logits_average_the_views_and_record_no_graph():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 5, 4))
    x = np.random.default_rng(1).normal(size=(3, 3, 5, 5)).astype(np.float32)
    out = tta_logits(model, Tensor(x), "flip")
    expected = (model(Tensor(x)).data + model(Tensor(np.ascontiguousarray(x[..., ::-1]))).data) / 2
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-6)
    assert not out.requires_grad


def test_evaluate_with_flip_tta_equals_plain_on_a_mirror_symmetric_model():
    """Global pooling of a symmetric kernel's output is flip-invariant: TTA changes nothing."""
    conv = nn.Conv2d(3, 4, 3, padding=1)
    conv.weight.data[...] = conv.weight.data + conv.weight.data[..., ::-1]
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = np.random.default_rng(2).normal(size=(10, 3, 6, 6)).astype(np.float32)
    batches = [(Tensor(x), Tensor(np.arange(10) % 4))]
    plain = evaluate(model, batches, 4)
    flipped = evaluate(model, batches, 4, tta="flip")
    assert plain[1] == flipped[1] and math.isclose(plain[0], flipped[0], rel_tol=1e-5)


# ------------------------------------------------------------------ recipe configuration
def test_without_a_model_the_fast_recipe_is_the_default():
    cfg = complete_config(TrainConfig())
    assert cfg.recipe == "fast" and cfg.model == "fast_cnn"
    for k, v in RECIPES["fast"].items():
        assert getattr(cfg, k) == v, k


def test_naming_a_model_keeps_its_standard_recipe():
    cfg = complete_config(TrainConfig(model="simple_cnn"))
    assert (cfg.recipe, cfg.epochs, cfg.lr, cfg.schedule, cfg.batch_size) == ("standard", 15, 0.05, "onecycle", 128)
    assert (cfg.flip, cfg.translate, cfg.pad_mode, cfg.ema, cfg.tta, cfg.whiten) == \
        ("random", 4, "zeros", 0.0, "none", False)


def test_explicit_options_override_the_recipe():
    cfg = complete_config(TrainConfig(ema=0.0, tta="none", epochs=3, model="simple_cnn", recipe="fast"))
    assert (cfg.ema, cfg.tta, cfg.epochs, cfg.model, cfg.label_smoothing) == (0.0, "none", 3, "simple_cnn", 0.2)


@pytest.mark.parametrize("field, value, match", [
    ("recipe", "turbo", "--recipe must be one of"), ("flip", "vertical", "--flip must be one of"),
    ("translate", -1, "--translate must be"), ("translate", 2.5, "--translate must be"),
    ("pad_mode", "edge", "--pad-mode must be one of"), ("ema", 1.0, "--ema must be a decay"),
    ("tta", "ten-crop", "--tta must be one of"), ("bias_lr_scale", 0, "--bias-lr-scale must be"),
    ("schedule", "exp", "--schedule must be one of"),
])
def test_bad_recipe_values_are_named(field, value, match):
    with pytest.raises(TrainingError, match=match):
        complete_config(TrainConfig(**{field: value}))


def test_triangle_schedule_and_bias_learning_rate():
    cfg = complete_config(TrainConfig(epochs=4, lr=1.0, bias_lr_scale=4.0))
    model = fast_cnn()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=25)       # 100 steps, peak at step 24
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(99):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert math.isclose(lrs[0], 0.2) and math.isclose(max(lrs), 1.0) and int(np.argmax(lrs)) == 24
    assert math.isclose(lrs[-1], 0.01)
    assert np.all(np.diff(lrs[:25]) > 0) and np.all(np.diff(lrs[24:]) < 0)
    assert math.isclose(opt.param_groups[1]["lr"], 4 * lrs[-1])          # biases: 4x throughout
    assert opt.param_groups[0]["momentum"] == 0.85 and opt.param_groups[0]["nesterov"]


# ------------------------------------------------------------------ fast_cnn
def test_fast_cnn_counts_and_shapes():
    model = fast_cnn()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    widths = [(24, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    expected = (3 * 24 * 4 + 24) + sum(9 * a * b for a, b in widths) + 2 * 2 * (32 + 64 + 128) + 128 * 10
    assert model.num_parameters() == expected
    frozen = 2 * (32 + 64 + 128)                               # the batchnorm scales
    assert model.num_parameters(trainable_only=True) == expected - frozen
    assert [tuple(c.weight.shape[:2][::-1]) for c in convs[1:]] == widths
    y = model(Tensor(np.zeros((2, 3, 32, 32), dtype=np.float32)))
    assert y.shape == (2, 10)
    assert get_model("fast_cnn", num_classes=7)(Tensor(np.zeros((1, 3, 32, 32), np.float32))).shape == (1, 7)


def test_fast_cnn_gradients_check_in_float64():
    init.manual_seed(0)
    model = fast_cnn(widths=(4, 4, 6))
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32))       # 32 -> 31 -> 15 -> 7 -> 3 -> 1
    report = minicnn.gradcheck(model, [x], sample=60)
    assert report.passed, report
    assert {c.name for c in report.parameters} >= {"0.bias", "2.weight", "25.weight"}


def test_fast_cnn_starts_near_the_identity_per_group():
    model = fast_cnn(widths=(24, 32, 40))
    first = model[2]                                   # group 1's first conv, 24 -> 24
    x = np.random.default_rng(0).normal(size=(1, 24, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(first(Tensor(x)).data, x, atol=1e-6)


# ------------------------------------------------------------------ end to end
def _fast_cfg(data, out, **kw):
    base = dict(data=data, epochs=2, batch_size=50, out=str(out), progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_the_fast_recipe_runs_whitens_and_keeps_the_average(tiny_tree, tmp_path):
    trainer = Trainer(_fast_cfg(tiny_tree, tmp_path / "run"), log=lambda *_: None)
    whiten = trainer.model[0]
    before = whiten.weight.data.copy()
    assert not whiten.weight.requires_grad and trainer.ema is not None
    acc = trainer.run()
    assert 0 <= acc <= 1
    np.testing.assert_array_equal(whiten.weight.data, before)           # frozen
    ckpt = minicnn.load(str(tmp_path / "run" / "last.npz"))
    np.testing.assert_allclose(ckpt["model"]["2.weight"], ckpt["ema"]["avg"]["2.weight"])   # finished: the average
    model = minicnn.load_model(str(tmp_path / "run" / "last.npz"))
    assert model(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)


def test_same_seed_same_accuracy_and_weights(tiny_tree, tmp_path):
    runs = []
    for name in ("a", "b"):
        trainer = Trainer(_fast_cfg(tiny_tree, tmp_path / name, epochs=1), log=lambda *_: None)
        runs.append((trainer.run(), trainer.model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][k], runs[1][1][k])


def test_an_interrupted_fast_run_resumes_exactly(tiny_tree, tmp_path):
    straight = Trainer(_fast_cfg(tiny_tree, tmp_path / "straight", batch_size=40), log=lambda *_: None)
    straight.run()
    first = Trainer(_fast_cfg(tiny_tree, tmp_path / "cut", batch_size=40, epochs=2), log=lambda *_: None)
    calls = {"n": 0}
    original = first.job._after_step

    def stop_after_7(steps_per_epoch):
        calls["n"] += 1
        if calls["n"] == 7:
            first.job.stop_reason = "SIGINT"
        original(steps_per_epoch)
    first.job._after_step = stop_after_7
    assert first.run() is None
    resumed = Trainer(_fast_cfg(tiny_tree, tmp_path / "cut", batch_size=40, resume=True), log=lambda *_: None)
    resumed.run()
    for k, v in straight.model.state_dict().items():
        np.testing.assert_allclose(resumed.model.state_dict()[k], v, rtol=1e-6, atol=1e-7)


def test_whiten_refuses_a_model_without_a_whitening_layer(tiny_tree, tmp_path):
    with pytest.raises(TrainingError, match="--whiten: cannot whiten the first layer of simple_cnn"):
        Trainer(_fast_cfg(tiny_tree, tmp_path / "w", model="simple_cnn", recipe="fast"), log=lambda *_: None)


def test_without_model_resume_and_init_from_take_the_checkpoints_model(tiny_tree, tmp_path, trained_checkpoint):
    """--init-from / --resume without --model: the checkpoint's architecture, not the fast default."""
    cfg = TrainConfig(data=tiny_tree, init_from=trained_checkpoint, epochs=1, batch_size=50, val_split=0,
                      out=str(tmp_path / "ft"), progress=False)
    trainer = Trainer(cfg, log=lambda *_: None)
    assert (trainer.cfg.model, trainer.cfg.recipe) == ("simple_cnn", "standard")
    first = Trainer(_fast_cfg(tiny_tree, tmp_path / "r", epochs=2, batch_size=50), log=lambda *_: None)
    original = first.job._after_step

    def interrupt(steps_per_epoch):
        first.job.stop_reason = "SIGINT"               # as Ctrl-C during the first step
        original(steps_per_epoch)
    first.job._after_step = interrupt
    assert first.run() is None
    again = Trainer(TrainConfig(data=tiny_tree, out=str(tmp_path / "r"), resume=True, progress=False, epochs=2,
                                batch_size=50), log=lambda *_: None)
    assert (again.cfg.model, again.cfg.recipe, again.job.step) == ("fast_cnn", "fast", 1)


def test_eval_reports_test_time_augmentation(tiny_tree, tmp_path, capsys):
    from minicnn.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", tiny_tree, "--epochs", "1", "--batch-size", "50", "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "last.npz"), "--data", tiny_tree, "--tta", "flip",
                 "--no-progress"]) == 0
    assert "test-time augmentation flip" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out / "last.npz"), str(out / "last.npz"), "--data", tiny_tree,
                 "--tta", "flip", "--no-progress"]) == 2
    assert "--tta works with one --checkpoint" in capsys.readouterr().err
