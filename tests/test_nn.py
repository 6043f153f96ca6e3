"""minicnn.nn: Module mechanics, every layer's gradients (float64), PyTorch equivalence, init."""
import math
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn
from minicnn import nn
from minicnn.nn import init
from minicnn.nn.module import Module, Parameter


# ------------------------------------------------------------------ helpers
def t64(rng, *shape, requires_grad=False):
    return minicnn.tensor(rng.standard_normal(shape), requires_grad=requires_grad)


def module_gradcheck(module, x, atol=1e-6, rtol=1e-4):
    """gradcheck of ``module(x)`` w.r.t. x and every parameter, in float64.

    gradcheck differentiates with respect to its own float64 copies of the
    inputs, so the module's parameters are swapped for those copies during
    each call.
    """
    module.double()
    slots = [(m, name) for m in module.modules() for name, p in m._parameters.items() if p is not None]

    def fn(x, *params):
        saved = [m._parameters[name] for m, name in slots]
        for (m, name), p in zip(slots, params):
            m._parameters[name] = p
        try:
            return module(x)
        finally:
            for (m, name), p in zip(slots, saved):
                m._parameters[name] = p

    inputs = [minicnn.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)]
    inputs += [minicnn.tensor(m._parameters[name].data, requires_grad=True) for m, name in slots]
    report = minicnn.gradcheck(fn, inputs, atol=atol, rtol=rtol, name=type(module).__name__)
    assert report.passed, report
    assert len(report.inputs) == 1 + len(slots)
    for r in report.inputs:      # guards against a check that compares zeros with zeros
        assert np.abs(r.numeric).max() > 0, f"input {r.index}: the output does not depend on it"
    return report


def well_spread(rng, shape, gap=0.05):
    """float64 values that are pairwise at least ``gap`` apart and away from 0 (no ties or kinks
    within a finite-difference step for max pooling and ReLU)."""
    n = int(np.prod(shape))
    vals = (np.arange(n) - n / 2 + 0.5) * gap
    return rng.permutation(vals).reshape(shape)


# --------------------------------------------------------- Module mechanics
class Block(Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 2)])
        self.scale = Parameter(np.ones(1, dtype=np.float32))
        self.register_buffer("counter", np.zeros(1))
        self.register_buffer("scratch", np.zeros(2), persistent=False)
        self.plain = [1, 2]

    def forward(self, x):
        h = nn.ReLU()(self.bn(self.conv1(x)))
        h = minicnn.functional.mean(h, axis=(2, 3))
        for layer in self.layers:
            h = layer(h)
        return h * self.scale


