"""minicnn.synthesize: building blocks (gradient checks, closed forms), the four methods, their contracts."""
import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.autograd import Tensor
from minicnn.synthesize import (class_model, content_loss, deep_dream, feature_loss, gram_matrix, invert,
                                objectives, style_loss, style_transfer, total_variation)
from minicnn.analysis import analysis_mode, find_layer
from minicnn.synthesize.core import gaussian_blur, layer_features, resize


# ------------------------------------------------------------------ helpers
def tiny_net(c_in=3, classes=4, seed=0, batchnorm=True, size=16, dtype=np.float32):
    """conv-(bn)-relu-pool-conv-relu-flatten-linear for size x size inputs, with Normalize first."""
    nn.init.manual_seed(seed)
    body = [nn.Conv2d(c_in, 6, 3, padding=1)]
    if batchnorm:
        body.append(nn.BatchNorm2d(6))
    body += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
             nn.Linear(8 * (size // 2) ** 2, classes)]
    from collections import OrderedDict
    model = nn.Sequential(OrderedDict([("normalize", nn.Normalize([0.5] * c_in, [0.25] * c_in)),
                                       ("net", nn.Sequential(*body))]))
    if dtype == np.float64:
        model.double()
    model.eval()
    return model


def snapshot(model):
    """Everything an analysis must leave alone."""
    return dict(
        state={k: np.array(v.numpy() if hasattr(v, "numpy") else v, copy=True)
               for k, v in model.state_dict().items()},
        modes=[m.training for m in model.modules()],
        flags=[p.requires_grad for p in model.parameters()],
        grads=[p.grad for p in model.parameters()],
        hooks=[dict(m._forward_hooks) for m in model.modules()],
    )


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for k in before["state"]:
        np.testing.assert_array_equal(after["state"][k], before["state"][k], err_msg=k)
    assert after["modes"] == before["modes"]
    assert after["flags"] == before["flags"]
    assert all(a is b for a, b in zip(after["grads"], before["grads"]))
    assert after["hooks"] == before["hooks"]


def in_unit_box(img):
    img = np.asarray(img)
    return img.min() >= 0.0 and img.max() <= 1.0 and np.isfinite(img).all()


# ------------------------------------------------------- building blocks
class TestTotalVariation:
    def test_constant_image_is_zero(self):
        x = np.full((2, 3, 5, 7), 0.3)
        assert total_variation(x).item() == 0
        assert abs(total_variation(x, beta=1).item()) < 1e-12

    @pytest.mark.parametrize("beta", [2.0, 1.0, 1.5])
    def test_ramp_closed_form(self, beta):
        a, b = 0.1, -0.03
        i, j = np.meshgrid(np.arange(6), np.arange(9), indexing="ij")
        x = np.broadcast_to(a * i + b * j, (2, 3, 6, 9)).astype(np.float64)
        expected = (a * a + b * b) ** (beta / 2)
        assert total_variation(x, beta=beta).item() == pytest.approx(expected, rel=1e-4)

    @pytest.mark.parametrize("beta", [1.0, 1.5, 3.0, 0.5])
    def test_formula_exact_for_any_beta(self, rng, beta):
        # mean over n, c, i < H-1, j < W-1 of (d_h^2 + d_w^2)^(beta/2), with no smoothing bias
        x = rng.random((2, 3, 5, 6)) * 0.01
        d_h = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
        d_w = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
        expected = ((d_h ** 2 + d_w ** 2) ** (beta / 2)).mean()
        np.testing.assert_allclose(total_variation(x, beta=beta).item(), expected, rtol=1e-9)

    @pytest.mark.parametrize("beta", [2.0, 1.0, 1.5])
    def test_gradcheck(self, rng, beta):
        x = Tensor(rng.random((2, 2, 5, 6)), requires_grad=True)
        assert minicnn.gradcheck(lambda t: total_variation(t, beta=beta), [x])

    def test_bad_input(self):
        with pytest.raises(ValueError, match="x must have shape"):
            total_variation(np.zeros((3, 4, 4)))
        with pytest.raises(ValueError, match="beta"):
            total_variation(np.zeros((1, 1, 4, 4)), beta=0)


class TestGram:
    def test_formula_shape_and_psd(self, rng):
        f = rng.standard_normal((3, 5, 4, 6))
        g = gram_matrix(f).numpy()
        assert g.shape == (3, 5, 5)
        v = f.reshape(3, 5, 24)
        np.testing.assert_allclose(g, v @ v.transpose(0, 2, 1) / (5 * 4 * 6), rtol=1e-12)
        np.testing.assert_allclose(g, g.transpose(0, 2, 1), atol=1e-15)
        for gi in g:
            assert np.linalg.eigvalsh(gi).min() >= -1e-12

    def test_unbatched(self, rng):
        f = rng.standard_normal((4, 3, 3))
        np.testing.assert_allclose(gram_matrix(f).numpy(), gram_matrix(f[None]).numpy()[0])

    def test_size_independent_for_tiled_features(self, rng):
        f = rng.standard_normal((1, 3, 4, 4))
        tiled = np.tile(f, (1, 1, 2, 3))
        np.testing.assert_allclose(gram_matrix(tiled).numpy(), gram_matrix(f).numpy(), rtol=1e-12)

    def test_gradcheck(self, rng):
        f = Tensor(rng.standard_normal((2, 3, 3, 4)), requires_grad=True)
        assert minicnn.gradcheck(gram_matrix, [f])

    def test_matches_torch(self, rng, torch):
        f = rng.standard_normal((2, 4, 5, 3))
        t = torch.tensor(f).reshape(2, 4, 15)
        np.testing.assert_allclose(gram_matrix(f).numpy(), (t @ t.transpose(1, 2) / 60).numpy(), rtol=1e-12)


class TestContentStyleLoss:
    def test_zero_for_identical(self, rng):
        f = rng.standard_normal((2, 3, 4, 5))
        assert content_loss(f, f.copy()).item() == 0
        assert style_loss(f, f.copy()).item() == pytest.approx(0, abs=1e-20)
        assert style_loss(f, gram_matrix(f)).item() == pytest.approx(0, abs=1e-20)

    def test_content_closed_form_and_broadcast_target(self, rng):
        f = rng.standard_normal((2, 3, 4, 5))
        p = rng.standard_normal((1, 3, 4, 5))
        assert content_loss(f, p).item() == pytest.approx(((f - p) ** 2).mean())
        with pytest.raises(ValueError, match="target_features has shape"):
            content_loss(f, p[:, :2])

    def test_style_closed_form_gatys(self, rng):
        """(1/4) ||G - A||_F^2 with G = F F^T / (C H W) equals Gatys' 1/(4 N^2 M^2) ||G^u - A^u||^2."""
        f = rng.standard_normal((1, 3, 4, 5))
        s = rng.standard_normal((1, 3, 6, 2))
        fu, su = f.reshape(3, 20), s.reshape(3, 12)
        n_l = 3
        gatys = ((fu @ fu.T / 20 - su @ su.T / 12) ** 2).sum() / (4 * n_l ** 2)
        assert style_loss(f, s).item() == pytest.approx(gatys, rel=1e-10)

    def test_style_target_forms_agree(self, rng):
        f = rng.standard_normal((2, 3, 4, 4))
        s = rng.standard_normal((1, 3, 7, 5))
        g = gram_matrix(s).numpy()
        v = style_loss(f, s).item()
        assert style_loss(f, g).item() == pytest.approx(v)        # (1, C, C)
        assert style_loss(f, g[0]).item() == pytest.approx(v)     # (C, C)
        with pytest.raises(ValueError, match="Gram matrix of shape"):
            style_loss(f, np.zeros((4, 4)))

    def test_gradchecks(self, rng):
        f = Tensor(rng.standard_normal((2, 3, 3, 4)), requires_grad=True)
        p = Tensor(rng.standard_normal((2, 3, 3, 4)), requires_grad=True)
        assert minicnn.gradcheck(content_loss, [f, p])
        s = rng.standard_normal((1, 3, 5, 2))
        assert minicnn.gradcheck(lambda t: style_loss(t, s), [f])
        a = Tensor(gram_matrix(s).data, requires_grad=True)
        assert minicnn.gradcheck(lambda t, g: style_loss(t, g), [f, a])

    def test_style_loss_matches_torch(self, rng, torch):
        f = rng.standard_normal((1, 4, 3, 5))
        s = rng.standard_normal((1, 4, 6, 6))
        tf = torch.tensor(f, requires_grad=True)

        def gram(t):
            n, c, h, w = t.shape
            v = t.reshape(n, c, h * w)
            return v @ v.transpose(1, 2) / (c * h * w)
        loss = 0.25 * ((gram(tf) - gram(torch.tensor(s))) ** 2).sum()
        loss.backward()
        x = Tensor(f, requires_grad=True)
        ours = style_loss(x, s)
        ours.backward()
        assert ours.item() == pytest.approx(loss.item(), rel=1e-10)
        np.testing.assert_allclose(x.grad, tf.grad.numpy(), rtol=1e-9, atol=1e-12)


class TestFeatureLoss:
    def test_gradcheck_and_zero(self, rng):
        model = tiny_net(dtype=np.float64, seed=1, size=8)
        model.train()                          # feature_loss runs eval mode and puts train mode back
        x0 = rng.random((1, 3, 8, 8))
        with minicnn.no_grad():
            model.eval()
            target = layer_features(model, Tensor(x0), ["net.3"])["net.3"].data
            model.train()
        assert feature_loss(model, "net.3", x0, target).item() == 0
        assert all(m.training for m in model.modules())
        model.requires_grad_(False)
        x = Tensor(rng.random((1, 3, 8, 8)), requires_grad=True)
        assert minicnn.gradcheck(lambda t: feature_loss(model, "net.3", t, target), [x])
        assert minicnn.gradcheck(lambda t: feature_loss(model, "net.4", t, np.ones((1, 8, 4, 4)),
                                                        relative=True), [x])

    def test_relative_is_one_for_zero_features(self, rng):
        model = tiny_net(dtype=np.float64)
        target = rng.random((1, 8, 8, 8)) + 0.1
        # net.5 is a ReLU: make its output zero by a huge negative bias of the conv before it
        model.net[4].bias.data[...] = -1e6
        assert feature_loss(model, "net.5", rng.random((1, 3, 16, 16)), target, relative=True).item() == \
            pytest.approx(1.0)

    def test_layer_as_module_and_logits(self, rng):
        model = tiny_net(dtype=np.float64)
        x = rng.random((1, 3, 16, 16))
        with minicnn.no_grad():
            logits = model(Tensor(x)).data
        assert feature_loss(model, "", x, logits).item() == 0
        assert feature_loss(model, model.net[1], x, np.zeros((1, 6, 16, 16))).item() > 0


# ------------------------------------------------------------ the helpers
class TestImageHelpers:
    def test_blur_matches_scipy_and_keeps_constants(self, rng):
        from scipy.ndimage import gaussian_filter1d
        x = rng.random((2, 3, 9, 11))
        ours = gaussian_blur(x, 1.0)
        ref = gaussian_filter1d(gaussian_filter1d(x, 1.0, axis=2, mode="mirror", truncate=3.0),
                                1.0, axis=3, mode="mirror", truncate=3.0)
        np.testing.assert_allclose(ours, ref, atol=1e-12)
        np.testing.assert_allclose(gaussian_blur(np.full((1, 1, 4, 3), 0.7), 2.5), 0.7)

    @pytest.mark.parametrize("size", [(8, 8), (5, 13), (16, 4)])
    def test_resize_matches_torch(self, rng, torch, size):
        x = rng.random((1, 2, 8, 8))
        ref = torch.nn.functional.interpolate(torch.tensor(x), size=size, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(resize(x, size), ref.numpy(), atol=1e-12)

    def test_find_layer(self):
        model = tiny_net()
        assert find_layer(model, "net.0") == ("net.0", model.net[0])
        assert find_layer(model, model.net[2])[0] == "net.2"
        assert find_layer(model, "") == ("", model)
        with pytest.raises(ValueError, match="'net.9' is not a layer.*named_modules"):
            find_layer(model, "net.9")
        with pytest.raises(ValueError, match="not part of the model"):
            find_layer(model, nn.ReLU())

    def test_features_stop_before_the_head(self, rng):
        model = tiny_net(size=16)                 # its Linear head only takes 16x16 inputs
        big = Tensor(rng.random((1, 3, 40, 24)).astype(np.float32))
        feats = layer_features(model, big, ["net.5", "net.1"])
        assert feats["net.5"].shape == (1, 8, 20, 12) and feats["net.1"].shape == (1, 6, 40, 24)
        with pytest.raises(ValueError, match="shape|features|expected"):
            layer_features(model, big, [""])      # the logits need the head
        assert all(len(m._forward_hooks) == 0 for m in model.modules())

    def test_objectives_compose(self, rng):
        model = tiny_net(dtype=np.float64)
        x = Tensor(rng.random((2, 3, 16, 16)))
        o = -objectives.logit(1) + 0.5 * objectives.tv() - objectives.channel("net.5", 2) * 2
        total, terms = o.evaluate(model, x)
        with minicnn.no_grad():
            logits = model(x).data
            ch = layer_features(model, x, ["net.5"])["net.5"].data[:, 2].mean()
        tvv = total_variation(x).item()
        assert terms["logit"] == pytest.approx(logits[:, 1].mean())
        assert terms["tv"] == pytest.approx(tvv)
        assert total.item() == pytest.approx(-logits[:, 1].mean() + 0.5 * tvv - 2 * ch)


# --------------------------------------------------------------- methods
def test_class_model_lowers_objective_and_stays_in_box():
    model = tiny_net(classes=5)
    img, hist = class_model(model, 2, size=(16, 16), steps=40, lr=0.05)
    assert img.shape == (1, 3, 16, 16) and img.dtype == np.float32 and in_unit_box(img)
    assert len(hist) == 40 and hist[-1] < hist[0]
    assert set(hist.terms) == {"logit", "l2"}
    assert hist.info["logit"] > hist.info["grey_logit"]
    assert 0 <= hist.info["probability"] <= 1


def test_class_model_several_targets_by_name():
    model = tiny_net(classes=3)
    model.classes = ["a", "b", "c"]
    img, hist = class_model(model, ["c", 0], size=(16, 16), steps=5)
    assert img.shape == (2, 3, 16, 16)
    assert hist.info["target"] == [2, 0] and hist.info["class"] == ["c", "a"]
    assert len(hist.info["probability"]) == 2
    with pytest.raises(ValueError, match="not a class"):
        class_model(model, "zebra", size=(16, 16), steps=1)
    with pytest.raises(ValueError, match="out of range"):
        class_model(model, 7, size=(16, 16), steps=1)


def test_class_model_on_trained_network_raises_logit(trained_checkpoint):
    model = minicnn.load_model(trained_checkpoint)
    before = snapshot(model)
    target = 3
    img, hist = class_model(model, target, steps=40, lr=0.05, seed=0)
    assert in_unit_box(img) and img.shape == (1, 3, 32, 32)
    with minicnn.no_grad():
        grey = model(Tensor(np.full((1, 3, 32, 32), 0.5, np.float32))).data[0]
        logits = model(Tensor(img)).data[0]
    assert logits[target] > grey[target] + 10                        # well above the grey image's value
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert hist.info["probability"] == pytest.approx(p[target], rel=1e-4)
    assert hist.info["logit"] == pytest.approx(logits[target], rel=1e-4)
    assert hist.info["grey_logit"] == pytest.approx(grey[target], rel=1e-4)
    assert_unchanged(model, before)


def test_invert_recovers_image_from_invertible_first_layer(rng):
    """Conv 1 -> 4 channels whose first filter is the identity: injective, so features pin the image."""
    conv = nn.Conv2d(1, 4, 3, padding=1)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32) * 0.3
    w[0] = 0
    w[0, 0, 1, 1] = 1.0
    conv.weight.data[...] = w
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 2))
    model.eval()
    x = rng.random((1, 1, 12, 12)).astype(np.float32)
    img, hist = invert(model, x, "0", steps=150, lr=0.05, tv=0)
    assert hist[-1] < 1e-3 * hist[0]
    assert np.abs(img - x).max() < 0.02
    assert hist.info["relative_error"] < 1e-4
    img2, _ = invert(model, x, "0", steps=30, tv=0, optimizer="lbfgs")
    assert np.abs(img2 - x).max() < 0.01


