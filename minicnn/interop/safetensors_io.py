"""Weights in and out as safetensors: the safe, pickle-free format PyTorch users share weights in.

    minicnn.save_safetensors(model, "simple_cnn.safetensors")       # every parameter and buffer
    minicnn.load_safetensors(model, "simple_cnn.safetensors")       # back, into a model of the same architecture

A safetensors file is a JSON header (names, dtypes, shapes, offsets, and a
string-to-string ``__metadata__``) followed by the raw bytes of each tensor:
reading it runs no code. The names are the ``state_dict`` names
(``blocks.0.conv1.weight``, ``bn1.running_mean``, ``13.weight``), which are
PyTorch's names for the same layers, so a PyTorch module written with the
same layers in the same order reads and writes the same files. The one
difference: PyTorch's batchnorm keeps a counter ``num_batches_tracked``
that minicnn has no use for; it is skipped on the way in
(``torch_to_minicnn_names``), and PyTorch's ``load_state_dict`` fills it in
when it is absent on the way out. Other names can be mapped with
``rename``.

The metadata holds ``format`` (``minicnn``), and, when known, ``model`` (the
zoo name), ``classes`` (a JSON list) and the normalisation statistics
``norm_mean`` / ``norm_std`` (JSON lists).

Loading checks everything first (every name, every shape) and copies only
then: a file of another model, with missing or extra tensors, or a corrupt
or truncated file, raises ``WeightsError`` and leaves the model unchanged.
A ``.pt``/``.pth`` file is a pickle: it is never opened (``PICKLE_MESSAGE``).
"""
import json
import os
import tempfile

import numpy as np

from ..backend import to_device
from ..checkpoint import load_checkpoint
from ..errors import CheckpointError
from ..models import MODELS
from .optional import require

__all__ = ["save_safetensors", "load_safetensors", "read_safetensors", "torch_to_minicnn_names",
           "checkpoint_from_safetensors", "read_weights_file", "WeightsError", "PICKLE_MESSAGE"]

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
PICKLE_MESSAGE = (
    "{path} is a PyTorch pickle file, and minicnn never unpickles a file (unpickling runs whatever code the "
    "file asks for). Save its weights as safetensors in PyTorch instead:\n"
    "    from safetensors.torch import save_file\n"
    "    save_file(model.state_dict(), \"model.safetensors\")\n"
    "(for a .pt file of a state_dict: save_file(torch.load(\"{name}\", weights_only=True), \"model.safetensors\"))")
TORCH_ONLY = ("num_batches_tracked",)     # PyTorch batchnorm's step counter: not a weight, minicnn has none


class WeightsError(CheckpointError):
    """A weights file that cannot be read, or does not fit the model (the model is left unchanged)."""


def save_safetensors(model, path, metadata=None):
    """Write every parameter and buffer of ``model`` (its ``state_dict``) to ``path``; returns ``path``.

    ``metadata``: extra entries (``{"model": "resnet20"}``); values that are
    not strings are stored as JSON. ``classes`` is added from
    ``model.classes`` when the model has them. The write is atomic.
    """
    st = require("safetensors.numpy", "save_safetensors")
    tensors = {k: np.ascontiguousarray(to_device(v, "cpu")) for k, v in model.state_dict().items()}
    meta = {"format": "minicnn"}
    if getattr(model, "classes", None) is not None:
        meta["classes"] = list(model.classes)
    meta.update(metadata or {})
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        st.save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def looks_pickled(path):
    """A PyTorch file, by its name or its first bytes: a zip archive, or a raw pickle's protocol opcode.

    A safetensors file begins with its header's length (8 bytes) and then
    ``{``; one that does is never taken for a pickle, whatever its first byte.
    """
    if path.lower().endswith(PICKLE_SUFFIXES):
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    header = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    if head[8:9] == b"{" and 0 < header <= os.path.getsize(path) - 8:
        return False
    return head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def read_safetensors(path):
    """``(tensors, metadata)`` of a safetensors file: NumPy arrays by name, and the metadata dict.

    Metadata values that hold JSON (``classes``, ``norm_mean``) are decoded.
    Raises ``WeightsError`` for a missing, pickled, corrupt or truncated file.
    """
    st = require("safetensors.numpy", "reading a safetensors file")
    safetensors = require("safetensors", "reading a safetensors file")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"{path} does not exist" if not os.path.exists(path) else f"{path} is not a file")
    if looks_pickled(path):
        raise WeightsError(PICKLE_MESSAGE.format(path=path, name=os.path.basename(path)))
    try:
        tensors = st.load_file(path)
        with safetensors.safe_open(path, framework="np") as f:
            raw = f.metadata() or {}
    except Exception as e:     # safetensors' own error names the broken part (header, offsets, dtype)
        if "bfloat16" in str(e):
            raise WeightsError(f"{path} holds bfloat16 tensors, which NumPy has no type for; convert them in "
                               f"PyTorch: save_file({{k: v.float() for k, v in model.state_dict().items()}}, "
                               f"\"model.safetensors\")") from None
        raise WeightsError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from None
    # With ml_dtypes imported (onnx imports it) NumPy reads bfloat16; minicnn computes in float32.
    tensors = {k: v.astype(np.float32) if v.dtype.name == "bfloat16" else v for k, v in tensors.items()}
    metadata = {}
    for k, v in raw.items():
        try:
            metadata[k] = json.loads(v) if k in ("classes", "norm_mean", "norm_std") else v
        except ValueError:
            metadata[k] = v
    return tensors, metadata