def test_registration_and_names():
    b = Block()
    assert [n for n, _ in b.named_parameters()] == [
        "scale", "conv1.weight", "bn.weight", "bn.bias",
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    assert [n for n, _ in b.named_buffers()] == ["counter", "scratch", "bn.running_mean", "bn.running_var"]
    assert list(b.state_dict()) == [
        "scale", "counter", "conv1.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    assert [n for n, _ in b.named_modules()] == ["", "conv1", "bn", "layers", "layers.0", "layers.1"]
    assert [type(m).__name__ for m in b.children()] == ["Conv2d", "BatchNorm2d", "ModuleList"]
    assert all(isinstance(p, Parameter) and p.requires_grad for p in b.parameters())
    assert all(not t.requires_grad for t in b.buffers())
    assert b.num_parameters() == 1 + 4 * 3 * 9 + 8 + 20 + 10
    assert b.plain == [1, 2] and "plain" not in b._parameters
    y = b(minicnn.tensor(np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)))
    assert y.shape == (2, 2) and y.dtype == np.float32


def test_shared_parameters_counted_once_and_reassignment():
    lin = nn.Linear(3, 3)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert seq.num_parameters() == 12
    m = nn.Linear(2, 2)
    m.bias = None
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    with pytest.raises(TypeError, match="parameter 'weight'"):
        m.weight = np.ones((2, 2))
    m.weight = Parameter(np.zeros((2, 2)))
    assert m.weight.data.sum() == 0
    del m.weight
    assert list(m.parameters()) == []


def test_buffer_assignment_and_errors():
    bn = nn.BatchNorm1d(3)
    bn.running_mean = np.full(3, 2.0)
    assert isinstance(bn.running_mean, minicnn.Tensor)
    assert "running_mean" in dict(bn.named_buffers())
    with pytest.raises(TypeError, match="must not require grad"):
        bn.register_buffer("bad", minicnn.tensor(np.ones(2), requires_grad=True))
    with pytest.raises(ValueError, match="without '.'"):
        bn.register_buffer("a.b", np.ones(2))

    class Forgot(Module):
        def __init__(self):
            self.w = Parameter(np.ones(1))

    with pytest.raises(AttributeError, match="super\\(\\).__init__\\(\\)"):
        Forgot()
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        bn.nothing


def test_parameter():
    p = Parameter([1.0, 2.0])
    assert p.dtype == minicnn.default_dtype() and p.requires_grad and p.is_leaf
    assert Parameter(np.ones(2, dtype=np.float64)).dtype == np.float64
    assert Parameter(minicnn.tensor(np.ones(2))).requires_grad
    assert not Parameter(np.ones(2), requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:\ntensor(")
    with pytest.raises(TypeError):
        Parameter(np.array(["a"]))


def test_train_eval_propagate():
    b = Block()
    assert all(m.training for m in b.modules())
    assert b.eval() is b
    assert not any(m.training for m in b.modules())
    b.layers.train()
    assert b.layers[0].training and not b.bn.training
    b.train()
    assert all(m.training for m in b.modules())
    with pytest.raises(TypeError, match="bool"):
        b.train("no")


def test_to_cpu_noop_and_dtype_casts():
    b = Block()
    params = list(b.parameters())
    arrays = [p.data for p in params]
    assert b.to("cpu") is b
    assert all(p.data is a for p, a in zip(b.parameters(), arrays))
    with pytest.raises(ValueError, match="'cpu' or 'gpu'"):
        b.to("cuda")
    b.double()
    assert all(t.dtype == np.float64 for t in list(b.parameters()) + list(b.buffers()))
    assert [id(p) for p in b.parameters()] == [id(p) for p in params]   # same objects
    b.float()
    assert all(t.dtype == np.float32 for t in b.parameters())


def test_zero_grad_and_requires_grad():
    m = nn.Linear(3, 2)
    m(minicnn.tensor(np.ones((2, 3), np.float32))).sum().backward()
    assert m.weight.grad is not None
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None
    m.requires_grad_(False)
    assert m.num_parameters(trainable_only=True) == 0 and m.num_parameters() == 8


def test_apply_and_deepcopy():
    import copy
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    m.apply(lambda mod: init.zeros_(mod.weight) if isinstance(mod, nn.Linear) else None)
    assert all((lin.weight.data == 0).all() for lin in m)
    c = copy.deepcopy(m)
    c[0].weight.data[...] = 1
    assert (m[0].weight.data == 0).all() and c[0].weight is not m[0].weight


# ------------------------------------------------------------ state dicts
def test_state_dict_round_trip_and_snapshot():
    init.manual_seed(1)
    a = Block()
    init.manual_seed(2)
    b = Block()
    sd = a.state_dict()
    assert isinstance(sd, OrderedDict) and "scratch" not in sd
    sd_copy = {k: v.copy() for k, v in sd.items()}
    a.conv1.weight.data[...] = 7     # the state dict is a snapshot
    np.testing.assert_array_equal(sd["conv1.weight"], sd_copy["conv1.weight"])
    b.double()
    w = b.conv1.weight.data
    result = b.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert b.conv1.weight.data is w and w.dtype == np.float64    # copied in, dtype kept
    for k, v in b.state_dict().items():
        np.testing.assert_allclose(v, sd_copy[k], rtol=1e-7, err_msg=k)
    # Tensors are accepted as values too
    b.load_state_dict({k: minicnn.tensor(v) for k, v in sd_copy.items()})


def test_load_state_dict_errors_name_the_keys():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 10))
    sd = m.state_dict()
    missing = dict(sd)
    del missing["1.running_var"]
    with pytest.raises(ValueError, match=r"missing keys \(1\): 1\.running_var"):
        m.load_state_dict(missing)
    extra = dict(sd, **{"4.weight": np.ones(2)})
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): 4\.weight"):
        m.load_state_dict(extra)
    result = m.load_state_dict(dict(extra), strict=False)
    assert result.unexpected_keys == ["4.weight"] and result.missing_keys == []
    result = m.load_state_dict(missing, strict=False)
    assert result.missing_keys == ["1.running_var"]

    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 100))
    before = {k: v.copy() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError) as e:
        m.load_state_dict(other.state_dict())
    msg = str(e.value)
    assert "'3.weight'" in msg and "(100, 8)" in msg and "(10, 8)" in msg and "architecture" in msg
    for k, v in m.state_dict().items():            # nothing was half-loaded
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="size mismatch"):
        m.load_state_dict(other.state_dict(), strict=False)


