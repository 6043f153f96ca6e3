"""``save`` / ``load``: checkpoints as one ``.npz`` file, never pickle.

A checkpoint is a nested structure of dicts (string keys), lists, tuples,
arrays and plain values, e.g.::

    minicnn.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                  "epoch": 12, "rng": np.random.default_rng(0).bit_generator.state},
                 "run/last.npz")
    ckpt = minicnn.load("run/last.npz")
    model.load_state_dict(ckpt["model"])

File layout (readable with plain ``numpy.load``):

- every array is one ``.npz`` entry named by its path in the structure,
  joined with ``/`` (``model/layer1.0.conv1.weight``, ``optimizer/state/0/exp_avg``);
  CuPy arrays are copied to the CPU first;
- ``__minicnn_structure__`` is a JSON text (stored as a NumPy unicode
  array, not an object array) describing the nesting and holding the plain
  values: ``{"t": "dict", "items": [[key, node], ...]}``, ``{"t": "list" |
  "tuple", "items": [...]}``, ``{"t": "array" | "scalar", "entry": name}``,
  ``{"t": "int" | "float" | "bool" | "str" | "none", "v": value}``. JSON
  integers have no size limit, so the big integers of a NumPy RNG state
  (``bit_generator.state``) round-trip exactly; floats round-trip exactly
  too (including inf and nan);
- ``__minicnn_format__`` is the format version (an int array).

Loading uses ``numpy.load(allow_pickle=False)``: an entry that would need
pickle (an object array) is refused. Writing is atomic: the file is written
under a temporary name in the same folder and renamed over ``path`` only
when complete, so a crash or error mid-write leaves an existing file intact.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from .autograd import Tensor
from .backend import to_device

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"          # how an .npz (a zip file) begins
_NPY_MAGIC = b"\x93NUMPY"            # how a single .npy array begins
_STRUCTURE = "__minicnn_structure__"
_VERSION = "__minicnn_format__"


def _is_array(x):
    return isinstance(x, np.ndarray) or type(x).__module__.startswith("cupy")


def _where(path):
    return "/".join(path) if path else "<top level>"


class _Encoder:
    """Walk the structure once: arrays go to ``self.arrays``, the rest to a JSON tree."""

    def __init__(self):
        self.arrays = {}

    def entry_name(self, path):
        name = "/".join(path) or "value"
        base, k = name, 1
        while name in self.arrays or name in (_STRUCTURE, _VERSION):
            name, k = f"{base}~{k}", k + 1   # keep entry names unique (e.g. keys that contain '/')
        return name

    def encode(self, obj, path):
        # bool before int: bool is a subclass of int.
        if obj is None:
            return {"t": "none"}
        if isinstance(obj, bool):
            return {"t": "bool", "v": obj}
        if isinstance(obj, int):
            return {"t": "int", "v": int(obj)}
        if isinstance(obj, float):
            return {"t": "float", "v": float(obj)}
        if isinstance(obj, str):
            return {"t": "str", "v": obj}
        if isinstance(obj, Tensor):
            obj = obj.data
        if isinstance(obj, np.generic):
            return {"t": "scalar", "entry": self.add_array(np.asarray(obj), path)}
        if _is_array(obj):
            return {"t": "array", "entry": self.add_array(obj, path)}
        if isinstance(obj, dict):
            items = []
            for key, value in obj.items():
                if not isinstance(key, str):
                    raise TypeError(f"save: dict keys must be strings, got {type(key).__name__} key {key!r} "
                                    f"at '{_where(path)}'")
                items.append([key, self.encode(value, path + [key])])
            return {"t": "dict", "items": items}
        if isinstance(obj, (list, tuple)):
            kind = "tuple" if isinstance(obj, tuple) else "list"
            return {"t": kind, "items": [self.encode(v, path + [str(i)]) for i, v in enumerate(obj)]}
        raise TypeError(f"save: cannot save a value of type {type(obj).__name__} at '{_where(path)}'; "
                        f"supported: dicts with str keys, lists, tuples, NumPy/CuPy arrays, Tensors, "
                        f"int, float, bool, str, None")

    def add_array(self, arr, path):
        arr = to_device(arr, "cpu")
        if arr.dtype.hasobject:
            raise TypeError(f"save: the array at '{_where(path)}' has dtype object, which would need "
                            f"pickle; convert it to a numeric or string dtype")
        name = self.entry_name(path)
        self.arrays[name] = arr
        return name


def _write_npz(f, arrays):
    """The ``.npz`` format: a zip with one ``<name>.npy`` file per array (what ``np.savez`` writes)."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(arr), allow_pickle=False)


