"""ONNX export: every zoo classifier runs in ONNX Runtime with minicnn's logits; errors name the layer.

The models get trained-looking weights: batchnorm running statistics set from
a batch of images (then perturbed), random shifts and scales, so that eval-mode
batchnorm is a real per-channel affine map and the logits have the size of a
trained network's (a fresh ResNet-110 with arbitrary statistics has logits of
1e8, where float32 rounding alone exceeds any absolute tolerance).
"""
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn import functional as F
from minicnn import nn
from minicnn.autograd import Function, Tensor, no_grad
from minicnn.interop import ExportError, export_onnx
from minicnn.models import MODELS, get_model

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install \"minicnn[interop]\")")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install \"minicnn[interop]\")")

CIFAR_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "test"
MEAN, STD = [0.491, 0.482, 0.447], [0.247, 0.243, 0.262]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# The deepest ResNets are compared on fewer images, to keep the fast suite fast (minicnn's own
# forward pass of ResNet-110 on 100 images takes seconds on two shared cores).
IMAGES = {"resnet56": 40, "resnet110": 20}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """100 CIFAR-10 test images (10 per class) in [0, 1], read with minicnn.data; random pixels without the data."""
    if not CIFAR_TEST.is_dir():
        return np.random.default_rng(0).random((100, 3, 32, 32), dtype=np.float32)
    from minicnn.data import ImageFolder

    root = tmp_path_factory.mktemp("cifar100")
    for c in CLASSES:
        (root / c).mkdir()
        for f in sorted(os.listdir(CIFAR_TEST / c))[:10]:
            (root / c / f).symlink_to(CIFAR_TEST / c / f)
    data = ImageFolder(str(root), cache_dir=False, progress=False)
    return data.images.astype(np.float32) / 255


def test_the_comparison_uses_real_cifar_images(images):
    if not CIFAR_TEST.is_dir():
        pytest.skip(f"{CIFAR_TEST} is missing: the ONNX comparisons ran on random [0, 1] pixels instead")
    assert images.shape == (100, 3, 32, 32) and 0 <= images.min() and images.max() <= 1 and images.std() > 0.1


def trained_looking(name, seed=0):
    """``load_model``'s layout (Normalize, then the network) with trained-looking batchnorm and class names."""
    rng = np.random.default_rng(seed)
    nn.init.manual_seed(seed)
    net = get_model(name)
    model = nn.Sequential(OrderedDict([("normalize", nn.Normalize(MEAN, STD)), ("net", net)]))
    bns = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for _, m in bns:
        m.momentum = 1.0                     # one training-mode pass: the running statistics of this batch
    model.train()
    with no_grad():
        model(Tensor(rng.random((8, 3, 32, 32), dtype=np.float32)))
    for name, m in bns:
        m.momentum = 0.1
        m.running_mean.data += rng.normal(0, 0.1, m.num_features).astype(np.float32)
        m.running_var.data *= rng.uniform(0.8, 1.25, m.num_features).astype(np.float32)
        # a residual block's last batchnorm has small scales, as in trained ResNets (else the sum of 54
        # blocks' outputs makes ResNet-110's logits hundreds, where float32 rounding exceeds 1e-4)
        m.weight.data[...] = rng.uniform(0.7, 1.3, m.num_features) * (0.2 if name.endswith("bn2") else 1)
        m.bias.data[...] = rng.normal(0, 0.1, m.num_features)
    model.eval()
    model.classes = list(CLASSES)
    return model


