"""PyTorch weights in and out through safetensors: simple_cnn and resnet20 written in PyTorch give minicnn's logits.

Each PyTorch module below is the zoo architecture "written the obvious way":
the same layers in the same order, so its ``state_dict`` names are minicnn's
(PyTorch adds ``num_batches_tracked`` to each batchnorm, which minicnn skips).
Compared in float64 within 1e-5 (the float64 difference is about 1e-13), and
in float32 within 1e-4.
"""
import numpy as np
import pytest

from minicnn.autograd import Tensor, no_grad
from minicnn.interop import WeightsError, load_safetensors, save_safetensors
from minicnn.models import get_model

torch = pytest.importorskip("torch", reason="PyTorch is not installed")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
tnn = torch.nn


def torch_simple_cnn(num_classes=10):
    def block(c_in, c_out):
        return [tnn.Conv2d(c_in, c_out, 3, padding=1, bias=False), tnn.BatchNorm2d(c_out), tnn.ReLU(),
                tnn.MaxPool2d(2)]
    return tnn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), tnn.Flatten(),
                          tnn.Linear(128 * 4 * 4, num_classes))


class TorchBasicBlock(tnn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = tnn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(c_out)
        self.conv2 = tnn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(c_out)
        self.stride, self.extra = stride, c_out - c_in

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x
        if self.stride != 1 or self.extra:            # option A: subsample, zero-pad the new channels
            short = tnn.functional.pad(x[:, :, ::self.stride, ::self.stride],
                                       (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return torch.relu(out + short)


class TorchResNet20(tnn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(16)
        blocks, c = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(3):
                blocks.append(TorchBasicBlock(c, width, 2 if stage and i == 0 else 1))
                c = width
        self.blocks = tnn.Sequential(*blocks)
        self.pool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(64, num_classes)

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


TORCH_MODELS = {"simple_cnn": torch_simple_cnn, "resnet20": TorchResNet20}
DTYPES = {"float64": (torch.float64, np.float64, 1e-5), "float32": (torch.float32, np.float32, 1e-4)}


def trained_torch(name, dtype, seed=0):
    """The PyTorch model with random weights and batchnorm statistics (and a batch counter), in eval mode."""
    torch.manual_seed(seed)
    model = TORCH_MODELS[name]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
                m.num_batches_tracked.fill_(1234)
    return model.to(dtype).eval()


def images(dtype, n=6):
    return np.random.default_rng(1).random((n, 3, 32, 32)).astype(dtype)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(TORCH_MODELS))
def test_pytorch_weights_load_into_minicnn_with_the_same_logits(name, dtype, tmp_path):
    tdtype, ndtype, tol = DTYPES[dtype]
    theirs = trained_torch(name, tdtype)
    path = tmp_path / f"{name}.safetensors"
    safetensors_torch.save_file(theirs.state_dict(), str(path))        # what a PyTorch user shares
    ours = get_model(name)
    if ndtype == np.float64:
        ours.double()
    load_safetensors(ours, path)
    ours.eval()
    x = images(ndtype)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    with no_grad():
        got = ours(Tensor(x)).numpy()
    assert got.dtype == ndtype
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


@pytest.mark.parametrize("name", list(TORCH_MODELS))
def test_minicnn_weights_load_into_pytorch_with_the_same_logits(name, tmp_path):
    source = trained_torch(name, torch.float64, seed=3)          # only to get non-trivial statistics
    safetensors_torch.save_file(source.state_dict(), str(tmp_path / "src.safetensors"))
    ours = get_model(name).double()
    load_safetensors(ours, tmp_path / "src.safetensors")
    for p in ours.parameters():                                  # then make them minicnn's own
        p.data *= 1.1
    ours.eval()
    save_safetensors(ours, tmp_path / "out.safetensors", metadata={"model": name})

    theirs = TORCH_MODELS[name]().double().eval()
    result = theirs.load_state_dict(safetensors_torch.load_file(str(tmp_path / "out.safetensors")), strict=True)
    assert not result.missing_keys and not result.unexpected_keys       # num_batches_tracked may be absent
    x = images(np.float64)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    with no_grad():
        got = ours(Tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_a_shape_mismatch_names_the_parameter_and_both_shapes(tmp_path):
    safetensors_torch.save_file(torch_simple_cnn(num_classes=5).state_dict(), str(tmp_path / "five.safetensors"))
    ours = get_model("simple_cnn")
    before = {k: v.copy() for k, v in ours.state_dict().items()}
    with pytest.raises(WeightsError, match=r"'13.weight' is \(5, 2048\) in the file but \(10, 2048\) in the model; "
                                           r"'13.bias' is \(5,\) in the file but \(10,\) in the model"):
        load_safetensors(ours, tmp_path / "five.safetensors")
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_bfloat16_weights_load_as_float32_or_get_a_conversion_hint(tmp_path):
    """NumPy alone has no bfloat16; once ml_dtypes is imported (onnx imports it) it has, and the file loads."""
    theirs = torch_simple_cnn()
    safetensors_torch.save_file({k: v.to(torch.bfloat16) for k, v in theirs.state_dict().items()
                                 if not k.endswith("num_batches_tracked")}, str(tmp_path / "bf.safetensors"))
    ours = get_model("simple_cnn")
    try:
        load_safetensors(ours, tmp_path / "bf.safetensors")
    except WeightsError as e:
        assert "holds bfloat16 tensors, which NumPy has no type for" in str(e) and "v.float()" in str(e)
        return
    expected = {k: v.to(torch.bfloat16).float().numpy() for k, v in theirs.state_dict().items()}
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(v, expected[k], err_msg=k)