def test_checkpoint_through_save_load(tmp_path):
    from minicnn.serialization import load, save
    m = Block()
    m(minicnn.tensor(np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32)))  # moves BN stats
    save({"model": m.state_dict()}, tmp_path / "m.npz")
    m2 = Block()
    m2.load_state_dict(load(tmp_path / "m.npz")["model"])
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


# ------------------------------------------------------------------ hooks
def test_forward_hooks():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = minicnn.tensor(np.random.default_rng(0).standard_normal((5, 3)))
    m.double()
    seen = []
    h1 = m[1].register_forward_hook(lambda mod, inp, out: seen.append((mod, inp, out)))
    y = m(x)
    assert len(seen) == 1 and seen[0][0] is m[1] and isinstance(seen[0][1], tuple)
    assert seen[0][2].shape == (5, 4)
    # a hook may replace the output (here: zero the activations)
    h2 = m[1].register_forward_hook(lambda mod, inp, out: out * 0.0)
    y0 = m(x)
    np.testing.assert_allclose(y0.data, np.broadcast_to(m[2].bias.data, (5, 2)))
    h2.remove()
    h1.remove()
    h1.remove()      # removing twice is harmless
    np.testing.assert_allclose(m(x).data, y.data)
    assert len(seen) == 2
    # activations captured by a hook can get gradients (saliency, CAM)
    acts = {}
    with m[0].register_forward_hook(lambda mod, inp, out: acts.update(a=out.retain_grad())):
        m(x).sum().backward()
    assert acts["a"].grad is not None and acts["a"].grad.shape == (5, 4)
    assert not m[0]._forward_hooks
    with pytest.raises(TypeError, match="callable"):
        m.register_forward_hook(3)


# ------------------------------------------------------------------- repr
def test_repr_snapshots():
    model = nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2), nn.Sequential(nn.Conv2d(16, 32, (3, 1), stride=2, dilation=2, groups=4)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25), nn.Linear(32, 10))
    assert repr(model) == """Sequential(
  (0): Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
  (1): BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (2): ReLU()
  (3): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1)
  (4): Sequential(
    (0): Conv2d(16, 32, kernel_size=(3, 1), stride=(2, 2), dilation=(2, 2), groups=4)
  )
  (5): AdaptiveAvgPool2d(output_size=1)
  (6): Flatten(start_dim=1, end_dim=-1)
  (7): Dropout(p=0.25)
  (8): Linear(in_features=32, out_features=10, bias=True)
)"""
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(nn.CrossEntropyLoss(label_smoothing=0.1)) == "CrossEntropyLoss(label_smoothing=0.1)"
    assert repr(nn.MSELoss(reduction="sum")) == "MSELoss(reduction='sum')"


