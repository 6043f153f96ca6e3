"""``minicnn gan``: train a DCGAN on CIFAR-10 and watch its samples improve epoch by epoch."""
from .common import HelpFormatter, integer, number, positive_int, positive_number, prepare_run

DESCRIPTION = """\
Train a DCGAN (Radford, Metz & Chintala 2016) on CIFAR-10's training images.

The generator turns 100 random numbers into a 32x32 image through four
transposed convolutions; the discriminator tells real images from
generated ones. Each batch: one discriminator step, then one generator
step (Adam, lr 2e-4, beta1 0.5, as in the paper). After every epoch OUT
gets samples_epochNNN.png (the same noise vectors every epoch),
metrics.csv and losses.png; at the end interpolation.png (images between
two noise vectors). Ctrl-C or SIGTERM saves OUT/last.npz; the same command
plus --resume continues it.

On a 2-core CPU an epoch of all 50,000 images at --width 32 takes tens of
minutes; --classes (one or a few classes) or --subset make it shorter."""

EXAMPLES = """\
examples:
  minicnn gan --epochs 5 --out runs/dcgan                       # all classes
  minicnn gan --classes horse --epochs 20 --out runs/dcgan_horse
  minicnn gan --epochs 10 --out runs/dcgan --resume               # continue to epoch 10"""


def add_parser(sub):
    from .train import DATA_HELP

    p = sub.add_parser("gan", help="train a DCGAN on CIFAR-10 (samples every epoch)",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--epochs", type=positive_int, default=5, help="epochs to train")
    p.add_argument("--batch-size", type=positive_int, default=64, help="real images per step")
    p.add_argument("--lr", type=positive_number, default=2e-4, help="Adam's learning rate, both networks")
    p.add_argument("--beta1", type=number, default=0.5, help="Adam's beta1, both networks")
    p.add_argument("--nz", type=positive_int, default=100, help="length of the noise vector z")
    p.add_argument("--width", type=positive_int, default=32,
                   help="channels of the generator's last and the discriminator's first layer "
                        "(the others: 2x and 4x); 64 is the paper's, 4x slower")
    p.add_argument("--classes", default=None, metavar="NAMES",
                   help="train on these classes only, comma-separated (e.g. horse or automobile,truck)")
    p.add_argument("--subset", type=positive_int, default=None, help="train on only N images")
    p.add_argument("--samples", type=positive_int, default=64, help="images in each sample grid")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to train")
    p.add_argument("--seed", type=integer, default=0, help="seed of the initialisation, noise and shuffle")
    p.add_argument("--out", default="runs/dcgan", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the run saved in OUT/last.npz")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=run)


def run(args):
    from ..train.gan import GANConfig, train_gan

    return 0 if train_gan(prepare_run(args, GANConfig)) is not None else 130
