"""minicnn.summary: shapes by the lectures' formula, parameters and MACs equal to hand counts for the whole zoo."""
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minicnn import nn
from minicnn.models import MODELS, get_model
from minicnn.summary import SummaryError, conv_output_size, summary


# ------------------------------------------------------------------ hand counts
def conv_p(c_in, c_out, k, bias=True):
    return c_out * c_in * k * k + (c_out if bias else 0)


def conv_macs(c_in, c_out, k, h_out):
    return c_out * h_out * h_out * c_in * k * k


def resnet_hand(n):
    """(parameters, MACs) of the CIFAR ResNet with n blocks per stage, counted from the paper's layout."""
    params = conv_p(3, 16, 3, False) + 2 * 16
    macs = conv_macs(3, 16, 3, 32)
    c_in, size = 16, 32
    for stage, width in enumerate((16, 32, 64)):
        for i in range(n):
            if stage > 0 and i == 0:
                size //= 2
            params += conv_p(c_in, width, 3, False) + conv_p(width, width, 3, False) + 4 * width
            macs += conv_macs(c_in, width, 3, size) + conv_macs(width, width, 3, size)
            c_in = width
    return params + 64 * 10 + 10, macs + 64 * 10


HAND = {
    "lenet5": (conv_p(3, 6, 5) + conv_p(6, 16, 5) + 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10,
               conv_macs(3, 6, 5, 28) + conv_macs(6, 16, 5, 10) + 400 * 120 + 120 * 84 + 84 * 10),
    "simple_cnn": (conv_p(3, 32, 3, False) + 64 + conv_p(32, 64, 3, False) + 128 + conv_p(64, 128, 3, False) + 256
                   + 2048 * 10 + 10,
                   conv_macs(3, 32, 3, 32) + conv_macs(32, 64, 3, 16) + conv_macs(64, 128, 3, 8) + 2048 * 10),
    "vgg_small": (sum(conv_p(a, b, 3, False) + 2 * b for a, b in
                      [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)]) + 4096 * 10 + 10,
                  conv_macs(3, 64, 3, 32) + conv_macs(64, 64, 3, 32) + conv_macs(64, 128, 3, 16)
                  + conv_macs(128, 128, 3, 16) + conv_macs(128, 256, 3, 8) + conv_macs(256, 256, 3, 8) + 4096 * 10),
    "alexnet_small": (conv_p(3, 64, 5) + conv_p(64, 128, 5) + conv_p(128, 192, 3) + conv_p(192, 192, 3)
                      + conv_p(192, 128, 3) + 2048 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10,
                      conv_macs(3, 64, 5, 32) + conv_macs(64, 128, 5, 16) + conv_macs(128, 192, 3, 8)
                      + conv_macs(192, 192, 3, 8) + conv_macs(192, 128, 3, 8) + 2048 * 512 + 512 * 256 + 256 * 10),
    "resnet20": resnet_hand(3), "resnet32": resnet_hand(5), "resnet44": resnet_hand(7),
    "resnet56": resnet_hand(9), "resnet110": resnet_hand(18),
}


def _allconv_hand():
    # (c_in, c_out, k, output size, batchnorm) of each convolution; the class layer has a bias, no BN
    convs = [(3, 32, 3, 32), (32, 32, 3, 32), (32, 32, 3, 16), (32, 64, 3, 16), (64, 64, 3, 16),
             (64, 64, 3, 8), (64, 64, 3, 6), (64, 64, 1, 6)]
    params = sum(conv_p(a, b, k, False) + 2 * b for a, b, k, _ in convs) + conv_p(64, 10, 1)
    macs = sum(conv_macs(a, b, k, h) for a, b, k, h in convs) + conv_macs(64, 10, 1, 6)
    return params, macs


def _inception_hand():
    def module(c_in, c1, c3r, c3, c5r, c5, cp, size):
        weights = c_in * c1 + c_in * c3r + 9 * c3r * c3 + c_in * c5r + 25 * c5r * c5 + c_in * cp
        return weights + 2 * (c1 + c3r + c3 + c5r + c5 + cp), weights * size * size
    blocks = [module(48, 16, 24, 32, 4, 8, 8, 16), module(64, 32, 32, 48, 8, 24, 16, 16),
              module(120, 48, 24, 52, 4, 12, 16, 8), module(128, 40, 28, 56, 6, 16, 16, 8)]
    params = conv_p(3, 48, 3, False) + 96 + sum(b[0] for b in blocks) + 128 * 10 + 10
    macs = conv_macs(3, 48, 3, 32) + sum(b[1] for b in blocks) + 128 * 10
    return params, macs


