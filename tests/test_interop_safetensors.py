"""safetensors in and out: bit-identical round trips, clear errors that load nothing, pickles never opened."""
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.autograd import Tensor, no_grad
from minicnn.interop import WeightsError, load_safetensors, save_safetensors
from minicnn.models import get_model

st = pytest.importorskip("safetensors.numpy", reason="safetensors is not installed (pip install \"minicnn[interop]\")")


def model_with_statistics(name="simple_cnn", seed=0):
    """A zoo model with random weights and random batchnorm statistics (all buffers non-trivial)."""
    rng = np.random.default_rng(seed)
    nn.init.manual_seed(seed)
    model = get_model(name)
    for k, t in list(model.named_parameters()) + list(model.named_buffers()):
        if k.endswith("running_var"):
            t.data[...] = rng.uniform(0.5, 2.0, t.shape)
        elif k.endswith(("running_mean", "bias")):
            t.data[...] = rng.normal(0, 0.3, t.shape)
    return model.eval()


def snapshot(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_same_state(model, state):
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert now[k].dtype == v.dtype and now[k].tobytes() == v.tobytes(), k      # bit for bit


def test_round_trip_is_bit_identical_with_the_same_logits(tmp_path):
    a, b = model_with_statistics(seed=0), model_with_statistics(seed=1)
    a.classes = ["cat", "dog"]
    path = save_safetensors(a, tmp_path / "a.safetensors", metadata={"model": "simple_cnn", "epochs": 3})
    meta = load_safetensors(b, path)
    assert_same_state(b, snapshot(a))
    assert meta == {"format": "minicnn", "classes": ["cat", "dog"], "model": "simple_cnn", "epochs": "3"}
    x = Tensor(np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32))
    with no_grad():
        assert np.array_equal(a(x).numpy(), b(x).numpy())
    tensors = st.load_file(str(path))                 # the file itself: state_dict names, buffers included
    assert set(tensors) == set(a.state_dict()) and "1.running_mean" in tensors


def test_float64_models_round_trip_too(tmp_path):
    a, b = model_with_statistics("resnet20").double(), get_model("resnet20").double()
    load_safetensors(b, save_safetensors(a, tmp_path / "r.safetensors"))
    assert_same_state(b, snapshot(a))


def truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def corrupt(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())


def header_only(path):
    path.write_bytes(b"\xff" * 8 + b"{}")


def rewrite(change):
    def edit(path):
        tensors = st.load_file(str(path))
        change(tensors)
        st.save_file(tensors, str(path))
    return edit


@pytest.mark.parametrize("damage, message", [
    (truncated, r"is not a readable safetensors file \(corrupt or truncated\?\)"),
    (corrupt, r"is not a readable safetensors file"),
    (header_only, r"is not a readable safetensors file"),
    (rewrite(lambda t: t.pop("5.running_var")), r"1 tensor\(s\) of the model are not in the file: 5.running_var"),
    (rewrite(lambda t: t.update(extra=np.zeros(3, np.float32))), r"1 tensor\(s\) of the file are not in the model: extra"),
    (rewrite(lambda t: t.update({"13.weight": np.zeros((5, 2048), np.float32)})),
     r"shapes differ: '13.weight' is \(5, 2048\) in the file but \(10, 2048\) in the model"),
])
def test_a_bad_file_is_refused_and_nothing_is_loaded(damage, message, tmp_path):
    path = save_safetensors(model_with_statistics(seed=0), tmp_path / "w.safetensors")
    damage(Path(path))
    target = model_with_statistics(seed=1)
    before = snapshot(target)
    with pytest.raises(WeightsError, match=message):
        load_safetensors(target, path)
    assert_same_state(target, before)


def test_another_models_file_names_the_model_and_the_differences(tmp_path):
    path = save_safetensors(model_with_statistics("resnet20"), tmp_path / "r.safetensors",
                            metadata={"model": "resnet20"})
    target = model_with_statistics("simple_cnn")
    before = snapshot(target)
    with pytest.raises(WeightsError) as info:
        load_safetensors(target, path)
    msg = str(info.value)
    assert "(weights of resnet20, says its metadata) does not fit this Sequential" in msg
    assert "tensor(s) of the model are not in the file: 0.weight, 1.weight" in msg
    assert "tensor(s) of the file are not in the model: blocks.0.bn1.bias, blocks.0.bn1.running_mean" in msg
    assert_same_state(target, before)


