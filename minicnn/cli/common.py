"""What the verbs of the ``minicnn`` command share: the user-error type, the help layout, argument types, device check.

Argument types raise ``argparse.ArgumentTypeError`` with a sentence, so
argparse prints ``argument --epochs: must be a positive integer, got 0``:
the option, what it expects and the value given (never an internal
function name). Each type's ``__name__`` is also a user-facing word.
"""
import argparse
import dataclasses
import fractions
import math
import os


class CLIError(Exception):
    """A user error: printed as one message, no traceback, exit status 2."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description and the examples (epilog) as written, and adds ``(default: X)`` to each option.

    Options whose default is None or False (flags, "depends on ...") get no
    suffix: their help says what happens when they are left out.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS \
                or not action.option_strings or action.nargs == 0:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def _named(name):
    """Give an argparse type a user-facing ``__name__`` (argparse shows it in 'invalid <name> value')."""
    def decorate(fn):
        fn.__name__ = name
        return fn
    return decorate


def _parse_number(text):
    """A finite float from ``'0.1'``, ``'1e-3'`` or a fraction ``'8/255'``; ArgumentTypeError otherwise."""
    try:
        value = float(fractions.Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"must be a number (like 0.1, 1e-3 or 8/255), got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


@_named("integer")
def integer(text):
    """argparse type: an integer."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


@_named("positive integer")
def positive_int(text):
    """argparse type: an integer > 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


@_named("number")
def number(text):
    """argparse type: a finite number; fractions such as ``8/255`` are accepted."""
    return _parse_number(text)


@_named("positive number")
def positive_number(text):
    """argparse type: a finite number > 0; fractions such as ``8/255`` are accepted."""
    value = _parse_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def output_folder(path, option="--out"):
    """Create the output folder ``path`` (and its parents) before any work, or raise a CLIError naming ``option``.

    Every verb that writes files calls this first, so an unwritable place, or a file where the folder
    should be, gets one clear line instead of a traceback after the work is done.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{option} {path}: is a file, not a folder; give a folder to write into")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{option} {path}: cannot create this folder ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {path}: this folder is not writable")
    return path


def check_device(device):
    """Refuse ``--device gpu`` with a message when no GPU is available."""
    from ..backend import is_gpu_available

    if device == "gpu" and not is_gpu_available():
        raise CLIError("--device gpu: no GPU is available (CuPy with a CUDA device is needed: "
                       "pip install 'minicnn[gpu]'); use --device cpu")



def prepare_run(args, config_class=None, **values):
    """The preamble of every verb that runs a long job; returns its config (or None without ``config_class``).

    In this order: the process settings that buy speed (allocator, BLAS
    threads: applied by entry points, never at ``import minicnn``); the
    ``--device gpu`` check; then ``config_class`` (a dataclass such as
    ``TrainConfig``) filled from every parsed option that names one of its
    fields (``--data``, ``--epochs``, ``--seed``, ``--out``, ``--resume``,
    ``--no-progress``, ...), and from ``values``, what the verb computes
    itself (a default ``--out``, a list). Verbs that write files without
    a run folder still call ``output_folder`` themselves.
    """
    from ..speed import apply_process_settings

    apply_process_settings()
    check_device(getattr(args, "device", "cpu"))
    if config_class is None:
        return None
    names = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{**{k: v for k, v in vars(args).items() if k in names}, **values})
