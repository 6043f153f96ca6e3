"""The ``minicnn`` command (also ``python -m minicnn``): one verb per job.

    minicnn train                          # the fast recipe (fast_cnn, minutes on a CPU)
    minicnn train --model simple_cnn --epochs 15 --out runs/simple_cnn
    minicnn eval --checkpoint runs/simple_cnn/best.npz
    minicnn gradcheck                      # every built-in layer's backward
    minicnn gradcheck --layer homework.py:MySigmoid   # your own Function or Module

Each verb lives in its own module of this package, next to nothing else:
``add_parser(subparsers)`` declares its options and sets ``func``, the
function that runs it. Errors a user can fix are raised as ``CLIError`` (or
``TrainingError``) and printed as one line, never as a traceback.
"""
import argparse
import importlib
import sys

from .._version import __version__
from ..errors import TrainingError
from .common import CLIError



def examples():
    """The epilog of ``minicnn --help``: what plain ``minicnn train`` does, read from the recipe table."""
    from ..train.config import RECIPE_RESULTS, RECIPES, recipe_model

    fast = RECIPES["fast"]
    return ("examples:\n"
            f"  minicnn train                                  # the fast recipe: {recipe_model(None)}, "
            f"{fast['epochs']} epochs on CIFAR-10,\n"
            f"                                                 # {RECIPE_RESULTS['fast']}\n"
            f"  minicnn eval --checkpoint runs/{recipe_model(None)}/best.npz\n"
            "  minicnn COMMAND --help                         # each command's options, defaults and examples")

# The verbs, in the order ``minicnn --help`` lists them: (verb module in this package).
VERB_MODULES = ("train", "gradcheck", "explain", "attack", "synthesize", "doctor", "image2image", "gan")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minicnn", description="minicnn: a readable CNN framework on NumPy (CPU) and CuPy (GPU)",
        epilog=examples(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"minicnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in VERB_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (CLIError, TrainingError) as e:
        print(f"minicnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minicnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:   # anything else still gets one line; MINICNN_DEBUG=1 shows the traceback
        import os
        if os.environ.get("MINICNN_DEBUG"):
            raise
        print(f"minicnn {args.command}: error: {type(e).__name__}: {e}\n"
              f"(set MINICNN_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1


__all__ = ["main", "build_parser", "CLIError", "VERB_MODULES"]

if __name__ == "__main__":
    sys.exit(main())
