"""CIFAR-10 in its official "python version" format, read without trusting pickle.

The official archive ``cifar-10-python.tar.gz`` (Krizhevsky, 2009) holds a
folder ``cifar-10-batches-py/`` with

    data_batch_1 .. data_batch_5   training batches, 10,000 images each
    test_batch                     the 10,000 test images
    batches.meta                   the class names (b'label_names')

Each batch is a pickled dict: ``b'data'`` a (10000, 3072) uint8 array whose
rows are the 1024 red, then 1024 green, then 1024 blue pixels of a 32x32
image (so ``reshape(-1, 3, 32, 32)`` gives NCHW directly), and ``b'labels'``
a list of ints.

Pickle can run any Python function while loading, so a plain
``pickle.load`` of a downloaded file is a code-execution hole. The
``_SafeUnpickler`` here refuses every global except the three that
rebuilding a NumPy array needs, and ``_codecs.encode`` restricted to the one
call by which Python 3 writes bytes into a protocol-2 pickle (``str`` to
latin-1 bytes); anything else (``os.system``, ...) raises a
``DatasetError`` naming the refused global.
"""
import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
import zlib

import numpy as np

from .dataset import ArrayDataset, DatasetError

__all__ = ["CIFAR10", "CIFAR10_URL", "CIFAR10_MD5", "download_url", "safe_unpickle"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
META_FILE = "batches.meta"

# The official URL is opened through this name so tests can serve local bytes.
urlopen = urllib.request.urlopen


# --------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------
def _numpy_reconstruct():
    # NumPy 2 moved numpy.core to numpy._core; the files may name either.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _latin1_encode(text, encoding):
    """What ``_codecs.encode`` may do here: turn a str back into the bytes it spells, in latin-1, nothing else.

    Python 3 writes ``bytes`` into a protocol-2 pickle as the call
    ``_codecs.encode(<str>, 'latin1')`` (pickle's ``save_bytes``), so a
    CIFAR-10 batch re-saved by Python 3 carries its arrays' bytes that way.
    """
    if type(text) is not str or encoding != "latin1":
        raise DatasetError(f"refusing the call _codecs.encode({type(text).__name__}, {encoding!r}): only "
                           f"_codecs.encode(str, 'latin1'), which rebuilds bytes, is allowed")
    return text.encode("latin1")


# (module, name) -> the object it may resolve to. Nothing else is importable.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,     # bytes in a protocol-2 pickle written by Python 3
}


class _SafeUnpickler(pickle.Unpickler):
    """An Unpickler that can build dicts, lists, bytes, numbers and NumPy arrays, nothing more."""

    def find_class(self, module, name):
        make = _ALLOWED_GLOBALS.get((module, name))
        if make is None:
            raise DatasetError(
                f"refusing to unpickle the global '{module}.{name}': a CIFAR-10 batch only "
                f"contains dicts, lists, bytes, ints and NumPy arrays, so this file is not a "
                f"genuine CIFAR-10 batch (it may be malicious); delete it and get the official "
                f"archive from {CIFAR10_URL}")
        return make()


def safe_unpickle(data, what="file"):
    """Unpickle ``data`` (bytes) with the restricted unpickler (``encoding='bytes'``)."""
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DatasetError as e:
        raise DatasetError(f"{what}: {e}") from None
    except Exception as e:  # truncated or garbled pickle
        raise DatasetError(
            f"{what} is corrupt ({type(e).__name__}: {e}); delete it and download the "
            f"archive again (CIFAR10(root, download=True)) or from {CIFAR10_URL}") from None


# --------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------
def _md5_of_file(path, chunk=1 << 20):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_url(url, dest, md5, progress=True):
    """Download ``url`` to ``dest``, checking the MD5 before the file appears.

    The bytes go to a temporary file beside ``dest`` (hashed as they
    arrive), which is renamed to ``dest`` only when the MD5 matches; on a
    mismatch or any error the temporary file is deleted and nothing is left
    behind. Shows a tqdm progress bar.
    """
    from tqdm.auto import tqdm

    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{dest}.part-{os.getpid()}"
    h = hashlib.md5()
    try:
        try:
            with urlopen(url) as response, open(tmp, "wb") as f:
                headers = getattr(response, "headers", None)
                total = headers.get("Content-Length") if headers is not None else None
                with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                          desc=os.path.basename(dest), disable=not progress) as bar:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        f.write(block)
                        h.update(block)
                        bar.update(len(block))
        except OSError as e:  # URLError, HTTPError, timeouts, a full disk are all OSErrors
            raise DatasetError(
                f"could not download {url} to {dest} ({type(e).__name__}: {e}); check your "
                f"internet connection and free disk space, or download the file yourself "
                f"and put it at {dest}") from None
        if h.hexdigest() != md5:
            raise DatasetError(
                f"the download of {url} is corrupt: MD5 {h.hexdigest()}, expected {md5}; "
                f"nothing was kept, try again")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


