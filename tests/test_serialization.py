"""minicnn.serialization: nested round trips, atomic writes, no pickle, RNG states."""
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn
from minicnn import serialization
from minicnn.serialization import load, save


def assert_same(a, b, path="root"):
    """Exact structural equality: same container types, keys, array dtypes/shapes/values, plain values."""
    assert type(a) is type(b) or (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)), \
        f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}/{i}")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_nested_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    state = {
        "model": {"conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                  "bn.running_var": np.ones(4, np.float32),
                  "fc.weight": rng.standard_normal((10, 4))},
        "optimizer": {"state": {"0": {"step": 3, "exp_avg": np.zeros((2, 2))}},
                      "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "nesterov": False,
                                        "params": [0, 1]}]},
        "epoch": 12, "best": 0.9125, "name": "resnet20", "note": None, "flag": True,
        "empty_list": [], "empty_dict": {}, "empty_tuple": (),
        "ints": np.arange(5, dtype=np.int64), "labels": np.array([1, 2], dtype=np.uint8),
        "mask": np.array([True, False]), "scalar": np.float32(2.5), "zero_d": np.array(3.0),
        "strings": np.array(["cat", "dog"]), "big": 2 ** 100, "neg": -7,
        "inf": float("inf"), "nan": float("nan"), "unicode": "héllo / ∑",
        "weird/key": np.ones(2), "weird": {"key": np.zeros(2)}, "": {"": 1},
        "nested": [({"a": [np.ones((0, 3))]},)],
    }
    p = tmp_path / "ckpt.npz"
    save(state, p)
    assert_same(state, load(p))
    # readable with plain numpy, keys flattened with '/'
    with np.load(p, allow_pickle=False) as z:
        assert "model/conv1.weight" in z.files
        assert "optimizer/state/0/exp_avg" in z.files
        assert int(z["__minicnn_format__"]) == serialization.FORMAT_VERSION
        for name in z.files:
            assert z[name].dtype != object


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                    st.floats(allow_nan=False), st.text(max_size=5))
arrays = st.builds(lambda shape, seed, dt: np.random.default_rng(seed).standard_normal(shape).astype(dt),
                   st.lists(st.integers(0, 3), max_size=3).map(tuple), st.integers(0, 100),
                   st.sampled_from([np.float32, np.float64, np.int32]))
trees = st.recursive(scalars | arrays, lambda children: st.one_of(
    st.lists(children, max_size=3), st.lists(children, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=4), children, max_size=3)), max_leaves=10)


@settings(max_examples=30)
@given(tree=trees)
def test_random_trees_round_trip(tmp_path_factory, tree):
    p = tmp_path_factory.mktemp("trees") / "t.npz"
    save(tree, p)
    assert_same(tree, load(p))


def test_tensor_and_cpu_arrays_become_numpy(tmp_path):
    t = minicnn.tensor(np.arange(3.0), requires_grad=True)
    save({"t": t}, tmp_path / "t.npz")
    out = load(tmp_path / "t.npz")["t"]
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, [0.0, 1.0, 2.0])


def test_numpy_rng_state_round_trip(tmp_path):
    for gen in (np.random.default_rng(123), np.random.Generator(np.random.MT19937(7)),
                np.random.Generator(np.random.Philox(3)), np.random.Generator(np.random.SFC64(9))):
        gen.standard_normal(17)
        save({"rng": gen.bit_generator.state}, tmp_path / "rng.npz")
        restored = np.random.Generator(type(gen.bit_generator)())
        restored.bit_generator.state = load(tmp_path / "rng.npz")["rng"]
        np.testing.assert_array_equal(restored.standard_normal(50), gen.standard_normal(50))
    legacy = np.random.RandomState(5)
    legacy.rand(3)
    save({"legacy": legacy.get_state(legacy=False)}, tmp_path / "legacy.npz")
    other = np.random.RandomState()
    other.set_state(load(tmp_path / "legacy.npz")["legacy"])
    np.testing.assert_array_equal(other.rand(10), legacy.rand(10))


