"""``minicnn train-image2image``: an autoencoder or U-Net that denoises, colourises or reconstructs CIFAR-10."""
from .common import HelpFormatter, integer, number, positive_int, positive_number, prepare_run

DESCRIPTION = """\
Train an image-to-image network on CIFAR-10 and report its reconstruction
error on the test set.

The network gets a corrupted image and learns to output the original
(mean squared error over the pixels):
  denoise      input: the image plus Gaussian noise (--noise-std), clipped to [0, 1]
  colorize     input: the grey image (0.299 R + 0.587 G + 0.114 B); output: colour
  reconstruct  input: the image itself, squeezed through the network's bottleneck
The test MSE and PSNR (dB, higher is better) are printed after every epoch
next to the corrupted input's own, the baseline to beat. OUT gets
metrics.csv, curves.png, grid.png (input / output / original of test
images), test.json and last.npz. Ctrl-C or SIGTERM saves a checkpoint; the
same command plus --resume continues it."""

EXAMPLES = """\
examples:
  minicnn train-image2image --task denoise --model unet_small --epochs 5 --out runs/denoise
  minicnn train-image2image --task colorize --subset 5000 --epochs 3 --out runs/colorize
  minicnn train-image2image --task reconstruct --model conv_autoencoder --out runs/autoencoder"""


def add_parser(sub):
    from ..train.image2image import TASKS
    from ..models import IMAGE2IMAGE_MODELS
    from .train import DATA_HELP

    p = sub.add_parser("train-image2image", help="denoise / colourise / reconstruct CIFAR-10 images "
                                                 "(autoencoder, U-Net)",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--task", choices=TASKS, default="denoise", help="what the network learns to undo")
    p.add_argument("--model", choices=sorted(IMAGE2IMAGE_MODELS), default="unet_small",
                   help="network: conv_autoencoder (bottleneck, no skips) or unet_small (skip connections)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="the network's base number of channels (default: 32 for conv_autoencoder, "
                        "16 for unet_small)")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--epochs", type=positive_int, default=5, help="epochs to train")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per step")
    p.add_argument("--lr", type=positive_number, default=1e-3, help="Adam's learning rate")
    p.add_argument("--noise-std", type=number, default=0.1,
                   help="standard deviation of the denoising noise, pixels in [0, 1]")
    p.add_argument("--subset", type=positive_int, default=None, help="train on only N images (quick runs)")
    p.add_argument("--test-subset", type=positive_int, default=None,
                   help="score on only N test images (default: all)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where to train")
    p.add_argument("--seed", type=integer, default=0, help="seed of the initialisation, shuffle and noise")
    p.add_argument("--out", default=None, help="output folder (default: runs/<task>_<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in OUT/last.npz")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=run)


def run(args):
    from ..train.image2image import Image2ImageConfig, train_image2image

    cfg = prepare_run(args, Image2ImageConfig, out=args.out or f"runs/{args.task}_{args.model}")
    return 0 if train_image2image(cfg) is not None else 130
