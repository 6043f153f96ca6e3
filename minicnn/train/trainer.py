"""Training and evaluation on CIFAR-10: the loop behind ``minicnn train`` and ``minicnn eval``.

One epoch, in the order a student would write it::

    for images, labels in train_loader:          # augmented, normalised batches
        logits = model(images)                   # forward
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()                          # autograd fills p.grad
        optimizer.step()                         # SGD with momentum
        scheduler.step()                         # learning-rate schedule, per step

Everything else here is bookkeeping a real run needs: finding the data,
checkpoints that resume exactly (model, optimizer, schedule, position in the
epoch, RNG state), metrics.csv, plots, and clear messages instead of
tracebacks.

Reproducibility: the shuffle and the augmentation of batch ``k`` of epoch
``e`` come from generators seeded by ``(seed, e, k)``, and so does the global
NumPy generator that dropout draws from. A run resumed from any checkpoint,
even one written mid-epoch by Ctrl-C, therefore continues exactly as the
uninterrupted run would have (on CPU).
"""
import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import functional as F
from .autograd import no_grad
from .backend import seed_global, to_device
from .data import (CIFAR10, DataLoader, DatasetError, ImageFolder, Subset, channel_stats, Compose,
                   Normalize, RandomCrop, RandomHorizontalFlip, ToFloat, train_val_split)
from .models import MODELS, get_model
from .nn import init as nn_init
from .optim import SGD, Adam, CosineAnnealingLR, MultiStepLR, OneCycleLR
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, model_from_checkpoint
from .errors import CheckpointError, TrainingError
from .serialization import save


class _StopRequested(Exception):
    """Raised between two steps after a Ctrl-C, so the checkpoint holds a consistent state."""


# --------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    model: str = "resnet20"
    data: str = None
    epochs: int = None               # default depends on the model (see defaults_for)
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = None
    schedule: str = None             # step | cosine | onecycle
    label_smoothing: float = 0.0
    augment: bool = True
    val_split: int = 5000
    subset: int = None
    device: str = "cpu"
    seed: int = 0
    out: str = "runs/run"
    resume: bool = False
    progress: bool = True
    check_finite: bool = True
    extra: dict = field(default_factory=dict)


def defaults_for(model):
    """Per-model defaults: the ResNet paper's recipe for ResNets, a short one-cycle run for the rest.

    ResNets (He et al. 2016, sec. 4.2): SGD, momentum 0.9, weight decay 1e-4,
    batch 128, lr 0.1 divided by 10 at 50% and 75% of training (the paper:
    32k and 48k of 64k iterations, ~182 epochs on 45k images), flip and
    4-pixel-padded random crops.
    """
    if model.startswith("resnet"):
        return dict(epochs=182, lr=0.1, weight_decay=1e-4, schedule="step")
    return dict(epochs=15, lr=0.05, weight_decay=5e-4, schedule="onecycle")


def complete_config(cfg):
    """Fill the fields left as None with the model's defaults."""
    if cfg.model not in MODELS:
        raise TrainingError(f"unknown model {cfg.model!r}; choose one of: {', '.join(MODELS)}")
    for k, v in defaults_for(cfg.model).items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)
    if cfg.schedule not in ("step", "cosine", "onecycle"):
        raise TrainingError(f"--schedule must be step, cosine or onecycle, got {cfg.schedule!r}")
    if cfg.epochs <= 0 or cfg.batch_size <= 0 or cfg.lr <= 0:
        raise TrainingError("--epochs, --batch-size and --lr must be positive")
    if cfg.momentum < 0 or cfg.weight_decay < 0 or cfg.seed < 0:
        raise TrainingError(f"--momentum, --weight-decay and --seed must be >= 0, got "
                            f"{cfg.momentum}, {cfg.weight_decay}, {cfg.seed}")
    if cfg.nesterov and cfg.momentum <= 0:
        raise TrainingError("--nesterov needs --momentum > 0")
    if not 0.0 <= cfg.label_smoothing <= 1.0:
        raise TrainingError(f"--label-smoothing must be in [0, 1], got {cfg.label_smoothing}")
    if cfg.val_split < 0:
        raise TrainingError(f"--val-split must be >= 0, got {cfg.val_split}")
    return cfg