def save(state, path):
    """Write ``state`` (a nested structure, see the module docstring) to ``path`` as one ``.npz``.

    The write is atomic: a temporary file in the same folder is renamed over
    ``path`` only once complete. ``path`` is used as given (no extension is added).
    """
    path = os.fspath(path)
    encoder = _Encoder()
    tree = encoder.encode(state, [])
    arrays = dict(encoder.arrays)
    arrays[_STRUCTURE] = np.array(json.dumps(tree))
    arrays[_VERSION] = np.array(FORMAT_VERSION, dtype=np.int64)

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"save: the folder {folder!r} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; a checkpoint gets the usual file mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _decode(node, entries, path):
    kind = node.get("t") if isinstance(node, dict) else None
    if kind == "none":
        return None
    if kind in ("bool", "int", "float", "str"):
        return node["v"]
    if kind in ("array", "scalar"):
        arr = entries(node["entry"], path)
        return arr[()] if kind == "scalar" else arr
    if kind == "dict":
        return {key: _decode(value, entries, path + [key]) for key, value in node["items"]}
    if kind in ("list", "tuple"):
        items = [_decode(v, entries, path + [str(i)]) for i, v in enumerate(node["items"])]
        return tuple(items) if kind == "tuple" else items
    raise ValueError(f"load: corrupt checkpoint structure at '{_where(path)}' (node {str(node)[:80]})")


def load(path):
    """Read a file written by ``save`` and rebuild the same nested structure (arrays as NumPy).

    Raises FileNotFoundError for a missing file and ValueError for a file
    that is not a minicnn checkpoint, is of a newer format, or holds an
    entry that would need pickle.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such checkpoint file: {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"load: {path!r} is a directory, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if head.startswith(_NPY_MAGIC):
        raise ValueError(f"load: {path!r} is not a minicnn checkpoint (a single .npy array, not an .npz)")
    if not head.startswith(_ZIP_MAGIC):
        # Checked here, so that NumPy never gets to suggest loading the file with pickle.
        raise ValueError(f"load: {path!r} is not a minicnn checkpoint (not an .npz file: it starts with "
                         f"{head[:4]!r})")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"load: {path!r} is not a minicnn checkpoint (a damaged .npz file: "
                         f"{type(e).__name__})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"load: {path!r} is not a minicnn checkpoint (not an .npz file)")
    with npz:
        if _STRUCTURE not in npz.files or _VERSION not in npz.files:
            raise ValueError(f"load: {path!r} is not a minicnn checkpoint (no {_STRUCTURE} entry); "
                             f"it holds {', '.join(npz.files[:5]) or 'nothing'}")
        try:
            version = int(npz[_VERSION])
            tree = json.loads(str(npz[_STRUCTURE][()]))
        except (ValueError, TypeError, zipfile.BadZipFile) as e:
            raise ValueError(f"load: {path!r} has a corrupt minicnn header: {e}") from e
        if version > FORMAT_VERSION:
            raise ValueError(f"load: {path!r} has checkpoint format {version}, newer than this minicnn "
                             f"understands ({FORMAT_VERSION}); upgrade minicnn")

        def entries(name, where):
            if name not in npz.files:
                raise ValueError(f"load: corrupt checkpoint {path!r}: entry {name!r} for "
                                 f"'{_where(where)}' is missing")
            try:
                return npz[name]
            except ValueError:  # numpy refuses object arrays without pickle
                raise ValueError(f"load: refusing entry {name!r} of {path!r}: it holds Python objects, "
                                 f"which would need pickle, and minicnn never unpickles a file") from None
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise ValueError(f"load: corrupt checkpoint {path!r}: cannot read entry {name!r}: {e}") from e

        return _decode(tree, entries, [])
