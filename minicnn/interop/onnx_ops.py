"""How each minicnn op becomes ONNX nodes: one small function per op.

An exporter gets the graph builder ``b``, the traced ``call`` (its
Function, input arrays and settings: see ``trace.Call``), the names of its
inputs (None where an input was None) and of its outputs, and adds nodes
with ``b.node(op_type, inputs, outputs, **attributes)``; ``b.const(array,
hint)`` adds a constant input (a shape, the pads). ``EXPORTERS`` maps each
Function class to its exporter; an op that is not in it cannot be exported
(``export_onnx`` says which op, in which layer).

Only ops that depend on the model's input reach these functions: a call
on constants alone (a weight's transpose) was already computed by the
trace, and its result is stored as it is.
"""
import numpy as np

from ..functional import activation, basic, conv, conv_transpose, norm, pooling

__all__ = ["EXPORTERS", "ExportError"]

INT64_MAX = np.iinfo(np.int64).max


class ExportError(ValueError):
    """The model computes something that cannot be written as ONNX (the message names the op and the layer)."""


EXPORTERS = {}


def exports(*functions):
    """Register the decorated exporter for these Function classes."""
    def register(exporter):
        for f in functions:
            EXPORTERS[f] = exporter
        return exporter
    return register


def ints(values):
    return [int(v) for v in values]


# ONNX ops with the same inputs and no attributes: minicnn Function -> ONNX op type.
SAME_OP = {
    basic.Add: "Add", basic.Sub: "Sub", basic.Mul: "Mul", basic.Div: "Div", basic.Pow: "Pow",
    basic.MatMul: "MatMul", basic.Neg: "Neg", basic.Exp: "Exp", basic.Log: "Log", basic.Sqrt: "Sqrt",
    basic.Abs: "Abs", activation.ReLU: "Relu", activation.Sigmoid: "Sigmoid", activation.Tanh: "Tanh",
    pooling.GlobalAvgPool2d: "GlobalAveragePool",
}


@exports(*SAME_OP)
def same_op(b, call, ins, outs):
    """a + b, a @ b, relu(x), mean over H and W, ...: one ONNX op of the same meaning (NumPy broadcasting)."""
    b.node(SAME_OP[type(call.fn)], ins, outs)


@exports(basic.PowScalar)
def pow_scalar(b, call, ins, outs):
    """x ** p for a number p: Pow(x, p)."""
    p = b.const(np.asarray(call.settings["p"], dtype=call.arrays[0].dtype), "p")
    b.node("Pow", [ins[0], p], outs)


@exports(activation.LeakyReLU)
def leaky_relu(b, call, ins, outs):
    b.node("LeakyRelu", ins, outs, alpha=float(call.settings["negative_slope"]))


@exports(activation.Softmax, activation.LogSoftmax)
def softmax(b, call, ins, outs):
    b.node(call.op, ins, outs, axis=int(call.settings["axis"]))


def window(call, kernel):
    """The window attributes of Conv, ConvTranspose, MaxPool and AveragePool (pads: top, left, bottom, right)."""
    (ph, pw), s = call.settings["padding"], call.settings
    attrs = dict(kernel_shape=ints(kernel), strides=ints(s["stride"]), pads=ints([ph, pw, ph, pw]))
    if "dilation" in s:
        attrs["dilations"] = ints(s["dilation"])
    return attrs


@exports(conv.Conv2d)
def conv2d(b, call, ins, outs):
    """Conv2d(x, W, b): Conv, with the same weight layout (C_out, C_in/groups, KH, KW)."""
    b.node("Conv", [i for i in ins if i is not None], outs, group=int(call.settings["groups"]),
           **window(call, call.arrays[1].shape[2:]))


@exports(conv_transpose.ConvTranspose2d)
def conv_transpose2d(b, call, ins, outs):
    """ConvTranspose2d(x, W, b): ConvTranspose, weight (C_in, C_out/groups, KH, KW) in both."""
    b.node("ConvTranspose", [i for i in ins if i is not None], outs, group=int(call.settings["groups"]),
           output_padding=ints(call.settings["output_padding"]), **window(call, call.arrays[1].shape[2:]))


@exports(pooling.MaxPool2d, pooling.AvgPool2d)
def pool2d(b, call, ins, outs):
    """max_pool2d: MaxPool (padding never wins: -inf in both); avg_pool2d: AveragePool."""
    s = call.settings
    if isinstance(call.fn, pooling.MaxPool2d):
        if s["return_indices"]:
            raise ExportError("max_pool2d with return_indices=True (the indices are not exported)")
        b.node("MaxPool", ins, outs, **window(call, s["kernel"]))
    else:
        if s["divisor_override"] is not None:
            raise ExportError("avg_pool2d with divisor_override (ONNX AveragePool has no such setting)")
        b.node("AveragePool", ins, outs, count_include_pad=int(s["count_include_pad"]), **window(call, s["kernel"]))


