"""``minicnn doctor`` (the debugging checklist, run on a model and recipe) and ``minicnn summary`` (what each layer costs).

The work is ``minicnn.doctor.examine`` and ``minicnn.summary.summary``; this
module builds the model, the data pipeline of ``minicnn train`` (a random
subset of the training images, so the doctor takes seconds to a minute)
and the optimizer from the options, then prints the report.
"""
import argparse
import os
import re
import sys

from .common import CLIError, HelpFormatter, check_device, output_folder, positive_int

DOCTOR_EXAMPLES = """\
examples:
  minicnn doctor --model simple_cnn                       # the recipe minicnn train would use
  minicnn doctor --model resnet20 --lr 0.1 --batch-size 128 --out runs/doctor
  minicnn doctor --checkpoint runs/simple_cnn/best.npz    # a trained model (pixels in [0, 1] in)

One line per check: OK / WARN / FAIL, the number measured, what it means and
what to try. Exit status 0 when nothing FAILs, 1 when a check FAILs, 2 on a
usage error. --out gets report.md, report.json, lr_range.png, activations.png.
"""

SUMMARY_EXAMPLES = """\
examples:
  minicnn summary --model resnet20
  minicnn summary --model lenet5 --input-shape 3x32x32 --batch-size 256
  minicnn summary --checkpoint runs/simple_cnn/best.npz --markdown

MACs count the multiply-accumulates of convolutions and linear layers (bias
additions not counted) for one image; parameters exclude buffers (batchnorm's
running statistics), which get their own column.
"""


def input_shape(text):
    """argparse type: '3x32x32', '3,32,32' or '1x3x32x32' -> a tuple of positive ints."""
    parts = [p for p in re.split(r"[x,\s]+", text.strip().lower()) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) not in (3, 4) or any(v <= 0 for v in shape):
        raise argparse.ArgumentTypeError(f"must be C x H x W or N x C x H x W of positive integers "
                                         f"(like 3x32x32), got {text!r}")
    return shape


def learning_rate(text):
    """argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number (like 0.1), got {text!r}")
    return v


def non_negative(text):
    """argparse type: a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return v


def add_parser(sub):
    from ..doctor import CHECKS
    from ..models import MODELS

    d = sub.add_parser("doctor", help="run the debugging checklist on a model and its training recipe",
                       description="Run the lectures' debugging checklist (data, loss at init, final layer, "
                                   "gradients, initialisation, batch independence, overfit one batch, "
                                   "learning rate, batch size and regularisation) on a model and the "
                                   "minicnn train recipe. The model is never trained: each check uses a copy.",
                       formatter_class=HelpFormatter, epilog=DOCTOR_EXAMPLES)
    d.add_argument("--model", default="simple_cnn", choices=sorted(MODELS), help="architecture")
    d.add_argument("--checkpoint", default=None,
                   help="examine a trained model from minicnn train instead (its own normalisation first)")
    d.add_argument("--data", default=None, help="CIFAR-10 location, as for minicnn train (default: searched for)")
    d.add_argument("--lr", type=learning_rate, default=None,
                   help="learning rate of the recipe (default: minicnn train's for the model)")
    d.add_argument("--batch-size", type=positive_int, default=None,
                   help="batch size of the recipe (default: minicnn train's, 128 for the standard recipe)")
    d.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                   help="optimizer of the recipe (default: minicnn train's, sgd)")
    d.add_argument("--momentum", type=non_negative, default=None, help="SGD momentum (default: minicnn train's)")
    d.add_argument("--weight-decay", type=non_negative, default=None,
                   help="weight decay on conv/linear weights (default: minicnn train's for the model)")
    aug = d.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=True,
                     help="the recipe uses random crops and flips (default)")
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="it does not")
    d.add_argument("--subset", type=positive_int, default=1024,
                   help="training images the doctor reads (a random subset)")
    d.add_argument("--checks", default=None,
                   help=f"comma-separated checks to run (default all: {','.join(CHECKS)})")
    d.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where the checks run")
    d.add_argument("--seed", type=int, default=0, help="seeds the subset, the loader and the checks")
    d.add_argument("--out", default=None, help="folder for report.md, report.json and the figures")
    d.set_defaults(func=cmd_doctor)

    s = sub.add_parser("summary", help="per-layer output shapes, parameters, MACs and receptive fields",
                       description="One row per layer: output shape, parameters (and buffers), "
                                   "multiply-accumulates, theoretical receptive field and jump; totals "
                                   "with the activation memory of a training step.",
                       formatter_class=HelpFormatter, epilog=SUMMARY_EXAMPLES)
    s.add_argument("--model", default="resnet20", choices=sorted(MODELS), help="architecture")
    s.add_argument("--checkpoint", default=None, help="summarise a trained model (with its Normalize layer)")
    s.add_argument("--input-shape", type=input_shape, default="3x32x32", help="C x H x W (or N x C x H x W)")
    s.add_argument("--batch-size", type=positive_int, default=128,
                   help="batch size for the activation memory of a training step")
    s.add_argument("--num-classes", type=positive_int, default=10, help="classes of the --model")
    s.add_argument("--markdown", action="store_true", help="print a markdown table")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_summary)