def test_invert_deeper_layer_and_logits_lower_objective(rng):
    model = tiny_net()
    x = rng.random((2, 3, 16, 16)).astype(np.float32)
    for layer in ("net.5", ""):
        img, hist = invert(model, x, layer, steps=30, tv=0.1)
        assert img.shape == x.shape and in_unit_box(img)
        assert hist[-1] < hist[0]
        assert set(hist.terms) == {"relative_error", "tv"}


def test_deep_dream_lowers_objective_each_octave(rng):
    model = tiny_net()
    x = rng.random((1, 3, 20, 24)).astype(np.float32)
    img, hist = deep_dream(model, x, "net.5", steps=6, octaves=2, octave_scale=1.4, lr=0.02)
    assert img.shape == x.shape and in_unit_box(img)
    starts = hist.info["octave_start"] + [len(hist)]
    assert len(hist) == 12
    for a, b in zip(starts[:-1], starts[1:]):
        assert hist[b - 1] < hist[a]
    img1, hist1 = deep_dream(model, x, model.net[4], steps=5, octaves=1, channel=3, jitter=0)
    assert hist1[-1] < hist1[0]
    assert not np.allclose(img1, x)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_style_transfer_larger_than_training_size(rng, optimizer):
    model = tiny_net(size=16)
    content = rng.random((1, 3, 24, 40)).astype(np.float32)
    style = rng.random((1, 3, 50, 30)).astype(np.float32)
    img, hist = style_transfer(model, content, style, "net.5", ["net.1", "net.5"], style_weight=100.0,
                               tv_weight=0.1, steps=15, optimizer=optimizer, init="noise")
    assert img.shape == (1, 3, 24, 40) and in_unit_box(img)
    assert hist[-1] < hist[0]
    assert set(hist.terms) == {"content", "style", "tv"}
    img2, _ = style_transfer(model, content, style, "net.5", ["net.1"], steps=3, size=20)
    assert img2.shape == (1, 3, 12, 20)


