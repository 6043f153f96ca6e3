"""``minicnn report RUN_DIR``: a training run as one HTML page, readable offline, shareable as one file."""
import os

from .common import CLIError, HelpFormatter, integer, positive_int, prepare_run

DESCRIPTION = """\
Write one self-contained HTML page for a run of minicnn train: the command
and settings, the learning curves, test accuracy with per-class accuracy and
the confusion matrix, the layers (shapes, parameters, MACs, receptive
field), the first-layer filters, test images with saliency and Grad-CAM
(the most confident mistakes first), accuracy under FGSM and PGD against
eps, and minicnn doctor's report when one is in the folder (report.json).
Every image is embedded: the file opens offline and can be sent as is.
The model analysed is RUN_DIR/last.npz (the one test.json was measured on),
else best.npz. About half a minute for simple_cnn on 2 CPU cores; the
attacks cost most (--attack-images)."""

EXAMPLES = """\
examples:
  minicnn report runs/simple_cnn                         # -> runs/simple_cnn/report.html
  minicnn report runs/resnet20 --out resnet20.html --attack-images 32
  minicnn train --model simple_cnn --report              # trains, then writes OUT/report.html"""


def add_parser(sub):
    p = sub.add_parser("report", help="a run's HTML page: curves, accuracy, layers, saliency, robustness",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a minicnn train run")
    p.add_argument("--out", default=None, help="the HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--checkpoint", default=None, help="the .npz to analyse (default: RUN_DIR/last.npz, else best.npz)")
    p.add_argument("--data", default=None,
                   help="where the test images are (default: the run's --data, else minicnn train's default places)")
    p.add_argument("--images", type=positive_int, default=8, help="test images shown with saliency and Grad-CAM")
    p.add_argument("--sample", type=positive_int, default=500, help="test images scanned for the most confident mistakes")
    p.add_argument("--attack-images", type=positive_int, default=64, metavar="N",
                   help="test images attacked at each eps (FGSM and 10-step PGD)")
    p.add_argument("--seed", type=integer, default=0, help="seed of the image sample and PGD's random start")
    p.set_defaults(func=run)


def report_file(out, run_dir):
    """The path ``--out`` names (default RUN_DIR/report.html), its folder created; a CLIError when it cannot be."""
    from .common import output_folder

    path = out or os.path.join(run_dir, "report.html")
    if os.path.isdir(path):
        raise CLIError(f"--out {path}: is a folder; give the HTML file to write (for example {path}/report.html)")
    output_folder(os.path.dirname(os.path.abspath(path)))
    return path


def write(run_dir, out=None, **options):
    """Write the report and print where it is: the step that ``minicnn report`` and ``train --report`` share."""
    from ..errors import CheckpointError
    from ..report import RunError, write_report

    path = report_file(out, run_dir)
    try:
        write_report(run_dir, path, log=lambda line: print(line, flush=True), **options)
    except (RunError, CheckpointError) as e:
        raise CLIError(str(e)) from None
    print(f"report: {path}")
    return path


def run(args):
    prepare_run(args)              # process settings for a long job
    if not os.path.isdir(args.run_dir):
        raise CLIError(f"RUN_DIR {args.run_dir}: no such folder (give the --out folder of a minicnn train run)")
    write(args.run_dir, args.out, checkpoint=args.checkpoint, data=args.data, images=args.images,
          sample=args.sample, attack_images=args.attack_images, seed=args.seed)
    return 0