# ----------------------------------------------------------------------------- data
DEFAULT_DATA_PLACES = (
    "$MINICNN_DATA",
    "./data/cifar10-jpeg",
    "./data/cifar-10-batches-py",
    "./data",
    "../shared/data/cifar10-jpeg",
    "~/.cache/minicnn/data",
)


def _candidates():
    for place in DEFAULT_DATA_PLACES:
        if place.startswith("$"):
            value = os.environ.get(place[1:])
            if value:
                yield value
        else:
            yield os.path.expanduser(place)


def _kind(path):
    """'folder' for an image tree with train/ and test/, 'cifar' for the official format, else None."""
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        return "folder"
    if os.path.isdir(os.path.join(path, "cifar-10-batches-py")) or \
            os.path.isfile(os.path.join(path, "cifar-10-python.tar.gz")):
        return "cifar"
    if os.path.basename(os.path.normpath(path)) == "cifar-10-batches-py":
        return "cifar-inner"
    return None


def how_to_get_data(looked):
    return (
        "CIFAR-10 was not found. Looked in:\n  " + "\n  ".join(looked) + "\n"
        "Pass --data PATH with one of:\n"
        "  - an image-folder tree PATH/train/<class>/*.png|jpg and PATH/test/<class>/...\n"
        "  - the official python version: a folder holding cifar-10-batches-py/ or cifar-10-python.tar.gz\n"
        "or run with --data download to fetch the official archive (163 MB, MD5-checked) into "
        "~/.cache/minicnn/data. You can also set MINICNN_DATA=PATH.")


def resolve_data(path):
    """Find the dataset: returns (kind, path). ``path=None`` searches the default places."""
    if path == "download":
        return "download", os.path.expanduser("~/.cache/minicnn/data")
    if path is not None:
        kind = _kind(path)
        if kind is None:
            if not os.path.exists(path):
                raise TrainingError(f"--data {path}: no such folder.\n" + how_to_get_data([path]))
            raise TrainingError(
                f"--data {path}: not a CIFAR-10 layout (expected train/ and test/ class folders, "
                f"or cifar-10-batches-py/ or cifar-10-python.tar.gz inside it).\n" + how_to_get_data([path]))
        return kind, path
    looked = []
    for cand in _candidates():
        looked.append(cand)
        kind = _kind(cand) if os.path.isdir(cand) else None
        if kind:
            return kind, cand
    raise TrainingError(how_to_get_data(looked))


def load_datasets(path, progress=True):
    """(train_set, test_set, description) for ``--data`` (see ``resolve_data``)."""
    kind, root = resolve_data(path)
    try:
        if kind == "folder":
            train = ImageFolder(os.path.join(root, "train"), progress=progress)
            test = ImageFolder(os.path.join(root, "test"), progress=progress)
        else:
            if kind == "cifar-inner":
                root = os.path.dirname(os.path.normpath(root))
            download = kind == "download"
            train = CIFAR10(root, train=True, download=download)
            test = CIFAR10(root, train=False, download=download)
    except DatasetError as e:
        raise TrainingError(str(e)) from None
    if list(train.classes) != list(test.classes):
        raise TrainingError(f"train and test classes differ: {train.classes} vs {test.classes}")
    return train, test, f"{root} ({kind})"


# ------------------------------------------------------------------ model & optimizer
def param_groups(model, weight_decay):
    """Weight decay on conv/linear weights only, none on biases and batchnorm parameters (1-D)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model, cfg):
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return Adam(groups, lr=cfg.lr)
    raise TrainingError(f"--optimizer must be sgd or adam, got {cfg.optimizer!r}")


def build_scheduler(optimizer, cfg, steps_per_epoch):
    """A per-step schedule over ``epochs * steps_per_epoch`` steps."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "step":
        return MultiStepLR(optimizer, milestones=[total // 2, (total * 3) // 4], gamma=0.1)
    if cfg.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total)
    # As in PyTorch (and Smith's one-cycle recipe), momentum cycles 0.95 -> 0.85 -> 0.95
    # against the learning rate; --momentum applies to the step and cosine schedules.
    return OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=0.25)