HAND["allconv"] = _allconv_hand()
HAND["inception_small"] = _inception_hand()

# The counts the model docstrings (and the ResNet paper, 0.27M for ResNet-20) give.
PUBLISHED = {"lenet5": 62006, "simple_cnn": 113962, "vgg_small": 1187274, "alexnet_small": 2167434,
             "resnet20": 269722, "resnet32": 464154, "resnet44": 658586, "resnet56": 853018, "resnet110": 1727962,
             "allconv": 153898, "inception_small": 89790}


def _docstring_count(name):
    """'N parameters for 10 classes' from a zoo builder's docstring (for a model added after these tests)."""
    m = re.search(r"([\d,]+) parameters for 10 classes", MODELS[name].__doc__ or "")
    return int(m.group(1).replace(",", "")) if m else None


@pytest.mark.parametrize("name", sorted(set(MODELS) - set(HAND)))
def test_newer_zoo_models_match_their_documented_count(name):
    """A zoo model without a hand count here yet: at least its docstring's count must hold."""
    count = _docstring_count(name)
    assert count is not None, f"{name}: add its hand count to HAND in tests/test_summary.py"
    assert summary(get_model(name)).total_params == count


@pytest.mark.parametrize("name", sorted(set(MODELS) & set(HAND)))
def test_zoo_parameters_and_macs_equal_hand_counts(name):
    model = get_model(name)
    s = summary(model, (1, 3, 32, 32))
    params, macs = HAND[name]
    assert params == PUBLISHED[name]
    assert s.total_params == s.trainable_params == params
    assert s.frozen_params == 0
    assert s.total_macs == macs
    assert s.output_shape == (1, 10)
    # each row counts its own parameters: the column adds up to the total
    assert sum(r.params for r in s.rows) == params
    assert s.total_buffers == sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    if name in ("allconv", "inception_small"):           # their docstrings give the MACs too
        assert round(macs / 1e6, 1) == {"allconv": 30.7, "inception_small": 13.4}[name]


def test_resnet20_published_count_and_table():
    s = summary(get_model("resnet20"))
    assert s.total_params == 269722
    text = str(s)
    assert "269,722" in text and "blocks.0.conv1" in text
    assert s["blocks.3.conv1"].output_shape == (1, 32, 16, 16)      # first block of stage 2 downsamples
    assert s["fc"].output_shape == (1, 10)
    assert s["blocks.0.bn1"].buffers == 32 and s["blocks.0.bn1"].params == 32


def test_macs_scale_with_batch_and_bias_is_not_counted():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
    one = summary(conv, (1, 3, 5, 5))
    four = summary(conv, (4, 3, 5, 5))
    assert one.total_macs == 4 * 5 * 5 * 3 * 9          # no bias term
    assert four.total_macs == 4 * one.total_macs
    lin = summary(nn.Linear(7, 3), (2, 7))
    assert lin.total_macs == 2 * 7 * 3
    grouped = summary(nn.Conv2d(4, 8, 3, groups=2), (1, 4, 6, 6))
    assert grouped.total_macs == 8 * 4 * 4 * (4 // 2) * 9
    tconv = summary(nn.ConvTranspose2d(4, 6, 3, stride=2), (1, 4, 5, 5))
    assert tconv.output_shape == (1, 6, 11, 11)
    assert tconv.total_macs == 4 * 5 * 5 * 6 * 9


@given(h=st.integers(1, 12), w=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 3),
       p=st.integers(0, 2), d=st.integers(1, 2), pool=st.booleans())