# --------------------------------------------------------------------------
# Reading the batches
# --------------------------------------------------------------------------
def _find_source(root):
    """Where the batches are: ('folder', path) or ('archive', path), or None."""
    for folder in (os.path.join(root, FOLDER_NAME), root):
        if os.path.isfile(os.path.join(folder, META_FILE)) or \
                os.path.isfile(os.path.join(folder, "data_batch_1")):
            return "folder", folder
    archive = os.path.join(root, ARCHIVE_NAME)
    if os.path.isfile(archive):
        return "archive", archive
    return None


def _read_from_folder(folder, names):
    blobs = {}
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DatasetError(
                f"CIFAR10: {path} is missing; the folder {folder} must hold "
                f"{', '.join(TRAIN_FILES + TEST_FILES + [META_FILE])} as in the official "
                f"archive. Extract {ARCHIVE_NAME} there again, or pass download=True")
        with open(path, "rb") as f:
            blobs[name] = f.read()
    return blobs


def _read_from_archive(archive, names):
    """Read the members ``<anything>/name`` from the tar.gz without extracting it."""
    blobs = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if member.isfile() and base in names and base not in blobs:
                    blobs[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(
            f"CIFAR10: the archive {archive} is corrupt or truncated ({type(e).__name__}: {e}); "
            f"delete it and pass download=True, or download it again from {CIFAR10_URL}") from None
    missing = [n for n in names if n not in blobs]
    if missing:
        raise DatasetError(
            f"CIFAR10: the archive {archive} has no {', '.join(missing)}; it is not the official "
            f"CIFAR-10 python archive. Get {ARCHIVE_NAME} from {CIFAR10_URL} (or pass download=True)")
    return blobs


def _parse_batch(obj, what):
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        keys = sorted(obj.keys()) if isinstance(obj, dict) else type(obj).__name__
        raise DatasetError(f"CIFAR10: {what} is not a CIFAR-10 batch: expected a dict with "
                           f"b'data' and b'labels', got {keys}")
    data, labels = obj[b"data"], obj[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"CIFAR10: {what}: b'data' must be a uint8 array of shape (N, 3072), "
                           f"got {desc}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DatasetError(f"CIFAR10: {what}: b'labels' must be a list of ints") from None
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DatasetError(f"CIFAR10: {what}: b'labels' must be {data.shape[0]} ints in 0..9, "
                           f"got shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _parse_meta(obj, what):
    names = obj.get(b"label_names") if isinstance(obj, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise DatasetError(f"CIFAR10: {what} must be a dict whose b'label_names' lists 10 names")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


class CIFAR10(ArrayDataset):
    """CIFAR-10 from the official python archive: 50,000 training or 10,000 test images.

    Args:
        root: a folder holding ``cifar-10-batches-py/`` (the extracted
            archive) or ``cifar-10-python.tar.gz`` itself (read directly,
            nothing is extracted). ``root`` may also be the
            ``cifar-10-batches-py`` folder.
        train: the five training batches (True) or the test batch (False).
        download: fetch the official archive into ``root`` when no data is
            there yet (or when the archive there fails its MD5 check).

    ``images`` is (N, 3, 32, 32) uint8 (NCHW), ``labels`` (N,) int64,
    ``classes`` the ten names from ``batches.meta``.
    """

    url = CIFAR10_URL
    filename = ARCHIVE_NAME

    def __init__(self, root, train=True, download=False):
        self.root = os.path.expanduser(str(root))
        self.train = bool(train)
        source = _find_source(self.root)
        if download and (source is None or (source[0] == "archive"
                                            and _md5_of_file(source[1]) != CIFAR10_MD5)):
            download_url(CIFAR10_URL, os.path.join(self.root, ARCHIVE_NAME), CIFAR10_MD5)
            source = _find_source(self.root)
        if source is None:
            raise DatasetError(
                f"CIFAR10: no CIFAR-10 data in {self.root}: expected the folder "
                f"{os.path.join(self.root, FOLDER_NAME)} or the archive "
                f"{os.path.join(self.root, ARCHIVE_NAME)}. Pass download=True to fetch it, or "
                f"download {CIFAR10_URL} yourself and put it there")
        kind, path = source
        names = (TRAIN_FILES if self.train else TEST_FILES) + [META_FILE]
        blobs = _read_from_folder(path, names) if kind == "folder" else _read_from_archive(path, names)

        images, labels = [], []
        for name in names[:-1]:
            x, y = _parse_batch(safe_unpickle(blobs[name], f"{path}:{name}"), f"{path}:{name}")
            images.append(x)
            labels.append(y)
        classes = _parse_meta(safe_unpickle(blobs[META_FILE], f"{path}:{META_FILE}"),
                              f"{path}:{META_FILE}")
        super().__init__(np.concatenate(images), np.concatenate(labels), classes)
        self.source = path

    def __repr__(self):
        split = "train" if self.train else "test"
        return f"CIFAR10(split={split!r}, n={len(self)}, source={self.source!r})"