def test_unsupported_types_name_the_key(tmp_path):
    with pytest.raises(TypeError, match=r"type set at 'model/bad'"):
        save({"model": {"bad": {1, 2}}}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match=r"dict keys must be strings.*'opt'"):
        save({"opt": {0: 1}}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match=r"a/0.*object"):
        save({"a": [np.array([1, "x", None], dtype=object)]}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="complex"):
        save({"c": 1j}, tmp_path / "x.npz")
    assert not os.path.exists(tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []   # no temporary file left behind


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save({"a": 1}, tmp_path / "no_folder" / "x.npz")


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="not a minicnn checkpoint"):
        load(junk)
    plain = tmp_path / "plain.npz"
    np.savez(plain, weights=np.ones(3))
    with pytest.raises(ValueError, match="not a minicnn checkpoint"):
        load(plain)
    npy = tmp_path / "one.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match="not a minicnn checkpoint"):
        load(npy)


def test_newer_format_refused(tmp_path, monkeypatch):
    p = tmp_path / "new.npz"
    monkeypatch.setattr(serialization, "FORMAT_VERSION", serialization.FORMAT_VERSION + 1)
    save({"a": 1}, p)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="newer"):
        load(p)


def test_object_array_refused_without_pickle(tmp_path):
    """A checkpoint whose entry is an object array (pickle inside) is refused, not unpickled."""
    p = tmp_path / "evil.npz"
    save({"w": np.ones(2)}, p)
    with np.load(p) as z:
        entries = {k: z[k] for k in z.files}
    entries["w"] = np.array([{"payload": 1}, None], dtype=object)   # same name, pickled content
    np.savez(p, allow_pickle=True, **entries)
    with pytest.raises(ValueError, match="pickle"):
        load(p)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "last.npz"
    save({"epoch": 1, "w": np.ones(3)}, p)
    before = p.read_bytes()

    calls = {"n": 0}
    real = np.lib.format.write_array

    def failing_write_array(fp, array, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:    # the first array is already in the temporary file
            raise OSError("disk full (simulated)")
        return real(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write_array)
    with pytest.raises(OSError, match="disk full"):
        save({"epoch": 2, "w": np.zeros(3), "v": np.zeros(5)}, p)
    monkeypatch.undo()
    assert calls["n"] == 2
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last.npz"]   # temporary file removed
    assert load(p)["epoch"] == 1

    # and a failure at the rename step too
    def failing_replace(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        save({"epoch": 3}, p)
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last.npz"]


def test_overwrite_and_path_used_as_given(tmp_path):
    p = tmp_path / "model.ckpt"          # no .npz added
    save({"a": 1}, str(p))
    save({"a": 2}, p)
    assert load(p) == {"a": 2}
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt"]
    assert zipfile.is_zipfile(p)


def test_module_and_optimizer_checkpoint(tmp_path):
    from minicnn import nn, optim
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "m.npz")
    ckpt = load(tmp_path / "m.npz")
    model2 = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    model2.load_state_dict(ckpt["model"])
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert ckpt["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)


@pytest.mark.parametrize("content", [b"these are my notes\n", b"", b"\x80\x04K\x01.",     # text, empty, a pickle
                                     b"PK\x03\x04 truncated zip"])
def test_foreign_files_are_not_checkpoints_and_pickle_is_never_suggested(tmp_path, content):
    p = tmp_path / "notes.npz"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="is not a minicnn checkpoint") as info:
        load(p)
    assert "pickle" not in str(info.value)               # NumPy's advice to unpickle is not relayed
    with pytest.raises(ValueError, match="is a directory"):
        load(tmp_path)


def test_object_array_message_does_not_advise_unpickling(tmp_path):
    p = tmp_path / "evil.npz"
    save({"w": np.ones(2)}, p)
    with np.load(p) as z:
        entries = {k: z[k] for k in z.files}
    entries["w"] = np.array([{"payload": 1}, None], dtype=object)
    np.savez(p, allow_pickle=True, **entries)
    with pytest.raises(ValueError) as info:
        load(p)
    assert "never unpickles" in str(info.value) and "allow_pickle=" not in str(info.value)
    assert "pickle.load" not in str(info.value)