def test_style_layer_given_as_one_sequential_module(rng):
    # a single module (here a Sequential, which is iterable) is one layer, not a list of its children
    from collections import OrderedDict
    nn.init.manual_seed(0)
    model = nn.Sequential(OrderedDict([("features", nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())),
                                       ("head", nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 2)))]))
    content = rng.random((1, 3, 8, 8)).astype(np.float32)
    style = rng.random((1, 3, 8, 8)).astype(np.float32)
    _, hist = style_transfer(model, content, style, "features", model.features, steps=2)
    assert hist.info["style_layers"] == ["features"]

def test_class_model_target_as_zero_d_array():
    model = tiny_net(size=16)
    img, hist = class_model(model, np.array(2), size=(16, 16), steps=2)
    ref, ref_hist = class_model(model, 2, size=(16, 16), steps=2)
    assert img.shape == (1, 3, 16, 16) and hist.info["target"] == 2
    assert np.array_equal(img, ref) and list(hist) == list(ref_hist)

def test_one_channel_network(rng):
    model = tiny_net(c_in=1, classes=3)
    img, hist = class_model(model, 1, size=(16, 16), steps=5)
    assert img.shape == (1, 1, 16, 16)
    x = rng.random((1, 1, 16, 16)).astype(np.float32)
    assert invert(model, x, "net.1", steps=3)[0].shape == (1, 1, 16, 16)
    assert deep_dream(model, x, "net.1", steps=2, octaves=2)[0].shape == (1, 1, 16, 16)
    assert style_transfer(model, x, x, "net.1", ["net.1"], steps=2)[0].shape == (1, 1, 16, 16)


