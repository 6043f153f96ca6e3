"""``minicnn export``: a trained checkpoint as ONNX (for ONNX Runtime, Netron, phones) and/or safetensors.

The ONNX file takes pixels in [0, 1] (the normalisation is inside it) and
returns logits, with a free batch size and the class names in its metadata;
the safetensors file holds the network's weights by their ``state_dict``
names, which a PyTorch module with the same layers loads (docs/15-interop.md).
"""
import os

from .common import CLIError, HelpFormatter, output_folder

EXAMPLES = """\
examples:
  minicnn export --checkpoint runs/simple_cnn/best.npz --onnx simple_cnn.onnx
  minicnn export --checkpoint runs/resnet20/best.npz --onnx r20.onnx --safetensors r20.safetensors

The ONNX model's input is "pixels" (N, 3, 32, 32) in [0, 1], its output "logits" (N, classes).
When onnxruntime is installed the exported file is run once on a random batch and compared
with minicnn (the largest difference of the logits is printed)."""


def shape(text):
    """argparse type of --input-shape: CxHxW, e.g. 3x32x32."""
    import argparse

    try:
        dims = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"must be three positive integers CxHxW, like 3x32x32, got {text!r}")
    return dims


def add_parser(sub):
    p = sub.add_parser("export", help="write a checkpoint as ONNX and/or safetensors",
                       description="Write a checkpoint trained by minicnn as ONNX (for ONNX Runtime, Netron, phones)\n"
                                   "and/or as safetensors (weights by state_dict name, which PyTorch reads).",
                       epilog=EXAMPLES,
                       formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="a .npz written by minicnn train (OUT/best.npz or OUT/last.npz)")
    p.add_argument("--onnx", default=None, metavar="FILE", help="write the model (normalisation included) here")
    p.add_argument("--safetensors", default=None, metavar="FILE",
                   help="write the network's weights here (state_dict names; model, classes and normalisation "
                        "statistics in the metadata)")
    p.add_argument("--input-shape", type=shape, default="3x32x32", metavar="CxHxW",
                   help="one image's shape (the batch size stays free)")
    p.set_defaults(func=cmd_export)


def check_in_onnxruntime(model, path, input_shape):
    """The largest |difference| of the logits of minicnn and ONNX Runtime on 8 random images, or None."""
    import numpy as np

    try:
        import onnxruntime
    except ImportError:
        return None
    from ..autograd import Tensor, no_grad

    x = np.random.default_rng(0).random((8, *input_shape), dtype=np.float32)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    with no_grad():
        ours = model(Tensor(x)).numpy()
    return float(np.abs(session.run(None, {"pixels": x})[0] - ours).max())


def cmd_export(args):
    from ..checkpoint import load_checkpoint, load_model
    from ..interop import export_onnx, save_safetensors

    if not (args.onnx or args.safetensors):
        raise CLIError("nothing to write: give --onnx FILE and/or --safetensors FILE")
    for option, path in (("--onnx", args.onnx), ("--safetensors", args.safetensors)):
        if path:
            output_folder(os.path.dirname(os.path.abspath(path)), option)
    model = load_model(args.checkpoint)
    try:
        if args.onnx:
            proto = export_onnx(model, args.onnx, args.input_shape)
            diff = check_in_onnxruntime(model, args.onnx, args.input_shape)
            check = ("onnxruntime not installed: not run" if diff is None
                     else f"ONNX Runtime vs minicnn on 8 random images: max |logit difference| {diff:.2g}")
            print(f"wrote {args.onnx}: {len(proto.graph.node)} nodes, opset {proto.opset_import[0].version}, "
                  f"input pixels (N, {', '.join(map(str, args.input_shape))}) in [0, 1]; {check}")
        if args.safetensors:
            ckpt = load_checkpoint(args.checkpoint)
            save_safetensors(model.net, args.safetensors, metadata={
                "model": ckpt["model_name"], "classes": model.classes,
                "norm_mean": [float(v) for v in model.normalize.mean.numpy()],
                "norm_std": [float(v) for v in model.normalize.std.numpy()]})
            print(f"wrote {args.safetensors}: {len(model.net.state_dict())} tensors of {ckpt['model_name']}")
    except ImportError as e:
        raise CLIError(str(e)) from None
    return 0
