"""``minicnn train`` and ``minicnn eval``: training on CIFAR-10 and the test accuracy of a checkpoint."""
from .common import check_device, positive_int as _positive_int


def add_parser(sub):
    from ..models import MODELS

    t = sub.add_parser("train", help="train a model on CIFAR-10",
                       description="Train a CNN on CIFAR-10. Defaults follow the ResNet paper for "
                                   "ResNets (182 epochs, lr 0.1 /10 at 50%% and 75%%, wd 1e-4) and a "
                                   "15-epoch one-cycle run for the other models.")
    t.add_argument("--model", default="resnet20", choices=sorted(MODELS), help="architecture (default resnet20)")
    t.add_argument("--data", default=None,
                   help="CIFAR-10 location: an image-folder tree with train/ and test/, or a folder with "
                        "cifar-10-batches-py/ or cifar-10-python.tar.gz, or 'download'. Default: "
                        "$MINICNN_DATA, ./data/cifar10-jpeg, ./data, ../shared/data/cifar10-jpeg, "
                        "~/.cache/minicnn/data")
    t.add_argument("--epochs", type=_positive_int, default=None)
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    t.add_argument("--lr", type=float, default=None, help="(peak) learning rate")
    t.add_argument("--momentum", type=float, default=0.9,
                   help="SGD momentum for the step and cosine schedules (one-cycle cycles it 0.95-0.85)")
    t.add_argument("--nesterov", action="store_true")
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--schedule", choices=["step", "cosine", "onecycle"], default=None)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    aug = t.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=True,
                     help="random 4-pixel-padded crops and horizontal flips (default)")
    aug.add_argument("--no-augment", dest="augment", action="store_false")
    t.add_argument("--val-split", type=int, default=5000, help="training images held out for validation")
    t.add_argument("--subset", type=_positive_int, default=None, help="train on only N images (quick runs)")
    t.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="output folder (default runs/<model>)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="test accuracy of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", default=None)
    e.add_argument("--model", default=None, choices=sorted(MODELS),
                   help="model to load the weights into (default: the checkpoint's)")
    e.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    e.set_defaults(func=cmd_eval)


def cmd_train(args):
    from ..train import TrainConfig, Trainer

    cfg = TrainConfig(model=args.model, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
                      optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                      weight_decay=args.weight_decay, schedule=args.schedule,
                      label_smoothing=args.label_smoothing, augment=args.augment, val_split=args.val_split,
                      subset=args.subset, device=args.device, seed=args.seed,
                      out=args.out or f"runs/{args.model}", resume=args.resume, progress=args.progress)
    check_device(args.device)
    trainer = Trainer(cfg)
    acc = trainer.run()
    return 0 if acc is not None else 130


def cmd_eval(args):
    from ..train import evaluate_checkpoint

    check_device(args.device)
    evaluate_checkpoint(args.checkpoint, data=args.data, device=args.device, model_name=args.model)
    return 0