def test_tensor_input_gives_array(rng):
    model = tiny_net()
    x = Tensor(rng.random((1, 3, 16, 16)).astype(np.float32))
    img, _ = invert(model, x, "net.1", steps=2)
    assert isinstance(img, np.ndarray)


# -------------------------------------------------- model unchanged, seeds
def _busy_model(rng):
    """A model in TRAIN mode, with grads, a frozen parameter and a hook: all must survive."""
    model = tiny_net()
    model.train()
    for p in model.parameters():
        p.grad = rng.standard_normal(p.shape).astype(np.float32)
    model.net[0].bias.requires_grad = False
    calls = []
    model.net[1].register_forward_hook(lambda m, i, o: calls.append(1))
    return model


@pytest.mark.parametrize("method", ["class_model", "invert", "deep_dream", "style_transfer"])
def test_model_unchanged(rng, method):
    model = _busy_model(rng)
    before = snapshot(model)
    x = rng.random((1, 3, 16, 16)).astype(np.float32)
    run = {
        "class_model": lambda: class_model(model, 1, size=(16, 16), steps=3),
        "invert": lambda: invert(model, x, "net.5", steps=3),
        "deep_dream": lambda: deep_dream(model, x, "net.5", steps=2, octaves=2),
        "style_transfer": lambda: style_transfer(model, x, x, "net.5", ["net.1"], steps=3),
    }[method]
    run()
    assert_unchanged(model, before)


