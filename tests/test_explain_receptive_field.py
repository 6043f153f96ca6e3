"""Receptive fields: theory (hand-computed for the zoo models) and the effective field (Luo et al.)."""
import functools
from collections import OrderedDict

import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.explain import Pair, effective_receptive_field, layer_geometry, receptive_field
from minicnn.models import get_model


@functools.lru_cache(maxsize=None)
def _zoo_geometry(name):
    """layer_geometry of a zoo model, once per model (building ResNet-20 is the slow part)."""
    return layer_geometry(get_model(name), (3, 32, 32))


def _state(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_pair_equals_a_number_and_a_tuple():
    assert Pair(5) == 5 and Pair(5) == (5, 5) and Pair(5, 5) == [5, 5]
    assert Pair(5, 7) != 5 and Pair(5, 7) == (5, 7) and Pair(5, 7) != (7, 5)
    assert hash(Pair(3, 4)) == hash((3, 4))


@pytest.mark.parametrize("model_name, layer, size, jump, start", [
    # simple_cnn: (conv3 - BN - ReLU - pool2) x 3. By hand: conv3: size 3; pool2: 3 + 1*1 = 4, jump 2,
    # centre of unit 0 at 0.5; conv3: 4 + 2*2 = 8; pool2: 8 + 1*2 = 10, jump 4, start 0.5 + 0.5*2 = 1.5;
    # conv3: 10 + 2*4 = 18; pool2: 18 + 1*4 = 22, jump 8, start 1.5 + 0.5*4 = 3.5;
    # Flatten over the 4x4 map: 22 + 3*8 = 46 pixels, centred at 3.5 + 1.5*8 = 15.5.
    ("simple_cnn", "0", 3, 1, 0), ("simple_cnn", "3", 4, 2, 0.5), ("simple_cnn", "4", 8, 2, 0.5),
    ("simple_cnn", "7", 10, 4, 1.5), ("simple_cnn", "8", 18, 4, 1.5), ("simple_cnn", "10", 18, 4, 1.5),
    ("simple_cnn", "11", 22, 8, 3.5), ("simple_cnn", "12", 46, 32, 15.5), ("simple_cnn", "13", 46, 32, 15.5),
    # lenet5: conv5 (5), pool2 (6, jump 2, start 2.5), conv5 (6 + 4*2 = 14), pool2 (16, jump 4, start 7.5)
    ("lenet5", "0", 5, 1, 2), ("lenet5", "2", 6, 2, 2.5), ("lenet5", "3", 14, 2, 6.5), ("lenet5", "5", 16, 4, 7.5),
    # resnet20: conv1 3; stage 1 adds 2 + 2 per block (jump 1): 7, 11, 15; stage 2's first conv has
    # stride 2: 15 + 2 = 17 (jump 2), then + 4 per conv: 21, 29, 37; stage 3: 37 + 4 = 41 (jump 4),
    # 49, then +8 per conv: 65, 81. Padding 1 keeps unit 0 centred on pixel 0.
    ("resnet20", "conv1", 3, 1, 0), ("resnet20", "blocks.0", 7, 1, 0), ("resnet20", "blocks.2", 15, 1, 0),
    ("resnet20", "blocks.3.conv1", 17, 2, 0), ("resnet20", "blocks.3", 21, 2, 0), ("resnet20", "blocks.5", 37, 2, 0),
    ("resnet20", "blocks.6", 49, 4, 0), ("resnet20", "blocks.8", 81, 4, 0), ("resnet20", "blocks", 81, 4, 0),
    # global average pooling of the 8x8 map: 81 + 7*4 = 109 pixels centred at 3.5*4 = 14
    ("resnet20", "pool", 109, 32, 14), ("resnet20", "fc", 109, 32, 14),
    # alexnet_small: conv5 p2 (5), pool3 s2 p1 (5 + 2 = 7, jump 2, centre 0), conv5 (7 + 4*2 = 15)
    ("alexnet_small", "2", 7, 2, 0), ("alexnet_small", "3", 15, 2, 0), ("alexnet_small", "5", 19, 4, 0),
    ("alexnet_small", "12", 51, 8, 0),
])
def test_zoo_receptive_fields_match_hand_computed(model_name, layer, size, jump, start):
    rf = _zoo_geometry(model_name)[layer]
    assert rf.size == (size, size) and rf.jump == (jump, jump) and rf.start == (start, start)


def test_vgg_small_last_conv():
    # 2 convs (5), pool (6, j2, start .5), 2 convs (6 + 8 = 14), pool (16, j4, 1.5), 2 convs (16 + 16 = 32)
    m = get_model("vgg_small")
    g = layer_geometry(m, (3, 32, 32))
    convs = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)]
    assert [g[n].size[0] for n in convs] == [3, 5, 10, 14, 24, 32]
    assert g[convs[-1]].jump == 4 and g[convs[-1]].start == 1.5


def test_layer_geometry_names_every_module_and_leaves_the_model_alone():
    m = get_model("resnet20")
    m.train()
    before = _state(m)
    g = layer_geometry(m, (32, 32))            # channels read from the first Conv2d
    assert list(g) == [n for n, _ in m.named_modules()]
    assert all(v is not None for v in g.values())
    assert m.training and all(mod.training for mod in m.modules())
    assert all(not mod._forward_hooks for mod in m.modules())
    assert all(np.array_equal(before[k], v) for k, v in m.state_dict().items())