@exports(norm.BatchNorm)
def batch_norm(b, call, ins, outs):
    """Eval-mode batchnorm: BatchNormalization(x, gamma, beta, running_mean, running_var)."""
    s = call.settings
    if s["training"] or s["running_mean"] is None:
        raise ExportError("batch_norm with batch statistics (training mode, or a layer without running "
                          "statistics): only eval-mode batchnorm, which uses the running statistics, is exported")
    x, gamma, beta = ins
    c = call.arrays[0].shape[1]
    dtype = call.arrays[0].dtype
    gamma = gamma or b.const(np.ones(c, dtype), "gamma")
    beta = beta or b.const(np.zeros(c, dtype), "beta")
    b.node("BatchNormalization", [x, gamma, beta, b.value(s["running_mean"]), b.value(s["running_var"])], outs,
           epsilon=float(s["eps"]))


@exports(basic.Reshape)
def reshape(b, call, ins, outs):
    """Reshape keeping the batch axis first: Flatten(axis=1) for (N, rest), else Reshape to (0, d1, d2, ...)."""
    x, y = call.arrays[0], call.outputs[0]
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ExportError(f"reshape from {tuple(x.shape)} to {tuple(y.shape)} (it moves the batch axis, "
                          f"which the exported model leaves free)")
    if y.ndim == 2:
        b.node("Flatten", ins, outs, axis=1)
    else:
        b.node("Reshape", [ins[0], b.const(np.array([0, *y.shape[1:]], np.int64), "shape")], outs)


@exports(basic.Transpose)
def transpose(b, call, ins, outs):
    axes = call.settings["axes"]
    b.node("Transpose", ins, outs, perm=ints(axes if axes is not None else range(call.arrays[0].ndim)[::-1]))


@exports(basic.GetItem)
def getitem(b, call, ins, outs):
    """x[slices] (slices only, such as ResNet's shortcut x[:, :, ::2, ::2]): Slice."""
    x, index = call.arrays[0], call.settings["index"]
    index = index if isinstance(index, tuple) else (index,)
    if not all(isinstance(i, slice) for i in index):
        raise ExportError(f"indexing with {index!r}: only slices (start:stop:step) are exported")
    starts, ends, axes, steps = [], [], [], []
    for axis, s in enumerate(index):
        if s == slice(None):
            continue
        if axis == 0:       # the batch axis has no fixed size: keep the slice's own numbers
            start, stop, step = s.start or 0, INT64_MAX if s.stop is None else s.stop, s.step or 1
        else:
            start, stop, step = s.indices(x.shape[axis])
        if step <= 0:
            raise ExportError(f"indexing with the negative step {s!r}")
        starts.append(start), ends.append(stop), axes.append(axis), steps.append(step)
    if not axes:
        b.node("Identity", ins, outs)
        return
    consts = [b.const(np.array(v, np.int64), n) for v, n in ((starts, "starts"), (ends, "ends"),
                                                             (axes, "axes"), (steps, "steps"))]
    b.node("Slice", [ins[0], *consts], outs)


@exports(basic.Concatenate)
def concatenate(b, call, ins, outs):
    b.node("Concat", ins, outs, axis=int(call.settings["axis"]))


@exports(basic.Pad)
def pad(b, call, ins, outs):
    """Constant padding: Pad(x, pads = (all begins, all ends), value)."""
    x = call.arrays[0]
    widths = np.broadcast_to(np.asarray(call.settings["pad_width"], dtype=np.int64), (x.ndim, 2))
    pads = b.const(np.concatenate([widths[:, 0], widths[:, 1]]), "pads")
    value = b.const(np.asarray(call.settings["value"], dtype=x.dtype), "pad_value")
    b.node("Pad", [ins[0], pads, value], outs, mode="constant")


@exports(basic.Sum, basic.Mean, basic.Max)
def reduce(b, call, ins, outs):
    """sum / mean / max over axes: ReduceSum (axes as an input in opset 13+) / ReduceMean / ReduceMax."""
    x, axis = call.arrays[0], call.settings["axis"]
    axes = list(range(x.ndim)) if axis is None else [int(a) for a in np.atleast_1d(axis)]
    keep = int(bool(call.settings["keepdims"]))
    if isinstance(call.fn, basic.Sum):
        b.node("ReduceSum", [ins[0], b.const(np.array(axes, np.int64), "axes")], outs, keepdims=keep)
    else:
        b.node("ReduceMean" if isinstance(call.fn, basic.Mean) else "ReduceMax", ins, outs, axes=axes, keepdims=keep)


@exports(basic.Clip)
def clip(b, call, ins, outs):
    dtype = call.arrays[0].dtype
    bounds = ["" if v is None else b.const(np.asarray(v, dtype=dtype), n)
              for v, n in ((call.settings["lo"], "min"), (call.settings["hi"], "max"))]
    b.node("Clip", [ins[0], *bounds], outs)


@exports(basic.Cast)
def cast(b, call, ins, outs):
    from onnx import helper        # (onnx is imported by export_onnx before any exporter runs)
    b.node("Cast", ins, outs, to=helper.np_dtype_to_tensor_dtype(np.dtype(call.settings["dtype"])))
