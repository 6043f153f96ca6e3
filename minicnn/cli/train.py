"""``minicnn train`` and ``minicnn eval``: training on CIFAR-10 and the test accuracy of a checkpoint."""
from .common import HelpFormatter, check_device, integer, number, positive_int, positive_number

TRAIN_DESCRIPTION = """\
Train a CNN on CIFAR-10 and report its test accuracy.

With no options it trains simple_cnn for 15 epochs with a one-cycle schedule:
minutes on a CPU, about 79% test accuracy. The ResNets default to the ResNet
paper's recipe (182 epochs, lr 0.1 divided by 10 at 50% and 75% of training,
weight decay 1e-4): hours on a GPU, days on a CPU. After the first steps the
command prints an estimate of the training time. Ctrl-C or SIGTERM saves a
checkpoint; the same command plus --resume continues it."""

TRAIN_EXAMPLES = """\
examples:
  minicnn train --model simple_cnn --epochs 15 --out runs/simple_cnn     # CPU, minutes
  minicnn train --model resnet20 --device gpu --out runs/resnet20        # the paper's recipe, on a GPU
  minicnn train --model resnet20 --epochs 5 --max-minutes 30             # a capped CPU run
  minicnn train --adversarial pgd --adv-eps 8/255 --out runs/robust      # adversarial training"""

EVAL_EXAMPLES = """\
examples:
  minicnn eval --checkpoint runs/simple_cnn/best.npz
  minicnn eval --checkpoint runs/resnet20/last.npz --data ./data/cifar10-jpeg --device gpu"""

DATA_HELP = ("CIFAR-10 location: an image-folder tree with train/ and test/, or a folder with "
             "cifar-10-batches-py/ or cifar-10-python.tar.gz, or 'download'. Default: the first found of "
             "$MINICNN_DATA, ./data/cifar10-jpeg, ./data/cifar-10-batches-py, ./data, "
             "../shared/data/cifar10-jpeg, ~/.cache/minicnn/data")


def add_parser(sub):
    from ..models import MODELS
    from ..train.config import ADVERSARIAL_METHODS, DEFAULT_MODEL

    t = sub.add_parser("train", help="train a model on CIFAR-10", description=TRAIN_DESCRIPTION,
                       epilog=TRAIN_EXAMPLES, formatter_class=HelpFormatter)
    t.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS), metavar="MODEL",
                   help=f"architecture, one of: {', '.join(sorted(MODELS))}")
    t.add_argument("--data", default=None, help=DATA_HELP)
    t.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs to train (default: 182 for the ResNets, 15 for the other models)")
    t.add_argument("--batch-size", type=positive_int, default=128, help="images per step")
    t.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="sgd or adam")
    t.add_argument("--lr", type=positive_number, default=None,
                   help="(peak) learning rate (default: 0.1 for the ResNets, 0.05 for the other models)")
    t.add_argument("--momentum", type=number, default=0.9,
                   help="SGD momentum for the step and cosine schedules (one-cycle cycles it 0.95-0.85)")
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    t.add_argument("--weight-decay", type=number, default=None,
                   help="L2 weight decay on conv and linear weights (default: 1e-4 for the ResNets, 5e-4 "
                        "for the other models)")
    t.add_argument("--schedule", choices=["step", "cosine", "onecycle"], default=None,
                   help="learning-rate schedule: step (/10 at 50%% and 75%%), cosine or onecycle (default: "
                        "step for the ResNets, onecycle for the other models)")
    t.add_argument("--label-smoothing", type=number, default=0.0, help="label smoothing in [0, 1]")
    aug = t.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=True,
                     help="random 4-pixel-padded crops and horizontal flips (default: on)")
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="no augmentation")
    t.add_argument("--val-split", type=integer, default=5000,
                   help="training images held out for validation (0: none)")
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
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="test accuracy of a checkpoint",
                       description="The test accuracy, per-class accuracy and confusion matrix of a\n"
                                   "checkpoint written by minicnn train. Only the test split is read.",
                       epilog=EVAL_EXAMPLES, formatter_class=HelpFormatter)
    e.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="a .npz written by minicnn train (OUT/best.npz or OUT/last.npz)")
    e.add_argument("--data", default=None, help=DATA_HELP)
    e.add_argument("--model", default=None, choices=sorted(MODELS), metavar="MODEL",
                   help="model to load the weights into (default: the checkpoint's own)")
    e.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to evaluate")
    e.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    e.set_defaults(func=cmd_eval)


def cmd_train(args):
    from ..speed import apply_process_settings
    from ..train import TrainConfig, Trainer

    apply_process_settings()       # allocator and BLAS threads for a long job (never at import minicnn)
    cfg = TrainConfig(model=args.model, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
                      optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                      weight_decay=args.weight_decay, schedule=args.schedule,
                      label_smoothing=args.label_smoothing, augment=args.augment, val_split=args.val_split,
                      subset=args.subset, device=args.device, seed=args.seed,
                      out=args.out or f"runs/{args.model}", resume=args.resume, progress=args.progress,
                      max_minutes=args.max_minutes, adversarial=args.adversarial, adv_eps=args.adv_eps,
                      adv_steps=args.adv_steps)
    check_device(args.device)
    trainer = Trainer(cfg)
    acc = trainer.run()
    if acc is not None:
        return 0
    return 143 if trainer.stop_reason == "SIGTERM" else 130     # 128 + the signal's number, as a shell reports it


def cmd_eval(args):
    from ..speed import apply_process_settings
    from ..train import evaluate_checkpoint

    apply_process_settings()
    check_device(args.device)
    evaluate_checkpoint(args.checkpoint, data=args.data, device=args.device, model_name=args.model,
                        progress=args.progress)
    return 0