def test_repr_matches_torch(torch):
    tnn = torch.nn
    pairs = [
        (nn.Conv2d(3, 16, 3, padding=1, bias=False), tnn.Conv2d(3, 16, 3, padding=1, bias=False)),
        (nn.Conv2d(4, 8, (3, 5), stride=(2, 1), dilation=2, groups=2),
         tnn.Conv2d(4, 8, (3, 5), stride=(2, 1), dilation=2, groups=2)),
        (nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1),
         tnn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)),
        (nn.Linear(10, 5, bias=False), tnn.Linear(10, 5, bias=False)),
        (nn.AvgPool2d(3, stride=2, padding=1), tnn.AvgPool2d(3, stride=2, padding=1)),
        (nn.AdaptiveAvgPool2d((2, 2)), tnn.AdaptiveAvgPool2d((2, 2))),
        (nn.LeakyReLU(0.2), tnn.LeakyReLU(0.2)), (nn.Sigmoid(), tnn.Sigmoid()), (nn.Tanh(), tnn.Tanh()),
        (nn.Flatten(), tnn.Flatten()), (nn.Identity(), tnn.Identity()), (nn.MSELoss(), tnn.MSELoss()),
        (nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 1))),
         tnn.Sequential(tnn.Linear(2, 3), tnn.Sequential(tnn.ReLU(), tnn.Conv2d(3, 3, 1)))),
        (nn.ModuleList([nn.ReLU(), nn.Tanh()]), tnn.ModuleList([tnn.ReLU(), tnn.Tanh()])),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
    # torch >= 2.9 adds a 'bias' option to batchnorm's repr; otherwise the same text
    assert repr(nn.BatchNorm1d(7, eps=1e-3, momentum=0.2, affine=False)) == \
        repr(tnn.BatchNorm1d(7, eps=1e-3, momentum=0.2, affine=False)).replace(", bias=False", "")


# ------------------------------------------------------------- containers
def test_sequential_and_modulelist():
    a, b, c = nn.ReLU(), nn.Tanh(), nn.Sigmoid()
    seq = nn.Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b and list(seq) == [a, b]
    seq.append(c)
    assert len(seq) == 3 and seq[2] is c
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    seq[0] = nn.Identity()
    assert isinstance(seq[0], nn.Identity)
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    named = nn.Sequential(OrderedDict(first=nn.Linear(2, 2), act=nn.ReLU()))
    assert list(named.state_dict()) == ["first.weight", "first.bias"]
    x = minicnn.tensor(np.array([[-1.0, 2.0]]))
    np.testing.assert_allclose(nn.Sequential(nn.ReLU(), nn.Tanh())(x).data, np.tanh([[0.0, 2.0]]))
    ml = nn.ModuleList([nn.Linear(2, 2)])
    ml.append(nn.Linear(2, 3)).extend([nn.ReLU()])
    assert len(ml) == 3 and isinstance(ml[-1], nn.ReLU) and len(ml[:2]) == 2
    assert list(ml.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(NotImplementedError):
        ml(x)


# ---------------------------------------------------------------- init
def test_he_default_init_statistics():
    init.manual_seed(0)
    conv = nn.Conv2d(64, 256, 3)
    fan_in = 64 * 9
    std = float(conv.weight.data.std())
    assert abs(std / math.sqrt(2 / fan_in) - 1) < 0.02
    assert abs(float(conv.weight.data.mean())) < 0.01 * math.sqrt(2 / fan_in) * 10
    assert (conv.bias.data == 0).all()
    lin = nn.Linear(512, 1000)
    assert abs(float(lin.weight.data.std()) / math.sqrt(2 / 512) - 1) < 0.02
    assert (lin.bias.data == 0).all()
    g = nn.Conv2d(64, 128, 3, groups=4)      # fan_in = 64/4 * 9
    assert abs(float(g.weight.data.std()) / math.sqrt(2 / (16 * 9)) - 1) < 0.03
    assert conv.weight.dtype == np.float32 == lin.weight.dtype


def test_init_is_reproducible_and_takes_rng():
    init.manual_seed(5)
    a = nn.Conv2d(3, 4, 3).weight.data.copy()
    init.manual_seed(5)
    b = nn.Conv2d(3, 4, 3).weight.data.copy()
    np.testing.assert_array_equal(a, b)
    w1, w2 = np.empty((8, 8)), np.empty((8, 8))
    init.kaiming_uniform_(w1, rng=np.random.default_rng(3))
    init.kaiming_uniform_(w2, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(w1, w2)
    assert init.get_rng() is not None


def test_fans_and_gains_equal_torch(torch):
    tinit = torch.nn.init
    for shape in [(7, 3), (16, 3, 3, 3), (8, 2, 5, 1), (4, 6, 2, 2, 2), (1, 1)]:
        ours = init.calculate_fan_in_and_fan_out(np.empty(shape))
        theirs = tinit._calculate_fan_in_and_fan_out(torch.empty(shape))
        assert ours == theirs, shape
    for nl, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                      ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 3), ("selu", None),
                      ("conv_transpose2d", None)]:
        assert init.calculate_gain(nl, param) == pytest.approx(tinit.calculate_gain(nl, param), rel=1e-15)
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.calculate_fan_in_and_fan_out(np.empty(5))
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal_(np.empty((3, 3)), mode="fan_avg")