# ---------------------------------------------------------------------- evaluation
def evaluate(model, loader, num_classes):
    """Mean loss, accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    model.eval()
    total_loss, confusion = 0.0, np.zeros((num_classes, num_classes), dtype=np.int64)
    n = 0
    with no_grad():
        for images, labels in loader:
            logits = model(images)
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            pred = to_device(logits.data.argmax(axis=1), "cpu")
            np.add.at(confusion, (to_device(labels.data, "cpu"), pred), 1)
            n += len(pred)
    accuracy = float(np.trace(confusion)) / max(n, 1)
    return total_loss / max(n, 1), accuracy, confusion


def format_report(accuracy, confusion, classes):
    """Test accuracy, per-class accuracy and the confusion matrix as text."""
    lines = [f"test accuracy: {100 * accuracy:.2f}% ({np.trace(confusion)}/{confusion.sum()})",
             "per-class accuracy:"]
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    width = max(len(c) for c in classes)
    for name, acc in zip(classes, per_class):
        lines.append(f"  {name:<{width}}  {100 * acc:6.2f}%")
    lines.append("confusion matrix (rows: true, columns: predicted):")
    short = [c[:5] for c in classes]
    lines.append(" " * (width + 2) + " ".join(f"{s:>5}" for s in short))
    for name, row in zip(classes, confusion):
        lines.append(f"  {name:<{width}}" + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)


# ------------------------------------------------------------------------ plots
def plot_curves(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax2.plot(epochs, [100 * h["train_acc"] for h in history], label="train")
    if history and history[0].get("val_loss") not in (None, ""):
        ax1.plot(epochs, [h["val_loss"] for h in history], label="validation")
        ax2.plot(epochs, [100 * h["val_acc"] for h in history], label="validation")
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)


def plot_confusion(confusion, classes, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test)")
    thresh = confusion.max() / 2 if confusion.size else 0
    for i in range(confusion.shape[0]):
        for j in range(confusion.shape[1]):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > thresh else "black")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)


def _atomic_savefig(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


# ------------------------------------------------------------------ checkpoints
def save_checkpoint(path, trainer):
    """Everything a resumed run needs, written atomically (``minicnn.save``)."""
    t = trainer
    save({
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_name": t.cfg.model,
        "num_classes": len(t.classes),
        "classes": list(t.classes),
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "epoch": int(t.epoch),   # epochs fully done
        "step": int(t.step),     # batches done within the next epoch (0 = at an epoch boundary)
        "config": json.dumps({k: v for k, v in asdict(t.cfg).items() if k != "extra"}),
        "history": json.dumps(t.history),
        "best_acc": float(t.best_acc),
        "partial_epoch": json.dumps(t.partial),   # loss/accuracy sums of the epoch in progress
        "norm_mean": np.asarray(t.norm[0], dtype=np.float64),
        "norm_std": np.asarray(t.norm[1], dtype=np.float64),
    }, path)


# --------------------------------------------------------------------- training
def _write_metrics(path, history):
    fields = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "images_per_s"]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow(row)
    os.replace(tmp, path)


RUN_DEFINING = ("epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
                "schedule", "label_smoothing", "augment", "val_split", "subset", "seed")


def _check_same_run(saved, cfg, path):
    """A resumed run must keep the settings that define it (else it would not end where the original would)."""
    diffs = [f"--{k.replace('_', '-')} {getattr(cfg, k)} (checkpoint: {saved.get(k)})"
             for k in RUN_DEFINING if saved.get(k) != getattr(cfg, k)]
    if diffs:
        raise TrainingError(
            f"--resume: these settings differ from the run saved in {path}: " + "; ".join(diffs) +
            ". Resume with the original settings, or start a new run with another --out.")


def _new_partial(lr):
    """Running sums of one epoch (kept in checkpoints, so a resumed epoch reports all its steps)."""
    return {"lr": float(lr), "loss_sum": 0.0, "correct": 0, "seen": 0, "elapsed": 0.0}


def _seed_step(seed, epoch, step):
    """Seed the global generators (dropout) from (seed, epoch, step): resumable randomness."""
    seed_global(int(np.random.SeedSequence([seed, epoch, step]).generate_state(1)[0]))


class Trainer:
    """Holds one run: data, model, optimizer, schedule, history; ``run()`` trains it."""

    def __init__(self, cfg, log=print):
        self.cfg = cfg = complete_config(cfg)
        self.log = log
        os.makedirs(cfg.out, exist_ok=True)
        self.last_path = os.path.join(cfg.out, "last.npz")
        self.best_path = os.path.join(cfg.out, "best.npz")

        train_full, self.test_set, desc = load_datasets(cfg.data, progress=cfg.progress)
        self.classes = list(train_full.classes)
        if cfg.val_split and cfg.val_split > 0:
            if cfg.val_split >= len(train_full):
                raise TrainingError(f"--val-split {cfg.val_split} leaves no training images "
                                    f"(the training set has {len(train_full)})")
            train_set, val_set = train_val_split(train_full, cfg.val_split, seed=cfg.seed)
        else:
            train_set, val_set = train_full, None
        if cfg.subset:
            rng = np.random.default_rng(cfg.seed)
            train_set = Subset(train_set, rng.permutation(len(train_set))[:cfg.subset])
            if val_set is not None:   # a quick run validates on a random matching fraction; the test set stays whole
                val_set = Subset(val_set, np.sort(rng.permutation(len(val_set))[:max(cfg.subset // 5, 1)]))
        self.train_set, self.val_set = train_set, val_set

        ckpt = None
        if not cfg.resume and os.path.exists(self.last_path):
            raise TrainingError(f"{cfg.out} already holds a run (last.npz); continue it with --resume, "
                                f"or choose another --out (nothing was overwritten)")
        if cfg.resume:
            if not os.path.isfile(self.last_path):
                raise TrainingError(f"--resume: no checkpoint at {self.last_path}; start without --resume")
            ckpt = load_checkpoint(self.last_path)
            if ckpt["model_name"] != cfg.model:
                raise TrainingError(f"--resume: {self.last_path} is a {ckpt['model_name']} run, "
                                    f"but --model is {cfg.model}")
            _check_same_run(json.loads(ckpt["config"]), cfg, self.last_path)
        # Per-channel statistics of the training images (not hard-coded guesses).
        norm = (ckpt["norm_mean"], ckpt["norm_std"]) if ckpt else channel_stats(train_set)
        self.norm = (np.asarray(norm[0], dtype=np.float64), np.asarray(norm[1], dtype=np.float64))
        plain = Compose([ToFloat(), Normalize(*self.norm)])
        augment = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToFloat(), Normalize(*self.norm)])
        self.train_loader = DataLoader(train_set, cfg.batch_size, shuffle=True, drop_last=False,
                                       transform=augment if cfg.augment else plain, seed=cfg.seed,
                                       device=cfg.device)
        self.val_loader = (DataLoader(val_set, 500, transform=plain, device=cfg.device)
                           if val_set is not None else None)
        self.test_loader = DataLoader(self.test_set, 500, transform=plain, device=cfg.device)

        nn_init.manual_seed(cfg.seed)
        self.model = get_model(cfg.model, num_classes=len(self.classes))
        self.model.to(cfg.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, len(self.train_loader))
        self.epoch, self.step, self.history, self.best_acc = 0, 0, [], -1.0
        self.partial = _new_partial(cfg.lr)
        self._stop_requested = False
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
            self.history = json.loads(ckpt["history"])
            self.best_acc = float(ckpt["best_acc"])
            self.partial = json.loads(ckpt["partial_epoch"])
        n_params = self.model.num_parameters()
        self.log(f"data: {desc}; train {len(train_set)}, val {len(val_set) if val_set else 0}, "
                 f"test {len(self.test_set)} images")
        self.log(f"model: {cfg.model} ({n_params:,} parameters) on {cfg.device}; "
                 f"{cfg.optimizer} lr {cfg.lr} momentum "
                 f"{'0.95-0.85 (cycled)' if cfg.schedule == 'onecycle' else cfg.momentum} wd {cfg.weight_decay}, "
                 f"{cfg.schedule} schedule, {cfg.epochs} epochs of {len(self.train_loader)} steps, "
                 f"augment={cfg.augment}")
        if ckpt is not None:
            self.log(f"resumed from {self.last_path} at epoch {self.epoch + 1}, step {self.step}")

    def checkpoint(self, path=None):
        save_checkpoint(path or self.last_path, self)

    def train_epoch(self):
        """One epoch from ``self.step``; returns (mean loss, accuracy, images/s)."""
        from tqdm import tqdm

        cfg, model = self.cfg, self.model
        model.train()
        self.train_loader.set_epoch(self.epoch, start_batch=self.step)
        n_batches = len(self.train_loader)
        # Sums of this epoch so far: restored from the checkpoint when resuming mid-epoch.
        part = self.partial
        t0 = time.perf_counter() - part["elapsed"]
        bar = tqdm(total=n_batches, initial=self.step, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not cfg.progress, leave=False, dynamic_ncols=True)
        try:
            for images, labels in self.train_loader:
                _seed_step(cfg.seed, self.epoch, self.step)
                # A diverging run overflows before the loss check below sees it: that check,
                # not a stream of NumPy warnings, is how it gets reported.
                with np.errstate(over="ignore", invalid="ignore"):
                    logits = model(images)
                    loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
                loss_value = loss.item()
                if cfg.check_finite and not np.isfinite(loss_value):
                    raise TrainingError(
                        f"the loss became {loss_value} at epoch {self.epoch + 1}, step {self.step + 1}; "
                        f"training stopped and the last good checkpoint ({self.last_path}) was kept. "
                        f"Try a lower learning rate (now --lr {cfg.lr}).")
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                b = len(labels)
                part["loss_sum"] += loss_value * b
                part["correct"] += int((logits.data.argmax(axis=1) == labels.data).sum())
                part["seen"] += b
                part["elapsed"] = time.perf_counter() - t0
                bar.update(1)
                if self._stop_requested and self.step < n_batches:
                    raise _StopRequested      # (after the last step the epoch finishes first)
                if self.step % 10 == 0 or self.step == n_batches:
                    bar.set_postfix(loss=f"{part['loss_sum'] / part['seen']:.3f}",
                                    acc=f"{100 * part['correct'] / part['seen']:.1f}%",
                                    img_s=f"{part['seen'] / max(part['elapsed'], 1e-9):.0f}")
        finally:
            bar.close()
        seen, elapsed = max(part["seen"], 1), max(part["elapsed"], 1e-9)
        return part["loss_sum"] / seen, part["correct"] / seen, part["seen"] / elapsed, elapsed

    def _check_weights_finite(self):
        """Refuse to checkpoint weights that an update made NaN/inf (the loss check comes before it)."""
        if not self.cfg.check_finite:
            return
        for name, p in self.model.named_parameters():
            if not bool(p.xp.isfinite(p.data).all()):
                raise TrainingError(
                    f"parameter {name} became NaN/inf during epoch {self.epoch}; training stopped and "
                    f"the last good checkpoint ({self.last_path}) was kept. Try a lower learning rate "
                    f"(now --lr {self.cfg.lr}).")

    def _on_sigint(self, signum, frame):
        if self._stop_requested:          # a second Ctrl-C: stop right now
            raise KeyboardInterrupt
        self._stop_requested = True
        self.log("\nCtrl-C: finishing this step, then saving a checkpoint (Ctrl-C again to abort)")

    def run(self):
        """Train to ``cfg.epochs`` and return the test accuracy.

        Ctrl-C lets the current step finish, writes last.npz (resumable, also
        mid-epoch) and returns None.
        """
        import signal
        import threading

        self._stop_requested = False
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return self._run()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _run(self):
        cfg = self.cfg
        try:
            while self.epoch < cfg.epochs:
                if self.step == 0:
                    self.partial = _new_partial(self.optimizer.param_groups[0]["lr"])
                lr = self.partial["lr"]                      # the lr the epoch started with
                train_loss, train_acc, rate, elapsed = self.train_epoch()
                row = {"epoch": self.epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                       "val_loss": "", "val_acc": "", "epoch_time_s": round(elapsed, 2),
                       "images_per_s": round(rate, 1)}
                line = (f"epoch {self.epoch + 1:3d}/{cfg.epochs}  lr {lr:.4g}  train loss {train_loss:.4f} "
                        f"acc {100 * train_acc:5.2f}%")
                if self.val_loader is not None:
                    val_loss, val_acc, _ = evaluate(self.model, self.val_loader, len(self.classes))
                    row.update(val_loss=val_loss, val_acc=val_acc)
                    line += f"  val loss {val_loss:.4f} acc {100 * val_acc:5.2f}%"
                    score = val_acc
                else:
                    score = train_acc
                line += f"  {elapsed:.0f}s ({rate:.0f} img/s)"
                self.log(line)
                self.history.append(row)
                self.epoch, self.step = self.epoch + 1, 0
                self.partial = _new_partial(self.optimizer.param_groups[0]["lr"])
                self._check_weights_finite()
                if score > self.best_acc:
                    self.best_acc = score
                    self.checkpoint(self.best_path)
                self.checkpoint()
                _write_metrics(os.path.join(cfg.out, "metrics.csv"), self.history)
                plot_curves(self.history, os.path.join(cfg.out, "curves.png"))
                if self._stop_requested:      # Ctrl-C came during the epoch's last step
                    raise _StopRequested
        except _StopRequested:
            self.checkpoint()
            self.log(f"\ninterrupted at epoch {self.epoch + 1}, step {self.step}: saved {self.last_path}; "
                     f"continue with the same command plus --resume")
            return None
        return self.test()

    def test(self):
        test_loss, test_acc, confusion = evaluate(self.model, self.test_loader, len(self.classes))
        self.log(format_report(test_acc, confusion, self.classes))
        plot_confusion(confusion, self.classes, os.path.join(self.cfg.out, "confusion.png"))
        with open(os.path.join(self.cfg.out, "test.json"), "w") as f:
            json.dump({"test_accuracy": test_acc, "test_loss": test_loss,
                       "confusion": confusion.tolist(), "classes": self.classes}, f, indent=1)
        return test_acc


def evaluate_checkpoint(path, data=None, device="cpu", model_name=None, log=print):
    """``minicnn eval``: the test accuracy of a checkpoint; returns it."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path, model_name)
    model.to(device)
    _, test_set, desc = load_datasets(data)
    if "classes" in ckpt and list(ckpt["classes"]) != list(test_set.classes):
        raise TrainingError(f"{path} was trained on classes {list(ckpt['classes'])}, but {desc} has "
                            f"{list(test_set.classes)}")
    plain = Compose([ToFloat(), Normalize(ckpt["norm_mean"], ckpt["norm_std"])])
    loader = DataLoader(test_set, 500, transform=plain, device=device)
    _, acc, confusion = evaluate(model, loader, len(test_set.classes))
    log(f"checkpoint {path}: {ckpt['model_name']}, trained {int(ckpt['epoch'])} epoch(s); data {desc}")
    log(format_report(acc, confusion, list(test_set.classes)))
    return acc
