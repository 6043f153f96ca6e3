"""``minicnn train`` and ``minicnn eval``: training on CIFAR-10 and the test accuracy of a checkpoint."""
from .common import CLIError, HelpFormatter, integer, number, positive_int, positive_number, prepare_run


def non_negative(text):
    """argparse type: a finite number >= 0 (a penalty's weight)."""
    import argparse

    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


non_negative.__name__ = "non-negative number"

TRAIN_DESCRIPTION = """\
Train a CNN on CIFAR-10 and report its test accuracy.

With no options it runs the fast recipe: fast_cnn, a small VGG-like network
with a patch-whitening first layer, trained for a few epochs on all 50,000
training images with the tricks of the fast CIFAR-10 recipes (see
docs/13-fast-recipe.md), then tested with flipped and shifted views. Naming a
--model selects the standard recipe: simple_cnn trains 15 one-cycle epochs;
the ResNets default to the ResNet paper's recipe (182 epochs, lr 0.1 divided
by 10 at 50% and 75% of training, weight decay 1e-4): hours on a GPU, days on
a CPU. After the first steps the
command prints an estimate of the training time. Ctrl-C or SIGTERM saves a
checkpoint; the same command plus --resume continues it."""

TRAIN_EXAMPLES = """\
examples:
  minicnn train                                                          # the fast recipe (CPU, minutes)
  minicnn train --ema 0 --tta none --out runs/no-ema-tta                  # the fast recipe without two tricks
  minicnn train --model simple_cnn --epochs 15 --out runs/simple_cnn     # the standard recipe
  minicnn train --model resnet20 --device gpu --out runs/resnet20        # the paper's recipe, on a GPU
  minicnn train --model resnet20 --epochs 5 --max-minutes 30             # a capped CPU run
  minicnn train --adversarial pgd --adv-eps 8/255 --out runs/robust      # adversarial training
  mpiexec -n 2 minicnn train --model simple_cnn --out runs/dp            # data-parallel, 2 workers (docs/17)
  minicnn train --l2 2.5e-4 --weight-decay 0 --max-norm 3 --out runs/l2   # regularisers (docs/11)
  minicnn train --init-from runs/simple_cnn/best.npz --freeze backbone --data ./pets --out runs/ft
                                                  # fine-tuning: a new head for pets' classes (docs/12)

--l2 LAMBDA adds LAMBDA * sum(w^2) to the loss (gradient 2*LAMBDA*w): the same
update as --weight-decay 2*LAMBDA with SGD or Adam, but it shows in the
training loss; the two add up (pass --weight-decay 0 to use --l2 alone).
--freeze patterns are globs over parameter names ('*' matches dots too; a
module's name matches all its parameters; 'backbone' is everything but the
head); batchnorm layers whose parameters are all frozen keep their running
statistics (eval mode) while the rest trains."""

EVAL_EXAMPLES = """\
examples:
  minicnn eval --checkpoint runs/simple_cnn/best.npz
  minicnn eval --checkpoint runs/resnet20/last.npz --data ./data/cifar10-jpeg --device gpu
  minicnn eval --checkpoint runs/a/best.npz runs/b/best.npz runs/c/best.npz   # an ensemble

With several checkpoints, the models' softmax probabilities are averaged
(each model normalises the pixels with its own training statistics); the
table gives each model's and the ensemble's accuracy. Checkpoints trained on
different class lists are refused."""

DATA_HELP = ("CIFAR-10 location: an image-folder tree with train/ and test/, or a folder with "
             "cifar-10-batches-py/ or cifar-10-python.tar.gz, or 'download'. Default: the first found of "
             "$MINICNN_DATA, ./data/cifar10-jpeg, ./data/cifar-10-batches-py, ./data, "
             "../shared/data/cifar10-jpeg, the same beside the minicnn checkout (CHECKOUT/data/cifar10-jpeg, "
             "CHECKOUT/data, CHECKOUT/../shared/data/cifar10-jpeg), ~/.cache/minicnn/data")