@pytest.mark.parametrize("name,kwargs", [
    ("kaiming_normal_", dict(nonlinearity="relu")),
    ("kaiming_normal_", dict(a=0.1, mode="fan_out")),
    ("kaiming_uniform_", dict(nonlinearity="relu")),
    ("kaiming_uniform_", dict(a=math.sqrt(5))),
    ("xavier_normal_", dict(gain=2.0)),
    ("xavier_uniform_", dict()),
    ("normal_", dict(mean=1.0, std=0.5)),
    ("uniform_", dict(a=-2.0, b=3.0)),
])
def test_init_distributions_match_torch(torch, name, kwargs):
    """Same shapes, same formulas: the sample std / mean / range agree with torch.nn.init's."""
    shape = (128, 64, 3, 3)
    ours = getattr(init, name)(np.empty(shape, dtype=np.float32), rng=np.random.default_rng(0), **kwargs)
    torch.manual_seed(0)
    theirs = getattr(torch.nn.init, name)(torch.empty(shape), **kwargs).numpy()
    assert ours.dtype == np.float32
    assert float(ours.std()) == pytest.approx(float(theirs.std()), rel=0.01)
    assert float(ours.mean()) == pytest.approx(float(theirs.mean()), abs=0.01 * float(theirs.std()) + 1e-3)
    if "uniform" in name:
        # the bound: the extremes of 73k uniform draws lie within 0.1% of it
        assert float(ours.max()) == pytest.approx(float(theirs.max()), rel=2e-3)
        assert float(ours.min()) == pytest.approx(float(theirs.min()), rel=2e-3)


def test_constant_init_keeps_tensor_and_dtype():
    p = Parameter(np.empty((3, 2), dtype=np.float64))
    data = p.data
    assert init.ones_(p) is p and (p.data == 1).all() and p.data is data
    init.zeros_(p)
    assert (p.data == 0).all()
    init.constant_(p, 0.25)
    assert (p.data == 0.25).all() and p.dtype == np.float64
    with pytest.raises(TypeError, match="floating"):
        init.ones_(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="Tensor or an array"):
        init.zeros_([1.0, 2.0])


# --------------------------------------------------------- gradient checks
@settings(max_examples=12)
@given(st.data())
def test_conv2d_gradcheck(data):
    groups = data.draw(st.sampled_from([1, 2]))
    cin = groups * data.draw(st.integers(1, 2))
    cout = groups * data.draw(st.integers(1, 2))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    stride = data.draw(st.sampled_from([1, 2, (1, 2)]))
    padding = data.draw(st.sampled_from([0, 1, (1, 0)]))
    dilation = data.draw(st.sampled_from([1, 2]))
    h = data.draw(st.integers(dilation * (kh - 1) + 1, 6))
    w = data.draw(st.integers(dilation * (kw - 1) + 1, 6))
    bias = data.draw(st.booleans())
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    m = nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
    module_gradcheck(m, rng.standard_normal((2, cin, h, w)))


@settings(max_examples=10)
@given(st.data())
def test_conv_transpose2d_gradcheck(data):
    groups = data.draw(st.sampled_from([1, 2]))
    cin = groups * data.draw(st.integers(1, 2))
    cout = groups * data.draw(st.integers(1, 2))
    k = data.draw(st.integers(1, 3))
    stride = data.draw(st.integers(1, 2))
    padding = data.draw(st.integers(0, k - 1))
    output_padding = data.draw(st.integers(0, stride - 1))
    h, w = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    if (h - 1) * stride - 2 * padding + k + output_padding < 1 or (w - 1) * stride - 2 * padding + k + output_padding < 1:
        padding = 0
    m = nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=padding, output_padding=output_padding,
                           groups=groups, bias=data.draw(st.booleans()))
    module_gradcheck(m, rng.standard_normal((2, cin, h, w)))


@settings(max_examples=10)
@given(n=st.integers(1, 4), fin=st.integers(1, 5), fout=st.integers(1, 5), bias=st.booleans(),
       seed=st.integers(0, 1000))
