"""Reading training checkpoints back, and ``load_model``: a trained model ready for analysis.

A checkpoint written by ``minicnn train`` is a ``.npz`` file (``minicnn.save``,
``allow_pickle=False``) holding the model's ``state_dict``, the optimizer and
schedule state, the position in training, the class names and the per-channel
normalisation statistics of the training images.

``load_model(path)`` returns the trained network in eval mode with that
normalisation as its first layer::

    model = minicnn.load_model("runs/simple_cnn/best.npz")
    model                 # Sequential(normalize: Normalize(mean, std), net: <the trained network>)
    model.classes         # ['airplane', 'automobile', ...]
    logits = model(x)     # x: pixels in [0, 1], shape (N, 3, 32, 32)

so pixels in [0, 1] go in and logits come out: the convention of
``minicnn.explain``, ``minicnn.attacks`` and ``minicnn.synthesize``.

``write_checkpoint`` writes every kind of training checkpoint (the GAN's and
image-to-image's too, each with its own ``format``); ``read_checkpoint``
reads them all back. A classifier's (``minicnn train``) keys:

- ``format`` (``"minicnn-checkpoint"``), ``version``, ``model_name``,
  ``num_classes``, ``classes``;
- ``model`` (the network's ``state_dict``: parameters and batchnorm
  buffers), ``optimizer``, ``scheduler`` (their ``state_dict``);
- ``epoch`` (epochs fully done), ``step`` (batches done in the next epoch;
  0 at an epoch boundary), ``partial_epoch`` (JSON: the running loss and
  accuracy sums of that epoch), ``history`` (JSON: one row per epoch),
  ``best_acc``, ``config`` (JSON: the run's settings), ``ema`` (with ``--ema``: the averaged weights);
- ``norm_mean``, ``norm_std``: the training images' per-channel statistics.
"""
import json
import os
from collections import OrderedDict

import numpy as np

from .errors import CheckpointError
from .models import MODELS, get_model
from .serialization import load, save

CHECKPOINT_FORMAT = "minicnn-checkpoint"
CHECKPOINT_VERSION = 1

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "write_checkpoint", "read_checkpoint", "read_for_resume", "load_checkpoint",
           "model_from_checkpoint", "pixel_model", "load_model", "describe_mismatch"]


def write_checkpoint(path, fmt, *, config, epoch, step, history, partial_epoch, **entries):
    """Write a training checkpoint of format ``fmt`` atomically with ``minicnn.save`` (no pickle).

    The one writer of every training (classifier, GAN, image-to-image):
    ``format``, ``version``, the run's settings ``config`` (a dict, saved as
    JSON), the position (``epoch`` done, ``step`` into the next one), the
    ``history`` rows and the ``partial_epoch`` sums (JSON), then ``entries``:
    an object with a ``state_dict`` (model, optimizer, schedule) is saved as
    its ``state_dict``, anything else as it is.
    """
    save({"format": fmt, "version": CHECKPOINT_VERSION, "config": json.dumps(config), "epoch": int(epoch),
          "step": int(step), "history": json.dumps(list(history)), "partial_epoch": json.dumps(partial_epoch or {}),
          **{k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in entries.items()}}, path)