def test_model_unchanged_when_method_raises(rng):
    model = _busy_model(rng)
    before = snapshot(model)
    big = rng.random((1, 3, 24, 24)).astype(np.float32)
    with pytest.raises(ValueError):
        invert(model, big, "", steps=2)                  # the linear head cannot take 24x24
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="x: images must lie inside bounds \\(0, 1\\).*divide 8-bit images by 255"):
        deep_dream(model, big * 255, "net.1")
    assert_unchanged(model, before)


@pytest.mark.parametrize("method", ["class_model", "invert", "deep_dream", "style_transfer"])
def test_seed_reproduces(rng, method):
    model = tiny_net()
    x = rng.random((1, 3, 16, 16)).astype(np.float32)

    def run(seed):
        if method == "class_model":
            return class_model(model, 0, size=(16, 16), steps=6, seed=seed)[0]
        if method == "invert":
            return invert(model, x, "net.5", steps=4, seed=seed)[0]
        if method == "deep_dream":
            return deep_dream(model, x, "net.5", steps=3, octaves=2, jitter=3, seed=seed)[0]
        return style_transfer(model, x, x[:, :, ::-1], "net.5", ["net.1"], steps=4, init="noise", seed=seed)[0]
    a, b, c = run(5), run(5), run(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_argument_errors(rng):
    model = tiny_net()
    x = rng.random((1, 3, 16, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="steps"):
        invert(model, x, "net.1", steps=0)
    with pytest.raises(ValueError, match="optimizer"):
        invert(model, x, "net.1", steps=2, optimizer="sgd")
    with pytest.raises(ValueError, match="jitter=0"):
        invert(model, x, "net.1", steps=2, optimizer="lbfgs", jitter=2)
    with pytest.raises(ValueError, match="init"):
        style_transfer(model, x, x, "net.1", ["net.1"], steps=2, init="zeros")
    with pytest.raises(ValueError, match=r"x: expected a non-empty batch of images of shape \(N, C, H, W\)"):
        invert(model, x[0, 0], "net.1", steps=2)
    with pytest.raises(ValueError, match=r"style: .*add a batch axis with x\[None\]"):
        style_transfer(model, x, x[0], "net.1", ["net.1"], steps=2)
    with pytest.raises(ValueError, match="channels"):
        style_transfer(model, x, x[:, :1], "net.1", ["net.1"], steps=2)


def test_analysis_mode_restores_on_error():
    model = tiny_net()
    model.train()
    with pytest.raises(RuntimeError):
        with analysis_mode(model):
            assert not any(m.training for m in model.modules())
            assert not any(p.requires_grad for p in model.parameters())
            raise RuntimeError("boom")
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_gpu_result_on_input_device(xp, rng):
    model = tiny_net()
    if xp is not np:
        model.to("gpu")
    x = xp.asarray(rng.random((1, 3, 16, 16)).astype(np.float32))
    img, hist = deep_dream(model, x, "net.5", steps=2, octaves=2)
    assert type(img) is type(x) and hist[-1] < hist[0]
    img, _ = style_transfer(model, x, x, "net.5", ["net.1"], steps=2)
    assert type(img) is type(x)
    img, _ = class_model(model, 1, size=(16, 16), steps=2)
    assert type(img) is type(x)


def test_total_variation_matches_torch(rng, torch):
    x = rng.random((2, 3, 6, 7))
    tx = torch.tensor(x, requires_grad=True)
    d_h = tx[:, :, 1:, :-1] - tx[:, :, :-1, :-1]
    d_w = tx[:, :, :-1, 1:] - tx[:, :, :-1, :-1]
    ref = (d_h ** 2 + d_w ** 2).mean()
    ref.backward()
    ours_x = Tensor(x, requires_grad=True)
    ours = total_variation(ours_x)
    ours.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(ours_x.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_class_model_regularisers_act():
    """Clipping small values leaves that fraction of pixels exactly grey; blur makes the image smoother."""
    model = tiny_net(classes=3)
    clipped, _ = class_model(model, 0, size=(16, 16), steps=8, blur_every=4, clip_small=0.5, jitter=0)
    grey = np.all(clipped[0] == np.float32(0.5), axis=0).mean()
    assert grey >= 0.45
    sharp, _ = class_model(model, 0, size=(16, 16), steps=8, blur_every=0, jitter=0)
    blurred, _ = class_model(model, 0, size=(16, 16), steps=8, blur_every=1, blur_sigma=1.0, jitter=0)
    assert total_variation(blurred).item() < total_variation(sharp).item()


def test_resnet_features_and_sizes(rng):
    """A ResNet's ReLUs are functional: relu_layers falls back to its conv/batchnorm layers; any image size works."""
    from collections import OrderedDict

    from minicnn.models import resnet20
    from minicnn.synthesize import relu_layers

    nn.init.manual_seed(0)
    model = nn.Sequential(OrderedDict([("normalize", nn.Normalize([0.5] * 3, [0.25] * 3)), ("net", resnet20())]))
    model.eval()
    names = relu_layers(model)
    assert names[:2] == ["net.conv1", "net.bn1"]
    x = rng.random((1, 3, 20, 28)).astype(np.float32)
    img, hist = deep_dream(model, x, "net.blocks.1", steps=3, octaves=1, jitter=0)
    assert img.shape == x.shape and hist[-1] < hist[0]