def test_linear_gradcheck(n, fin, fout, bias, seed):
    module_gradcheck(nn.Linear(fin, fout, bias=bias), np.random.default_rng(seed).standard_normal((n, fin)))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@settings(max_examples=8)
@given(n=st.integers(2, 4), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3),
       affine=st.booleans(), seed=st.integers(0, 1000))
def test_batchnorm2d_gradcheck(training, n, c, h, w, affine, seed):
    rng = np.random.default_rng(seed)
    m = nn.BatchNorm2d(c, affine=affine)
    if affine:
        m.weight.data[...] = rng.uniform(0.5, 1.5, c)
        m.bias.data[...] = rng.standard_normal(c)
    m.running_mean.data[...] = rng.standard_normal(c)
    m.running_var.data[...] = rng.uniform(0.5, 2.0, c)
    m.train(training)
    module_gradcheck(m, rng.standard_normal((n, c, h, w)) * 2 + 1)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@settings(max_examples=8)
@given(n=st.integers(2, 5), c=st.integers(1, 3), length=st.sampled_from([None, 1, 3]), seed=st.integers(0, 1000))
def test_batchnorm1d_gradcheck(training, n, c, length, seed):
    rng = np.random.default_rng(seed)
    m = nn.BatchNorm1d(c)
    m.weight.data[...] = rng.uniform(0.5, 1.5, c)
    m.bias.data[...] = rng.standard_normal(c)
    m.running_var.data[...] = rng.uniform(0.5, 2.0, c)
    m.train(training)
    shape = (n, c) if length is None else (n, c, length)
    module_gradcheck(m, rng.standard_normal(shape))


def test_batchnorm_without_running_stats_uses_batch_stats_in_eval():
    rng = np.random.default_rng(0)
    m = nn.BatchNorm2d(3, track_running_stats=False).eval()
    assert list(m.state_dict()) == ["weight", "bias"]
    x = rng.standard_normal((4, 3, 2, 2)) * 3 + 2
    y = m.double()(minicnn.tensor(x)).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    module_gradcheck(m, x)


@settings(max_examples=10)
@given(st.data())
def test_pooling_gradcheck(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    k = data.draw(st.integers(1, 3))
    stride = data.draw(st.sampled_from([None, 1, 2]))
    padding = data.draw(st.integers(0, k // 2))
    h, w = data.draw(st.integers(k, 6)), data.draw(st.integers(k, 6))
    x = well_spread(rng, (2, 2, h, w))
    module_gradcheck(nn.MaxPool2d(k, stride, padding), x)
    module_gradcheck(nn.AvgPool2d(k, stride, padding, count_include_pad=data.draw(st.booleans())), x)
    module_gradcheck(nn.AdaptiveAvgPool2d(1), x)


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh(), nn.Identity(),
                                   nn.Flatten(), nn.Flatten(0, 2), nn.Dropout(0.3).eval()],
                         ids=lambda m: repr(m))
def test_parameterless_layers_gradcheck(layer):
    rng = np.random.default_rng(0)
    module_gradcheck(layer, well_spread(rng, (2, 3, 2, 2)))


def test_dropout_train_mask_and_gradient():
    np.random.seed(0)
    m = nn.Dropout(0.25)
    x = minicnn.tensor(np.ones((200, 50)), requires_grad=True)
    y = m(x)
    kept = y.data != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y.data[kept], 1 / 0.75)
    g = np.random.default_rng(1).standard_normal((200, 50))
    y.backward(g)
    np.testing.assert_allclose(x.grad, g * y.data)     # dL/dx = g * mask / (1 - p)
    m.eval()
    assert m(x).data is x.data or np.array_equal(m(x).data, x.data)
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.5)