def logits(model, x, batch=50):
    with no_grad():
        return np.concatenate([model(Tensor(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", list(MODELS))
def test_every_zoo_classifier_runs_in_onnx_runtime_with_minicnns_logits(name, images, tmp_path):
    model = trained_looking(name)
    path = tmp_path / f"{name}.onnx"
    proto = export_onnx(model, path, (3, 32, 32))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = images[:IMAGES.get(name, 100)]
    ours = logits(model, x)
    runtime = session(path)
    theirs = runtime.run(None, {"pixels": x})[0]
    assert theirs.dtype == np.float32 and theirs.shape == (len(x), 10)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)
    assert 0.5 < np.abs(ours).max() < 50                  # logits of the size of a trained network's
    for n in (1, 7):                                       # the batch axis is free
        np.testing.assert_allclose(runtime.run(None, {"pixels": x[:n]})[0], ours[:n], rtol=0, atol=1e-4)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert model.training is False                         # the model is left as it was


def test_the_file_carries_class_names_normalisation_and_state_dict_names(tmp_path):
    model = trained_looking("resnet20")
    proto = export_onnx(model, tmp_path / "r.onnx", (1, 3, 32, 32))      # (N, C, H, W) is accepted too
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json_list(meta["classes"]) == CLASSES and meta["input"].startswith("pixels (N, 3, 32, 32), float32 in [0, 1]")
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:3] == ["Sub", "Div", "Conv"]                 # the input normalisation comes first
    # 19 batchnorms, 9 shortcut additions and the linear layer's bias; option A shortcuts: Slice and Pad
    assert ops.count("BatchNormalization") == 19 and ops.count("Add") == 10 and "Pad" in ops and "Slice" in ops
    names = {t.name for t in proto.graph.initializer}
    assert {"net.conv1.weight", "net.blocks.0.bn1.running_var", "net.fc.weight.Transpose"} <= names
    assert "net.blocks.3/Pad" in {n.name for n in proto.graph.node}     # nodes are named by their layer
    assert proto.graph.input[0].name == "pixels" and proto.graph.output[0].name == "logits"


def json_list(text):
    import json
    return json.loads(text)


def test_export_leaves_a_training_model_as_it_was(tmp_path):
    model = trained_looking("simple_cnn")
    model.train()
    model.net[0].weight.requires_grad = True
    before = {k: v.copy() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", (3, 32, 32))
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)   # exported in eval mode: no statistics updated
    assert model.net[0].weight.requires_grad


class Cube(Function):
    """y = x**3 (a user's op without an ONNX exporter)."""

    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, g):
        return 3 * g * self.x ** 2


class CubeLayer(nn.Module):
    def forward(self, x):
        return Cube.apply(x)


class RawArrays(nn.Module):
    """A forward that leaves minicnn's ops: computes on the raw array, which the trace cannot follow."""

    def forward(self, x):
        return Tensor(np.maximum(x.data, 0))


class HalfRaw(nn.Module):
    """Half of it in minicnn ops: the graph would hold a batch of 2's array as a constant."""

    def forward(self, x):
        return x + Tensor(np.maximum(x.data, 0))


def small(*layers):
    return nn.Sequential(nn.Conv2d(3, 4, 3), *layers, nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


@pytest.mark.parametrize("layer, message", [
    (CubeLayer(), r"op Cube \(in layer '1'\) has no ONNX exporter; the ops that can be exported are: .*Conv2d"),
    (nn.BatchNorm2d(4, track_running_stats=False), r"batch_norm with batch statistics .* in layer '1'"),
    (RawArrays(), r"the output of layer '1' does not depend on its input through minicnn ops .*raw arrays"),
    (HalfRaw(), r"differs between batch sizes 2 and 3: .* computes on raw arrays outside minicnn ops"),
])
def test_a_layer_that_cannot_be_exported_is_named(layer, message, tmp_path):
    with pytest.raises(ExportError, match=message):
        export_onnx(small(layer), tmp_path / "x.onnx", (3, 8, 8))
    assert not (tmp_path / "x.onnx").exists()


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\).* got \(32, 32\)"):
        export_onnx(small(), tmp_path / "x.onnx", (32, 32))
    with pytest.raises(ExportError, match="model.float()"):
        export_onnx(small().double(), tmp_path / "x.onnx", (3, 8, 8))


def test_other_layers_export_too(tmp_path, images):
    """A Sequential of the other standard layers: average pooling, leaky ReLU, sigmoid, tanh, 1-D batchnorm."""
    nn.init.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=1, groups=1), nn.LeakyReLU(0.1),
                          nn.AvgPool2d(2), nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4), nn.Tanh(),
                          nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                          nn.MaxPool2d(3, stride=2, padding=1, dilation=1), nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16), nn.BatchNorm1d(16),
                          nn.Sigmoid(), nn.Dropout(0.5), nn.Linear(16, 3))
    model[12].running_mean.data[...] = 0.2
    model.eval()
    export_onnx(model, tmp_path / "o.onnx", (3, 32, 32))
    np.testing.assert_allclose(session(tmp_path / "o.onnx").run(None, {"pixels": images[:9]})[0],
                               logits(model, images[:9]), rtol=0, atol=1e-5)


