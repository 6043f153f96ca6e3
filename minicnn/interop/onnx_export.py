"""``export_onnx``: a minicnn model as an ONNX file, for ONNX Runtime, Netron and every other runtime.

    model = minicnn.load_model("runs/simple_cnn/best.npz")      # nn.Normalize first: takes [0, 1] pixels
    minicnn.export_onnx(model, "simple_cnn.onnx", (3, 32, 32))

How: one forward pass of a small batch is traced (``trace``: every op call,
through the engine's op hook), and each call that depends on the input
becomes ONNX nodes (``onnx_ops``: one small function per op). Parameters and
buffers become initializers named by their ``state_dict`` names; whatever
the trace computed from constants alone (a weight's transpose, the
normaliser's mean reshaped to (1, C, 1, 1)) is stored as computed. So the
file holds exactly the computation that ran: the input normalisation,
eval-mode batchnorm (running statistics), residual additions, inception's
concatenations.

The batch axis is left free ("N"): the pass is traced at two batch sizes
and the two graphs must be identical, which also catches a forward that
computes on raw arrays outside minicnn's ops (the trace cannot see those).
The class names go into the file's metadata (``metadata_props``:
``classes``, a JSON list), and ``onnx.checker`` checks the result.
"""
import json
import os
import tempfile

import numpy as np

from .._version import __version__
from ..backend import to_device
from ..nn import Normalize
from .onnx_ops import EXPORTERS, ExportError
from .optional import require
from .trace import trace

__all__ = ["export_onnx", "ExportError", "OPSET"]

OPSET = 17          # ONNX Runtime 1.14+ (also its web and mobile builds) and TensorRT 8.6+ read it
IR_VERSION = 8      # the IR version of opset 17
TRACE_BATCHES = (2, 3)


class GraphBuilder:
    """Collects the nodes and initializers of one traced pass (the ``b`` of ``onnx_ops``)."""

    def __init__(self, onnx, tr, state_names):
        self.onnx, self.tr = onnx, tr
        self.nodes, self.initializers = [], []
        self.names = {id(tr.input): "pixels"}        # id(array) -> the value's name in the graph
        self.state_names = state_names               # id(parameter or buffer array) -> its state_dict name
        self.taken = {"pixels", "logits"}           # value names (nodes have their own: node_names)
        self.node_names = set()
        self.prefix = ""

    def unique(self, name, taken=None):
        taken = self.taken if taken is None else taken
        base, k = name, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    def const(self, array, hint):
        """A new initializer holding ``array`` (a NumPy copy); returns its name."""
        name = self.unique(hint)
        array = np.asarray(to_device(array, "cpu"))
        self.initializers.append(self.onnx.numpy_helper.from_array(np.array(array, copy=True), name))
        return name

    def value(self, array):
        """The name of an op's input array: a value of the graph, or a parameter, buffer or constant."""
        key = id(array)
        if key not in self.names:
            if key in self.state_names:                    # a parameter or buffer: its state_dict name
                hint = self.state_names[key]
            else:                                          # computed from constants by the trace
                call = self.tr.producer.get(key)
                sources = [self.state_names[id(a)] for a in (call.arrays if call else []) if id(a) in self.state_names]
                hint = f"{sources[0]}.{call.op}" if sources else "const"
            self.names[key] = self.const(array, hint)
        return self.names[key]

    def node(self, op_type, inputs, outputs, **attributes):
        name = self.unique(f"{self.prefix}/{op_type}" if self.prefix else op_type, self.node_names)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), list(outputs), name=name, **attributes))

    def add(self, call):
        """Nodes for one traced call that depends on the input."""
        exporter = EXPORTERS.get(type(call.fn))
        where = f"layer '{call.module}'" if call.module else "the model's forward"
        if exporter is None:
            known = ", ".join(sorted({f.__name__ for f in EXPORTERS}))
            raise ExportError(f"export_onnx: op {call.op} (in {where}) has no ONNX exporter; the ops that "
                              f"can be exported are: {known}")
        self.prefix = call.module or ""
        ins = [None if a is None else self.value(a) for a in call.arrays]
        outs = []
        for o in call.outputs:
            if id(o) == id(self.tr.output):
                outs.append("logits")
            else:
                outs.append(self.unique(f"{self.prefix}/{call.op}" if self.prefix else call.op))
            self.names[id(o)] = outs[-1]
        try:
            exporter(self, call, ins, outs)
        except ExportError as e:
            raise ExportError(f"export_onnx: {e}, in {where}, cannot be exported") from None