def test_strict_false_rename_and_pytorchs_batch_counter(tmp_path):
    a = model_with_statistics(seed=0)
    tensors = {f"features.{k}": v for k, v in a.state_dict().items()}
    tensors["features.1.num_batches_tracked"] = np.array(7, dtype=np.int64)     # PyTorch's counter: skipped
    tensors["head.extra"] = np.zeros(2, np.float32)
    path = tmp_path / "t.safetensors"
    st.save_file(tensors, str(path))
    b = model_with_statistics(seed=1)
    with pytest.raises(WeightsError, match="of the file are not in the model: head.extra"):
        load_safetensors(b, path, rename={"features.": ""})
    load_safetensors(b, path, rename={"features.": ""}, strict=False)
    assert_same_state(b, snapshot(a))
    c = model_with_statistics(seed=2)
    load_safetensors(c, path, rename=lambda k: k.replace("features.", ""), strict=False)
    assert_same_state(c, snapshot(a))


class Marker:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("name, wrap", [
    ("model.pt", False), ("model.pth", False), ("model.safetensors", False), ("model.safetensors", True),
])
def test_pickles_are_never_opened_and_the_message_says_how_to_convert(name, wrap, tmp_path):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"0.weight": Marker(str(marker))})
    path = tmp_path / name
    if wrap:                                       # PyTorch's own format: a zip archive holding a pickle
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes(payload)
    model = model_with_statistics()
    before = snapshot(model)
    with pytest.raises(WeightsError) as info:
        load_safetensors(model, path)
    msg = str(info.value)
    assert "is a PyTorch pickle file, and minicnn never unpickles a file" in msg
    assert "from safetensors.torch import save_file" in msg and 'save_file(model.state_dict(), "model.safetensors")' in msg
    assert not marker.exists()
    assert_same_state(model, before)


def test_a_safetensors_file_that_begins_like_a_pickle_still_loads(tmp_path):
    # Its first byte is the header length's low byte: 0x80 is a pickle's first byte too.
    a = model_with_statistics("lenet5")
    for pad in range(0, 256, 1):
        path = save_safetensors(a, tmp_path / "p.safetensors", metadata={"pad": "x" * pad})
        if Path(path).read_bytes()[:1] == b"\x80":
            break
    assert Path(path).read_bytes()[:1] == b"\x80"
    b = get_model("lenet5")
    load_safetensors(b, path)
    assert_same_state(b, snapshot(a))


def test_a_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_safetensors(get_model("lenet5"), tmp_path / "none.safetensors")
    with pytest.raises(WeightsError, match="is not a file"):
        load_safetensors(get_model("lenet5"), tmp_path)


# ------------------------------------------------------------------ --init-from through the CLI
def run_cli(*args):
    r = subprocess.run([sys.executable, "-m", "minicnn", *map(str, args)], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    return r.returncode, r.stdout, r.stderr


def test_cli_init_from_a_safetensors_file(trained_checkpoint, tiny_tree, tmp_path):
    weights = tmp_path / "w.safetensors"
    rc, _, err = run_cli("export", "--checkpoint", trained_checkpoint, "--safetensors", weights)
    assert rc == 0, err
    common = ["--data", tiny_tree, "--epochs", "1", "--batch-size", "50", "--val-split", "0", "--no-augment",
              "--no-progress", "--freeze", "backbone"]
    rc, out, err = run_cli("train", "--init-from", weights, "--out", tmp_path / "run", *common)
    assert rc == 0, err
    assert "model: simple_cnn" in out and f"init from {weights}: loaded 17 entries" in out, out[:1500]
    saved = minicnn.load(str(tmp_path / "run" / "last.npz"))
    trained = minicnn.load(trained_checkpoint)
    for k in ("0.weight", "1.running_mean", "8.weight"):      # frozen: still the weights loaded
        np.testing.assert_array_equal(saved["model"][k], trained["model"][k], err_msg=k)
    np.testing.assert_allclose(saved["norm_mean"], trained["norm_mean"], rtol=1e-6)

    bare = tmp_path / "bare.safetensors"             # weights from elsewhere: no metadata, so --model is needed
    st.save_file(minicnn.load_model(trained_checkpoint).net.state_dict(), str(bare))
    rc, _, err = run_cli("train", "--init-from", bare, "--out", tmp_path / "bare", *common)
    assert rc == 2 and "does not say which model it holds (no 'model' in its metadata): pass --model" in err
    rc, out, err = run_cli("train", "--init-from", bare, "--model", "simple_cnn", "--out", tmp_path / "bare2", *common)
    assert rc == 0, err
    assert "loaded 15 entries" in out and "re-initialised the head for 10 classes" in out    # (class names unknown)

    pt = tmp_path / "w.pt"
    pt.write_bytes(pickle.dumps({}))
    rc, _, err = run_cli("train", "--init-from", pt, "--model", "simple_cnn", "--out", tmp_path / "pt", *common)
    assert rc == 2 and "never unpickles" in err and "Traceback" not in err
