"""What the verbs of the ``minicnn`` command share: the user-error type, argument types, device check."""
import argparse


class CLIError(Exception):
    """A user error: printed as one message, no traceback, exit status 2."""


def positive_int(text):
    """argparse type: an integer > 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def check_device(device):
    """Refuse ``--device gpu`` with a message when no GPU is available."""
    from ..backend import is_gpu_available

    if device == "gpu" and not is_gpu_available():
        raise CLIError("--device gpu: no GPU is available (CuPy with a CUDA device is needed: "
                       "pip install 'minicnn[gpu]'); use --device cpu")
