"""The ``minicnn`` command: ``minicnn --version``, ``minicnn train``, ``minicnn eval``, ``minicnn gradcheck``."""
import argparse
import sys

from ._version import __version__


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minicnn", description="minicnn: a readable CNN framework on NumPy/CuPy")
    parser.add_argument("--version", action="version", version=f"minicnn {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
