"""``Trainer``: one run of ``minicnn train``, the bookkeeping around ``fit``.

The learning itself is ``minicnn.train.fit`` (forward, loss, zero_grad,
backward, step), which the Trainer calls once per epoch. Around it, the
Trainer does what a run of hours needs:

- checks ``--out`` before any work, and leaves no empty run folder behind;
- splits off validation images, computes the normalisation statistics,
  builds the loaders, the model, the optimizer and the schedule;
- resumes exactly (model, optimizer, schedule, position in the epoch,
  randomness) from ``last.npz``;
- shows progress, prints an estimate of the total time after the first
  steps, stops after the current step on Ctrl-C, SIGTERM or ``--max-minutes``
  and saves a checkpoint first;
- fine-tuning (``finetune``): loads ``--init-from`` into all but a head that
  no longer fits and freezes ``--freeze`` before the optimizer is built;
- regularisers (``regularisation``): ``--l1``/``--l2`` become terms of the
  loss ``fit`` minimises, ``--max-norm`` is applied after every step;
- stops a diverging run with a message (the loss became NaN/inf);
- writes metrics.csv, curves.png, last.npz, best.npz, and at the end the
  test report (test.json, confusion.png).

Reproducibility: the shuffle and the augmentation of batch ``k`` of epoch
``e`` come from generators seeded by ``(seed, e, k)``, and so does the global
NumPy generator that dropout draws from. A run resumed from any checkpoint,
even one written mid-epoch by Ctrl-C, therefore continues exactly as the
uninterrupted run would have (on CPU).
"""
import contextlib
import functools
import json
import os
import signal
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import MISSING, asdict, fields

import numpy as np

from .. import functional as F
from .. import nn
from ..autograd import Tensor
from ..backend import seed_global
from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import (AlternatingFlip, Compose, DataLoader, Normalize, RandomCrop, RandomHorizontalFlip,
                    RandomTranslate, Subset, ToFloat, channel_stats, gather, train_val_split)
from ..errors import TrainingError
from ..models import get_model
from ..nn import init as nn_init
from ..speed import apply_process_settings
from ..optim import EMA
from .config import EMA_EVERY, RECIPES, TrainConfig, build_optimizer, build_scheduler, complete_config
from .datasets import load_datasets
from .evaluation import evaluate
from .finetune import check_architecture, freeze, frozen_batchnorm_layers, head_keys, init_from_checkpoint
from .loop import fit
from .regularisation import apply_max_norm, regularised_loss, regularised_parameters
from .reports import format_report, plot_confusion, plot_curves, write_metrics

__all__ = ["Trainer", "RUN_DEFINING", "ESTIMATE_AFTER_STEPS", "check_out_folder", "format_duration",
           "estimate_message"]

# Settings that define a run: --resume refuses to change them.
RUN_DEFINING = ("recipe", "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
                "schedule", "label_smoothing", "augment", "flip", "translate", "pad_mode", "ema", "whiten",
                "bias_lr_scale", "val_split", "subset", "seed",
                "adversarial", "adv_eps", "adv_steps", "l1", "l2", "max_norm", "init_from", "freeze")
ESTIMATE_AFTER_STEPS = 20      # the time estimate is printed after this many timed steps


class _StopRequested(Exception):
    """Raised between two steps (Ctrl-C, SIGTERM, --max-minutes): the checkpoint holds a consistent state."""