def build_graph(onnx, model, x):
    """The ONNX GraphProto of ``model`` traced on the batch ``x``."""
    tr = trace(model, x)
    state_names = {id(t.data): n for n, t in list(model.named_parameters()) + list(model.named_buffers())}
    b = GraphBuilder(onnx, tr, state_names)
    if id(tr.output) not in tr.dynamic:
        where = f"layer '{tr.lost}'" if tr.lost else type(model).__name__
        raise ExportError(f"export_onnx: the output of {where} does not depend on its input through minicnn ops "
                          f"(its forward computes on raw arrays, which the trace cannot follow)")
    if id(tr.output) == id(tr.input):
        b.node("Identity", ["pixels"], ["logits"])
    for call in tr.calls:
        if call.dynamic:
            b.add(call)
    h = onnx.helper
    elem = h.np_dtype_to_tensor_dtype(x.dtype)
    inp = h.make_tensor_value_info("pixels", elem, ["N", *x.shape[1:]])
    out = h.make_tensor_value_info("logits", elem, ["N", *tr.output.shape[1:]])
    return h.make_graph(b.nodes, f"minicnn {type(model).__name__}", [inp], [out], b.initializers)


def input_shape_of(input_shape):
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:                      # (N, C, H, W): the batch size is free in the file anyway
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"export_onnx: input_shape must be (C, H, W) (or (N, C, H, W)), got {tuple(input_shape)}")
    return shape


def export_onnx(model, path, input_shape, *, classes=None, check=True):
    """Write ``model`` to ``path`` as an ONNX model (opset 17) and return the ``onnx.ModelProto``.

    Args:
        model: any minicnn Module whose forward uses minicnn ops (every zoo
            model; ``load_model``'s model includes its ``nn.Normalize``, so
            the file takes pixels in [0, 1]). Exported as in eval mode
            (batchnorm with its running statistics, no dropout); the model
            itself is left as it was.
        path: the ``.onnx`` file to write (atomically).
        input_shape: one image's shape (C, H, W); the batch size stays free.
        classes: class names for the metadata (default: ``model.classes`` if it has them).
        check: run ``onnx.checker.check_model`` on the result (default True).

    The graph's input is ``pixels`` (N, C, H, W), its output ``logits``;
    ``metadata_props`` holds ``classes`` (JSON) and ``input``. Raises
    ``ExportError`` naming the op and the layer that cannot be exported.
    """
    onnx = require("onnx", "export_onnx")
    shape = input_shape_of(input_shape)
    params = [p for p in list(model.parameters()) + list(model.buffers()) if p.dtype.kind == "f"]
    dtype = params[0].dtype if params else np.dtype(np.float32)
    if dtype != np.float32:
        raise ExportError(f"export_onnx: the model's parameters are {dtype}; export a float32 model "
                          f"(model.float())")
    device = params[0].device if params else "cpu"
    classes = classes if classes is not None else getattr(model, "classes", None)
    rng = np.random.default_rng(0)
    graphs = []
    for n in TRACE_BATCHES:
        x = to_device(rng.random((n, *shape), dtype=np.float32), device)
        graphs.append(build_graph(onnx, model, x))
    first_difference(graphs[0], graphs[1])
    proto = onnx.helper.make_model(graphs[0], producer_name="minicnn", producer_version=__version__,
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    normalised = any(isinstance(m, Normalize) for m in model.modules())
    meta = {"input": f"pixels (N, {', '.join(map(str, shape))}), float32" + (
                " in [0, 1] (the normalisation is inside)" if normalised else
                ", normalised as in training (the model has no nn.Normalize layer)"),
            "output": f"logits (N, {graphs[0].output[0].type.tensor_type.shape.dim[1].dim_value})"}
    if classes is not None:
        meta["classes"] = json.dumps([str(c) for c in classes])
    onnx.helper.set_model_props(proto, meta)
    if check:
        onnx.checker.check_model(proto, full_check=True)
    save_atomically(onnx, proto, path)
    return proto


def first_difference(a, b):
    """Raise when the graphs traced at two batch sizes differ (the export would fix the batch size)."""
    for na, nb in zip(a.node, b.node):
        if na.SerializeToString() != nb.SerializeToString():
            raise ExportError(f"export_onnx: node {na.name} ({na.op_type}) differs between batch sizes "
                              f"{TRACE_BATCHES[0]} and {TRACE_BATCHES[1]}: the forward depends on the batch size "
                              f"or computes on raw arrays outside minicnn ops")
    if len(a.node) != len(b.node) or [t.SerializeToString() for t in a.initializer] != \
            [t.SerializeToString() for t in b.initializer]:
        raise ExportError(f"export_onnx: the graph differs between batch sizes {TRACE_BATCHES[0]} and "
                          f"{TRACE_BATCHES[1]}: the forward depends on the batch size or computes on raw "
                          f"arrays outside minicnn ops")


def save_atomically(onnx, proto, path):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".onnx")
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