def read_checkpoint(path, fmt=CHECKPOINT_FORMAT, kind="a minicnn checkpoint"):
    """The dict that ``minicnn.save`` wrote to ``path``, checked to carry the ``fmt`` marker.

    Every kind of minicnn checkpoint (training, GAN, image-to-image) is read
    through here, so a directory, a missing file, a foreign or corrupt file
    and a checkpoint of another kind each get one clear message (never
    NumPy's advice to load a file with pickle).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a directory; pass the .npz file inside it "
                              f"(for example {os.path.join(path, 'best.npz')})")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = load(path)
    except Exception:  # a corrupt or foreign file: never suggest loading it with pickle
        raise CheckpointError(f"{path} is not a minicnn checkpoint (not a readable .npz file "
                              f"written by minicnn)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise CheckpointError(f"{path} is not {kind} (no '{fmt}' marker)")
    return ckpt


def read_for_resume(last_path, fmt, kind, cfg, run_defining, saved_defaults=None):
    """``--resume`` of a run folder: the checkpoint at ``last_path``, its ``history`` and ``partial_epoch``
    decoded; refused when it is missing, of another kind, or made with other values of the
    ``run_defining`` settings than ``cfg`` has (``saved_defaults``: what a checkpoint lacking one used)."""
    if not os.path.isfile(last_path):
        raise CheckpointError(f"--resume: no checkpoint at {last_path}; start without --resume")
    ckpt = read_checkpoint(last_path, fmt, kind)
    saved = {**(saved_defaults or {}), **json.loads(ckpt["config"])}
    diffs = [f"--{k.replace('_', '-')} {getattr(cfg, k)} (checkpoint: {saved.get(k)})"
             for k in run_defining if saved.get(k) != getattr(cfg, k)]
    if diffs:
        raise CheckpointError(
            f"--resume: these settings differ from the run saved in {last_path}: " + "; ".join(diffs) +
            ". Resume with the original settings, or start a new run with another --out.")
    return {**ckpt, "history": json.loads(ckpt["history"]), "partial_epoch": json.loads(ckpt["partial_epoch"])}


def load_checkpoint(path):
    """Load and sanity-check a training checkpoint (a ``.npz`` written by ``minicnn train``)."""
    ckpt = read_checkpoint(path)
    if ckpt.get("model_name") not in MODELS:
        raise CheckpointError(f"{os.fspath(path)} holds an unknown model {ckpt.get('model_name')!r}")
    return ckpt


def model_from_checkpoint(ckpt, path, model_name=None):
    """Build the checkpoint's model and load its weights (training mode, no normalisation layer)."""
    name = model_name or ckpt["model_name"]
    if name not in MODELS:
        raise CheckpointError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    model = get_model(name, num_classes=int(ckpt.get("num_classes", 10)))
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a minicnn checkpoint (no model weights in it)")
    mismatch = describe_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(
            f"{path} holds a {ckpt['model_name']} checkpoint, which does not fit model {name}: {mismatch}. "
            f"Load it into the architecture it was trained with ({ckpt['model_name']}; in the CLI, "
            f"leave out --model).")
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its weights cannot be loaded ({e})") from None
    return model


def describe_mismatch(expected, state):
    """The first difference between a model's ``state_dict`` (``expected``) and a saved ``state``, or None.

    Names the first mismatched key and both shapes, e.g. ``"'fc.weight' has
    shape (10, 84) in the checkpoint but (10, 256) in the model"``.
    """
    for key, value in expected.items():
        if key not in state:
            return f"the model's '{key}' {tuple(np.shape(value))} is not in the checkpoint"
        if tuple(np.shape(state[key])) != tuple(np.shape(value)):
            return (f"'{key}' has shape {tuple(np.shape(state[key]))} in the checkpoint but "
                    f"{tuple(np.shape(value))} in the model")
    for key, value in state.items():
        if key not in expected:
            return f"the checkpoint's '{key}' {tuple(np.shape(value))} is not in the model"
    return None


def pixel_model(ckpt, path, model_name=None):
    """``Sequential(normalize=nn.Normalize(mean, std), net=<the checkpoint's network>)``, in eval mode, on the CPU.

    ``ckpt`` is ``load_checkpoint(path)``; ``model_name`` loads the weights
    into another architecture of the zoo (default: the checkpoint's own).
    The model takes pixels in [0, 1]; ``model.classes`` lists the class names.
    """
    from . import nn   # nn is above this module's callers; imported here to keep checkpoint light

    net = model_from_checkpoint(ckpt, path, model_name)
    if "norm_mean" not in ckpt or "norm_std" not in ckpt:
        raise CheckpointError(f"{path} has no normalisation statistics (norm_mean, norm_std)")
    model = nn.Sequential(OrderedDict([("normalize", nn.Normalize(ckpt["norm_mean"], ckpt["norm_std"])),
                                       ("net", net)]))
    model.classes = [str(c) for c in ckpt.get("classes", [str(i) for i in range(int(ckpt.get("num_classes", 10)))])]
    model.eval()
    return model


def load_model(path, device="cpu"):
    """The trained model of checkpoint ``path``, ready for analysis.

    Returns ``Sequential(normalize=nn.Normalize(mean, std), net=model)`` in
    eval mode on ``device``: it takes images with values in [0, 1], shape
    (N, C, H, W), and returns logits. ``model.classes`` lists the class
    names; ``model.net`` is the trained network itself (its ``state_dict``
    is the checkpoint's). Layers are named as ``model.named_modules()``
    gives them (``net.0``, ``net.layer1.0.conv1``, ...).
    """
    model = pixel_model(load_checkpoint(path), path)
    model.to(device)
    model.eval()
    return model