# ------------------------------------------------------------------ small documented helpers
def check_out_folder(out):
    """Refuse an output folder that cannot be written, before any work; creates nothing.

    ``out`` may exist (a writable folder) or not (then its first existing
    parent must be a writable folder). Raises TrainingError naming ``--out``.
    """
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise TrainingError(f"--out {out} is a file, not a folder; choose a folder for the run "
                            f"(it is created if needed)")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise TrainingError(f"--out {out}: cannot create it, {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".minicnn-write-test-", dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        where = "the folder is" if parent == os.path.abspath(out) else f"cannot create it: {parent} is"
        raise TrainingError(f"--out {out}: {where} not writable ({e.strerror}); choose another --out") from None


def format_duration(seconds):
    """``3725`` -> ``'1 h 2 min'``, ``75`` -> ``'1 min 15 s'``, ``8`` -> ``'8 s'``."""
    seconds = int(round(seconds))
    if seconds >= 86400:
        return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


def estimate_message(seconds_per_step, steps_left, epochs, resumed=False, hint=""):
    """The line printed after the first steps: the training time of the whole run, from the step time.

    A run of an hour or more says so plainly, and how to stop it or shorten it (``hint``).
    """
    total = seconds_per_step * steps_left
    what = f"the rest of the {epochs} epochs" if resumed else f"{epochs} epochs"
    line = (f"estimated {format_duration(total)} for {what} ({seconds_per_step:.3g} s per step, "
            f"{steps_left:,} steps; validation not included)")
    if total >= 3600:
        line += ("\nThis is a long run. Ctrl-C or SIGTERM saves a checkpoint (continue with --resume), "
                 "--max-minutes M caps it" + (f"; {hint}" if hint else "") + ".")
    return line


def _new_partial(lr):
    """Running sums of one epoch (kept in checkpoints, so a resumed epoch reports all its steps)."""
    return {"lr": float(lr), "loss_sum": 0.0, "correct": 0, "seen": 0, "elapsed": 0.0}


def _seed_step(seed, epoch, step):
    """Seed the global generators (dropout) from (seed, epoch, step): resumable randomness."""
    seed_global(int(np.random.SeedSequence([seed, epoch, step]).generate_state(1)[0]))


def _check_same_run(saved, cfg, path):
    """A resumed run must keep the settings that define it (else it would not end where the original would)."""
    defaults = {f.name: (f.default_factory() if f.default_factory is not MISSING else f.default)
                for f in fields(TrainConfig)}
    defaults.update(RECIPES["standard"], recipe="standard")   # what a checkpoint without these fields used
    diffs = [f"--{k.replace('_', '-')} {getattr(cfg, k)} (checkpoint: {saved.get(k, defaults[k])})"
             for k in RUN_DEFINING if saved.get(k, defaults[k]) != getattr(cfg, k)]
    if diffs:
        raise TrainingError(
            f"--resume: these settings differ from the run saved in {path}: " + "; ".join(diffs) +
            ". Resume with the original settings, or start a new run with another --out.")


def _model_from_checkpoints(cfg):
    """No --model with --resume or --init-from: the checkpoint's model (and recipe), not the fast default."""
    if cfg.model is not None:
        return cfg
    if cfg.resume and os.path.isfile(os.path.join(cfg.out, "last.npz")):
        ckpt = load_checkpoint(os.path.join(cfg.out, "last.npz"))
        saved = json.loads(ckpt["config"])
        cfg.model = ckpt["model_name"]
        if cfg.recipe is None:
            cfg.recipe = saved.get("recipe", "standard")
    elif cfg.init_from is not None and not cfg.resume:
        cfg.model = load_checkpoint(cfg.init_from)["model_name"]
    return cfg


# ------------------------------------------------------------------------------ Trainer
class Trainer:
    """Holds one run: data, model, optimizer, schedule, history; ``run()`` trains it.

    ``model`` is the network (what checkpoints hold); ``fit_model`` is what
    ``fit`` trains: the network itself, or, for adversarial training,
    ``Sequential(normalize=nn.Normalize(mean, std), net=model)`` on [0, 1] pixels.
    """

    def __init__(self, cfg, log=print):
        apply_process_settings()         # allocator and BLAS threads for a long job (never at import)
        self.cfg = cfg = complete_config(_model_from_checkpoints(cfg))
        self.log = log
        self._created = None             # the folders run() creates for --out (removed again if left empty)
        # Everything that can be refused cheaply is refused before the data is decoded.
        check_out_folder(cfg.out)
        self.last_path = os.path.join(cfg.out, "last.npz")
        self.best_path = os.path.join(cfg.out, "best.npz")
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
        if cfg.adversarial != "none":
            self._adversarial_examples()     # fails now, not after decoding, when minicnn.attacks is missing
        init = None
        if cfg.init_from is not None and ckpt is None:     # (a resumed run has its weights in last.npz)
            init = load_checkpoint(cfg.init_from)
            check_architecture(cfg.model, init, cfg.init_from)

        train_full, self.test_set, desc = load_datasets(cfg.data, progress=cfg.progress)
        self.classes = list(train_full.classes)
        self.train_set, self.val_set = self._split(train_full)

        # Per-channel statistics of the training images (not hard-coded guesses).
        # Fine-tuning keeps the statistics the loaded layers were trained with.
        source = ckpt if ckpt is not None else init
        norm = ((source["norm_mean"], source["norm_std"]) if source is not None and "norm_mean" in source
                else channel_stats(self.train_set))
        self.norm = (np.asarray(norm[0], dtype=np.float64), np.asarray(norm[1], dtype=np.float64))
        self._build_loaders()

        nn_init.manual_seed(cfg.seed)
        self.model = get_model(cfg.model, num_classes=len(self.classes))
        self.loaded, self.reinitialised, self.frozen = [], [], []
        if init is not None:
            self.loaded, self.reinitialised = init_from_checkpoint(self.model, cfg.model, init, cfg.init_from,
                                                                   self.classes)
        if cfg.freeze:
            self.frozen = freeze(self.model, cfg.freeze, head=head_keys(cfg.model, len(self.classes)))
            if not any(p.requires_grad for p in self.model.parameters()):
                raise TrainingError(f"--freeze {' '.join(cfg.freeze)} freezes every parameter: nothing would "
                                    f"be trained")
        if cfg.whiten:        # (resumed and fine-tuned runs load the whitening weights, and keep them frozen)
            self._whiten_first_layer(compute=ckpt is None and init is None)
        self.model.to(cfg.device)
        self.fit_model = self.model
        if cfg.adversarial != "none":    # the attacks work on [0, 1] pixels: normalise inside the model
            self.fit_model = nn.Sequential(OrderedDict([("normalize", nn.Normalize(*self.norm)),
                                                        ("net", self.model)]))
            self.fit_model.to(cfg.device)
        # The weights the penalties and --max-norm act on (no biases, no batchnorm, nothing frozen).
        self.regularised = regularised_parameters(self.model)
        if (cfg.l1 or cfg.l2 or cfg.max_norm) and not self.regularised:
            raise TrainingError("--l1/--l2/--max-norm: the model has no trainable weight to regularise")
        self.loss_fn = regularised_loss(functools.partial(F.cross_entropy, label_smoothing=cfg.label_smoothing),
                                        self.regularised, l1=cfg.l1, l2=cfg.l2)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, len(self.train_loader))
        self.ema = EMA(self.model, decay=cfg.ema, every=EMA_EVERY) if cfg.ema else None
        self.epoch, self.step, self.history, self.best_acc = 0, 0, [], -1.0
        self.partial = _new_partial(cfg.lr)
        self.stop_reason = None          # None, 'SIGINT', 'SIGTERM' or 'max-minutes'
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
            self.history = json.loads(ckpt["history"])
            self.best_acc = float(ckpt["best_acc"])
            self.partial = json.loads(ckpt["partial_epoch"])
            if self.ema is not None:
                self.ema.load_state_dict(ckpt["ema"])
        self.resumed = ckpt is not None
        self._log_setup(desc)

    # ---- setup ------------------------------------------------------------------
    def _split(self, train_full):
        cfg = self.cfg
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
        return train_set, val_set

    def _build_loaders(self):
        cfg = self.cfg
        plain = Compose([ToFloat(), Normalize(*self.norm)])
        # Adversarial training feeds [0, 1] pixels (the model normalises them itself).
        to_input = [ToFloat()] if cfg.adversarial != "none" else [ToFloat(), Normalize(*self.norm)]
        augment = []
        if cfg.augment and cfg.translate:
            augment.append(RandomCrop(32, padding=cfg.translate) if cfg.pad_mode == "zeros"
                           else RandomTranslate(cfg.translate, padding_mode="reflect"))
        if cfg.augment and cfg.flip != "none":
            augment.append(RandomHorizontalFlip() if cfg.flip == "random" else AlternatingFlip(seed=cfg.seed))
        self.train_loader = DataLoader(self.train_set, cfg.batch_size, shuffle=True, drop_last=False,
                                       transform=Compose(augment + to_input), seed=cfg.seed, device=cfg.device)
        self.val_loader = (DataLoader(self.val_set, 500, transform=plain, device=cfg.device)
                           if self.val_set is not None else None)
        self.test_loader = DataLoader(self.test_set, 500, transform=plain, device=cfg.device)

    def _whiten_first_layer(self, compute=True, n_images=5000):
        """``--whiten``: set the first convolution by patch whitening of training images, and freeze it.

        The statistics come from up to ``n_images`` training images (a seeded
        sample), normalized as the network sees them. ``compute=False`` only
        freezes the layer (its weights come from a checkpoint).
        """
        first = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        try:
            if first is None:
                raise ValueError("the model has no convolution")
            if not compute:
                first.weight.requires_grad = False
                return
            pick = np.random.default_rng([self.cfg.seed, 7]).permutation(len(self.train_set))[:n_images]
            images, _ = gather(self.train_set, np.sort(pick))
            mean, std = (a.reshape(1, -1, 1, 1) for a in self.norm)
            nn_init.patch_whitening_(first, (images / 255.0 - mean) / std)
        except (ValueError, TypeError) as e:
            raise TrainingError(f"--whiten: cannot whiten the first layer of {self.cfg.model} ({e}); it is "
                                f"meant for fast_cnn") from None
        first.weight.requires_grad = False

    def _log_setup(self, desc):
        cfg = self.cfg
        self.log(f"data: {desc}; train {len(self.train_set)}, val {len(self.val_set) if self.val_set else 0}, "
                 f"test {len(self.test_set)} images")
        trainable = self.model.num_parameters(trainable_only=True)
        total = self.model.num_parameters()
        counted = f"{total:,} parameters" + (f", {trainable:,} trained" if trainable != total else "")
        if cfg.init_from is not None and not self.resumed:
            self.log(f"init from {cfg.init_from}: loaded {len(self.loaded)} entries"
                     + (f"; re-initialised the head for {len(self.classes)} classes: "
                        f"{', '.join(self.reinitialised)}" if self.reinitialised else " (all of them)"))
        if self.frozen:
            shown = ", ".join(self.frozen[:8]) + (f", ... ({len(self.frozen)} in all)" if len(self.frozen) > 8 else "")
            bns = [n for n, _ in frozen_batchnorm_layers(self.model)]
            self.log(f"frozen (--freeze {' '.join(cfg.freeze)}): {shown}"
                     + (f"; batchnorm layers in eval mode (statistics kept): {', '.join(bns)}" if bns else ""))
        if cfg.l1 or cfg.l2 or cfg.max_norm:
            parts = [f"l1 {cfg.l1:g}" if cfg.l1 else "", f"l2 {cfg.l2:g}" if cfg.l2 else "",
                     f"max-norm {cfg.max_norm:g} per unit" if cfg.max_norm else ""]
            self.log(f"regularisers: {', '.join(p for p in parts if p)} on {len(self.regularised)} weight "
                     f"tensors (biases and batchnorm excluded)")
        self.log(f"model: {cfg.model} ({counted}) on {cfg.device}; recipe {cfg.recipe}: "
                 f"{cfg.optimizer}{' nesterov' if cfg.nesterov else ''} lr {cfg.lr}"
                 f"{f' (biases x{cfg.bias_lr_scale:g})' if cfg.bias_lr_scale != 1 else ''} momentum "
                 f"{'0.95-0.85 (cycled)' if cfg.schedule == 'onecycle' else cfg.momentum} wd {cfg.weight_decay}, "
                 f"{cfg.schedule} schedule, {cfg.epochs} epochs of {len(self.train_loader)} steps of "
                 f"{cfg.batch_size}")
        aug = (f"flips {cfg.flip}, translations up to {cfg.translate} px ({cfg.pad_mode} border)"
               if cfg.augment else "no augmentation")
        self.log(f"{aug}; label smoothing {cfg.label_smoothing:g}; "
                 f"{f'weight average (EMA {cfg.ema:g})' if cfg.ema else 'no weight average'}; "
                 f"test-time augmentation {cfg.tta}" + ("; first layer: patch whitening (frozen)" if cfg.whiten else ""))
        if cfg.device == "cpu" and cfg.model.startswith("resnet") and cfg.epochs >= 50:
            self.log(f"note: {cfg.epochs} epochs of {cfg.model} take hours to days on a CPU (an estimate "
                     f"follows after {ESTIMATE_AFTER_STEPS} steps); for a run of minutes use --model simple_cnn, "
                     f"or cap this one with --max-minutes")
        if cfg.adversarial != "none":
            steps = f", {cfg.adv_steps} steps" if cfg.adversarial == "pgd" else ""
            self.log(f"adversarial training: {cfg.adversarial}, eps {cfg.adv_eps:.4g} (L-inf, [0, 1] pixels){steps}")
        if self.resumed:
            self.log(f"resumed from {self.last_path} at epoch {self.epoch + 1}, step {self.step}")

    # ---- files ------------------------------------------------------------------
    def _make_out(self):
        """Create ``--out`` (and missing parents); remember what was created, to remove it if nothing is written."""
        if self._created is None:
            self._created = []
            path = os.path.abspath(self.cfg.out)
            while not os.path.exists(path):
                self._created.append(path)
                path = os.path.dirname(path)
        os.makedirs(self.cfg.out, exist_ok=True)

    def _remove_empty_out(self):
        """After a failed run: remove the folders this run created if it wrote nothing into them."""
        for path in self._created or []:                # innermost first
            try:
                os.rmdir(path)                          # only succeeds on an empty folder
            except OSError:
                break

    def checkpoint(self, path=None):
        """Write everything a resumed run needs to ``path`` (default ``last.npz``), atomically."""
        self._make_out()
        save_checkpoint(path or self.last_path, model_name=self.cfg.model, classes=self.classes,
                        model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, norm=self.norm,
                        epoch=self.epoch, step=self.step,
                        config={k: v for k, v in asdict(self.cfg).items() if k != "extra"},
                        history=self.history, best_acc=self.best_acc, partial_epoch=self.partial, ema=self.ema)

    def _kept_checkpoint(self):
        if os.path.isfile(self.last_path):
            return f"the last good checkpoint ({self.last_path}) was kept"
        return "no checkpoint was written yet"

    # ---- one epoch ----------------------------------------------------------------
    def _adversarial_examples(self):
        """``minicnn.attacks.adversarial_examples``, imported only when adversarial training asks for it."""
        try:
            from ..attacks import adversarial_examples
        except ImportError as e:
            raise TrainingError(f"--adversarial {self.cfg.adversarial} needs minicnn.attacks, which cannot "
                                f"be imported ({e})") from None
        return adversarial_examples

    def _batches(self):
        """The training batches of this epoch, from ``self.step`` on, each seeded for dropout.

        For adversarial training each batch of [0, 1] images is replaced by
        adversarial examples of the current model (the attack runs it in eval mode).
        """
        cfg = self.cfg
        attack = self._adversarial_examples() if cfg.adversarial != "none" else None
        self.train_loader.set_epoch(self.epoch, start_batch=self.step)
        for images, labels in self.train_loader:
            if attack is not None:
                seed = int(np.random.SeedSequence([cfg.seed, self.epoch, self.step, 1]).generate_state(1)[0])
                adv = attack(self.fit_model, images, labels, method=cfg.adversarial, eps=cfg.adv_eps,
                             steps=cfg.adv_steps, seed=seed)
                images = adv if isinstance(adv, Tensor) else Tensor(adv)
            _seed_step(cfg.seed, self.epoch, self.step)
            yield images, labels

    def train_epoch(self):
        """One epoch of ``fit`` from ``self.step``; returns (mean loss, accuracy, images/s, seconds)."""
        from tqdm import tqdm

        cfg = self.cfg
        n_batches = len(self.train_loader)
        part = self.partial      # sums of this epoch so far: restored from the checkpoint when resuming mid-epoch
        t0 = time.perf_counter() - part["elapsed"]
        bar = tqdm(total=n_batches, initial=self.step, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not cfg.progress, leave=False, dynamic_ncols=True)

        def after_step(logits, labels, loss):
            if cfg.max_norm:                        # the constraint, right after optimizer.step()
                apply_max_norm(self.regularised, cfg.max_norm)
            if self.ema is not None:
                self.ema.update()
            loss_value = loss.item()
            if cfg.check_finite and not np.isfinite(loss_value):
                raise TrainingError(
                    f"the loss became {loss_value} at epoch {self.epoch + 1}, step {self.step + 1}; "
                    f"training stopped and {self._kept_checkpoint()}. "
                    f"Try a lower learning rate (now --lr {cfg.lr}).")
            self.step += 1
            b = labels.shape[0]
            part["loss_sum"] += loss_value * b
            part["correct"] += int((logits.data.argmax(axis=1) == labels.data).sum())
            part["seen"] += b
            part["elapsed"] = time.perf_counter() - t0
            bar.update(1)
            self._after_step()
            if self.stop_reason is not None and self.step < n_batches:
                raise _StopRequested      # (after the last step the epoch finishes first)
            if self.step % 10 == 0 or self.step == n_batches:
                bar.set_postfix(loss=f"{part['loss_sum'] / part['seen']:.3f}",
                                acc=f"{100 * part['correct'] / part['seen']:.1f}%",
                                img_s=f"{part['seen'] / max(part['elapsed'], 1e-9):.0f}")

        batches = self._batches()
        try:
            # A diverging run overflows before the loss check sees it: that check,
            # not a stream of NumPy warnings, is how it gets reported.
            with np.errstate(over="ignore", invalid="ignore"):
                fit(self.fit_model, batches, self.optimizer, self.loss_fn, epochs=1,
                    scheduler=self.scheduler, on_step=after_step)
        finally:
            batches.close()
            bar.close()
        seen, elapsed = max(part["seen"], 1), max(part["elapsed"], 1e-9)
        return part["loss_sum"] / seen, part["correct"] / seen, part["seen"] / elapsed, elapsed

    def _after_step(self):
        """Per-step bookkeeping outside the math: the time estimate and the --max-minutes cap."""
        now = time.perf_counter()
        self._steps_run += 1
        if self._steps_run == 1:
            self._timing_start = now          # the first step (warm-up) is not timed
        elif self._steps_run == 1 + ESTIMATE_AFTER_STEPS:
            per_step = (now - self._timing_start) / ESTIMATE_AFTER_STEPS
            steps_left = self.cfg.epochs * len(self.train_loader) - (self.epoch * len(self.train_loader) + self.step)
            hint = ("for a run of minutes on the CPU, use --model simple_cnn"
                    if self.cfg.device == "cpu" and self.cfg.model != "simple_cnn" else "")
            self.log(estimate_message(per_step, steps_left, self.cfg.epochs, resumed=self.resumed, hint=hint))
        self._check_deadline(now)

    def _check_deadline(self, now=None):
        if self._deadline is not None and self.stop_reason is None and \
                (now if now is not None else time.perf_counter()) >= self._deadline:
            self.stop_reason = "max-minutes"

    def _check_weights_finite(self):
        """Refuse to checkpoint weights that an update made NaN/inf."""
        if not self.cfg.check_finite:
            return
        for name, p in self.model.named_parameters():
            if not bool(p.xp.isfinite(p.data).all()):
                raise TrainingError(
                    f"parameter {name} became NaN/inf during epoch {self.epoch}; training stopped and "
                    f"{self._kept_checkpoint()}. Try a lower learning rate (now --lr {self.cfg.lr}).")

    # ---- the run ------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.stop_reason in ("SIGINT", "SIGTERM"):      # a second signal: stop right now
            raise KeyboardInterrupt
        self.stop_reason = signal.Signals(signum).name
        self.log(f"\n{name}: finishing this step, then saving a checkpoint ({name} again to abort)")

    def run(self):
        """Train to ``cfg.epochs`` and return the test accuracy.

        Ctrl-C or SIGTERM lets the current step finish, writes last.npz
        (resumable, also mid-epoch) and returns None (``stop_reason`` says
        which). At the ``max_minutes`` cap training stops the same way, then
        the test set is evaluated and its accuracy returned.
        """
        apply_process_settings()         # allocator and BLAS threads for a long job (never at import)
        self.stop_reason = None
        self._steps_run, self._timing_start = 0, None
        self._deadline = (time.perf_counter() + 60 * self.cfg.max_minutes
                          if self.cfg.max_minutes is not None else None)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        ok = False
        try:
            self._make_out()
            result = self._run()
            ok = True
            return result
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if not ok:
                self._remove_empty_out()

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
                    with self._evaluated_weights():      # (test-time augmentation is for the test only)
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
                if self.epoch == cfg.epochs and self.ema is not None:
                    self.ema.copy_to()                       # a finished run keeps the averaged weights
                if score > self.best_acc:
                    self.best_acc = score
                    with self._evaluated_weights():
                        self.checkpoint(self.best_path)
                self.checkpoint()
                write_metrics(os.path.join(cfg.out, "metrics.csv"), self.history)
                plot_curves(self.history, os.path.join(cfg.out, "curves.png"))
                self._check_deadline()
                if self.stop_reason is not None and (self.epoch < cfg.epochs or self.stop_reason != "max-minutes"):
                    raise _StopRequested      # the signal or the cap came during the epoch's last step
        except _StopRequested:
            self.checkpoint()
            where = f"epoch {self.epoch + 1}, step {self.step}"
            if self.stop_reason == "max-minutes":
                self.log(f"\nstopped at the --max-minutes {cfg.max_minutes:g} cap at {where}: saved "
                         f"{self.last_path} (continue with the same command plus --resume); "
                         f"testing the model as it is")
                return self.test()
            self.log(f"\ninterrupted ({self.stop_reason}) at {where}: saved {self.last_path}; "
                     f"continue with the same command plus --resume")
            return None
        return self.test()

    def _evaluated_weights(self):
        """The weights that are evaluated and kept: the EMA average (``--ema``) applied for the block, else the model's."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def test(self):
        """Evaluate on the test set; print the report, write test.json and confusion.png; return the accuracy."""
        self._make_out()
        with self._evaluated_weights():
            test_loss, test_acc, confusion = evaluate(self.model, self.test_loader, len(self.classes),
                                                      tta=self.cfg.tta)
        self.log(format_report(test_acc, confusion, self.classes))
        plot_confusion(confusion, self.classes, os.path.join(self.cfg.out, "confusion.png"))
        with open(os.path.join(self.cfg.out, "test.json"), "w") as f:
            json.dump({"test_accuracy": test_acc, "test_loss": test_loss, "epochs_done": self.epoch,
                       "steps_into_next_epoch": self.step, "confusion": confusion.tolist(),
                       "classes": self.classes}, f, indent=1)
        return test_acc