def test_non_square_kernels_strides_dilation_and_one_channel():
    m = nn.Sequential(nn.Conv2d(1, 2, (3, 5), stride=(1, 2), padding=(0, 2)),
                      nn.Conv2d(2, 2, 3, dilation=2), nn.AvgPool2d(2))
    g = layer_geometry(m, (1, 20, 24))
    # axis 0: 3, then dilated 3x3 (k_eff 5): 3 + 4 = 7, pool2: 8 (jump 2), start 0 + 1 + 2 + 0.5 = 3.5
    # axis 1: 5 (jump 2, start 2 - 2 = 0), dilated: 5 + 4*2 = 13, start 4; pool: 13 + 2 = 15, jump 4, start 5
    assert g["0"] == (Pair(3, 5), Pair(1, 2), Pair(1, 0))
    assert g["1"] == (Pair(7, 13), Pair(1, 2), Pair(3, 4))
    assert g["2"] == (Pair(8, 15), Pair(2, 4), Pair(3.5, 5))
    assert g["2"].region(0, 0) == ((0, 7), (-2, 12))


def test_a_module_used_twice_and_a_functional_relu_between_modules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(minicnn.functional.relu(self.conv(self.pool(x))))

    g = layer_geometry(Net(), (1, 16, 16))
    # pool (2, j2, .5) -> conv3 (2 + 2*2 = 6) -> pool again (6 + 2 = 8, jump 4, start .5 + .5*2 = 1.5)
    assert g["conv"] == (Pair(6), Pair(2), Pair(0.5))
    assert g["pool"] == (Pair(8), Pair(4), Pair(1.5))          # its last call
    assert g[""] == g["pool"]


def test_receptive_field_errors():
    m = get_model("lenet5")
    with pytest.raises(ValueError, match="'nope' is not a layer of the model"):
        receptive_field(m, "nope")
    with pytest.raises(ValueError, match="input_shape"):
        layer_geometry(m, (32,))


def test_receptive_field_accepts_the_module_and_a_loaded_model_wrapper():
    net = get_model("simple_cnn")
    model = nn.Sequential(OrderedDict([("normalize", nn.Normalize([0.5] * 3, [0.25] * 3)), ("net", net)]))
    assert receptive_field(model, net[8]) == receptive_field(net, "8")
    assert receptive_field(model, "net.8").size == 18


def test_effective_receptive_field_lies_inside_the_theoretical_one():
    nn.init.manual_seed(0)
    layers = []
    for i in range(4):
        layers += [nn.Conv2d(1 if i == 0 else 4, 4, 3, padding=1), nn.ReLU()]
    m = nn.Sequential(*layers)
    erf = effective_receptive_field(m, "6", input_size=(1, 25, 25), samples=4, seed=1)
    rf = receptive_field(m, "6", input_size=(1, 25, 25))
    assert rf.size == 9 and erf.shape == (25, 25)
    (top, bottom), (left, right) = rf.region(12, 12)
    assert (top, bottom, left, right) == (8, 16, 8, 16)
    inside = np.zeros((25, 25), bool)
    inside[top:bottom + 1, left:right + 1] = True
    assert erf[~inside].max() == 0 and erf[inside].sum() > 0
    # the centre pixel matters more than the field's corners (the ERF is centre-heavy)
    assert erf[12, 12] > erf[top, left]


# ------------------------------------------------------------------ property: theory == brute force
from hypothesis import assume, given, strategies as st  # noqa: E402

layer_spec = st.one_of(
    st.tuples(st.just("conv"), st.integers(1, 4), st.integers(1, 2), st.integers(0, 2), st.integers(1, 2)),
    st.tuples(st.just("avg"), st.integers(2, 3), st.integers(1, 2), st.integers(0, 1), st.just(1)),
)


@given(st.lists(layer_spec, min_size=1, max_size=3), st.integers(12, 20))
def test_receptive_field_is_exactly_the_pixels_a_unit_depends_on(specs, side):
    """With positive weights and inputs (and average pooling) the pixels a unit depends on (its
    nonzero input gradient) are its theoretical field region(i, j)."""
    layers = []
    for kind, k, s, p, d in specs:
        p = min(p, k // 2)
        if kind == "conv":
            conv = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
            conv.weight.data[...] = 1
            conv.bias.data[...] = 0
            layers.append(conv)
        else:
            layers.append(nn.AvgPool2d(k, stride=s, padding=p))
    model = nn.Sequential(*layers).double()
    x = minicnn.tensor(np.ones((1, 1, side, side)), requires_grad=True)
    try:
        y = model(x)
    except ValueError:          # the stack shrinks the image to nothing
        assume(False)
    h, w = y.shape[2:]
    geometry = receptive_field(model, str(len(layers) - 1), input_size=(1, side, side))
    for i, j in {(0, 0), (h // 2, w // 2), (h - 1, w - 1)}:
        x.grad = None
        seed = np.zeros(y.shape)
        seed[0, 0, i, j] = 1
        model(x).backward(seed)
        (top, bottom), (left, right) = geometry.region(i, j)
        want = np.zeros((side, side), bool)
        want[max(top, 0):bottom + 1, max(left, 0):right + 1] = True
        used = x.grad[0, 0] != 0
        msg = f"{specs} unit {(i, j)} {geometry}"
        # Nothing outside the field is ever used. A field that crosses the border is an upper
        # bound there (it counts pixels seen only through padding); one inside the image is exact,
        # up to the holes that dilation or a stride larger than the kernel leave (it is their span).
        assert not (used & ~want).any(), msg
        if top >= 0 and left >= 0 and bottom < side and right < side:
            if all(d == 1 and st <= k for _, k, st, _, d in specs):     # no holes: every pixel is used
                np.testing.assert_array_equal(used, want, err_msg=msg)
            rows, cols = np.nonzero(used)
            assert (rows.min(), rows.max(), cols.min(), cols.max()) == (top, bottom, left, right), msg
