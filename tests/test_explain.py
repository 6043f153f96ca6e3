"""minicnn.explain: attributions, CAM, activations, filters, against hand-derived answers."""
from collections import OrderedDict

import numpy as np
import pytest

import minicnn
from minicnn import explain as E
from minicnn import nn
from minicnn.backend import to_device
from minicnn.models import get_model


# ----------------------------------------------------------------------------- helpers
def linear_model(w, b=None):
    """f(x) = W flatten(x) + b: the gradient is W[c] everywhere."""
    k = w.shape[0]
    fc = nn.Linear(int(np.prod(w.shape[1:])), k)
    fc.weight.data = w.reshape(k, -1).copy()
    fc.bias.data = np.zeros(k, w.dtype) if b is None else np.asarray(b, w.dtype)
    return nn.Sequential(nn.Flatten(), fc)


def gap_net(c_in=2, width=5, classes=3, seed=0):
    """conv - ReLU - conv - ReLU - global average pooling - linear: the architecture CAM is defined for."""
    nn.init.manual_seed(seed)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(c_in, 4, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(4, width, 3, padding=1)), ("relu2", nn.ReLU()),
        ("gap", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(width, classes))]))


def cpu(a):
    return to_device(a, "cpu")


def rank_corr(a, b):
    from scipy.stats import spearmanr
    return spearmanr(np.ravel(a), np.ravel(b))[0]


# ------------------------------------------------------- the linear model (closed forms)
@pytest.fixture
def lin(rng):
    w = rng.standard_normal((4, 3, 5, 6))            # 4 classes, 3 x 5 x 6 images
    x = rng.random((2, 3, 5, 6))
    return linear_model(w, b=[0.5, -1, 2, 0]), w, x


def test_linear_gradient_is_w_everywhere(lin):
    model, w, x = lin
    g = E.gradient(model, x, [1, 3])
    np.testing.assert_allclose(g, w[[1, 3]], rtol=1e-12)
    np.testing.assert_allclose(E.saliency(model, x, 2), np.abs(w[[2, 2]]).max(axis=1), rtol=1e-12)
    # no ReLU: deconvnet, guided backprop and SmoothGrad all give W too
    for fn in (E.deconvnet, E.guided_backprop):
        np.testing.assert_allclose(fn(model, x, 0), w[[0, 0]], rtol=1e-12)
    np.testing.assert_allclose(E.smoothgrad(model, x, 0, samples=3), w[[0, 0]], rtol=1e-12)


def test_linear_integrated_gradients_is_w_times_x_exactly(lin):
    model, w, x = lin
    ig, gap = E.integrated_gradients(model, x, [0, 2], steps=3, return_gap=True)
    np.testing.assert_allclose(ig, w[[0, 2]] * x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gap, 0, atol=1e-12)
    # with a baseline x': (x - x') * w
    base = np.full((3, 1, 1), 0.25)
    ig = E.integrated_gradients(model, x, 1, baseline=base, steps=2)
    np.testing.assert_allclose(ig, w[[1, 1]] * (x - 0.25), rtol=1e-12, atol=1e-14)


def test_linear_occlusion_of_one_pixel_is_w_x_summed_over_channels(lin):
    model, w, x = lin
    occ = E.occlusion(model, x, [3, 1], window=1, stride=1, baseline=0.0, score="logit")
    np.testing.assert_allclose(occ, (w[[3, 1]] * x).sum(axis=1), rtol=1e-10, atol=1e-12)


def test_occlusion_averages_overlapping_windows_and_leaves_uncovered_pixels_zero(lin):
    model, w, x = lin
    contrib = (w[[2, 2]] * x).sum(axis=1)                       # (N, 5, 6): each pixel's share of the logit
    occ = E.occlusion(model, x, 2, window=(2, 3), stride=(2, 2), baseline=0.0, score="logit")
    # by definition: windows at rows 0, 2 and columns 0, 2 (row 4 and column 5 are never covered)
    want = np.zeros((2, 5, 6))
    count = np.zeros((5, 6))
    for i in (0, 2):
        for j in (0, 2):
            drop = contrib[:, i:i + 2, j:j + 3].sum(axis=(1, 2))
            want[:, i:i + 2, j:j + 3] += drop[:, None, None]
            count[i:i + 2, j:j + 3] += 1
    want = np.where(count > 0, want / np.maximum(count, 1), 0)
    np.testing.assert_allclose(occ, want, rtol=1e-10, atol=1e-12)
    assert (occ[:, 4, :] == 0).all() and (occ[:, :, 5] == 0).all()


