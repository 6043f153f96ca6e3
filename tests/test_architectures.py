"""The lectures' other networks: inception, all-convolutional, dense prediction, autoencoder, U-Net, DCGAN.

Parameter counts and multiply-adds against hand counts, shapes, float64
gradient checks of every new block, and the fully convolutional conversion
giving exactly the classifier's logits.
"""
import copy
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn
from minicnn import models, nn, tensor
from minicnn.models import (Inception, allconv, as_fully_convolutional, conv_autoencoder, dcgan_discriminator,
                            dcgan_generator, inception_small, unet_small, UNet)
from minicnn.models.inception import INCEPTION_SMALL_CONFIG
from minicnn.summary import summary


# ------------------------------------------------------------------ hand counts
def conv_p(c_in, c_out, k, bias=False, bn=True):
    """Parameters of a k x k convolution (+ its batchnorm's scale and shift)."""
    return c_out * c_in * k * k + (c_out if bias else 0) + (2 * c_out if bn else 0)


def inception_p(c_in, c1, c3r, c3, c5r, c5, cp):
    return (conv_p(c_in, c1, 1) + conv_p(c_in, c3r, 1) + conv_p(c3r, c3, 3) + conv_p(c_in, c5r, 1)
            + conv_p(c5r, c5, 5) + conv_p(c_in, cp, 1))


def inception_macs(c_in, c1, c3r, c3, c5r, c5, cp, hw):
    return hw * hw * (c_in * c1 + c_in * c3r + 9 * c3r * c3 + c_in * c5r + 25 * c5r * c5 + c_in * cp)


def inception_small_hand(classes=10):
    params, macs = conv_p(3, 48, 3), 32 * 32 * 3 * 48 * 9
    c, hw = 48, 16
    for name, w in INCEPTION_SMALL_CONFIG.items():
        if name == "inception4a":
            hw = 8
        params += inception_p(c, *w)
        macs += inception_macs(c, *w, hw)
        c = w[0] + w[2] + w[4] + w[5]
    return params + c * classes + classes, macs + c * classes


def allconv_hand(classes=10):
    #         c_in c_out k  output size
    layers = [(3, 32, 3, 32), (32, 32, 3, 32), (32, 32, 3, 16), (32, 64, 3, 16), (64, 64, 3, 16),
              (64, 64, 3, 8), (64, 64, 3, 6), (64, 64, 1, 6)]
    params = sum(conv_p(a, b, k) for a, b, k, _ in layers) + 64 * classes + classes
    macs = sum(a * b * k * k * s * s for a, b, k, s in layers) + 64 * classes * 36
    return params, macs


# The lead adds these to tests/test_summary.py (HAND / PUBLISHED) when the zoo grows.
HAND = {"inception_small": inception_small_hand(), "allconv": allconv_hand()}
PUBLISHED = {"inception_small": 89790, "allconv": 153898}


@pytest.mark.parametrize("name", sorted(HAND))
def test_zoo_models_match_hand_counts_and_docstrings(name):
    model = models.get_model(name)
    params, macs = HAND[name]
    assert params == PUBLISHED[name] == model.num_parameters()
    assert f"{PUBLISHED[name]:,}" in models.MODELS[name].__doc__
    s = summary(model, (1, 3, 32, 32))
    assert s.total_params == params and s.total_macs == macs and s.output_shape == (1, 10)
    assert name in models.MODELS


@pytest.mark.parametrize("name", ["inception_small", "allconv"])
def test_zoo_models_forward_any_class_count(name):
    model = models.get_model(name, num_classes=7)
    model.eval()
    with minicnn.no_grad():
        y = model(tensor(np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)))
    assert y.shape == (2, 7) and y.dtype == np.float32


def test_allconv_has_no_linear_layer_and_no_pooling_but_the_global_average():
    model = allconv()
    kinds = {type(m) for m in model.modules()}
    assert nn.Linear not in kinds and nn.MaxPool2d not in kinds
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in model.modules()) == 2


# ------------------------------------------------------------------ inception module
@settings(max_examples=15, deadline=None)
@given(c_in=st.integers(1, 4), widths=st.lists(st.integers(1, 4), min_size=6, max_size=6),
       h=st.integers(1, 7), w=st.integers(1, 7))