def test_loss_modules_gradcheck():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, size=5)
    for loss in (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(label_smoothing=0.2, reduction="sum")):
        r = minicnn.gradcheck(lambda x: loss(x, targets), [t64(rng, 5, 4, requires_grad=True)])
        assert r.passed, r
    target = rng.standard_normal((3, 4))
    for red in ("mean", "sum", "none"):
        r = minicnn.gradcheck(lambda x: nn.MSELoss(red)(x, target), [t64(rng, 3, 4, requires_grad=True)])
        assert r.passed, r
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss("avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=2)


# ----------------------------------------------------------- input errors
def test_layer_input_errors():
    with pytest.raises(ValueError, match=r"Conv2d: expected input of shape \(N, C_in, H, W\) with 3 channels.*"
                                         r"\(2, 4, 5, 5\)"):
        nn.Conv2d(3, 8, 3)(minicnn.tensor(np.zeros((2, 4, 5, 5), np.float32)))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 8, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_size must be positive"):
        nn.Conv2d(3, 8, 0)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        nn.Conv2d(3, 8, (3, 3, 3))
    with pytest.raises(ValueError, match="padding must be non-negative"):
        nn.Conv2d(3, 8, 3, padding=-1)
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose2d(3, 8, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4\): expected input of shape \(N, C, H, W\) with C = 4, "
                                         r"got \(2, 4\)"):
        nn.BatchNorm2d(4)(minicnn.tensor(np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match=r"with C = 4, got \(2, 3, 5, 5\)"):
        nn.BatchNorm2d(4)(minicnn.tensor(np.zeros((2, 3, 5, 5), np.float32)))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\).*\(N, C\) or \(N, C, L\)"):
        nn.BatchNorm1d(3)(minicnn.tensor(np.zeros((2, 3, 4, 4), np.float32)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        nn.BatchNorm1d(3)(minicnn.tensor(np.zeros((1, 3), np.float32)))
    nn.BatchNorm1d(3).eval()(minicnn.tensor(np.zeros((1, 3), np.float32)))   # fine in eval
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm2d(3, momentum=2)
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="output_size"):
        nn.AdaptiveAvgPool2d(0)


# ------------------------------------------------- equivalence with PyTorch
def _to_torch(torch, ours, theirs):
    """Copy our parameters and buffers into the torch module (names must line up)."""
    sd = {k: torch.tensor(v) for k, v in ours.state_dict().items()}
    result = theirs.load_state_dict(sd, strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)


def _compare(torch, ours, theirs, x, rtol=1e-10, atol=1e-12, target=None):
    """Forward, input gradient, parameter gradients and buffers equal, float64, random upstream grad."""
    ours.double()
    theirs.double()
    _to_torch(torch, ours, theirs)
    xo = minicnn.tensor(x.copy(), requires_grad=True)
    xt = torch.tensor(x.copy(), requires_grad=True)
    if target is None:
        yo, yt = ours(xo), theirs(xt)
    else:
        yo, yt = ours(xo, target), theirs(xt, torch.tensor(target))
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=rtol, atol=atol)
    g = np.random.default_rng(99).standard_normal(yo.shape)
    yo.backward(g)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=rtol, atol=atol, err_msg="input grad")
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, tp[name].grad.numpy(), rtol=rtol, atol=atol, err_msg=name)
    tb = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        np.testing.assert_allclose(b.data, tb[name].numpy(), rtol=rtol, atol=atol, err_msg=name)


