"""The optional packages of ``minicnn.interop`` (onnx, onnxruntime, safetensors), imported only when used.

``import minicnn`` never imports them; ``require("onnx")`` does, inside the
function that needs it, and says how to install them when they are missing.
"""
import importlib

__all__ = ["INSTALL_HINT", "require"]

INSTALL_HINT = 'pip install "minicnn[interop]"'


def require(module, what):
    """Import ``module`` (a dotted name) for ``what``; a missing package gets an ImportError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs the '{module.split('.')[0]}' package, which is not installed: "
                          f"{INSTALL_HINT} (it adds onnx, onnxruntime and safetensors)") from e