def test_inception_output_channels_are_the_sum_of_its_branches(c_in, widths, h, w):
    block = Inception(c_in, *widths)
    c1, c3r, c3, c5r, c5, cp = widths
    assert block.out_channels == c1 + c3 + c5 + cp
    x = tensor(np.random.default_rng(0).standard_normal((2, c_in, h, w)).astype(np.float32))
    with minicnn.no_grad():
        y = block(x)
        branches = [block.branch1(x), block.branch3(x), block.branch5(x), block.branch_pool(x)]
    assert y.shape == (2, c1 + c3 + c5 + cp, h, w)
    assert [b.shape[1] for b in branches] == [c1, c3, c5, cp]
    # the output is the branches stacked in order along the channels
    np.testing.assert_array_equal(y.data, np.concatenate([b.data for b in branches], axis=1))
    assert block.num_parameters() == inception_p(c_in, *widths)


def test_inception_module_gradcheck_float64():
    nn.init.manual_seed(0)
    block = Inception(3, 2, 2, 3, 1, 2, 2)
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 5))
    rep = minicnn.gradcheck(block, [x])
    assert rep.passed, rep


def test_inception_bad_width_is_named():
    with pytest.raises(ValueError, match="c5_reduce must be a positive int, got 0"):
        Inception(8, 4, 4, 4, 0, 4, 4)


# ------------------------------------------------------------------ dense prediction
FCN_MODELS = ["lenet5", "simple_cnn", "vgg_small", "alexnet_small", "resnet20", "inception_small", "allconv"]


@pytest.mark.parametrize("name", FCN_MODELS)
def test_fully_convolutional_gives_exactly_the_logits_on_32x32(name):
    nn.init.manual_seed(0)
    model = models.get_model(name).double()
    model.eval()
    before = copy.deepcopy(model.state_dict())
    fcn = as_fully_convolutional(model)
    assert not any(isinstance(m, nn.Linear) for m in fcn.modules())
    x = np.random.default_rng(2).random((2, 3, 32, 32))
    with minicnn.no_grad():
        logits = model(tensor(x)).data
        scores = fcn(tensor(x)).data
    assert scores.shape == (2, 10, 1, 1)
    np.testing.assert_allclose(scores[:, :, 0, 0], logits, rtol=1e-10, atol=1e-10)
    # the original model is untouched (weights, mode)
    assert not model.training
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # a larger image gives a map: one score per window position
    with minicnn.no_grad():
        big = fcn(tensor(np.random.default_rng(3).random((1, 3, 64, 48)))).data
    sy, sx = fcn.stride
    assert big.shape == (1, 10, (64 - 32) // sy + 1, (48 - 32) // sx + 1)


def test_fully_convolutional_map_is_the_classifier_slid_over_the_image():
    # LeNet-5 has no padding, so each score of the map is exactly the classifier on one 32x32 crop.
    nn.init.manual_seed(0)
    model = models.lenet5().double()
    model.eval()
    fcn = as_fully_convolutional(model)
    assert fcn.stride == (4, 4) and fcn.window == (32, 32)
    x = np.random.default_rng(4).random((1, 3, 44, 40))
    with minicnn.no_grad():
        scores = fcn(tensor(x)).data
        assert scores.shape == (1, 10, 4, 3)
        for i in range(4):
            for j in range(3):
                crop = x[:, :, 4 * i:4 * i + 32, 4 * j:4 * j + 32]
                np.testing.assert_allclose(scores[:, :, i, j], model(tensor(crop)).data, rtol=1e-10, atol=1e-10)


def test_fully_convolutional_through_load_model_wrapper_and_unpooled_maps():
    nn.init.manual_seed(0)
    net = models.resnet20().double()
    wrapped = nn.Sequential(OrderedDict(normalize=nn.Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]), net=net))
    wrapped.classes = [f"c{i}" for i in range(10)]
    wrapped.eval()
    fcn = as_fully_convolutional(wrapped)
    assert fcn.classes == wrapped.classes and not fcn.training
    x = np.random.default_rng(5).random((2, 3, 32, 32))
    with minicnn.no_grad():
        logits = wrapped(tensor(x)).data
        np.testing.assert_allclose(fcn(tensor(x)).data[:, :, 0, 0], logits, rtol=1e-10, atol=1e-10)
        # pool=False: one score per position of the 8x8 feature map, whose mean is the logits
        cam = as_fully_convolutional(wrapped, pool=False)(tensor(x)).data
    assert cam.shape == (2, 10, 8, 8)
    np.testing.assert_allclose(cam.mean(axis=(2, 3)), logits, rtol=1e-10, atol=1e-10)


