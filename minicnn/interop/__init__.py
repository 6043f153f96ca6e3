"""Models that travel: ONNX out, safetensors in and out, PyTorch weights in.

- ``export_onnx(model, path, input_shape)``: the model as an ONNX graph
  (input normalisation and eval-mode batchnorm included, batch size free,
  class names in the metadata) for ONNX Runtime, Netron, phones.
- ``save_safetensors(model, path)`` / ``load_safetensors(model, path)``:
  parameters and buffers by their ``state_dict`` names, in the safe,
  pickle-free format PyTorch users share weights in; PyTorch's extra
  ``num_batches_tracked`` entries are skipped on the way in.

onnx, onnxruntime and safetensors are optional (``pip install
"minicnn[interop]"``) and imported only inside these functions. Nothing is
ever unpickled: a ``.pt``/``.pth`` file gets a message saying how to save it
as safetensors in PyTorch.
"""
from .onnx_export import OPSET, ExportError, export_onnx
from .safetensors_io import (PICKLE_MESSAGE, WeightsError, checkpoint_from_safetensors, load_safetensors,
                             read_safetensors, read_weights_file, save_safetensors, torch_to_minicnn_names)

__all__ = ["export_onnx", "ExportError", "OPSET", "save_safetensors", "load_safetensors", "read_safetensors",
           "WeightsError", "PICKLE_MESSAGE", "torch_to_minicnn_names", "checkpoint_from_safetensors", "read_weights_file"]