def test_output_shape_follows_the_formula_or_names_the_layer(h, w, k, s, p, d, pool):
    if pool:
        p = min(p, k // 2)          # pooling needs padding <= kernel/2
        layer = nn.MaxPool2d(k, stride=s, padding=p, dilation=d)
    else:
        layer = nn.Conv2d(2, 3, k, stride=s, padding=p, dilation=d)
    model = nn.Sequential(nn.Identity(), layer)
    fits = d * (k - 1) + 1 <= min(h, w) + 2 * p
    if not fits:
        with pytest.raises(SummaryError, match=r"layer '1' \((MaxPool2d|Conv2d)"):
            summary(model, (1, 2, h, w))
        return
    out = summary(model, (1, 2, h, w))["1"].output_shape
    expected = [(h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1]
    assert list(out[2:]) == expected == [conv_output_size(h, k, s, p, d), conv_output_size(w, k, s, p, d)]
    assert out[:2] == (1, 2 if pool else 3)


def test_bad_geometry_is_reported_at_the_failing_layer():
    with pytest.raises(SummaryError) as e:
        summary(get_model("lenet5"), (1, 3, 8, 8))
    msg = str(e.value)
    assert "layer '3'" in msg and "Conv2d" in msg and "kernel 5" in msg and "2 + 2*0 = 2" in msg
    with pytest.raises(SummaryError, match="layer '0'.*channels"):
        summary(get_model("lenet5"), (1, 1, 32, 32))


def test_receptive_field_and_jump_by_hand():
    s = summary(get_model("simple_cnn"))
    # conv3 (+2 at jump 1) -> pool2 (+1) -> conv3 (+2*2) -> pool (+2) -> conv (+2*4) -> pool (+4)
    rf = [s[n].rf[0] for n in ("0", "3", "4", "7", "8", "11")]
    jump = [s[n].jump[0] for n in ("0", "3", "4", "7", "8", "11")]
    assert rf == [3, 4, 8, 10, 18, 22]
    assert jump == [1, 2, 2, 4, 4, 8]
    assert s["12"].rf == (46, 46)         # Flatten: the whole 4x4 map, 22 + 3 * 8
    lenet = summary(get_model("lenet5"))
    assert [lenet[n].rf[0] for n in ("0", "2", "3", "5")] == [5, 6, 14, 16]
    r20 = summary(get_model("resnet20"))
    assert r20["blocks.2"].rf == (15, 15) and r20["blocks.8"].rf == (81, 81)   # 3 + 2 * (stage 1: 6 convs)...


def test_activation_memory_counts_new_tensors_at_the_batch_size():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2))
    s = summary(model, (1, 3, 2, 2), batch_size=10)
    # input 12 + linear 5 + relu 5 + linear 2 (the Flatten of a contiguous input is a view: no memory)
    assert s.activation_bytes == (12 + 5 + 5 + 2) * 10 * 4
    assert s.param_bytes == (12 * 5 + 5 + 5 * 2 + 2) * 4


def test_frozen_parameters_are_non_trainable_and_buffers_separate():
    model = get_model("simple_cnn")
    model[0].weight.requires_grad = False
    s = summary(model)
    assert s.frozen_params == 3 * 32 * 9 and s.trainable_params == 113962 - 864
    assert s["0"].frozen == s["0"].non_trainable == 864 and "frozen" in s.table()
    assert s.non_trainable_params == 864 and s["0"].receptive_field == s["0"].rf == (3, 3)
    d = s.to_dict()
    assert d["total_params"] == 113962 and d["rows"][0]["frozen"] == 864


def test_summary_leaves_the_model_alone():
    model = get_model("resnet20")
    model.train()
    model.blocks[0].eval()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    summary(model, (2, 3, 32, 32))
    assert [m.training for m in model.modules()] == modes
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert "forward" not in vars(model.conv1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="input_shape"):
        summary(get_model("lenet5"), (1, 0, 32, 32))
    with pytest.raises(ValueError, match="batch_size"):
        summary(get_model("lenet5"), batch_size=0)
    with pytest.raises(TypeError, match="nn.Module"):
        summary(lambda x: x)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "minicnn", *args], capture_output=True, text=True, timeout=120)


def test_cli_summary():
    r = _cli("summary", "--model", "resnet20")
    assert r.returncode == 0, r.stderr
    assert "269,722" in r.stdout and "40,551,040" in r.stdout and "blocks.8.conv2" in r.stdout
    bad = _cli("summary", "--model", "lenet5", "--input-shape", "3x8x8")
    assert bad.returncode == 2
    assert "layer '3'" in bad.stderr and "Traceback" not in bad.stderr
    usage = _cli("summary", "--input-shape", "3x32")
    assert usage.returncode == 2 and "C x H x W" in usage.stderr