CASES = [
    ("conv", lambda n: n.Conv2d(4, 6, 3, stride=2, padding=1), (2, 4, 7, 6)),
    ("conv_group_dil", lambda n: n.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=2, groups=2, bias=False),
     (2, 4, 8, 7)),
    ("convT", lambda n: n.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (2, 4, 4, 5)),
    ("linear", lambda n: n.Linear(5, 3), (4, 5)),
    ("maxpool", lambda n: n.MaxPool2d(3, 2, 1), (2, 3, 7, 7)),
    ("avgpool", lambda n: n.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 7, 7)),
    ("gap", lambda n: n.AdaptiveAvgPool2d(1), (2, 3, 5, 4)),
    ("bn1d", lambda n: n.BatchNorm1d(5, momentum=0.3), (6, 5)),
    ("bn1d_3d", lambda n: n.BatchNorm1d(3), (4, 3, 5)),
    ("bn2d", lambda n: n.BatchNorm2d(3, eps=1e-3), (4, 3, 3, 2)),
    ("bn2d_noaffine", lambda n: n.BatchNorm2d(3, affine=False), (4, 3, 3, 2)),
    ("activations", lambda n: n.Sequential(n.LeakyReLU(0.1), n.Sigmoid(), n.Tanh(), n.ReLU(), n.Flatten()),
     (3, 2, 2, 2)),
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_layers_match_torch(torch, name, make, shape, training):
    init.manual_seed(0)
    ours, theirs = make(nn), make(torch.nn)
    rng = np.random.default_rng(1)
    for _, b in ours.named_buffers():           # non-trivial running statistics
        b.data[...] = rng.uniform(0.5, 1.5, b.shape)
    for _, p in ours.named_parameters():
        if "bn" in name:
            p.data[...] = rng.uniform(0.5, 1.5, p.shape)
    ours.train(training)
    theirs.train(training)
    _compare(torch, ours, theirs, well_spread(rng, shape, gap=0.37 / np.prod(shape) ** 0.5) * 7)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_losses_match_torch(torch, smoothing):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=6)
    _compare(torch, nn.CrossEntropyLoss(label_smoothing=smoothing),
             torch.nn.CrossEntropyLoss(label_smoothing=smoothing), rng.standard_normal((6, 5)), target=target)
    _compare(torch, nn.MSELoss(reduction="sum"), torch.nn.MSELoss(reduction="sum"), rng.standard_normal((3, 4)),
             target=rng.standard_normal((3, 4)))


def test_small_cnn_matches_torch_and_loads_its_weights(torch):
    """A whole model: the same architecture in both frameworks has the same state_dict names,
    loads torch's weights, and gives the same loss and gradients over a few train steps."""
    def build(n):
        return n.Sequential(
            n.Conv2d(3, 8, 3, padding=1, bias=False), n.BatchNorm2d(8), n.ReLU(), n.MaxPool2d(2),
            n.Conv2d(8, 8, 3, padding=1), n.BatchNorm2d(8), n.ReLU(), n.AdaptiveAvgPool2d(1),
            n.Flatten(), n.Dropout(0.0), n.Linear(8, 4))

    torch.manual_seed(0)
    theirs = build(torch.nn).double()
    ours = build(nn).double()
    keys = [k for k in theirs.state_dict() if not k.endswith("num_batches_tracked")]
    assert list(ours.state_dict()) == keys
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items() if k in keys})
    rng = np.random.default_rng(0)
    opt_o = minicnn.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for step in range(3):
        x = rng.standard_normal((4, 3, 8, 8))
        y = rng.integers(0, 4, size=4)
        lo = nn.CrossEntropyLoss()(ours(minicnn.tensor(x)), y)
        lt = torch.nn.CrossEntropyLoss()(theirs(torch.tensor(x)), torch.tensor(y))
        assert lo.item() == pytest.approx(lt.item(), rel=1e-10)
        opt_o.zero_grad()
        opt_t.zero_grad()
        lo.backward()
        lt.backward()
        opt_o.step()
        opt_t.step()
    tsd = theirs.state_dict()
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(v, tsd[k].numpy(), rtol=1e-9, atol=1e-12, err_msg=k)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 3, 8, 8))
    np.testing.assert_allclose(ours(minicnn.tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------- devices
def test_module_on_backend(xp):
    """Forward, backward and an optimizer step with the model on each available backend."""
    device = "cpu" if xp is np else "gpu"
    init.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16, 3))
    ref = {k: v.copy() for k, v in model.state_dict().items()}
    assert model.to(device) is model
    assert all(p.device == device for p in model.parameters())
    assert all(b.device == device for b in model.buffers())
    opt = minicnn.optim.Adam(model.parameters(), lr=1e-2)
    x = minicnn.tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)).to(device)
    loss = nn.CrossEntropyLoss()(model(x), xp.asarray(np.array([0, 2])))
    loss.backward()
    opt.step()
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in model.parameters())
    assert all(type(s["exp_avg"]) is type(p.data) for p, s in opt.state.items())
    model.to("cpu")
    assert all(p.device == "cpu" for p in model.parameters())
    sd = model.state_dict()
    assert all(type(v) is np.ndarray for v in sd.values())
    assert not np.array_equal(sd["0.weight"], ref["0.weight"])
    opt.step()   # state follows the parameters back to the CPU
    assert all(type(s["exp_avg"]) is np.ndarray for s in opt.state.values())