def _load_checkpoint_model(path, device="cpu"):
    from ..checkpoint import load_model
    from ..errors import CheckpointError

    try:
        return load_model(path, device=device)
    except CheckpointError as e:
        raise CLIError(str(e)) from None


# ------------------------------------------------------------------ summary
def cmd_summary(args):
    import json

    from ..models import get_model
    from ..summary import SummaryError, summary

    model = (_load_checkpoint_model(args.checkpoint) if args.checkpoint
             else get_model(args.model, num_classes=args.num_classes))
    shape = args.input_shape if len(args.input_shape) == 4 else (1,) + args.input_shape
    try:
        result = summary(model, shape, batch_size=args.batch_size)
    except SummaryError as e:
        raise CLIError(f"--input-shape {'x'.join(map(str, args.input_shape))}: {e}") from None
    name = args.checkpoint or args.model
    if args.json:
        print(json.dumps(dict(result.to_dict(), model=name), indent=2))
    elif args.markdown:
        print(f"### {name}\n")
        print(result.to_markdown())
    else:
        print(f"{name}")
        print(result)
    return 0


# ------------------------------------------------------------------- doctor
def _datasets(args):
    from ..errors import TrainingError
    from ..train import load_datasets

    try:
        train, test, where = load_datasets(args.data, progress=sys.stderr.isatty())
    except TrainingError as e:
        raise CLIError(str(e)) from None
    return train, test, where


def _loaders(args, batch_size, train, test, with_normalize):
    """The minicnn train pipeline on a random subset: (train_loader, test_loader)."""
    import numpy as np

    from ..data import (Compose, DataLoader, Normalize, RandomCrop, RandomHorizontalFlip, Subset, ToFloat,
                        channel_stats)

    rng = np.random.default_rng(args.seed)
    sub = Subset(train, np.sort(rng.permutation(len(train))[:min(args.subset, len(train))]))
    steps = []
    if args.augment:
        size = train.images.shape[-1] if hasattr(train, "images") else 32
        steps += [RandomCrop(size, padding=4), RandomHorizontalFlip()]
    steps.append(ToFloat())
    if with_normalize:
        mean, std = channel_stats(sub)
        steps.append(Normalize(mean, std))
    loader = DataLoader(sub, batch_size=batch_size, shuffle=True, transform=Compose(steps),
                        seed=args.seed, device=args.device, prefetch=False)
    test_loader = None
    if test is not None:
        test_sub = Subset(test, np.sort(rng.permutation(len(test))[:min(1000, len(test))]))
        test_loader = DataLoader(test_sub, batch_size=256, device=args.device, prefetch=False)
    return loader, test_loader


RECIPE_FIELDS = ("recipe", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "bias_lr_scale",
                 "schedule", "epochs")