def test_fully_convolutional_keeps_the_training_mode_and_refuses_other_heads():
    model = models.simple_cnn()
    model.train()
    assert as_fully_convolutional(model).training and model.training
    with pytest.raises(ValueError, match="no Flatten layer"):
        as_fully_convolutional(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(TypeError, match="must be an nn.Sequential"):
        as_fully_convolutional(unet_small())


# ------------------------------------------------------------------ autoencoder and U-Net
def test_conv_autoencoder_shapes_and_parameter_count():
    ae = conv_autoencoder()
    w, z = 32, 16
    hand = (3 * w * 16 + w + w * 2 * w * 16 + 4 * w + 2 * w * z * 16 + z          # encoder
            + z * 2 * w * 16 + 4 * w + 2 * w * w * 16 + 2 * w + w * 3 * 16 + 3)   # decoder
    assert ae.num_parameters() == hand == 101747
    assert "101,747" in conv_autoencoder.__doc__
    x = tensor(np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))
    with minicnn.no_grad():
        code = ae.encoder(x)
        y = ae(x)
    assert code.shape == (2, 16, 4, 4) and y.shape == (2, 3, 32, 32)
    assert 0 <= y.data.min() and y.data.max() <= 1
    gray_in = conv_autoencoder(in_channels=1, out_channels=3)
    with minicnn.no_grad():
        assert gray_in(tensor(np.zeros((1, 1, 32, 32), np.float32))).shape == (1, 3, 32, 32)


def test_conv_autoencoder_gradcheck_float64():
    nn.init.manual_seed(0)
    ae = conv_autoencoder(in_channels=1, out_channels=1, width=2, latent_channels=2)
    x = np.random.default_rng(1).random((2, 1, 8, 8))
    rep = minicnn.gradcheck(ae, [x], sample=10)
    assert rep.passed, rep


def unet_hand(c_in, c_out, width, depth):
    dc = lambda a, b: conv_p(a, b, 3) + conv_p(b, b, 3)                 # noqa: E731
    p = dc(c_in, width) + sum(dc(width * 2 ** (l - 1), width * 2 ** l) for l in range(1, depth + 1))
    p += sum(width * 2 ** (l + 1) * width * 2 ** l * 4 + width * 2 ** l for l in range(depth))   # up-convs
    p += sum(dc(width * 2 ** (l + 1), width * 2 ** l) for l in range(depth))
    return p + width * c_out + c_out


@pytest.mark.parametrize("c_in,c_out,width,depth", [(3, 3, 16, 2), (1, 3, 8, 3), (3, 1, 4, 1)])
def test_unet_shapes_and_parameter_count(c_in, c_out, width, depth):
    net = UNet(c_in, c_out, width, depth)
    assert net.num_parameters() == unet_hand(c_in, c_out, width, depth)
    with minicnn.no_grad():
        y = net(tensor(np.random.default_rng(0).random((2, c_in, 16, 24), dtype=np.float32)))
    assert y.shape == (2, c_out, 16, 24)
    assert unet_small().num_parameters() == 117395 and "117,395" in unet_small.__doc__


def test_unet_refuses_sizes_not_divisible():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 4"):
        unet_small()(tensor(np.zeros((1, 3, 30, 32), np.float32)))


def test_unet_gradcheck_whole_net_float64():
    nn.init.manual_seed(0)
    net = UNet(1, 2, width=2, depth=2)
    x = np.random.default_rng(1).standard_normal((2, 1, 4, 4))
    rep = minicnn.gradcheck(net, [x], sample=6)          # 6 elements of the input and of every parameter
    assert rep.passed, rep


