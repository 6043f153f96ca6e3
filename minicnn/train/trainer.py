"""``Trainer``: one run of ``minicnn train``: ``fit`` once per epoch inside a ``Run``.

The learning itself is ``minicnn.train.fit`` (forward, loss, zero_grad,
backward, step), called once per epoch. The run machinery
(``minicnn.train.run.Run``: the folder, Ctrl-C/SIGTERM, last.npz and
resuming, metrics.csv, the time estimate, ``--max-minutes``) is shared with
the GAN and image-to-image trainings. What is the classifier's own:

- the data: validation images split off, the normalisation statistics of
  the training images, the augmentations and loaders;
- the network: fine-tuning (``finetune``: ``--init-from`` loads all but a
  head that no longer fits, ``--freeze``), the patch-whitening first layer,
  adversarial training (the attacks see a model that normalises pixels);
- the learning: the loss with ``--l1``/``--l2`` terms, ``--max-norm`` after
  every step (``regularisation``), the optimizer, the schedule, the weight
  average (EMA); a diverging run stops with a message;
- after every epoch: validation, best.npz, curves.png; at the end the test
  report (test.json, confusion.png).

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
from collections import OrderedDict
from dataclasses import MISSING, fields

import numpy as np

from .. import functional as F
from .. import nn
from ..autograd import Tensor
from ..backend import seed_global
from ..checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from ..data import (AlternatingFlip, Compose, DataLoader, Normalize, RandomCrop, RandomHorizontalFlip,
                    RandomTranslate, Subset, ToFloat, channel_stats, gather, train_val_split)
from ..errors import TrainingError
from ..models import get_model
from ..nn import init as nn_init
from ..optim import EMA
from ..speed import apply_process_settings
from .config import EMA_EVERY, RECIPES, TrainConfig, build_optimizer, build_scheduler, complete_config
from .datasets import load_datasets
from .evaluation import evaluate
from .finetune import check_architecture, freeze, frozen_batchnorm_layers, head_keys, init_from_checkpoint
from .loop import fit
from .regularisation import apply_max_norm, regularised_loss, regularised_parameters
from .reports import METRICS_FIELDS, format_report, plot_confusion, plot_curves
from .run import ESTIMATE_AFTER_STEPS, Run

__all__ = ["Trainer", "RUN_DEFINING"]

# Settings that define a run: --resume refuses to change them.
RUN_DEFINING = ("model", "recipe", "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
                "schedule", "label_smoothing", "augment", "flip", "translate", "pad_mode", "ema", "whiten",
                "bias_lr_scale", "val_split", "subset", "seed",
                "adversarial", "adv_eps", "adv_steps", "l1", "l2", "max_norm", "init_from", "freeze")
# What a checkpoint that predates a setting was trained with: the defaults then, and the standard recipe.
SAVED_DEFAULTS = {**{f.name: (f.default_factory() if f.default_factory is not MISSING else f.default)
                     for f in fields(TrainConfig)}, **RECIPES["standard"], "recipe": "standard"}


def _seed_step(seed, epoch, step):
    """Seed the global generators (dropout) from (seed, epoch, step): resumable randomness."""
    seed_global(int(np.random.SeedSequence([seed, epoch, step]).generate_state(1)[0]))


def _model_from_checkpoints(cfg, read_init=load_checkpoint):
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
        cfg.model = read_init(cfg.init_from)["model_name"]
    return cfg


# ------------------------------------------------------------------------------ Trainer
class Trainer:
    """Holds one run: data, model, optimizer, schedule; ``run()`` trains it, ``job`` is its ``Run``.

    ``model`` is the network (what checkpoints hold); ``fit_model`` is what
    ``fit`` trains: the network itself, or, for adversarial training,
    ``Sequential(normalize=nn.Normalize(mean, std), net=model)`` on [0, 1] pixels.
    """

    def __init__(self, cfg, log=print, read_init=load_checkpoint, comm=None):
        # read_init: how --init-from's file is read (the CLI's also reads .safetensors: minicnn.interop)
        apply_process_settings()         # allocator and BLAS threads for a long job (never at import)
        self.cfg = cfg = complete_config(_model_from_checkpoints(cfg, read_init))
        # comm: this process is one of several data-parallel workers (minicnn.distributed); rank 0 alone prints
        self.comm = comm
        self.log = log = log if comm is None or comm.is_writer else (lambda *args, **kwargs: None)
        # Everything that can be refused cheaply is refused before the data is decoded:
        # --out, an existing run, --resume's checkpoint and settings, --init-from, attacks.
        hint = ("for a run of minutes on the CPU, use --model simple_cnn"
                if cfg.device == "cpu" and cfg.model != "simple_cnn" else "")
        self.job = Run(cfg, CHECKPOINT_FORMAT, "a minicnn training checkpoint", RUN_DEFINING, METRICS_FIELDS,
                       log=log, saved_defaults=SAVED_DEFAULTS, estimate_hint=hint)
        if cfg.adversarial != "none":
            self._adversarial_examples()
        init = None
        if cfg.init_from is not None and not self.job.resumed:   # (a resumed run has its weights in last.npz)
            init = read_init(cfg.init_from)
            check_architecture(cfg.model, init, cfg.init_from)
        desc = self._data(self.job.checkpoint or init)
        self._network(init)
        self._learning()
        self.job.track(model_name=cfg.model, num_classes=len(self.classes), classes=self.classes,
                       model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, ema=self.ema,
                       norm_mean=self.norm[0], norm_std=self.norm[1], best_acc=lambda: self.best_acc)
        self.best_acc = float(self.job.checkpoint["best_acc"]) if self.job.resumed else -1.0
        if comm is not None:             # same data everywhere, shards of every batch, one writer
            comm.attach(self)
        self._log_setup(desc)

    history = property(lambda self: self.job.history, doc="one metrics row per epoch done")
    stop_reason = property(lambda self: self.job.stop_reason, doc="None, 'SIGINT', 'SIGTERM' or 'max-minutes'")

    # ---- setup ------------------------------------------------------------------
    def _data(self, source):
        """Datasets, the validation split, the normalisation statistics and the loaders; returns their description.

        The statistics are the training images' own, or those the loaded
        weights (``source``: a resumed or fine-tuned checkpoint) were trained with.
        """
        cfg = self.cfg
        train_full, self.test_set, desc = load_datasets(cfg.data, progress=cfg.progress)
        self.classes = list(train_full.classes)
        self.train_set, self.val_set = self._split(train_full)
        norm = ((source["norm_mean"], source["norm_std"]) if source is not None and "norm_mean" in source
                else channel_stats(self.train_set))
        self.norm = (np.asarray(norm[0], dtype=np.float64), np.asarray(norm[1], dtype=np.float64))
        self._build_loaders()
        return desc

    def _network(self, init):
        """The model, seeded; fine-tuning (--init-from, --freeze), whitening; ``fit_model`` for adversarial training."""
        cfg = self.cfg
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
            self._whiten_first_layer(compute=not self.job.resumed and init is None)
        self.model.to(cfg.device)
        self.fit_model = self.model
        if cfg.adversarial != "none":    # the attacks work on [0, 1] pixels: normalise inside the model
            self.fit_model = nn.Sequential(OrderedDict([("normalize", nn.Normalize(*self.norm)),
                                                        ("net", self.model)]))
            self.fit_model.to(cfg.device)

    def _learning(self):
        """The loss (with --l1/--l2 terms), the optimizer, the schedule and the weight average."""
        cfg = self.cfg
        # The weights the penalties and --max-norm act on (no biases, no batchnorm, nothing frozen).
        self.regularised = regularised_parameters(self.model)
        if (cfg.l1 or cfg.l2 or cfg.max_norm) and not self.regularised:
            raise TrainingError("--l1/--l2/--max-norm: the model has no trainable weight to regularise")
        self.loss_fn = regularised_loss(functools.partial(F.cross_entropy, label_smoothing=cfg.label_smoothing),
                                        self.regularised, l1=cfg.l1, l2=cfg.l2)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, len(self.train_loader))
        self.ema = EMA(self.model, decay=cfg.ema, every=EMA_EVERY) if cfg.ema else None

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
        if cfg.init_from is not None and not self.job.resumed:
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

    # ---- one epoch ----------------------------------------------------------------
    def _adversarial_examples(self):
        """``minicnn.attacks.adversarial_examples``, imported only when adversarial training asks for it."""
        try:
            from ..attacks import adversarial_examples
        except ImportError as e:
            raise TrainingError(f"--adversarial {self.cfg.adversarial} needs minicnn.attacks, which cannot "
                                f"be imported ({e})") from None
        return adversarial_examples

    def _batches(self, show):
        """The training batches of this epoch, from the run's step on, each seeded for dropout.

        For adversarial training each batch of [0, 1] images is replaced by
        adversarial examples of the current model (the attack runs it in eval mode).
        """
        cfg, job = self.cfg, self.job
        attack = self._adversarial_examples() if cfg.adversarial != "none" else None
        for images, labels in job.batches(self.train_loader, show):
            if attack is not None:
                seed = int(np.random.SeedSequence([cfg.seed, job.epoch, job.step, 1]).generate_state(1)[0])
                adv = attack(self.fit_model, images, labels, method=cfg.adversarial, eps=cfg.adv_eps,
                             steps=cfg.adv_steps, seed=seed)
                images = adv if isinstance(adv, Tensor) else Tensor(adv)
            _seed_step(cfg.seed, job.epoch, job.step)
            yield images, labels

    def train_epoch(self):
        """One epoch of ``fit`` from the run's position; returns (mean loss, accuracy, images/s, seconds)."""
        cfg, job = self.cfg, self.job

        def after_step(logits, labels, loss):
            if cfg.max_norm:                        # the constraint, right after optimizer.step()
                apply_max_norm(self.regularised, cfg.max_norm)
            if self.ema is not None:
                self.ema.update()
            loss_value = loss.item()
            if cfg.check_finite and not np.isfinite(loss_value):
                raise TrainingError(
                    f"the loss became {loss_value} at epoch {job.epoch + 1}, step {job.step + 1}; "
                    f"training stopped and {job.kept_checkpoint()}. "
                    f"Try a lower learning rate (now --lr {cfg.lr}).")
            sums = dict(loss_sum=loss_value * labels.shape[0], seen=labels.shape[0],
                        correct=int((logits.data.argmax(axis=1) == labels.data).sum()))
            job.add(**(sums if self.comm is None else self.comm.sum_values(sums)))   # (data-parallel: all workers')

        def show(p):
            return dict(loss=f"{p['loss_sum'] / p['seen']:.3f}", acc=f"{100 * p['correct'] / p['seen']:.1f}%",
                        img_s=f"{p['seen'] / max(p['elapsed'], 1e-9):.0f}")

        batches = self._batches(show)
        optimizer, fed = self.optimizer, batches
        if self.comm is not None:       # data-parallel: the optimizer's step first averages the gradients (docs/17)
            optimizer, fed = self.comm.averaging(self.optimizer, batches)
        try:
            # A diverging run overflows before the loss check sees it: that check,
            # not a stream of NumPy warnings, is how it gets reported.
            with np.errstate(over="ignore", invalid="ignore"):
                fit(self.fit_model, fed, optimizer, self.loss_fn, epochs=1, scheduler=self.scheduler,
                    on_step=after_step)
        finally:
            batches.close()
        part = job.partial
        seen, elapsed = max(part.get("seen", 0), 1), max(part["elapsed"], 1e-9)
        return part.get("loss_sum", 0.0) / seen, part.get("correct", 0) / seen, part.get("seen", 0) / elapsed, elapsed

    def _check_weights_finite(self):
        """Refuse to checkpoint weights that an update made NaN/inf."""
        if not self.cfg.check_finite:
            return
        for name, p in self.model.named_parameters():
            if not bool(p.xp.isfinite(p.data).all()):
                raise TrainingError(
                    f"parameter {name} became NaN/inf during epoch {self.job.epoch}; training stopped and "
                    f"{self.job.kept_checkpoint()}. Try a lower learning rate (now --lr {self.cfg.lr}).")

    # ---- the run ------------------------------------------------------------------
    def run(self):
        """Train to ``cfg.epochs`` and return the test accuracy.

        Ctrl-C or SIGTERM lets the current step finish, writes last.npz
        (resumable, also mid-epoch) and returns None (``stop_reason`` says
        which); so does Ctrl-C during the final test, at once. At the
        ``max_minutes`` cap training stops the same way, then the test set
        is evaluated and its accuracy returned.
        """
        apply_process_settings()         # allocator and BLAS threads for a long job (never at import)
        cfg, job = self.cfg, self.job
        with job:                        # the folder; Ctrl-C / SIGTERM save last.npz after the step
            for epoch in job.epochs():
                lr = job.partial.setdefault("lr", float(self.optimizer.param_groups[0]["lr"]))   # at the epoch's start
                train_loss, train_acc, rate, elapsed = self.train_epoch()
                if self.comm is not None:                # every worker: rank 0's batchnorm statistics
                    self.comm.broadcast_state(self.model)
                row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                       "val_loss": "", "val_acc": "", "epoch_time_s": round(elapsed, 2),
                       "images_per_s": round(rate, 1)}
                line = (f"epoch {epoch + 1:3d}/{cfg.epochs}  lr {lr:.4g}  train loss {train_loss:.4f} "
                        f"acc {100 * train_acc:5.2f}%")
                score = train_acc
                if self.val_loader is not None:
                    with self._evaluated_weights():      # (test-time augmentation is for the test only)
                        val_loss, val_acc, _ = evaluate(self.model, self.val_loader, len(self.classes),
                                                        reduce=self.comm and self.comm.reduce_evaluation)
                    row.update(val_loss=val_loss, val_acc=val_acc)
                    line += f"  val loss {val_loss:.4f} acc {100 * val_acc:5.2f}%"
                    score = val_acc
                job.end_epoch(row, line + f"  {elapsed:.0f}s ({rate:.0f} img/s)", save=False)
                self._check_weights_finite()
                if job.epoch == cfg.epochs and self.ema is not None:
                    self.ema.copy_to()                       # a finished run keeps the averaged weights
                if score > self.best_acc:
                    self.best_acc = score
                    with self._evaluated_weights():
                        job.save(job.best_path)
                job.save()                                   # last.npz and metrics.csv
                if job.writer:
                    plot_curves(job.history, os.path.join(cfg.out, "curves.png"))
        if job.interrupted:
            return None
        if job.stop_reason == "max-minutes":
            self.log("testing the model as it is")
        try:
            return self.test()
        except KeyboardInterrupt:         # Ctrl-C during the test: stop now (the trained model is saved)
            job.stop_reason = "SIGINT"
            self.log(f"\ninterrupted (SIGINT) during the test: the trained model is saved in {job.last_path}; "
                     f"test it with: minicnn eval --checkpoint {job.last_path}")
            return None

    def _evaluated_weights(self):
        """The weights that are evaluated and kept: the EMA average (``--ema``) applied for the block, else the model's."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def test(self):
        """Evaluate on the test set; print the report, write test.json and confusion.png; return the accuracy."""
        self.job.make_folder()
        views = f" with test-time augmentation ({self.cfg.tta})" if self.cfg.tta != "none" else ""
        self.log(f"testing on {len(self.test_set):,} images{views}")
        with self._evaluated_weights():
            test_loss, test_acc, confusion = evaluate(self.model, self.test_loader, len(self.classes), tta=self.cfg.tta,
                                                      reduce=self.comm and self.comm.reduce_evaluation)
        self.log(format_report(test_acc, confusion, self.classes))
        if not self.job.writer:
            return test_acc
        plot_confusion(confusion, self.classes, os.path.join(self.cfg.out, "confusion.png"))
        with open(os.path.join(self.cfg.out, "test.json"), "w") as f:
            json.dump({"test_accuracy": test_acc, "test_loss": test_loss, "epochs_done": self.job.epoch,
                       "steps_into_next_epoch": self.job.step, "confusion": confusion.tolist(),
                       "classes": self.classes}, f, indent=1)
        return test_acc