class EveryOtherOp(nn.Module):
    """A custom forward through the remaining exporters: shapes, reductions, element-wise and softmax ops."""

    def forward(self, x):                                       # (N, 3, 32, 32)
        y = F.transpose(F.reshape(x[:, :, 1:31:3, 2:], (x.shape[0], 3, 10, 30)), (0, 2, 3, 1))    # (N, 10, 30, 3)
        y = F.clip(y - 0.5, -0.3, None) ** 2 + F.exp(-F.abs(y)) * F.sqrt(y + 1) / F.log(y + 2)
        y = F.cast(y, np.float32)
        top = F.reshape(F.max(y, axis=(1, 2), keepdims=True), (x.shape[0], 3))
        s = F.sum(y, axis=(1, 2)) + F.mean(y, axis=1).max(axis=1) - top           # (N, 3)
        return F.concatenate([F.log_softmax(s, axis=1), F.softmax(s, axis=-1), F.leaky_relu(s, 0.2)], axis=1)


def test_every_exporter_of_a_custom_forward(tmp_path, images):
    model = EveryOtherOp()
    export_onnx(model, tmp_path / "e.onnx", (3, 32, 32))
    theirs = session(tmp_path / "e.onnx").run(None, {"pixels": images[:5]})[0]
    assert theirs.shape == (5, 9)
    # (s sums 300 values of about 1: float32 rounding in another summation order is about 3e-5)
    np.testing.assert_allclose(theirs, logits(model, images[:5]), rtol=1e-5, atol=2e-4)


def test_import_minicnn_does_not_import_onnx_or_safetensors():
    code = ("import sys, minicnn; bad = [m for m in ('onnx', 'onnxruntime', 'safetensors', 'torch') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_missing_package_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)          # as if onnx were not installed
    with pytest.raises(ImportError, match=r'export_onnx needs the \'onnx\' package.*pip install "minicnn\[interop\]"'):
        minicnn.export_onnx(small(), tmp_path / "x.onnx", (3, 8, 8))


# ------------------------------------------------------------------ the CLI
def run_cli(*args):
    r = subprocess.run([sys.executable, "-m", "minicnn", *map(str, args)], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    return r.returncode, r.stdout, r.stderr


def test_cli_export_writes_onnx_and_safetensors(trained_checkpoint, tmp_path, images):
    onnx_path, st_path = tmp_path / "out" / "m.onnx", tmp_path / "out" / "m.safetensors"
    rc, out, err = run_cli("export", "--checkpoint", trained_checkpoint, "--onnx", onnx_path,
                           "--safetensors", st_path)
    assert rc == 0, err
    assert "ONNX Runtime vs minicnn on 8 random images: max |logit difference|" in out
    model = minicnn.load_model(trained_checkpoint)
    # (the tiny tree's network gives logits of hundreds on real photos: a relative tolerance)
    np.testing.assert_allclose(session(onnx_path).run(None, {"pixels": images[:10]})[0], logits(model, images[:10]),
                               rtol=1e-5, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json_list(meta["classes"]) == model.classes
    net = get_model("simple_cnn")
    info = minicnn.load_safetensors(net, st_path)
    assert info["model"] == "simple_cnn" and info["classes"] == model.classes
    np.testing.assert_allclose(info["norm_mean"], model.normalize.mean.numpy(), rtol=1e-6)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, model.net.state_dict()[k], err_msg=k)


def test_cli_export_errors_are_one_line(trained_checkpoint, tmp_path):
    rc, _, err = run_cli("export", "--checkpoint", trained_checkpoint)
    assert rc == 2 and "nothing to write: give --onnx FILE and/or --safetensors FILE" in err
    rc, _, err = run_cli("export", "--checkpoint", tmp_path / "none.npz", "--onnx", tmp_path / "m.onnx")
    assert rc == 2 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "file").write_text("")
    rc, _, err = run_cli("export", "--checkpoint", trained_checkpoint, "--onnx", tmp_path / "file" / "m.onnx")
    assert rc == 2 and "--onnx" in err and "is a file, not a folder" in err
    rc, _, err = run_cli("export", "--checkpoint", trained_checkpoint, "--onnx", "m.onnx", "--input-shape", "32x32")
    assert rc == 2 and "must be three positive integers CxHxW" in err