def test_unet_skip_connections_carry_the_gradient():
    """With every up-conv zeroed the deep path adds nothing; the input still gets its gradient through the skips."""
    nn.init.manual_seed(0)
    net = UNet(1, 1, width=2, depth=2).double()
    for up in net.upconv:
        up.weight.data[...] = 0
        up.bias.data[...] = 0
    x = tensor(np.random.default_rng(2).standard_normal((2, 1, 8, 8)), requires_grad=True)
    minicnn.functional.sum(net(x) * tensor(np.random.default_rng(3).standard_normal((2, 1, 8, 8)))).backward()
    assert np.abs(x.grad).max() > 1e-6                       # through down[0] and the level-0 skip
    assert np.abs(net.down[0].conv1.weight.grad).max() > 1e-6
    assert np.abs(net.down[2].conv1.weight.grad).max() == 0  # the bottleneck is cut off
    rep = minicnn.gradcheck(net, [x.data], params=False, sample=20)
    assert rep.passed, rep


# ------------------------------------------------------------------ DCGAN
def test_dcgan_shapes_ranges_and_parameter_counts():
    nz, g, d, c = 100, 64, 64, 3
    G, D = dcgan_generator(), dcgan_discriminator()
    assert G.num_parameters() == nz * 4 * g * 16 + 4 * g * 2 * g * 16 + 2 * g * g * 16 + g * c * 16 + c \
        + 2 * (4 * g + 2 * g + g) == 1068931
    assert D.num_parameters() == c * d * 16 + d + d * 2 * d * 16 + 2 * d * 4 * d * 16 + 4 * d * 16 + 1 \
        + 2 * (2 * d + 4 * d) == 663361
    assert "1,068,931" in dcgan_generator.__doc__ and "663,361" in dcgan_discriminator.__doc__
    G, D = dcgan_generator(16, 8), dcgan_discriminator(8)
    z = tensor(np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32))
    with minicnn.no_grad():
        img = G(z)
        logit = D(img)
    assert img.shape == (3, 3, 32, 32) and np.abs(img.data).max() <= 1
    assert logit.shape == (3,)
    # no pooling anywhere; LeakyReLU(0.2) in D, ReLU + tanh in G
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in list(G.modules()) + list(D.modules()))
    assert all(m.negative_slope == 0.2 for m in D.modules() if isinstance(m, nn.LeakyReLU))
    assert isinstance(list(G.net)[-1], nn.Tanh)
    with pytest.raises(ValueError, match="z must have shape"):
        G(tensor(np.zeros((2, 5), np.float32)))


def test_dcgan_init_draws_from_n_0_002():
    nn.init.manual_seed(0)
    G = dcgan_generator(100, 64)
    w = G.net.up2.weight.data
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001


def test_dcgan_generator_and_discriminator_gradcheck_float64():
    nn.init.manual_seed(0)
    G = dcgan_generator(nz=3, width=1, channels=1)
    z = np.random.default_rng(1).standard_normal((2, 3))
    rep = minicnn.gradcheck(G, [z], sample=12)
    assert rep.passed, rep
    D = dcgan_discriminator(width=1, channels=1)
    x = np.random.default_rng(2).standard_normal((2, 1, 32, 32))
    rep = minicnn.gradcheck(D, [x], sample=12)
    assert rep.passed, rep


def test_minicnn_train_accepts_the_new_models_and_their_checkpoints_convert(tiny_tree, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "inc"
    r = subprocess.run([sys.executable, "-m", "minicnn", "train", "--model", "inception_small", "--data", tiny_tree,
                        "--epochs", "1", "--batch-size", "50", "--val-split", "0", "--out", str(out), "--no-progress"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=dict(__import__("os").environ, PYTHONPATH=str(root)))
    assert r.returncode == 0, r.stderr
    model = minicnn.load_model(out / "last.npz")
    fcn = as_fully_convolutional(model)
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    with minicnn.no_grad():
        np.testing.assert_allclose(fcn(tensor(x)).data[:, :, 0, 0], model(tensor(x)).data, rtol=1e-4, atol=1e-4)