def add_parser(sub):
    from ..models import MODELS
    from ..train.config import ADVERSARIAL_METHODS, DEFAULT_MODEL, FLIPS, PAD_MODES, RECIPES, SCHEDULES
    from ..train.evaluation import TTA_MODES

    t = sub.add_parser("train", help="train a model on CIFAR-10", description=TRAIN_DESCRIPTION,
                       epilog=TRAIN_EXAMPLES, formatter_class=HelpFormatter)
    fast, std = RECIPES["fast"], RECIPES["standard"]
    t.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="fast (the default when no --model is given) or standard (the default with --model); "
                        "every option below overrides the recipe's value")
    t.add_argument("--model", default=None, choices=sorted(MODELS), metavar="MODEL",
                   help=f"architecture, one of: {', '.join(sorted(MODELS))} (default: {fast['model']} for the "
                        f"fast recipe, {DEFAULT_MODEL} for the standard one)")
    t.add_argument("--data", default=None, help=DATA_HELP)
    t.add_argument("--epochs", type=positive_int, default=None,
                   help=f"epochs to train (default: fast {fast['epochs']}; standard 182 for the ResNets, 15 "
                        f"for the other models)")
    t.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"images per step (default: fast {fast['batch_size']}, standard {std['batch_size']})")
    t.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="sgd or adam")
    t.add_argument("--lr", type=positive_number, default=None,
                   help=f"(peak) learning rate (default: fast {fast['lr']}; standard 0.1 for the ResNets, 0.05 "
                        f"for the other models)")
    t.add_argument("--bias-lr-scale", type=positive_number, default=None, metavar="S",
                   help=f"biases and batchnorm shifts train at lr * S (default: fast {fast['bias_lr_scale']:g}, "
                        f"standard 1)")
    t.add_argument("--momentum", type=number, default=None,
                   help=f"SGD momentum for the step, cosine and triangle schedules (one-cycle cycles it "
                        f"0.95-0.85; default: fast {fast['momentum']}, standard {std['momentum']})")
    nes = t.add_mutually_exclusive_group()
    nes.add_argument("--nesterov", dest="nesterov", action="store_true", default=None,
                     help="Nesterov momentum (default: on in the fast recipe)")
    nes.add_argument("--no-nesterov", dest="nesterov", action="store_false", help="plain momentum")
    t.add_argument("--weight-decay", type=number, default=None,
                   help=f"L2 weight decay on conv and linear weights (default: fast {fast['weight_decay']:g}; "
                        f"standard 1e-4 for the ResNets, 5e-4 for the other models)")
    t.add_argument("--schedule", choices=list(SCHEDULES), default=None,
                   help="learning-rate schedule: step (/10 at 50%% and 75%%), cosine, onecycle, or triangle "
                        "(linear up to the peak at 25%%, then down; default: triangle for the fast recipe, "
                        "step for the ResNets, onecycle for the other models)")
    t.add_argument("--label-smoothing", type=number, default=None,
                   help=f"label smoothing in [0, 1] (default: fast {fast['label_smoothing']}, standard 0)")
    aug = t.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=True,
                     help="flips and translations as --flip and --translate say (default: on)")
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="no augmentation")
    t.add_argument("--flip", choices=list(FLIPS), default=None,
                   help="horizontal flips: random (half the images, anew each epoch), alternating (each image "
                        "mirrored every other epoch) or none (default: fast alternating, standard random)")
    t.add_argument("--translate", type=integer, default=None, metavar="PX",
                   help=f"random shifts of up to PX pixels (default: fast {fast['translate']}, standard "
                        f"{std['translate']})")
    t.add_argument("--pad-mode", choices=list(PAD_MODES), default=None,
                   help="what fills the border a shift uncovers (default: fast reflect, standard zeros)")
    t.add_argument("--ema", type=number, default=None, metavar="DECAY",
                   help=f"evaluate and keep an exponential moving average of the weights with this decay per "
                        f"step; 0: none (default: fast {fast['ema']}, standard 0)")
    t.add_argument("--tta", choices=list(TTA_MODES), default=None,
                   help="test-time augmentation: average the logits over mirrored (flip) and also 1-pixel "
                        "shifted (flip-translate) views (default: fast flip-translate, standard none)")
    wh = t.add_mutually_exclusive_group()
    wh.add_argument("--whiten", dest="whiten", action="store_true", default=None,
                    help="set the first convolution by patch whitening of training images and freeze it "
                         "(fast_cnn; default: on in the fast recipe)")
    wh.add_argument("--no-whiten", dest="whiten", action="store_false",
                    help="train the first convolution from its random initialisation")
    t.add_argument("--val-split", type=integer, default=None,
                   help=f"training images held out for validation, 0: none (default: fast {fast['val_split']}, "
                        f"standard {std['val_split']})")
    t.add_argument("--subset", type=positive_int, default=None,
                   help="train on only N images, validate on N/5 (quick runs)")
    t.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to train")
    t.add_argument("--seed", type=integer, default=0, help="seed of the initialisation, shuffle and augmentation")
    t.add_argument("--out", default=None, help="output folder (default: runs/<model>)")
    t.add_argument("--resume", action="store_true", help="continue the run saved in OUT/last.npz")
    t.add_argument("--max-minutes", type=positive_number, default=None, metavar="M",
                   help="stop training after M minutes of wall-clock time (after the current step), save a "
                        "checkpoint and test the model as it is (default: no cap)")
    t.add_argument("--adversarial", choices=ADVERSARIAL_METHODS, default="none",
                   help="adversarial training: each batch is replaced by its FGSM or PGD adversarial examples")
    t.add_argument("--adv-eps", type=positive_number, default=8 / 255, metavar="EPS",
                   help="L-inf size of the adversarial perturbation, on [0, 1] pixels; fractions such as "
                        "8/255 are accepted (default: 8/255)")
    t.add_argument("--adv-steps", type=positive_int, default=7, help="PGD steps")
    reg = t.add_argument_group("regularisers (docs/11-regularisation.md)")
    reg.add_argument("--l1", type=non_negative, default=0.0, metavar="LAMBDA",
                     help="add LAMBDA * sum |w| over the conv and linear weights (no biases, no batchnorm) "
                          "to the loss")
    reg.add_argument("--l2", type=non_negative, default=0.0, metavar="LAMBDA",
                     help="add LAMBDA * sum w^2 over the same weights to the loss; = --weight-decay 2*LAMBDA "
                          "(the two add up)")
    reg.add_argument("--max-norm", type=positive_number, default=None, metavar="C",
                     help="after each step, scale every unit's weight vector (a filter, a row of a linear "
                          "layer) with L2 norm above C back to norm C (default: none)")
    ft = t.add_argument_group("fine-tuning (docs/12-fine-tuning.md)")
    ft.add_argument("--init-from", default=None, metavar="CKPT",
                    help="start from this checkpoint's weights (a .npz, or a .safetensors file: docs/15-interop.md; "
                         "same architecture as --model); the head is "
                         "re-initialised when the data's classes differ from the checkpoint's")
    ft.add_argument("--freeze", action="append", default=None, metavar="PATTERN",
                    help="do not train the parameters whose names match this glob (repeatable; '*' matches "
                         "dots too; a module's name matches all its parameters; 'backbone' = all but the head)")
    t.add_argument("--sync-bn", action="store_true",
                   help="data-parallel runs (mpiexec -n K minicnn train ...): batchnorm uses the statistics of "
                        "the whole global batch, as one process does, not each worker's shard (docs/17)")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    t.add_argument("--report", action="store_true", help="at the end, write OUT/report.html (see minicnn report)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="test accuracy of a checkpoint",
                       description="The test accuracy, per-class accuracy and confusion matrix of a\n"
                                   "checkpoint written by minicnn train. Only the test split is read.",
                       epilog=EVAL_EXAMPLES, formatter_class=HelpFormatter)
    e.add_argument("--checkpoint", required=True, nargs="+", metavar="FILE",
                   help="a .npz written by minicnn train (OUT/best.npz or OUT/last.npz); several: an ensemble")
    e.add_argument("--data", default=None, help=DATA_HELP)
    e.add_argument("--model", default=None, choices=sorted(MODELS), metavar="MODEL",
                   help="model to load the weights into (default: the checkpoint's own)")
    e.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to evaluate")
    e.add_argument("--tta", choices=list(TTA_MODES), default="none",
                   help="test-time augmentation: average the logits over mirrored (flip) and also 1-pixel shifted "
                        "(flip-translate) views (one checkpoint only)")
    e.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    e.set_defaults(func=cmd_eval)


