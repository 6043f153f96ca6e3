"""A picture of an exported ONNX graph, without Netron: one box per node, top to bottom, with its output shape.

    proto = minicnn.export_onnx(model, "simple_cnn.onnx", (3, 32, 32))
    onnx_graph_figure(proto, "simple_cnn-graph.png")

Boxes follow the file's node order (a topological order), each with the
minicnn layer it came from on its left; an edge between
neighbours is a straight arrow, an edge that skips nodes (a residual
shortcut, an inception branch) is an arc on the right. Colours follow
Netron's: convolutions and matrix products blue, normalisation green,
activations red, pooling and shape ops grey.
"""
from .optional import require

__all__ = ["onnx_graph_figure"]

COLOURS = {"Conv": "#3d6fb6", "ConvTranspose": "#3d6fb6", "MatMul": "#3d6fb6", "Gemm": "#3d6fb6",
           "BatchNormalization": "#4a8c4a", "Sub": "#4a8c4a", "Div": "#4a8c4a",
           "Relu": "#a33b3b", "LeakyRelu": "#a33b3b", "Sigmoid": "#a33b3b", "Tanh": "#a33b3b", "Softmax": "#a33b3b"}
OTHER = "#6b6b6b"


def describe(node, shapes):
    """'Conv 3x3 /2' and its output shape, '32 x 16 x 16' (the batch axis left out)."""
    attrs = {a.name: list(a.ints) for a in node.attribute if a.ints}
    text = node.op_type
    if "kernel_shape" in attrs:
        text += " " + "x".join(map(str, attrs["kernel_shape"]))
    if any(s != 1 for s in attrs.get("strides", [])):
        text += f" /{attrs['strides'][0]}"
    shape = shapes.get(node.output[0])
    return text, (" x ".join(map(str, shape[1:])) if shape else "")


def onnx_graph_figure(proto, path=None, title=None):
    """Draw the graph of ``proto`` (an ``onnx.ModelProto``); save it to ``path`` if given; return the Figure."""
    onnx = require("onnx", "onnx_graph_figure")
    import matplotlib
    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    nodes = list(proto.graph.node)
    where = {out: i for i, n in enumerate(nodes) for out in n.output}
    where[proto.graph.input[0].name] = -1
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * (len(nodes) + 2) + 0.6))
    y = lambda i: -(i + 1) * 1.0                                     # noqa: E731 (row i's height)
    ax.text(0, y(-1), f"{proto.graph.input[0].name}  ({' x '.join(map(str, shapes_of(proto.graph.input[0])))})",
            ha="center", va="center", fontsize=9)
    for i, node in enumerate(nodes):
        op, shape = describe(node, shapes)
        ax.add_patch(FancyBboxPatch((-1.1, y(i) - 0.3), 2.2, 0.6, boxstyle="round,pad=0.02",
                                    color=COLOURS.get(node.op_type, OTHER)))
        ax.text(-1.0, y(i), op, color="white", ha="left", va="center", fontsize=9, fontweight="bold")
        ax.text(1.0, y(i), shape, color="white", ha="right", va="center", fontsize=8)
        layer = node.name.rsplit("/", 1)[0] if "/" in node.name else ""
        ax.text(-1.2, y(i), layer, color="#555", ha="right", va="center", fontsize=8)      # the minicnn layer
        for name in node.input:
            j = where.get(name)
            if j is None:
                continue                                              # a weight: not drawn
            if j == i - 1:
                ax.annotate("", (0, y(i) + 0.3), (0, y(j) - 0.3), arrowprops=dict(arrowstyle="->", lw=0.8))
            else:                                                     # a shortcut: an arc on the right
                ax.annotate("", (1.1, y(i)), (1.1, y(j)), arrowprops=dict(
                    arrowstyle="->", lw=0.8, color="#444", connectionstyle=f"arc,angleA=0,angleB=0,armA={12 + 3 * (i - j)},armB={12 + 3 * (i - j)},rad=6"))
    ax.annotate("", (0, y(len(nodes)) + 0.2), (0, y(len(nodes) - 1) - 0.3), arrowprops=dict(arrowstyle="->", lw=0.8))
    ax.text(0, y(len(nodes)), f"{proto.graph.output[0].name}  ({' x '.join(map(str, shapes_of(proto.graph.output[0])))})",
            ha="center", va="center", fontsize=9)
    ax.set_xlim(-2.6, 2.4)
    ax.set_ylim(y(len(nodes)) - 0.6, y(-1) + 0.6)
    ax.axis("off")
    ax.set_title(title or proto.graph.name, fontsize=11)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def shapes_of(value):
    return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]