def test_occlusion_probability_score_and_batched_windows(lin, monkeypatch):
    model, w, x = lin
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        occ = E.occlusion(model, x, None, window=2, stride=1)      # 2 images x 20 windows
    finally:
        handle.remove()
    assert sum(calls[2:]) == 2 * 4 * 5 and len(calls) <= 4      # a few forward passes, not 40
    logits = x.reshape(2, -1) @ w.reshape(4, -1).T + [0.5, -1, 2, 0]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    c = logits.argmax(1)
    # one window by hand: the top-left 2x2 square set to grey
    x0 = x.copy()
    x0[:, :, :2, :2] = 0.5
    l0 = x0.reshape(2, -1) @ w.reshape(4, -1).T + [0.5, -1, 2, 0]
    p0 = np.exp(l0) / np.exp(l0).sum(1, keepdims=True)
    drop = p[[0, 1], c] - p0[[0, 1], c]
    np.testing.assert_allclose(occ[:, 0, 0], drop, rtol=1e-8)  # pixel (0, 0) is covered by that window only
    assert np.abs(occ).max() <= 1


# ---------------------------------------------- hand-built ReLU networks (the three rules)
def hand_net(w2):
    """Normalize - MaxPool2d(2) - Flatten - Linear(3, 2) - ReLU - Linear(2, 1), weights set by hand.

    Analyses take pixels in [0, 1]; the first layer maps them to the hand-picked
    values: (x - 0.75) / 0.125 = 8 x - 6 (exact in binary), so every input
    gradient is 8 times the one with respect to those values.
    """
    l1, l2 = nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False)
    l1.weight.data[...] = [[1, -1, 0], [0, 1, 1]]
    l2.weight.data[...] = [w2]
    return nn.Sequential(nn.Normalize([0.75], [0.125]), nn.MaxPool2d(2), nn.Flatten(), l1, nn.ReLU(), l2)


# v = 8 x - 6 is 1 x 1 x 2 x 6; the pooling windows' maxima are 2 at (0, 1), 1 at (0, 2), -3 at (0, 4).
V_HAND = np.array([[[[0, 2, 1, -5, -3, -4], [-1, 1, 0, 0.5, -6, -3.5]]]], dtype=np.float32)
X_HAND = (V_HAND + 6) / 8                     # the pixels in [0, 1] that the network's Normalize maps to V_HAND


@pytest.mark.parametrize("w2, expected", [
    # v = pool(x) = [2, 1, -3]; z = W1 v = [1, -2]; relu -> [1, 0]; upstream g = dy/da = w2.
    # w2 = [-1, 2]: gradient  g*[z>0] = [-1, 0] -> W1^T -> [-1, 1, 0]
    #               deconvnet max(g, 0) = [0, 2] -> W1^T -> [0, 2, 2]
    #               guided    [0, 0]             -> [0, 0, 0]
    ([-1, 2], {"gradient": [-1, 1, 0], "deconvnet": [0, 2, 2], "guided_backprop": [0, 0, 0]}),
    # w2 = [1, 2]: gradient [1, 0] -> [1, -1, 0]; deconvnet [1, 2] -> [1, 1, 2]; guided [1, 0] -> [1, -1, 0]
    ([1, 2], {"gradient": [1, -1, 0], "deconvnet": [1, 1, 2], "guided_backprop": [1, -1, 0]}),
])
def test_three_rules_on_a_hand_network_route_through_the_pooling_switches(w2, expected):
    model = hand_net(w2)
    for method, vals in expected.items():
        got = getattr(E, method)(model, X_HAND, 0)
        want = np.zeros_like(X_HAND)
        want[0, 0, 0, 1], want[0, 0, 0, 2], want[0, 0, 0, 4] = vals    # the argmax switches
        np.testing.assert_allclose(got, 8 * want, err_msg=method)      # d/dx = 8 d/dv


