"""``ImageFolder``: a ``root/<class>/<image>`` tree, decoded once, then cached.

    root/airplane/0000.jpg          class index = position of the folder name
    root/airplane/0001.jpg          in the sorted list of folder names
    root/automobile/0000.jpg        (airplane=0, automobile=1, ...)
    ...

The first load decodes every image with Pillow (``convert('RGB')``, in a
pool of worker processes when there are many files) and saves the result
as two uint8 ``.npy`` files (``allow_pickle=False``) in a cache folder. Later
loads only list the tree, check that nothing changed, and read the ``.npy``
files: 50,000 CIFAR-10 JPEGs come back in a fraction of a second.

The cache folder is ``$MINICNN_CACHE``, else ``$XDG_CACHE_HOME/minicnn``, else
``~/.cache/minicnn``. A cache entry is named after the tree's absolute path
and a fingerprint of its files (relative path, size and modification time
of every image), so adding, removing, moving or editing an image decodes
the tree again. Cache files are written atomically (temporary file, then
``os.replace``), so an interrupted first load never leaves a broken cache.
"""
import hashlib
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from .dataset import ArrayDataset, DatasetError

__all__ = ["ImageFolder", "IMAGE_EXTENSIONS", "default_cache_dir"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
CACHE_FORMAT = 1              # bump when the cache layout changes
_POOL_MIN_FILES = 2048        # below this, decoding in-process is faster than starting a pool
_CHUNK = 512                  # files per pool task


def default_cache_dir():
    """``$MINICNN_CACHE``, else ``$XDG_CACHE_HOME/minicnn``, else ``~/.cache/minicnn``."""
    if os.environ.get("MINICNN_CACHE"):
        return os.path.expanduser(os.environ["MINICNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minicnn")


# --------------------------------------------------------------------------
# Listing the tree
# --------------------------------------------------------------------------
def _is_image(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_images(root, rel):
    """``(relative path, stat)`` of every image under ``root/rel``, sorted, depth first."""
    entries = sorted(os.scandir(os.path.join(root, rel)), key=lambda e: e.name)
    subdirs = []
    for e in entries:
        if e.name.startswith("."):
            continue                  # .DS_Store, .ipynb_checkpoints, ...
        if e.is_dir():
            subdirs.append(e.name)
        elif _is_image(e.name):       # README.txt, labels.csv, ... are ignored
            yield f"{rel}/{e.name}", e.stat()
    for d in subdirs:
        yield from _list_images(root, f"{rel}/{d}")


def _scan(root):
    """``(classes, files, labels, fingerprint)`` of the tree, without opening any image.

    ``files`` are paths relative to ``root`` in a fixed order (class by class,
    sorted); the fingerprint hashes every file's relative path, size and
    modification time (one ``stat`` per file: about 0.15 s for 50,000 files).
    """
    if not os.path.isdir(root):
        raise DatasetError(f"ImageFolder: {root} is not a folder; expected a tree "
                           f"root/<class>/<image>, e.g. .../cifar10-jpeg/train")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = [e.name for e in os.scandir(root) if e.is_file() and _is_image(e.name)]
        hint = (f" It holds {len(loose)} images directly: move them into one sub-folder per class."
                if loose else "")
        raise DatasetError(f"ImageFolder: {root} has no class folders; expected the layout "
                           f"root/<class>/<image> (one sub-folder per class).{hint}")
    files, labels, lines = [], [], []
    for label, name in enumerate(classes):
        before = len(files)
        for rel, st in _list_images(root, name):
            files.append(rel)
            lines.append(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n")
        if len(files) == before:
            raise DatasetError(
                f"ImageFolder: the class folder {os.path.join(root, name)} contains no images "
                f"(looked for {', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
        labels.extend([label] * (len(files) - before))
    digest = hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
    return classes, files, np.asarray(labels, dtype=np.int64), digest


# --------------------------------------------------------------------------
# Decoding (runs in worker processes for large trees)
# --------------------------------------------------------------------------
def _decode_one(path):
    from PIL import Image     # here, not at import: array-only use of minicnn.data needs no Pillow

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
        raise DatasetError(f"ImageFolder: cannot decode {path} ({type(e).__name__}: {e}); "
                           f"delete or replace that file") from None


def _decode_chunk(paths):
    """Decode ``paths`` into one (k, H, W, 3) uint8 array; every image must be H x W."""
    first = _decode_one(paths[0])
    out = np.empty((len(paths),) + first.shape, dtype=np.uint8)
    out[0] = first
    for i, path in enumerate(paths[1:], start=1):
        img = _decode_one(path)
        if img.shape != first.shape:
            raise _size_error(path, img.shape, paths[0], first.shape)
        out[i] = img
    return out


def _size_error(path, shape, ref_path, ref_shape):
    return DatasetError(
        f"ImageFolder: all images must have the same size, but {path} is "
        f"{shape[1]}x{shape[0]} and {ref_path} is {ref_shape[1]}x{ref_shape[0]} (width x height); "
        f"resize the images to one size first")


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))   # the cores this process may run on (Linux)
    except AttributeError:
        return os.cpu_count() or 1


def _decode_all(root, files, num_workers, progress):
    """Decode every file into an (N, 3, H, W) uint8 array (NCHW)."""
    from tqdm.auto import tqdm

    paths = [os.path.join(root, f) for f in files]
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    if num_workers is None:
        num_workers = min(_usable_cpus(), 8) if len(paths) >= _POOL_MIN_FILES else 0
    images = None
    with tqdm(total=len(paths), unit="img", desc=f"decoding {os.path.basename(root) or root}",
              disable=not progress) as bar:
        pool = None
        if num_workers > 1:
            try:
                pool = ProcessPoolExecutor(num_workers)
            except (OSError, NotImplementedError):  # no working multiprocessing here: decode serially
                pool = None
        try:
            results = pool.map(_decode_chunk, chunks) if pool else map(_decode_chunk, chunks)
            start = 0
            for chunk_paths, hwc in zip(chunks, results):
                if images is None:
                    h, w = hwc.shape[1:3]
                    images = np.empty((len(paths), 3, h, w), dtype=np.uint8)
                elif hwc.shape[1:3] != images.shape[2:]:
                    raise _size_error(chunk_paths[0], hwc.shape[1:], paths[0],
                                      images.shape[2:] + (3,))
                images[start:start + len(hwc)] = hwc.transpose(0, 3, 1, 2)   # HWC -> CHW
                start += len(hwc)
                bar.update(len(hwc))
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
    return images


# --------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------
def _atomic_save_npy(path, array):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_save_json(path, obj):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class ImageFolder(ArrayDataset):
    """Images in a ``root/<class>/<image>`` tree, as one uint8 array, cached after the first load.

    Args:
        root: the tree's top folder (e.g. ``cifar10-jpeg/train``). Class index
            = position of the sub-folder name in sorted order. Files without an
            image extension are ignored; all images must have the same size.
        cache_dir: where the decoded arrays are kept (default
            ``default_cache_dir()``); ``False`` turns caching off.
        num_workers: decoding processes for the first load (None: one per
            CPU core, up to 8, for trees of 2,048+ images; 0: decode
            in this process).
        progress: show a tqdm bar while decoding.

    ``images`` is (N, 3, H, W) uint8 (NCHW), ``labels`` (N,) int64, ``classes``
    the folder names; ``files[i]`` is the path of image i relative to
    ``root``; ``from_cache`` says whether this load read the cache.
    """

    def __init__(self, root, cache_dir=None, num_workers=None, progress=True):
        self.root = os.path.abspath(os.path.expanduser(str(root)))
        classes, files, labels, fingerprint = _scan(self.root)
        self.files = files
        self.from_cache = False
        self.cache_path = None
        images = None

        if cache_dir is not False:
            cache_dir = default_cache_dir() if cache_dir is None else os.path.expanduser(str(cache_dir))
            root_key = hashlib.sha256(os.path.realpath(self.root).encode("utf-8", "surrogateescape"))
            prefix = f"imagefolder-{root_key.hexdigest()[:16]}"
            self.cache_path = os.path.join(cache_dir, f"{prefix}-{fingerprint[:16]}")
            images = self._load_cache(fingerprint, classes, labels)
            self.from_cache = images is not None

        if images is None:
            images = _decode_all(self.root, files, num_workers, progress)
            if self.cache_path is not None:
                self._save_cache(images, labels, classes, fingerprint, prefix)
        super().__init__(images, labels, classes)

    def _load_cache(self, fingerprint, classes, labels):
        meta_path = self.cache_path + ".json"
        if not os.path.isfile(meta_path):
            return None
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            if (meta.get("format") != CACHE_FORMAT or meta.get("fingerprint") != fingerprint
                    or meta.get("classes") != classes):
                return None
            images = np.load(self.cache_path + ".images.npy", allow_pickle=False)
            cached_labels = np.load(self.cache_path + ".labels.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            warnings.warn(f"ImageFolder: ignoring an unreadable cache at {self.cache_path} "
                          f"({e}); decoding {self.root} again")
            return None
        if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != len(labels)
                or not np.array_equal(cached_labels, labels)):
            return None
        return images

    def _save_cache(self, images, labels, classes, fingerprint, prefix):
        folder = os.path.dirname(self.cache_path)
        try:
            os.makedirs(folder, exist_ok=True)
            # Older entries for the same root describe a tree that no longer exists.
            for name in os.listdir(folder):
                if name.startswith(prefix) and not name.startswith(os.path.basename(self.cache_path)):
                    os.remove(os.path.join(folder, name))
            _atomic_save_npy(self.cache_path + ".images.npy", images)
            _atomic_save_npy(self.cache_path + ".labels.npy", labels)
            # The metadata goes last: a cache entry without it is never read.
            _atomic_save_json(self.cache_path + ".json", {
                "format": CACHE_FORMAT, "root": self.root, "fingerprint": fingerprint,
                "classes": classes, "n": int(len(labels)), "shape": list(images.shape[1:])})
        except OSError as e:
            warnings.warn(f"ImageFolder: could not write the cache in {folder} ({e}); the next "
                          f"load will decode the images again. Set MINICNN_CACHE to a writable "
                          f"folder or pass cache_dir=")
            self.cache_path = None

    def __repr__(self):
        return (f"ImageFolder(root={self.root!r}, n={len(self)}, image_shape={self.image_shape}, "
                f"classes={len(self.classes)}, from_cache={self.from_cache})")