def torch_to_minicnn_names(tensors, rename=None):
    """PyTorch's ``state_dict`` names to minicnn's: drop ``*.num_batches_tracked``, then apply ``rename``.

    ``rename``: None, a callable ``name -> name``, or a dict of name prefixes
    (``{"features.": "", "classifier.": "fc."}``: the longest matching prefix is replaced).
    """
    out = {}
    for name, value in tensors.items():
        if name.rsplit(".", 1)[-1] in TORCH_ONLY:
            continue
        if callable(rename):
            name = rename(name)
        elif rename:
            hit = max((p for p in rename if name.startswith(p)), key=len, default=None)
            if hit is not None:
                name = rename[hit] + name[len(hit):]
        out[name] = value
    return out


def _some(names, n=6):
    names = list(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def describe_misfit(model, tensors):
    """What keeps ``tensors`` from loading into ``model`` (missing, unexpected, shapes), or None."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = sorted(k for k in tensors if k not in expected)
    shapes = [f"'{k}' is {tuple(tensors[k].shape)} in the file but {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) of the model are not in the file: {_some(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) of the file are not in the model: {_some(unexpected)}")
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes[:4]) + (" ..." if len(shapes) > 4 else ""))
    if missing and unexpected and all(k.startswith("net.") for k in unexpected):
        problems.append("the file's names start with 'net.': it was saved from load_model's model "
                        "(normalisation + network); load it into that kind of model, or save model.net")
    return "; ".join(problems) or None


def load_safetensors(model, path, *, strict=True, rename=None):
    """Copy the tensors of the safetensors file ``path`` into ``model``'s parameters and buffers.

    Names are matched as ``state_dict`` names, after ``torch_to_minicnn_names``
    (PyTorch's ``num_batches_tracked`` skipped; ``rename`` applied). With
    ``strict`` (the default) the names and shapes must match exactly;
    ``strict=False`` loads the matching names and ignores the rest (shapes
    must still match). Values are cast to the model's dtypes. Everything is
    checked before anything is copied: on any error (``WeightsError``) the
    model is unchanged. Returns the file's metadata.
    """
    tensors, metadata = read_safetensors(path)
    tensors = torch_to_minicnn_names(tensors, rename)
    misfit = describe_misfit(model, tensors)
    if not strict:
        expected = model.state_dict()
        tensors = {k: v for k, v in tensors.items() if k in expected}
        misfit = describe_misfit(model, {**expected, **tensors})       # only the shapes can be wrong now
    if misfit:
        whose = f" (weights of {metadata['model']}, says its metadata)" if "model" in metadata else ""
        raise WeightsError(f"{os.fspath(path)}{whose} does not fit this {type(model).__name__}: {misfit}")
    model.load_state_dict(tensors, strict=strict)
    return metadata


def checkpoint_from_safetensors(path, model_name=None):
    """A safetensors file as the dict ``minicnn train --init-from`` reads from a checkpoint.

    Keys: ``model_name`` (the file's metadata, else ``model_name``),
    ``classes``, ``num_classes`` (the metadata's, else read off the head's
    shape), ``model`` (the network's state), and ``norm_mean`` / ``norm_std``
    when the file has them (metadata, or the ``normalize.*`` buffers of a
    file saved from ``load_model``'s model, whose ``net.`` prefix is removed).
    """
    tensors, metadata = read_safetensors(path)
    tensors = torch_to_minicnn_names(tensors)
    name = metadata.get("model") or model_name
    if name is None:
        raise WeightsError(f"{path} does not say which model it holds (no 'model' in its metadata): "
                           f"pass --model")
    if name not in MODELS:
        raise WeightsError(f"{path} holds model {name!r}, which is not in the zoo ({', '.join(MODELS)})")
    ckpt = {"model_name": name, "classes": [str(c) for c in metadata.get("classes", [])]}
    if "normalize.mean" in tensors and any(k.startswith("net.") for k in tensors):
        ckpt["norm_mean"], ckpt["norm_std"] = tensors.pop("normalize.mean"), tensors.pop("normalize.std")
        tensors = {k[len("net."):]: v for k, v in tensors.items()}
    if "norm_mean" in metadata and "norm_std" in metadata:
        ckpt["norm_mean"], ckpt["norm_std"] = np.asarray(metadata["norm_mean"]), np.asarray(metadata["norm_std"])
    from ..train.finetune import head_keys     # (the training package is imported only for --init-from)

    head = head_keys(name, 10)[0]
    ckpt["num_classes"] = len(ckpt["classes"]) or (int(tensors[head].shape[0]) if head in tensors else 10)
    ckpt["model"] = tensors
    return ckpt


def read_weights_file(path, model_name=None):
    """What ``--init-from PATH`` loads: a minicnn ``.npz`` checkpoint, or a ``.safetensors`` file; never a pickle."""
    path = os.fspath(path)
    if path.lower().endswith(".safetensors"):
        return checkpoint_from_safetensors(path, model_name)
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise WeightsError(PICKLE_MESSAGE.format(path=path, name=os.path.basename(path)))
    return load_checkpoint(path)