def test_guided_backprop_and_deconvnet_are_one_switch_not_a_copy():
    # the same module objects, the same forward result; a ReLU module shared by two places still works
    relu = nn.ReLU()
    l1, l2, l3 = nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)
    l1.weight.data[...] = [[1, 0], [0, -1]]
    l2.weight.data[...] = [[1, 1], [1, -1]]
    l3.weight.data[...] = [[-1, 1]]
    model = nn.Sequential(nn.Normalize([0.5, 0.5], [0.25, 0.25]), nn.Flatten(), l1, relu, l2, relu, l3)
    x = np.array([[[[0.75]], [[0.0]]]])        # (1, 2, 1, 1), normalised to v = 4 x - 2 = [1, -2]
    # every input gradient is 4 times the one with respect to v; with respect to v:
    # z1 = [1, 2] -> a1 = [1, 2]; z2 = [3, -1] -> a2 = [3, 0]; y = -3
    # gradient: g = [-1, 1] -> [z2>0] -> [-1, 0] -> W2^T -> [-1, -1] -> [z1>0] -> [-1, -1] -> W1^T -> [-1, 1]
    # deconvnet: relu -> [0, 1] -> W2^T -> [1, -1] -> relu -> [1, 0] -> W1^T -> [1, 0]
    # guided: [0, 0] -> ... -> [0, 0]
    assert E.gradient(model, x, 0).ravel().tolist() == [-4, 4]
    assert E.deconvnet(model, x, 0).ravel().tolist() == [4, 0]
    assert E.guided_backprop(model, x, 0).ravel().tolist() == [0, 0]


# ------------------------------------------------------------------ integrated gradients
def test_integrated_gradients_completeness_gap_shrinks_with_steps(rng):
    nn.init.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2), nn.Sigmoid())
    model.double()
    x = rng.random((3, 1, 6, 6))
    gaps = [np.abs(E.integrated_gradients(model, x, 1, baseline=0.1, steps=m, return_gap=True)[1]).max()
            for m in (2, 8, 32)]
    assert gaps[0] > gaps[1] > gaps[2]
    # the midpoint rule's error falls as 1/m^2: 4x the steps, about 16x less gap
    assert gaps[1] < gaps[0] / 8 and gaps[2] < gaps[1] / 8
    ig = E.integrated_gradients(model, x, 1, baseline=0.1, steps=8)
    np.testing.assert_allclose(E.completeness_gap(model, x, ig, 1, baseline=0.1),
                               E.integrated_gradients(model, x, 1, baseline=0.1, steps=8, return_gap=True)[1])


# -------------------------------------------------------------------------- CAM, Grad-CAM
def test_cam_equals_grad_cam_times_the_map_size_on_a_gap_network(rng):
    model = gap_net()
    x = rng.random((3, 2, 6, 7))
    model.double()
    c = E.cam(model, x, [0, 1, 2], "relu2")
    g = E.grad_cam(model, x, [0, 1, 2], "relu2")
    assert c.shape == g.shape == (3, 6, 7)
    np.testing.assert_allclose(c, g * 42, rtol=1e-10, atol=1e-12)     # alpha_k = w_k / Z, Z = 6*7
    # by hand: CAM = sum_k w_k^c f_k
    feats = E.activations(model, x, "relu2")
    w = model.fc.weight.data
    np.testing.assert_allclose(c[1], np.tensordot(w[1], feats[1], axes=1), rtol=1e-12)
    # the normalised pictures are identical (a positive factor cancels), upsampled too
    np.testing.assert_allclose(E.cam(model, x, 2, "relu2", normalize=True, upsample=True),
                               E.grad_cam(model, x, 2, "relu2", normalize=True, upsample=True), atol=1e-12)


