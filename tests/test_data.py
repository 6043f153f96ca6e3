"""Tests for minicnn.data: CIFAR-10 reader, ImageFolder cache, splits, transforms, DataLoader.

The official CIFAR-10 archive cannot be downloaded here, so the tests build
small archives in exactly its format (pickled dicts holding NumPy arrays,
as a folder and as a tar.gz). Tests on the real CIFAR-10 JPEG tree are
marked slow and skipped when it is absent.
"""
import hashlib
import io
import os
import pickle
import struct
import tarfile
import threading
import time
import urllib.error

import numpy as np
import pytest
from PIL import Image

import minicnn
from minicnn.data import (CIFAR10, ArrayDataset, Compose, DataLoader, DatasetError, ImageFolder,
                          Normalize, RandomCrop, RandomHorizontalFlip, Subset, ToFloat,
                          channel_stats, random_split, train_val_split)
from minicnn.data import cifar as cifar_mod
from minicnn.data import folder as folder_mod

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck"]
REAL_ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpeg")
if not os.path.isdir(REAL_ROOT):
    REAL_ROOT = "/work/shared/data/cifar10-jpeg"


# ==========================================================================
# Fake CIFAR-10 in the official format
# ==========================================================================
class _Py2StylePickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` (BINSTRING), like the official files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin-1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def _dumps(obj, py2=False):
    if not py2:
        return pickle.dumps(obj, protocol=4)
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    # Python 2 NumPy named the module numpy.core.multiarray (a GLOBAL opcode: text lines).
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def make_cifar(n=6, seed=0):
    """{file name: dict} for a tiny CIFAR-10: 5 training batches and a test batch of n images."""
    rng = np.random.default_rng(seed)
    files = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        files[name] = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
    files["batches.meta"] = {b"label_names": [s.encode() for s in CIFAR_NAMES],
                             b"num_cases_per_batch": n, b"num_vis": 3072}
    return files


def write_cifar_folder(root, files, py2=False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, obj in files.items():
        (folder / name).write_bytes(_dumps(obj, py2))
    return folder


def cifar_archive_bytes(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, obj in files.items():
            blob = _dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def expected(files, train):
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    x = np.concatenate([files[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
    y = np.concatenate([files[n][b"labels"] for n in names])
    return x, y


@pytest.fixture
def cifar_files():
    return make_cifar()


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("py2", [False, True], ids=["py3-pickle", "py2-style-pickle"])
def test_cifar_folder_round_trip(tmp_path, cifar_files, train, py2):
    write_cifar_folder(tmp_path, cifar_files, py2=py2)
    ds = CIFAR10(tmp_path, train=train)
    x, y = expected(cifar_files, train)
    assert len(ds) == (30 if train else 6)
    assert ds.images.shape == (len(ds), 3, 32, 32) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.images, x)
    np.testing.assert_array_equal(ds.labels, y)
    assert ds.classes == CIFAR_NAMES
    img, label = ds[3]
    np.testing.assert_array_equal(img, x[3])
    assert label == y[3] and isinstance(label, int)


def test_cifar_root_may_be_the_batches_folder(tmp_path, cifar_files):
    folder = write_cifar_folder(tmp_path, cifar_files)
    np.testing.assert_array_equal(CIFAR10(folder, train=False).images, expected(cifar_files, False)[0])


def test_cifar_reads_archive_without_extracting(tmp_path, cifar_files):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(cifar_archive_bytes(cifar_files))
    for train in (True, False):
        ds = CIFAR10(tmp_path, train=train)
        x, y = expected(cifar_files, train)
        np.testing.assert_array_equal(ds.images, x)
        np.testing.assert_array_equal(ds.labels, y)
    assert os.listdir(tmp_path) == ["cifar-10-python.tar.gz"]


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("in_archive", [False, True])
def test_cifar_refuses_malicious_pickle(tmp_path, cifar_files, in_archive):
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    cifar_files["test_batch"][b"batch_label"] = evil
    if in_archive:
        (tmp_path / "cifar-10-python.tar.gz").write_bytes(cifar_archive_bytes(cifar_files))
    else:
        write_cifar_folder(tmp_path, cifar_files)
    with pytest.raises(DatasetError, match=r"refusing to unpickle the global '(posix|os|nt)\.system'"):
        CIFAR10(tmp_path, train=False)
    assert not evil.marker.exists()


def test_safe_unpickle_refuses_builtins():
    blob = pickle.dumps({b"data": eval}, protocol=4)
    with pytest.raises(DatasetError, match="builtins.eval"):
        cifar_mod.safe_unpickle(blob)


def test_cifar_reads_batches_resaved_by_python3_with_protocol_2(tmp_path, cifar_files):
    """Python 3's protocol 2 writes bytes as ``_codecs.encode(str, 'latin1')``: that call is admitted."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, obj in cifar_files.items():
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    assert b"_codecs" in (folder / "test_batch").read_bytes()     # the case under test
    for train in (True, False):
        ds = CIFAR10(tmp_path, train=train)
        x, y = expected(cifar_files, train)
        np.testing.assert_array_equal(ds.images, x)
        np.testing.assert_array_equal(ds.labels, y)
    assert CIFAR10(tmp_path, train=False).classes == CIFAR_NAMES


@pytest.mark.parametrize("protocol", [2, 4])
def test_safe_unpickle_still_refuses_os_system(tmp_path, protocol):
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    blob = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"x": evil}, protocol=protocol)
    with pytest.raises(DatasetError, match=r"refusing to unpickle the global '(posix|os|nt)\.system'"):
        cifar_mod.safe_unpickle(blob)
    assert not evil.marker.exists()


class _Encode:
    """Pickles as ``_codecs.encode(<args>)``: any call of that global other than (str, 'latin1')."""

    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        import _codecs
        return (_codecs.encode, self.args)


@pytest.mark.parametrize("args", [("abc", "utf-8"), ("abc", "rot13"), (b"abc", "latin1"),
                                  ("abc", "latin1", "strict"), ("abc",)])
def test_safe_unpickle_admits_only_the_latin1_encode_call(args):
    ok = pickle.dumps({b"v": _Encode("abc", "latin1")}, protocol=2)
    assert cifar_mod.safe_unpickle(ok) == {b"v": b"abc"}
    blob = pickle.dumps({b"v": _Encode(*args)}, protocol=2)
    with pytest.raises(DatasetError):
        cifar_mod.safe_unpickle(blob)


def test_cifar_missing_everything_says_how_to_fix(tmp_path):
    with pytest.raises(DatasetError, match="download=True") as info:
        CIFAR10(tmp_path)
    assert "cifar-10-batches-py" in str(info.value) and "cifar-10-python.tar.gz" in str(info.value)


def test_cifar_missing_one_batch(tmp_path, cifar_files):
    folder = write_cifar_folder(tmp_path, cifar_files)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3 is missing"):
        CIFAR10(tmp_path, train=True)
    CIFAR10(tmp_path, train=False)   # the test split is still complete


def test_cifar_corrupt_archive(tmp_path, cifar_files):
    blob = cifar_archive_bytes(cifar_files)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        CIFAR10(tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a gzip file at all" * 10)
    with pytest.raises(DatasetError, match="corrupt"):
        CIFAR10(tmp_path)


def test_cifar_archive_with_wrong_members(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("something/else.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(DatasetError, match="not the official"):
        CIFAR10(tmp_path, train=False)


def test_cifar_truncated_batch_file(tmp_path, cifar_files):
    folder = write_cifar_folder(tmp_path, cifar_files)
    blob = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(blob[:100])
    with pytest.raises(DatasetError, match="test_batch is corrupt"):
        CIFAR10(tmp_path, train=False)


def test_cifar_wrong_batch_layout(tmp_path, cifar_files):
    del cifar_files["test_batch"][b"labels"]
    write_cifar_folder(tmp_path, cifar_files)
    with pytest.raises(DatasetError, match="not a CIFAR-10 batch"):
        CIFAR10(tmp_path, train=False)


def test_cifar_wrong_data_shape(tmp_path, cifar_files):
    cifar_files["test_batch"][b"data"] = np.zeros((6, 100), np.uint8)
    write_cifar_folder(tmp_path, cifar_files)
    with pytest.raises(DatasetError, match=r"shape \(N, 3072\)"):
        CIFAR10(tmp_path, train=False)


class _FakeResponse(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_cifar_download_good_md5(tmp_path, cifar_files, monkeypatch):
    blob = cifar_archive_bytes(cifar_files)
    calls = []

    def fake_urlopen(url):
        calls.append(url)
        return _FakeResponse(blob)

    monkeypatch.setattr(cifar_mod, "urlopen", fake_urlopen)
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", hashlib.md5(blob).hexdigest())
    root = tmp_path / "data"
    ds = CIFAR10(root, train=False, download=True)
    assert calls == [cifar_mod.CIFAR10_URL]
    np.testing.assert_array_equal(ds.images, expected(cifar_files, False)[0])
    assert os.listdir(root) == ["cifar-10-python.tar.gz"]
    # Already there with the right MD5: no second download.
    CIFAR10(root, train=True, download=True)
    assert len(calls) == 1


def test_cifar_download_bad_md5_leaves_nothing(tmp_path, cifar_files, monkeypatch):
    blob = cifar_archive_bytes(cifar_files)
    monkeypatch.setattr(cifar_mod, "urlopen", lambda url: _FakeResponse(blob))
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="MD5"):
        CIFAR10(root, download=True)   # the real constant does not match our fake archive
    assert os.listdir(root) == []


def test_cifar_download_network_error(tmp_path, monkeypatch):
    def fail(url):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(cifar_mod, "urlopen", fail)
    with pytest.raises(DatasetError, match="could not download"):
        CIFAR10(tmp_path / "data", download=True)
    assert os.listdir(tmp_path / "data") == []


def test_cifar_download_skipped_when_folder_present(tmp_path, cifar_files, monkeypatch):
    write_cifar_folder(tmp_path, cifar_files)
    monkeypatch.setattr(cifar_mod, "urlopen", lambda url: pytest.fail("should not download"))
    assert len(CIFAR10(tmp_path, train=False, download=True)) == 6


# ==========================================================================
# ImageFolder
# ==========================================================================
def make_tree(root, classes=("dog", "cat", "bird"), per_class=3, size=(8, 6), seed=0):
    """A tiny image tree with random PNGs (lossless) plus a JPEG and some non-image files."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for name in classes:
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i:03d}.png")
            pixels[f"{name}/{i:03d}.png"] = arr
        (d / "notes.txt").write_text("not an image")
        (d / ".hidden.png").write_bytes(b"junk")
    return pixels


def test_imagefolder_classes_labels_pixels(tmp_path):
    pixels = make_tree(tmp_path / "tree")
    ds = ImageFolder(tmp_path / "tree", cache_dir=tmp_path / "cache", progress=False)
    assert ds.classes == ["bird", "cat", "dog"]
    assert ds.images.shape == (9, 3, 6, 8) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.files[0] == "bird/000.png"
    for i, rel in enumerate(ds.files):
        np.testing.assert_array_equal(ds.images[i], pixels[rel].transpose(2, 0, 1))


def test_imagefolder_grayscale_and_jpeg_become_rgb(tmp_path):
    (tmp_path / "t" / "a").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 77, np.uint8), mode="L").save(tmp_path / "t" / "a" / "g.png")
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(tmp_path / "t" / "a" / "c.JPG")
    ds = ImageFolder(tmp_path / "t", cache_dir=False, progress=False)
    assert ds.images.shape == (2, 3, 4, 4)
    assert ds.files == ["a/c.JPG", "a/g.png"]
    np.testing.assert_array_equal(ds.images[1], 77)
    assert np.abs(ds.images[0].astype(int) - 200).max() <= 2   # JPEG is lossy


def test_imagefolder_second_load_reads_cache(tmp_path, monkeypatch):
    make_tree(tmp_path / "tree")
    first = ImageFolder(tmp_path / "tree", cache_dir=tmp_path / "cache", progress=False)
    assert not first.from_cache

    def no_decoding(*args, **kwargs):
        raise AssertionError("Pillow was called although the cache is valid")

    from PIL import Image
    monkeypatch.setattr(Image, "open", no_decoding)
    t0 = time.perf_counter()
    second = ImageFolder(tmp_path / "tree", cache_dir=tmp_path / "cache", progress=False)
    assert time.perf_counter() - t0 < 0.5
    assert second.from_cache
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.classes == first.classes
    cached = os.listdir(tmp_path / "cache")
    assert sorted(n.split(".", 1)[1] for n in cached) == ["images.npy", "json", "labels.npy"]


def test_imagefolder_changed_tree_is_decoded_again(tmp_path):
    make_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    ImageFolder(tmp_path / "tree", cache_dir=cache, progress=False)
    # A new image: decoded again, and the stale cache entry is replaced.
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "tree" / "cat" / "new.png")
    ds = ImageFolder(tmp_path / "tree", cache_dir=cache, progress=False)
    assert not ds.from_cache and len(ds) == 10
    assert len(os.listdir(cache)) == 3
    assert ImageFolder(tmp_path / "tree", cache_dir=cache, progress=False).from_cache
    # An edited image (new content and modification time).
    path = tmp_path / "tree" / "cat" / "new.png"
    Image.fromarray(np.full((6, 8, 3), 9, np.uint8)).save(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    ds = ImageFolder(tmp_path / "tree", cache_dir=cache, progress=False)
    assert not ds.from_cache
    np.testing.assert_array_equal(ds.images[ds.files.index("cat/new.png")], 9)
    # A moved image changes the labels.
    os.rename(path, tmp_path / "tree" / "dog" / "new.png")
    ds = ImageFolder(tmp_path / "tree", cache_dir=cache, progress=False)
    assert not ds.from_cache and ds.labels[ds.files.index("dog/new.png")] == 2


def test_imagefolder_default_cache_dir_from_env(tmp_path, monkeypatch):
    make_tree(tmp_path / "tree", per_class=1)
    monkeypatch.setenv("MINICNN_CACHE", str(tmp_path / "envcache"))
    ImageFolder(tmp_path / "tree", progress=False)
    assert len(os.listdir(tmp_path / "envcache")) == 3
    assert ImageFolder(tmp_path / "tree", progress=False).from_cache


def test_imagefolder_cache_disabled(tmp_path, monkeypatch):
    make_tree(tmp_path / "tree", per_class=1)
    monkeypatch.setenv("MINICNN_CACHE", str(tmp_path / "envcache"))
    ds = ImageFolder(tmp_path / "tree", cache_dir=False, progress=False)
    assert not ds.from_cache and not (tmp_path / "envcache").exists()


def test_imagefolder_unwritable_cache_warns_and_loads(tmp_path):
    make_tree(tmp_path / "tree", per_class=1)
    (tmp_path / "afile").write_text("x")
    with pytest.warns(UserWarning, match="could not write the cache"):
        ds = ImageFolder(tmp_path / "tree", cache_dir=tmp_path / "afile" / "cache", progress=False)
    assert len(ds) == 3


def test_imagefolder_corrupt_cache_is_rebuilt(tmp_path):
    make_tree(tmp_path / "tree", per_class=2)
    cache = tmp_path / "cache"
    first = ImageFolder(tmp_path / "tree", cache_dir=cache, progress=False)
    (cache / (os.path.basename(first.cache_path) + ".images.npy")).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = ImageFolder(tmp_path / "tree", cache_dir=cache, progress=False)
    assert not again.from_cache
    np.testing.assert_array_equal(again.images, first.images)


def test_imagefolder_process_pool_matches_serial(tmp_path):
    make_tree(tmp_path / "tree", per_class=4)
    serial = ImageFolder(tmp_path / "tree", cache_dir=False, num_workers=0, progress=False)
    pooled = ImageFolder(tmp_path / "tree", cache_dir=False, num_workers=2, progress=False)
    np.testing.assert_array_equal(serial.images, pooled.images)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder"):
        ImageFolder(tmp_path / "missing", cache_dir=False)
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="no class folders.*1 images directly"):
        ImageFolder(tmp_path / "flat", cache_dir=False)
    make_tree(tmp_path / "t1", per_class=1)
    (tmp_path / "t1" / "empty").mkdir()
    (tmp_path / "t1" / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="empty contains no images"):
        ImageFolder(tmp_path / "t1", cache_dir=False)


def test_imagefolder_size_mismatch(tmp_path):
    make_tree(tmp_path / "t", per_class=2, size=(8, 6))
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "t" / "cat" / "odd.png")
    with pytest.raises(DatasetError, match=r"same size.*odd\.png is 5x5.*8x6"):
        ImageFolder(tmp_path / "t", cache_dir=False, progress=False)


def test_imagefolder_corrupt_image(tmp_path):
    make_tree(tmp_path / "t", per_class=1)
    (tmp_path / "t" / "cat" / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(DatasetError, match=r"cannot decode .*broken\.png"):
        ImageFolder(tmp_path / "t", cache_dir=False, progress=False)


# ==========================================================================
# Datasets, subsets, splits, statistics
# ==========================================================================
def indexed_dataset(n=50, shape=(3, 4, 4), seed=0):
    """Images with random pixels; label i for sample i, so batches reveal the indices."""
    images = np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)
    return ArrayDataset(images, np.arange(n), classes=[str(i) for i in range(n)])


def test_array_dataset_validation():
    with pytest.raises(ValueError, match=r"uint8 array of shape \(N, C, H, W\)"):
        ArrayDataset(np.zeros((2, 3, 4, 4), np.float32), [0, 1])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ArrayDataset(np.zeros((2, 3, 4, 4), np.uint8), [0, 1, 2])
    with pytest.raises(ValueError, match="labels must lie in"):
        ArrayDataset(np.zeros((2, 3, 4, 4), np.uint8), [0, 5], classes=["a", "b"])
    ds = indexed_dataset(5)
    with pytest.raises(IndexError, match="out of range"):
        ds[5]
    assert ds[-1][1] == 4


def test_subset_and_nesting():
    ds = indexed_dataset(20)
    sub = Subset(ds, [5, 2, 9, 11])
    assert len(sub) == 4 and sub[1][1] == 2
    np.testing.assert_array_equal(sub.images, ds.images[[5, 2, 9, 11]])
    np.testing.assert_array_equal(sub.labels, [5, 2, 9, 11])
    inner = Subset(sub, [3, 0])
    np.testing.assert_array_equal(inner.get_batch([0, 1])[1], [11, 5])
    assert inner.classes is ds.classes
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 20\)"):
        Subset(ds, [0, 20])


def test_train_val_split_disjoint_and_covering():
    ds = indexed_dataset(50)
    train, val = train_val_split(ds, 12, seed=3)
    assert len(train) == 38 and len(val) == 12
    a, b = set(train.labels.tolist()), set(val.labels.tolist())
    assert not a & b and a | b == set(range(50))
    train2, val2 = train_val_split(ds, 12, seed=3)
    np.testing.assert_array_equal(val.indices, val2.indices)
    assert not np.array_equal(val.indices, train_val_split(ds, 12, seed=4)[1].indices)
    for bad in (0, 50, -1, 2.5):
        with pytest.raises(ValueError, match="n_val"):
            train_val_split(ds, bad)


def test_random_split_lengths():
    parts = random_split(indexed_dataset(10), [3, 3, 4], seed=1)
    assert [len(p) for p in parts] == [3, 3, 4]
    assert sorted(np.concatenate([p.indices for p in parts]).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="add up to"):
        random_split(indexed_dataset(10), [3, 3])


def test_channel_stats_match_float64_formula():
    ds = indexed_dataset(37, shape=(3, 5, 7), seed=2)
    mean, std = channel_stats(ds, batch_size=8)
    x = ds.images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-12)
    sub = Subset(ds, np.arange(0, 37, 2))
    np.testing.assert_allclose(channel_stats(sub)[0],
                               (sub.images / 255).mean(axis=(0, 2, 3)), rtol=1e-12)


# ==========================================================================
# Transforms
# ==========================================================================
def test_to_float():
    x = np.array([0, 51, 255], np.uint8).reshape(1, 3, 1, 1)
    y = ToFloat()(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.ravel(), [0, 0.2, 1], rtol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        ToFloat()(y)


def test_normalize_math(rng):
    x = rng.random((4, 3, 5, 5)).astype(np.float32)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    y = Normalize(mean, std)(x)
    assert y.dtype == np.float32
    ref = (x - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="3 channels"):
        Normalize(mean, std)(x[:, :2])
    with pytest.raises(TypeError, match="ToFloat"):
        Normalize(mean, std)((x * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="std must be > 0"):
        Normalize(mean, (1, 0, 1))


def test_random_crop_is_a_window_of_the_padded_image(rng):
    x = rng.integers(0, 256, (64, 3, 32, 32), dtype=np.uint8)
    y = RandomCrop(32, padding=4)(x, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.uint8
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    offsets = set()
    for n in range(len(x)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if np.array_equal(y[n], padded[n, :, dy:dy + 32, dx:dx + 32])]
        assert len(matches) == 1, f"image {n}: not a unique window of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 20          # offsets vary from image to image


def test_random_crop_smaller_non_square_no_padding(rng):
    x = rng.random((5, 2, 10, 12)).astype(np.float32)
    y = RandomCrop((6, 7))(x, np.random.default_rng(1))
    assert y.shape == (5, 2, 6, 7)
    for n in range(5):
        assert any(np.array_equal(y[n], x[n, :, a:a + 6, b:b + 7])
                   for a in range(5) for b in range(6))
    with pytest.raises(ValueError, match="larger than the padded image"):
        RandomCrop(16, padding=2)(x)


def test_random_flip(rng):
    x = rng.integers(0, 256, (200, 3, 4, 5), dtype=np.uint8)
    y = RandomHorizontalFlip()(x, np.random.default_rng(0))
    flipped = np.array([np.array_equal(y[n], x[n, :, :, ::-1]) for n in range(200)])
    same = np.array([np.array_equal(y[n], x[n]) for n in range(200)])
    assert np.all(flipped ^ same)
    assert 70 < flipped.sum() < 130
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x, rng), x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x, rng), x)


def test_transforms_are_deterministic_given_the_rng(rng):
    x = rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    tf = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToFloat(),
                  Normalize((0.5,) * 3, (0.25,) * 3)])
    a = tf(x, np.random.default_rng(7))
    b = tf(x, np.random.default_rng(7))
    c = tf(x, np.random.default_rng(8))
    assert a.dtype == np.float32 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Compose threads one generator through its transforms, in order.
    r = np.random.default_rng(7)
    manual = Normalize((0.5,) * 3, (0.25,) * 3)(ToFloat()(RandomHorizontalFlip()(
        RandomCrop(32, padding=4)(x, r), r)))
    np.testing.assert_array_equal(a, manual)


def test_transforms_same_result_on_every_backend(xp, rng):
    x = rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    tf = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToFloat(),
                  Normalize((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))])
    ref = tf(x, np.random.default_rng(3))
    out = tf(xp.asarray(x), np.random.default_rng(3))
    assert minicnn.get_array_module(out) is xp
    np.testing.assert_allclose(out.get() if hasattr(out, "get") else out, ref, rtol=1e-6)


# ==========================================================================
# DataLoader
# ==========================================================================
def _loader_threads():
    return [t for t in threading.enumerate() if t.name == "minicnn-DataLoader"]


@pytest.mark.parametrize("prefetch", [True, False])
def test_loader_batches_in_order(prefetch):
    ds = indexed_dataset(10)
    loader = DataLoader(ds, batch_size=4, prefetch=prefetch)
    assert len(loader) == 3 and len(DataLoader(ds, 4, drop_last=True)) == 2
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    images, labels = batches[0]
    assert isinstance(images, minicnn.Tensor) and isinstance(labels, minicnn.Tensor)
    assert images.dtype == np.float32 and images.shape == (4, 3, 4, 4)
    assert labels.dtype == np.int64 and not images.requires_grad
    np.testing.assert_allclose(images.data, ds.images[:4] / np.float32(255), rtol=1e-6)
    assert np.concatenate([y.data for _, y in batches]).tolist() == list(range(10))
    assert [len(y) for _, y in DataLoader(ds, 4, drop_last=True)] == [4, 4]


def test_loader_shuffle_each_sample_once_and_reproducible():
    ds = indexed_dataset(23)
    a = DataLoader(ds, batch_size=5, shuffle=True, seed=11)
    epochs = [np.concatenate([y.data for _, y in a]) for _ in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(23))
    assert not np.array_equal(epochs[0], epochs[1])
    b = DataLoader(ds, batch_size=5, shuffle=True, seed=11, prefetch=False)
    for order in epochs:
        np.testing.assert_array_equal(np.concatenate([y.data for _, y in b]), order)
    c = DataLoader(ds, batch_size=5, shuffle=True, seed=11)
    c.set_epoch(2)                      # resume: epoch 2 as in the uninterrupted run
    np.testing.assert_array_equal(np.concatenate([y.data for _, y in c]), epochs[2])
    d = DataLoader(ds, batch_size=5, shuffle=True, seed=12)
    assert not np.array_equal(np.concatenate([y.data for _, y in d]), epochs[0])


def test_loader_augmentation_reproducible_and_advances_per_epoch():
    ds = indexed_dataset(12, shape=(3, 8, 8))
    tf = Compose([RandomCrop(8, padding=2), RandomHorizontalFlip()])

    def run(prefetch):
        loader = DataLoader(ds, batch_size=5, transform=tf, seed=5, prefetch=prefetch)
        return [np.concatenate([x.data for x, _ in loader]) for _ in range(2)]

    first, second = run(True)
    assert first.dtype == np.float32 and first.max() <= 1.0
    assert not np.array_equal(first, second)
    for a, b in zip(run(True), run(False)):
        np.testing.assert_array_equal(a, b)


def test_loader_casts_transform_output_to_float32():
    ds = indexed_dataset(6)
    loader = DataLoader(ds, batch_size=3, transform=lambda x, rng: x.astype(np.float64) * 2)
    x, _ = next(iter(loader))
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x.data, ds.images[:3].astype(np.float32) * 2)


def test_loader_early_break_stops_the_thread():
    ds = indexed_dataset(200)
    before = len(_loader_threads())

    def slow(x, rng):
        time.sleep(0.002)
        return x

    loader = DataLoader(ds, batch_size=2, transform=slow)
    for i, _ in enumerate(loader):
        if i == 3:
            break
    assert len(_loader_threads()) == before
    it = iter(loader)
    next(it)
    assert len(_loader_threads()) == before + 1
    it.close()
    assert len(_loader_threads()) == before


def test_loader_worker_exception_propagates():
    ds = indexed_dataset(20)
    calls = []

    def bad(x, rng):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in transform")
        return x

    got = []
    with pytest.raises(RuntimeError, match="boom in transform"):
        for x, _ in DataLoader(ds, batch_size=4, transform=bad):
            got.append(x)
    assert len(got) == 2
    assert not _loader_threads()


def test_loader_plain_user_dataset():
    class Pairs:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((1, 2, 2), i, np.uint8), i

    batches = list(DataLoader(Pairs(), batch_size=2))
    assert batches[2][0].shape == (1, 1, 2, 2)
    assert batches[1][1].data.tolist() == [2, 3]


def test_loader_argument_errors():
    ds = indexed_dataset(4)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="device"):
        DataLoader(ds, device="tpu")
    with pytest.raises(ValueError, match="seed"):
        DataLoader(ds, seed=-1)
    with pytest.raises(ValueError, match="epoch"):
        DataLoader(ds).set_epoch(-2)


@pytest.mark.gpu
def test_loader_gpu_device():
    if not minicnn.is_gpu_available():
        pytest.skip("CuPy with a CUDA GPU is not available")
    ds = indexed_dataset(10)
    tf = Compose([RandomCrop(4, padding=1), ToFloat(), Normalize((0.5,) * 3, (0.5,) * 3)])
    gpu = list(DataLoader(ds, 4, transform=tf, device="gpu"))
    cpu = list(DataLoader(ds, 4, transform=tf, device="cpu"))
    for (xg, yg), (xc, yc) in zip(gpu, cpu):
        assert xg.device == "gpu" and yg.device == "gpu"
        np.testing.assert_allclose(xg.numpy(), xc.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(yg.numpy(), yc.numpy())


# ==========================================================================
# The real CIFAR-10 JPEG tree (slow; skipped when absent)
# ==========================================================================
def _real(split):
    path = os.path.join(REAL_ROOT, split)
    if not os.path.isdir(path):
        pytest.skip(f"the CIFAR-10 JPEG tree is not at {path}")
    return path


@pytest.mark.slow
def test_real_cifar10_jpeg_test_split(tmp_path):
    path = _real("test")
    first = ImageFolder(path, cache_dir=tmp_path, progress=False)
    assert first.classes == CIFAR_NAMES
    assert first.images.shape == (10000, 3, 32, 32)
    assert np.bincount(first.labels).tolist() == [1000] * 10
    t0 = time.perf_counter()
    second = ImageFolder(path, cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - t0 < 1.0
    assert second.from_cache
    np.testing.assert_array_equal(second.images, first.images)
    mean, std = channel_stats(first)
    assert all(0.4 < m < 0.55 for m in mean) and all(0.2 < s < 0.3 for s in std)


@pytest.mark.slow
def test_real_cifar10_jpeg_train_split_loader(tmp_path):
    path = _real("train")
    train = ImageFolder(path, cache_dir=tmp_path, progress=False)
    assert train.images.shape == (50000, 3, 32, 32)
    assert np.bincount(train.labels).tolist() == [5000] * 10
    t0 = time.perf_counter()
    assert ImageFolder(path, cache_dir=tmp_path, progress=False).from_cache
    assert time.perf_counter() - t0 < 2.0
    fit, val = train_val_split(train, 5000, seed=0)
    mean, std = channel_stats(fit)
    tf = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToFloat(), Normalize(mean, std)])
    loader = DataLoader(fit, batch_size=128, shuffle=True, transform=tf, drop_last=True)
    assert len(loader) == 45000 // 128
    seen = 0
    for x, y in loader:
        assert x.shape == (128, 3, 32, 32)
        seen += len(y)
    assert seen == len(loader) * 128


def test_loader_resumes_mid_epoch_with_identical_batches():
    """set_epoch(e, start_batch=k) yields exactly batches k.. of epoch e, augmentation included."""
    ds = ArrayDataset(np.random.default_rng(0).integers(0, 255, (50, 3, 8, 8)).astype(np.uint8),
                      np.arange(50) % 10)
    aug = Compose([RandomCrop(8, padding=2), RandomHorizontalFlip()])
    loader = DataLoader(ds, batch_size=8, shuffle=True, transform=aug, seed=3)
    loader.set_epoch(2)
    full = [(x.numpy(), y.numpy()) for x, y in loader]
    loader.set_epoch(2, start_batch=4)
    tail = [(x.numpy(), y.numpy()) for x, y in loader]
    assert len(tail) == len(full) - 4
    for (xa, ya), (xb, yb) in zip(full[4:], tail):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert loader.epoch == 3        # iterating advanced to the next epoch, from its start
    with pytest.raises(ValueError, match="start_batch must be a non-negative int"):
        loader.set_epoch(0, start_batch=-1)


def test_importing_minicnn_data_does_not_load_pillow():
    """Array-only use (ArrayDataset, DataLoader, transforms) needs no Pillow: it is loaded where images are decoded."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, minicnn, minicnn.data; print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