def cmd_train(args):
    import contextlib
    import functools

    from ..distributed import communicator
    from ..interop import read_weights_file      # --init-from: a minicnn .npz or a .safetensors file
    from ..train import TrainConfig, Trainer
    from ..train.config import recipe_model
    from ..train.datasets import load_datasets

    cfg = prepare_run(args, TrainConfig, out=args.out or f"runs/{args.model or recipe_model(args.recipe)}",
                      freeze=list(args.freeze or []))
    read_init = functools.partial(read_weights_file, model_name=args.model)
    comm = communicator(args.device, sync_bn=args.sync_bn)     # None unless started by mpiexec -n K, K > 1
    with contextlib.nullcontext() if comm is None else comm.abort_on_error("train"):
        if comm is not None:                                    # one of K data-parallel workers
            cfg.progress = cfg.progress and comm.is_writer
            comm.writer_first(lambda: load_datasets(cfg.data, progress=False))   # decoded (and cached) once
        trainer = Trainer(cfg, read_init=read_init, comm=comm)
        acc = trainer.run()
    if acc is not None:
        if args.report and (comm is None or comm.is_writer):   # the run's HTML page (minicnn report OUT)
            from .report import write
            write(cfg.out)
        return 0
    return 143 if trainer.stop_reason == "SIGTERM" else 130     # 128 + the signal's number, as a shell reports it


def cmd_eval(args):
    from ..train import evaluate_checkpoint, evaluate_checkpoints

    prepare_run(args)
    if len(args.checkpoint) == 1:
        evaluate_checkpoint(args.checkpoint[0], data=args.data, device=args.device, model_name=args.model,
                            progress=args.progress, tta=args.tta)
    else:
        if args.tta != "none":
            raise CLIError("--tta works with one --checkpoint, not with an ensemble")
        evaluate_checkpoints(args.checkpoint, data=args.data, device=args.device, model_name=args.model,
                             progress=args.progress)
    return 0