def test_cam_on_resnet20_and_default_layer(rng):
    model = get_model("resnet20")
    x = rng.random((2, 3, 32, 32)).astype(np.float32)
    assert E.default_cam_layer(model, x) == "blocks"
    c = E.cam(model, x, 4)
    g = E.grad_cam(model, x, 4)
    assert c.shape == (2, 8, 8)
    np.testing.assert_allclose(c / 64, g, rtol=1e-4, atol=1e-5 * np.abs(g).max())


def test_cam_refuses_a_network_without_global_average_pooling(rng):
    model = get_model("simple_cnn")
    x = rng.random((1, 3, 32, 32)).astype(np.float32)
    assert E.default_cam_layer(model, x) == "10"      # the last conv's ReLU (8x8), before pooling
    with pytest.raises(ValueError, match="grad_cam"):
        E.cam(model, x, 0)
    with pytest.raises(ValueError, match="grad_cam"):
        E.cam(model, x, 0, "11")                     # right channels, but Flatten of a 4x4 map
    assert E.grad_cam(model, x, 0).shape == (1, 8, 8)


def test_grad_cam_raw_and_normalised_maps_and_an_all_negative_map():
    # one channel, A = x itself (Identity layer), logit = -mean(A): alpha = -1/Z, raw map = -A/Z < 0
    model = nn.Sequential(OrderedDict([("feat", nn.Identity()), ("gap", nn.AdaptiveAvgPool2d(1)),
                                       ("flat", nn.Flatten()), ("fc", nn.Linear(1, 2, bias=False))]))
    model.fc.weight.data[...] = [[-1], [1]]
    x = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 2, 3) / 8
    raw = E.grad_cam(model, x, 0, "feat")
    np.testing.assert_allclose(raw, -x[:, 0] / 6, rtol=1e-6)
    norm = E.grad_cam(model, x, 0, "feat", normalize=True)
    assert norm.shape == (1, 2, 3) and not np.isnan(norm).any() and (norm == 0).all()
    # class 1: raw = A/6, normalised = A / max A
    np.testing.assert_allclose(E.grad_cam(model, x, 1, "feat", normalize=True), x[:, 0] / x.max(), rtol=1e-6)   # scaled to max 1
    up = E.grad_cam(model, x, 1, "feat", upsample=True)
    assert up.shape == (1, 2, 3)


def test_normalize_map_and_upsample():
    m = np.array([[[-1.0, 2.0], [4.0, 0.0]], [[-1.0, -2.0], [-3.0, -4.0]]])
    np.testing.assert_allclose(E.normalize_map(m), [[[0, 0.5], [1, 0]], [[0, 0], [0, 0]]])
    up = E.upsample(np.array([[[0.0, 4.0], [8.0, 12.0]]]), (4, 4))
    # align_corners=False: rows sample at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1)
    np.testing.assert_allclose(up[0, :, 0], [0, 2, 6, 8])
    np.testing.assert_allclose(up[0, 0], [0, 1, 3, 4])
    np.testing.assert_allclose(E.upsample(np.full((1, 3, 5), 2.0), (7, 4)), 2.0)


