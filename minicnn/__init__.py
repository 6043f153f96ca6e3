"""minicnn: a from-scratch convolutional neural network framework you can read.

One array code path runs on NumPy (CPU) or CuPy (GPU). Start with
``minicnn.autograd`` (Tensor, Function, backward), then
``minicnn.functional`` (the ops), ``minicnn.nn`` (layers),
``minicnn.optim`` (optimizers), ``minicnn.data`` (CIFAR-10, loaders),
``minicnn.models`` (LeNet-5 to ResNet-110) and ``minicnn.train`` (the loop).

Trained models (``minicnn.load_model``: pixels in [0, 1] in, logits out) are
looked into by ``minicnn.explain``, broken by ``minicnn.attacks``, turned
into images by ``minicnn.synthesize`` and debugged by ``minicnn.doctor``;
``minicnn.summary(model)`` counts what each layer costs.

Importing minicnn changes nothing in the process, and a training loop of
your own runs as fast as ``minicnn train`` with nothing to call first
(``minicnn.speed`` says how).
"""
from ._version import __version__
from .backend import get_array_module, is_gpu_available, default_dtype, set_default_dtype
from .autograd import Tensor, Function, tensor, no_grad, enable_grad, is_grad_enabled
from . import functional
from .gradcheck import gradcheck, numerical_grad, GradcheckReport
from . import nn, optim
from .serialization import save, load
from .checkpoint import load_model
from . import explain, attacks, synthesize, doctor
from .summary import summary
from .interop import export_onnx, save_safetensors, load_safetensors   # onnx/safetensors imported on first call

__all__ = [
    "__version__", "Tensor", "Function", "tensor", "no_grad", "enable_grad", "is_grad_enabled",
    "get_array_module", "is_gpu_available", "default_dtype", "set_default_dtype",
    "functional", "gradcheck", "numerical_grad", "GradcheckReport", "nn", "optim", "save", "load", "load_model",
    "explain", "attacks", "synthesize", "doctor", "summary",
    "export_onnx", "save_safetensors", "load_safetensors",
]