def _recipe(args, arch, trained_with=None):
    """The completed ``minicnn train`` configuration for ``arch``: the doctor's options first, then what a
    checkpoint was trained with (``trained_with``, its saved config), then minicnn train's defaults."""
    from ..errors import TrainingError
    from ..train import TrainConfig, complete_config

    given = dict(batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    saved = {k: v for k, v in (trained_with or {}).items() if k in RECIPE_FIELDS and v is not None}
    fields = dict(saved, **{k: v for k, v in given.items() if v is not None})
    fields["optimizer"] = args.optimizer if args.optimizer is not None else saved.get("optimizer", "sgd")
    try:
        return complete_config(TrainConfig(model=arch, **fields))
    except (TrainingError, TypeError) as e:
        raise CLIError(f"the recipe of {arch}: {e}") from None


def _optimizer_factory(cfg):
    """``model -> optimizer``: minicnn train's optimizer for ``cfg`` (groups, weight decay, nesterov)."""
    from ..train import build_optimizer

    return lambda model: build_optimizer(model, cfg)


def _start_lr(cfg, model, steps_per_epoch):
    """The rate minicnn train's schedule for ``cfg`` starts from (a one-cycle warm-up's first rate, else lr)."""
    import copy

    from ..train import build_optimizer, build_scheduler

    optimizer = build_optimizer(copy.deepcopy(model), cfg)
    build_scheduler(optimizer, cfg, max(1, steps_per_epoch))
    return float(optimizer.param_groups[0]["lr"])


def cmd_doctor(args):
    import json

    from ..doctor import CHECKS, Settings, examine
    from ..models import get_model

    check_device(args.device)
    if args.out:
        output_folder(args.out)
    checks = None
    if args.checks:
        checks = [c.strip() for c in args.checks.split(",") if c.strip()]
        unknown = [c for c in checks if c not in CHECKS]
        if unknown:
            raise CLIError(f"--checks: unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    train, test, where = _datasets(args)
    arch, trained_with = args.model, None
    if args.checkpoint:
        from ..checkpoint import load_checkpoint

        model = _load_checkpoint_model(args.checkpoint, args.device)
        ckpt = load_checkpoint(args.checkpoint)
        arch = ckpt["model_name"]
        trained_with = json.loads(str(ckpt.get("config") or "{}"))
        name = f"{args.checkpoint} ({arch})"
    else:
        from ..nn import init as nn_init

        nn_init.manual_seed(args.seed)     # the same --seed gives the same initial weights, hence the same report
        model = get_model(args.model, num_classes=len(train.classes)).to(args.device)
        name = args.model
    cfg = _recipe(args, arch, trained_with)
    loader, test_loader = _loaders(args, cfg.batch_size, train, test, with_normalize=not args.checkpoint)
    settings = Settings(seed=args.seed, max_samples=max(args.subset, 64))
    optimizer = (f"{cfg.optimizer} lr {cfg.lr:g} ({cfg.schedule} schedule)"
                 + (f", momentum {cfg.momentum:g}{' (nesterov)' if cfg.nesterov else ''}" if cfg.optimizer == "sgd"
                    else ""))
    print(f"minicnn doctor: {name} on {where}, {len(loader.dataset)} of {len(train)} training images; "
          f"{'the recipe it was trained with' if trained_with else f'the recipe of minicnn train --model {arch}'}: batch {cfg.batch_size}, {optimizer}, "
          f"weight decay {cfg.weight_decay:g}{', augmented' if args.augment else ''}", flush=True)
    start_lr = _start_lr(cfg, model, len(train) // cfg.batch_size)
    report = examine(model, loader, _optimizer_factory(cfg), start_lr=start_lr, test_loader=test_loader,
                     train_size=len(train), augment=args.augment, checks=checks, settings=settings,
                     out=args.out, log=lambda line: print(line, flush=True))
    print()
    print(report)
    if args.out:
        print(f"\nreport: {os.path.join(args.out, 'report.md')}, {os.path.join(args.out, 'report.json')}")
    return 0 if report.ok else 1