def test_upsample_matches_torch(torch, rng):
    m = rng.random((2, 3, 5))
    want = torch.nn.functional.interpolate(torch.tensor(m)[:, None], size=(8, 11), mode="bilinear",
                                           align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(E.upsample(m, (8, 11)), want, rtol=1e-10)


# --------------------------------------------------------------- activations, filters, top-k
def test_activations_single_and_many_layers(rng):
    model = gap_net()
    x = rng.random((2, 2, 5, 5)).astype(np.float32)
    a = E.activations(model, x, ["conv1", model.relu2, "fc"])
    assert list(a) == ["conv1", "relu2", "fc"]
    assert a["conv1"].shape == (2, 4, 5, 5) and a["relu2"].shape == (2, 5, 5, 5) and a["fc"].shape == (2, 3)
    np.testing.assert_allclose(a["fc"], model(minicnn.tensor(x)).data, rtol=1e-6)
    np.testing.assert_allclose(E.activations(model, x, "conv1"), a["conv1"])
    with pytest.raises(ValueError, match=r"'conv9' is not a layer of the model.*'conv1', 'relu1'"):
        E.activations(model, x, ["conv9"])


def test_filters_tiles_a_hand_made_conv():
    conv = nn.Conv2d(3, 5, 2)
    conv.weight.data[...] = 0
    conv.weight.data[0, 0, 0, 0] = 2.0            # filter 0: +max in red at the top-left
    conv.weight.data[1, 2, 1, 1] = -0.5           # filter 1: its max |w| is negative, in blue
    img = E.filters(conv)
    # 5 filters in a 2 x 3 grid of 2x2 tiles with 1-pixel white lines: (2*3 - 1) x (3*3 - 1)
    assert img.shape == (5, 8, 3)
    np.testing.assert_allclose(img[0, 0], [1, 0.5, 0.5])
    np.testing.assert_allclose(img[1, 4], [0.5, 0.5, 0])          # tile 1 starts at column 3
    np.testing.assert_allclose(img[2, :], 1)                      # a separator row
    assert (img[3:, 6:] == 1).all()                               # the sixth tile's place, empty
    assert E.filters(get_model("lenet5")).shape == (2 * 6 - 1, 3 * 6 - 1, 3)
    gray = E.filters(nn.Conv2d(2, 3, 3))                          # 3 filters x 2 input channels
    assert gray.shape == (3 * 4 - 1, 2 * 4 - 1)


def test_top_activating_streams_and_matches_brute_force(rng):
    from minicnn.data import ArrayDataset

    model = gap_net(c_in=3)
    images = rng.integers(0, 256, (23, 3, 9, 9)).astype(np.uint8)
    ds = ArrayDataset(images, np.zeros(23, np.int64))
    res = E.top_activating(model, ds, "conv2", channel=2, k=4, batch_size=5)
    a = E.activations(model, images / np.float32(255), "conv2")[:, 2]
    best = a.reshape(23, -1).max(axis=1)
    order = np.argsort(-best, kind="stable")[:4]
    np.testing.assert_array_equal(res.indices, order)
    np.testing.assert_allclose(res.values, best[order], rtol=1e-5)
    for idx, (i, j) in zip(res.indices, res.positions):
        assert a[idx, i, j] == pytest.approx(best[idx], rel=1e-6)
    # two 3x3 convs with padding 1: a 5x5 field; crops are real pixels of the image
    assert res.geometry.size == 5 and res.crops.shape == (4, 3, 5, 5)
    idx, (i, j) = res.indices[0], res.positions[0]
    (top, _), (left, _) = res.geometry.region(i, j)
    top, left = min(max(top, 0), 4), min(max(left, 0), 4)
    np.testing.assert_allclose(res.crops[0], images[idx, :, top:top + 5, left:left + 5] / 255, rtol=1e-6)
    # a float array works too, and so does a non-spatial layer
    res2 = E.top_activating(model, images / np.float32(255), "fc", channel=0, k=3)
    assert res2.positions is None and res2.crops.shape == (3, 3, 9, 9)


# -------------------------------------------------------------------------- conventions
def test_targets_int_sequence_none_and_errors(lin):
    model, w, x = lin
    logits = x.reshape(2, -1) @ w.reshape(4, -1).T + [0.5, -1, 2, 0]
    np.testing.assert_allclose(E.gradient(model, x, None), w[logits.argmax(1)])
    np.testing.assert_allclose(E.gradient(model, x, np.array([2, 0])), w[[2, 0]])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        E.gradient(model, x, 4)
    with pytest.raises(ValueError, match="sequence of 2"):
        E.saliency(model, x, [1, 2, 3])
    np.testing.assert_allclose(E.gradient(model, x, np.array(3)), w[[3, 3]])     # a 0-d array is one index
    for fractional in (1.5, np.float64(2.0), np.array(1.5), [1.0, 2.0]):          # never truncated to an int
        with pytest.raises(ValueError, match="integer indices"):
            E.gradient(model, x, fractional)
    with pytest.raises(ValueError, match="x\\[None\\]"):
        E.gradient(model, x[0], 1)
    with pytest.raises(ValueError, match="score"):
        E.occlusion(model, x, 1, score="softmax")
    with pytest.raises(ValueError, match="window"):
        E.occlusion(model, x, 1, window=7)
    for bad in ("0.1", None, -0.1):
        with pytest.raises(ValueError, match=r"smoothgrad: noise must be a number >= 0 .*got " + repr(bad)[:2]):
            E.smoothgrad(model, x, 1, noise=bad)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        E.top_activating(model, x, "1", 0, batch_size=0)


def test_tensor_input_one_channel_and_float32(rng):
    nn.init.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
    x = rng.random((2, 1, 8, 8)).astype(np.float32)
    xt = minicnn.tensor(x)
    for name in ("gradient", "deconvnet", "guided_backprop", "smoothgrad", "integrated_gradients"):
        out = getattr(E, name)(model, xt, 1)
        assert out.shape == x.shape and out.dtype == np.float32, name
    assert E.saliency(model, xt, None).shape == (2, 8, 8)
    assert E.occlusion(model, xt, 1, window=3, stride=2).shape == (2, 8, 8)
    assert E.grad_cam(model, xt, 1, "1", upsample=True).shape == (2, 8, 8)
    assert xt.grad is None and not xt.requires_grad


def test_smoothgrad_seeded_and_noise_free(rng):
    model = gap_net()
    model.double()
    x = 0.3 + 0.4 * rng.random((2, 2, 5, 5))      # the noisy copies stay inside [0, 1]
    a = E.smoothgrad(model, x, 1, samples=4, seed=7)
    np.testing.assert_array_equal(a, E.smoothgrad(model, x, 1, samples=4, seed=7))
    assert not np.allclose(a, E.smoothgrad(model, x, 1, samples=4, seed=8))
    np.testing.assert_allclose(E.smoothgrad(model, x, 1, samples=3, noise=0.0), E.gradient(model, x, 1),
                               rtol=1e-12)
    # the mean of per-sample gradients, drawn as documented
    noise = np.random.default_rng(7).standard_normal((4,) + x.shape)
    spread = (x.reshape(2, -1).max(1) - x.reshape(2, -1).min(1)).reshape(1, 2, 1, 1, 1)
    want = np.mean([E.gradient(model, x + 0.15 * spread[0] * e, 1) for e in noise], axis=0)
    np.testing.assert_allclose(a, want, rtol=1e-10)


def _snapshot(model):
    return dict(
        modes=[m.training for m in model.modules()],
        flags=[p.requires_grad for p in model.parameters()],
        grads=[p.grad for p in model.parameters()],
        state={k: v.copy() for k, v in model.state_dict().items()},
        hooks=[dict(m._forward_hooks) for m in model.modules()])


def _assert_untouched(model, snap, x, out):
    assert [m.training for m in model.modules()] == snap["modes"]
    assert [p.requires_grad for p in model.parameters()] == snap["flags"]
    assert all(p.grad is g for p, g in zip(model.parameters(), snap["grads"]))
    assert all(np.array_equal(snap["state"][k], v) for k, v in model.state_dict().items())
    assert [dict(m._forward_hooks) for m in model.modules()] == snap["hooks"]
    was = [m.training for m in model.modules()]
    model.eval()
    with minicnn.no_grad():
        np.testing.assert_array_equal(model(minicnn.tensor(x)).data, out)
    for m, t in zip(model.modules(), was):
        object.__setattr__(m, "training", t)


CALLS = {
    "gradient": lambda m, x, t: E.gradient(m, x, t),
    "saliency": lambda m, x, t: E.saliency(m, x, t),
    "deconvnet": lambda m, x, t: E.deconvnet(m, x, t),
    "guided_backprop": lambda m, x, t: E.guided_backprop(m, x, t),
    "smoothgrad": lambda m, x, t: E.smoothgrad(m, x, t, samples=2),
    "integrated_gradients": lambda m, x, t: E.integrated_gradients(m, x, t, steps=3, return_gap=True),
    "occlusion": lambda m, x, t: E.occlusion(m, x, t, window=4, stride=4),
    "cam": lambda m, x, t: E.cam(m, x, t, "blocks"),
    "grad_cam": lambda m, x, t: E.grad_cam(m, x, t, "blocks.2"),
    "activations": lambda m, x, t: E.activations(m, x, ["blocks.1", "fc"]),
    "top_activating": lambda m, x, t: E.top_activating(m, (x * 255).astype(np.uint8), "blocks.1.conv1", t or 0, k=1),
    "effective_receptive_field": lambda m, x, t: E.effective_receptive_field(m, "blocks.0", x=x),
    "layer_geometry": lambda m, x, t: E.layer_geometry(m, x.shape),
}


@pytest.fixture(scope="module")
def busy_resnet():
    """A ResNet-8 in a caller's odd state: training mode, one sub-module in eval, a frozen
    parameter, stale gradients, non-trivial batchnorm statistics and a hook of the caller's."""
    model = minicnn.models.ResNetCifar(8, num_classes=3)
    rng = np.random.default_rng(5)
    for name, b in model.named_buffers():
        if "running_var" in name:
            b.data[...] = rng.uniform(0.5, 2, b.shape)
        elif "running_mean" in name:
            b.data[...] = rng.normal(0, 0.1, b.shape)
    model.train()
    model.blocks[0].eval()
    params = list(model.parameters())
    params[1].requires_grad = False
    params[0].grad = np.ones_like(params[0].data)
    model.fc.register_forward_hook(lambda m, i, o: None)
    return model


@pytest.mark.parametrize("method", sorted(CALLS))
def test_the_model_is_untouched(method, busy_resnet, rng):
    model = busy_resnet
    x = rng.random((2, 3, 8, 8)).astype(np.float32)
    snap = _snapshot(model)
    model.eval()
    with minicnn.no_grad():
        out = model(minicnn.tensor(x)).data
    for m, t in zip(model.modules(), snap["modes"]):
        object.__setattr__(m, "training", t)
    CALLS[method](model, x, 1)
    _assert_untouched(model, snap, x, out)
    # and when the method raises half-way (a bad target is only found after the forward pass)
    with pytest.raises((ValueError, IndexError)):
        CALLS[method](model, x, 99) if method not in ("activations", "layer_geometry",
                                                        "effective_receptive_field") else \
            CALLS[method](model, x[:, :2], 1)
    _assert_untouched(model, snap, x, out)


def test_grad_cam_error_inside_the_forward_pass_leaves_no_hook(rng):
    model = gap_net()
    x = rng.random((1, 2, 5, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="spatial"):
        E.grad_cam(model, x, 0, "fc")
    assert all(not m._forward_hooks for m in model.modules())


def test_gradient_on_the_gpu(xp, rng):
    if xp is np:
        pytest.skip("the CPU is covered by every other test")
    model = gap_net().to("gpu")
    x = rng.random((2, 2, 5, 5)).astype(np.float32)
    for fn in (E.gradient, E.guided_backprop, E.saliency):
        g = fn(model, xp.asarray(x), 1)
        assert minicnn.backend.device_of(g) == "gpu"
        np.testing.assert_allclose(cpu(g), fn(gap_net().to("cpu"), x, 1), rtol=1e-4, atol=1e-6)
    assert minicnn.backend.device_of(E.grad_cam(model, xp.asarray(x), 1, "relu2")) == "gpu"
    assert minicnn.backend.device_of(E.occlusion(model, xp.asarray(x), 1, window=2, stride=2)) == "gpu"


# ----------------------------------------------------------- property: any linear model, any shape
from hypothesis import given, strategies as st  # noqa: E402


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(2, 4), st.integers(1, 3),
       st.integers(0, 2 ** 31 - 1))
def test_closed_forms_of_a_linear_model_for_any_shape(c, h, w, k, n, seed):
    rng = np.random.default_rng(seed)
    wt = rng.standard_normal((k, c, h, w))
    x = rng.random((n, c, h, w))
    model = linear_model(wt, b=rng.standard_normal(k))
    target = rng.integers(0, k, n)
    np.testing.assert_allclose(E.gradient(model, x, target), wt[target], rtol=1e-12)
    np.testing.assert_allclose(E.integrated_gradients(model, x, target, steps=2), wt[target] * x,
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(E.occlusion(model, x, target, window=1, stride=1, baseline=0.0, score="logit"),
                               (wt[target] * x).sum(axis=1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(E.saliency(model, x, target), np.abs(wt[target]).max(axis=1), rtol=1e-12)


def test_results_come_back_on_the_input_device_whatever_the_models(xp, rng):
    """A GPU model explains NumPy images (NumPy results) and a CPU model CuPy images (CuPy results)."""
    if xp is np:
        pytest.skip("one device: every other test")
    x = rng.random((2, 2, 5, 5)).astype(np.float32)
    calls = {
        "gradient": lambda m, x: E.gradient(m, x, 1),
        "saliency": lambda m, x: E.saliency(m, x, [0, 2]),
        "smoothgrad": lambda m, x: E.smoothgrad(m, x, 1, samples=2),
        "integrated_gradients": lambda m, x: E.integrated_gradients(m, x, 1, baseline=x * 0.5, steps=2),
        "gap": lambda m, x: E.integrated_gradients(m, x, 1, steps=2, return_gap=True)[1],
        "occlusion": lambda m, x: E.occlusion(m, x, 1, window=2, stride=2),
        "cam": lambda m, x: E.cam(m, x, 1, "relu2", upsample=True),
        "grad_cam": lambda m, x: E.grad_cam(m, x, 1, "relu2"),
        "activations": lambda m, x: E.activations(m, x, "conv1"),
        "effective_receptive_field": lambda m, x: E.effective_receptive_field(m, "conv2", x=x),
        "explain_all": lambda m, x: E.explain_all(m, x, 1, methods=("deconvnet",))[0]["deconvnet"],
    }
    for name, call in calls.items():
        expected = call(gap_net(), x)
        for model_device, images in (("gpu", x), ("cpu", xp.asarray(x))):
            r = call(gap_net().to(model_device), images)
            assert minicnn.backend.device_of(r) == minicnn.backend.device_of(images), (name, model_device)
            np.testing.assert_allclose(cpu(r), expected, rtol=1e-4, atol=1e-6, err_msg=name)


def test_gradient_methods_work_inside_a_callers_no_grad(rng):
    """Input gradients need grad mode: a caller's no_grad() must not turn Grad-CAM into zeros
    (nor make the gradient methods raise), and stays in force afterwards."""
    model = gap_net()
    x = rng.random((2, 2, 5, 5)).astype(np.float32)
    calls = [lambda: E.gradient(model, x, 1), lambda: E.grad_cam(model, x, 1, "relu2"),
             lambda: E.integrated_gradients(model, x, 1, steps=2),
             lambda: E.effective_receptive_field(model, "conv2", x=x)]
    for call in calls:
        expected = call()
        assert np.abs(expected).max() > 0
        with minicnn.no_grad():
            np.testing.assert_allclose(call(), expected, rtol=1e-6)
            assert not (minicnn.tensor(x, requires_grad=True) * 2).requires_grad     # still no_grad


def test_grad_cam_and_the_erf_use_true_gradients_inside_a_callers_relu_rule(rng):
    """Grad-CAM (e.g. for guided Grad-CAM) inside a caller's relu_backward_rule block is still Grad-CAM."""
    import minicnn.functional as F

    model = gap_net()
    x = rng.random((2, 2, 5, 5)).astype(np.float32)
    calls = [lambda: E.grad_cam(model, x, 1, "relu1"), lambda: E.effective_receptive_field(model, "conv2", x=x),
             lambda: E.gradient(model, x, 1)]
    for call in calls:
        expected = call()
        for rule in ("deconvnet", "guided"):
            with F.relu_backward_rule(rule):
                np.testing.assert_allclose(call(), expected, rtol=1e-6)
    with F.relu_backward_rule("guided"):      # and the methods that choose a rule still get theirs
        guided = E.guided_backprop(model, x, 1)
    np.testing.assert_allclose(guided, E.guided_backprop(model, x, 1))
