"""What a run folder of ``minicnn train`` holds, read back for a report, and the test images of a model.

A run folder (``minicnn train --out RUN_DIR``) has ``last.npz`` and
``best.npz`` (checkpoints: the weights, the class names, the run's settings
as JSON, the history of every epoch), ``metrics.csv`` (one row per epoch),
``curves.png``, and after the test ``test.json`` (accuracy, loss, the
confusion matrix) and ``confusion.png``. ``minicnn doctor --out RUN_DIR``
(or ``RUN_DIR/doctor``) adds ``report.json``.

``read_run(run_dir)`` gathers what is there into a ``Run``; missing pieces
are None (a run stopped before its test has no ``test.json``).
``load_test_set(data, config)`` finds the test images the model was trained
for: ``data`` when given, else the run's own ``--data``, else ``minicnn
train``'s default places.
"""
import csv
import json
import os
import shlex
from dataclasses import dataclass, field

__all__ = ["Run", "RunError", "read_run", "load_test_set", "train_command", "CHECKPOINT_NAMES"]

CHECKPOINT_NAMES = ("last.npz", "best.npz")     # the report's model: the first found (test.json tested last.npz)


class RunError(ValueError):
    """The folder is not a run folder of ``minicnn train`` (the message says what is missing)."""


@dataclass
class Run:
    """One run folder: ``path``, ``checkpoint`` (the file analysed), ``config`` (dict), ``history``
    (one dict per epoch), ``test`` (test.json as a dict, or None), ``doctor`` (report.json as a dict,
    or None), ``files`` (name -> path of the figures train wrote: curves.png, confusion.png)."""
    path: str
    checkpoint: str
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    test: dict = None
    doctor: dict = None
    files: dict = field(default_factory=dict)


def _json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _history(path, fallback):
    """metrics.csv as a list of dicts of numbers (empty cells None); ``fallback`` when it is absent."""
    if not os.path.isfile(path):
        return fallback
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in row.items()})
    for r in rows:
        if r.get("epoch") is not None:
            r["epoch"] = int(r["epoch"])
    return rows


def read_run(run_dir, checkpoint=None):
    """A ``Run`` for ``run_dir``; ``checkpoint`` picks the .npz analysed (default: last.npz, else best.npz)."""
    from ..checkpoint import load_checkpoint

    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise RunError(f"RUN_DIR {run_dir}: no such folder (give the --out folder of a minicnn train run)")
    if checkpoint is None:
        found = [os.path.join(run_dir, n) for n in CHECKPOINT_NAMES if os.path.isfile(os.path.join(run_dir, n))]
        if not found:
            raise RunError(f"RUN_DIR {run_dir}: no {' or '.join(CHECKPOINT_NAMES)} in it; is it the --out folder "
                           f"of a minicnn train run?")
        checkpoint = found[0]
    ckpt = load_checkpoint(checkpoint)
    config = json.loads(str(ckpt.get("config", "{}")) or "{}")
    history = _history(os.path.join(run_dir, "metrics.csv"), json.loads(str(ckpt.get("history", "[]")) or "[]"))
    doctor = next((d for d in (_json(os.path.join(run_dir, "report.json")),
                               _json(os.path.join(run_dir, "doctor", "report.json")))
                   if isinstance(d, dict) and "checks" in d), None)
    files = {n: os.path.join(run_dir, n) for n in ("curves.png", "confusion.png")
             if os.path.isfile(os.path.join(run_dir, n))}
    return Run(path=run_dir, checkpoint=checkpoint, config=config, history=history,
               test=_json(os.path.join(run_dir, "test.json")), doctor=doctor, files=files)


def load_test_set(data=None, config=None):
    """The test split (a dataset with ``images`` (N, C, H, W) uint8, ``labels``, ``classes``) and its place.

    ``data`` wins; else the run's ``config['data']`` when that folder exists; else the default places.
    Raises ``TrainingError`` (with how to get the data) when none is found.
    """
    from ..train import load_datasets

    if data is None and config and config.get("data") and os.path.isdir(str(config["data"])):
        data = config["data"]
    _, test, where = load_datasets(data, progress=False, splits=("test",))
    return test, where


# The options of ``minicnn train`` a run's settings map to, in its --help order; booleans have two spellings.
_FLAGS = ("recipe", "model", "data", "epochs", "batch_size", "optimizer", "lr", "bias_lr_scale", "momentum",
          "nesterov", "weight_decay", "schedule", "label_smoothing", "augment", "flip", "translate", "pad_mode",
          "ema", "tta", "whiten", "val_split", "subset", "device", "seed", "out", "max_minutes", "adversarial",
          "adv_eps", "adv_steps", "l1", "l2", "max_norm", "init_from", "freeze")
_BOOLEAN = {"nesterov": ("--nesterov", "--no-nesterov"), "augment": ("--augment", "--no-augment"),
            "whiten": ("--whiten", "--no-whiten")}


def train_command(config):
    """The ``minicnn train`` command that repeats a run, every setting spelled out, from its config dict."""
    words = ["minicnn", "train"]
    for key in _FLAGS:
        value = config.get(key)
        if value is None or value == [] or (key == "augment" and value):
            continue
        if key in _BOOLEAN:
            words.append(_BOOLEAN[key][0 if value else 1])
        elif key == "freeze":
            for pattern in value:
                words += ["--freeze", str(pattern)]
        else:
            words += ["--" + key.replace("_", "-"), f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(words)
