"""``summary(model)``: what each layer of a network produces and costs.

    >>> from minicnn.summary import summary
    >>> print(summary(resnet20(), input_shape=(1, 3, 32, 32), batch_size=128))

One row per module of ``model.named_modules()`` (the model itself left out),
in that order, indented by depth, with:

- **output shape**, from one forward pass of a zero batch of ``input_shape``
  (on a deep copy of the model in eval mode, so the model is never touched).
  Convolutions and pooling follow the lectures' formula, per spatial axis,

      w_out = floor((w_in + 2p - d(k - 1) - 1) / s) + 1

  and a layer whose kernel does not fit its padded input (d(k - 1) + 1 >
  w_in + 2p) is reported by name (``SummaryError``), not as a traceback.
- **parameters**: the elements of the Parameters registered *on that module
  itself* (a container's row counts only its own, usually 0, so the column
  adds up to the total). Trainable = ``requires_grad``; a frozen Parameter
  (``requires_grad=False``) is a non-trainable parameter. **Buffers**
  (batchnorm's running mean and variance, ``Normalize``'s mean and std) are
  *not* parameters: they are never learned by gradient descent, and the
  published counts (ResNet-20: 269,722) leave them out. They get their own
  column and total. (Keras counts batchnorm's moving statistics as
  "non-trainable params"; we do not.)
- **MACs**, multiply-accumulates of one forward pass of ``input_shape`` (so
  per image with the default batch of 1). Only the layers that multiply by
  weights count: Conv2d ``N * C_out * H_out * W_out * (C_in / groups) * KH * KW``,
  ConvTranspose2d ``N * C_in * H_in * W_in * (C_out / groups) * KH * KW``,
  Linear ``(elements of the output) * in_features``. **Bias additions are
  not counted** (an add is not a multiply-accumulate), nor are batchnorm,
  activations, pooling, residual additions or functional ops called inside
  a custom module's ``forward``: the count is the GEMM work of the network.
- **receptive field** (size) and **jump** (distance in input pixels between
  two neighbouring units of the output), theoretical (padding included, so
  the size can exceed the image), from ``minicnn.explain.layer_geometry``:
  through a convolution or pooling layer r_out = r_in + d(k - 1) * j_in and
  j_out = j_in * s; element-wise layers keep both; ``Flatten`` and global
  pooling give one unit that sees the whole last map; a residual block gets
  its larger path. "-" where the geometry is unknown (e.g. ConvTranspose2d).

Totals: parameters (trainable, frozen), buffers, MACs, and the **activation
memory of a training step** at ``batch_size``: the input plus every distinct
tensor that a module returns (each layer output, and a residual block's
sum; a view of the module's input, such as ``Flatten``'s reshape, adds
nothing), times ``batch_size``, in the model's dtype. These are the tensors the
backward pass keeps; the gradient buffers of the backward pass, the
optimizer state and functional temporaries come on top, so it is a lower
bound of the true peak. Parameter memory is reported beside it.
"""
import copy

import numpy as np

from . import nn
from .autograd import Tensor, no_grad
from .backend import default_dtype, get_array_module
from .reference import output_size as conv_output_size   # the lectures' formula, floor((w + 2p - d(k-1) - 1) / s) + 1
from .utils import pair

__all__ = ["summary", "ModelSummary", "LayerRow", "SummaryError", "conv_output_size"]


class SummaryError(ValueError):
    """The model cannot run on ``input_shape``; the message names the layer that failed."""


class LayerRow:
    """One row of the summary: a module, what it outputs, what it costs."""

    def __init__(self, name, module, depth):
        self.name = name
        self.type = type(module).__name__
        self.depth = depth
        self.is_leaf = not any(True for _ in module.children())
        own = [p for p in module.parameters(recurse=False)]
        self.trainable = int(sum(p.size for p in own if p.requires_grad))
        self.frozen = int(sum(p.size for p in own if not p.requires_grad))
        self.buffers = int(sum(b.size for b in module.buffers(recurse=False)))
        self.input_shape = None
        self.output_shape = None
        self.macs = 0
        self.calls = 0
        self.rf = None       # (height, width) of the theoretical receptive field, input pixels
        self.jump = None     # (height, width) step in input pixels between neighbouring units, or None

    @property
    def params(self):
        """Trainable plus frozen parameter elements registered on this module itself."""
        return self.trainable + self.frozen

    non_trainable = property(lambda self: self.frozen, doc="frozen parameter elements (buffers are not counted)")
    receptive_field = property(lambda self: self.rf, doc="same as ``rf``: (height, width) in input pixels")

    def to_dict(self):
        return {"name": self.name, "type": self.type, "depth": self.depth, "leaf": self.is_leaf,
                "input_shape": _list(self.input_shape), "output_shape": _list(self.output_shape),
                "params": self.params, "trainable": self.trainable, "frozen": self.frozen,
                "buffers": self.buffers, "macs": self.macs, "calls": self.calls,
                "receptive_field": _list(self.rf), "jump": _list(self.jump)}

    def __repr__(self):
        return (f"LayerRow({self.name!r}, {self.type}, out={self.output_shape}, params={self.params}, "
                f"macs={self.macs}, rf={self.rf}, jump={self.jump})")


def _list(t):
    return None if t is None else list(t)


class ModelSummary:
    """The result of ``summary``: ``rows`` (LayerRow), totals, and a printable table.

    Attributes: ``rows``, ``input_shape``, ``batch_size``, ``dtype``,
    ``total_params``, ``trainable_params``, ``frozen_params``, ``total_buffers``,
    ``total_macs`` (one forward pass of ``input_shape``), ``activation_bytes``
    (training step at ``batch_size``), ``param_bytes``, ``output_shape``.
    """

    def __init__(self, rows, input_shape, batch_size, dtype, totals, output_shape):
        self.rows = rows
        self.input_shape = tuple(input_shape)
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        self.output_shape = output_shape
        for k, v in totals.items():
            setattr(self, k, v)

    non_trainable_params = property(lambda self: self.frozen_params,
                                    doc="frozen parameters (buffers such as running statistics are not counted)")

    def __getitem__(self, name):
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"summary: no layer named {name!r}; layers: {', '.join(r.name for r in self.rows[:8])} ...")

    def to_dict(self):
        return {"input_shape": list(self.input_shape), "batch_size": self.batch_size,
                "dtype": str(self.dtype), "output_shape": _list(self.output_shape),
                "total_params": self.total_params, "trainable_params": self.trainable_params,
                "frozen_params": self.frozen_params, "total_buffers": self.total_buffers,
                "total_macs": self.total_macs, "activation_bytes": self.activation_bytes,
                "param_bytes": self.param_bytes, "rows": [r.to_dict() for r in self.rows]}

    def table(self):
        """The rows as aligned text columns."""
        head = ("Layer", "Type", "Output shape", "Params", "Buffers", "MACs", "RF", "Jump")
        lines = []
        for r in self.rows:
            params = _n(r.params) + (f" ({_n(r.frozen)} frozen)" if r.frozen else "")
            lines.append(("  " * r.depth + r.name, r.type,
                          "-" if r.output_shape is None else str(tuple(r.output_shape)),
                          params if r.params else "-", _n(r.buffers) if r.buffers else "-",
                          _n(r.macs) if r.macs else "-", _hw(r.rf), _hw(r.jump)))
        widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
        right = {3, 4, 5, 6, 7}

        def fmt(cells):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(fmt(head))
        return "\n".join([fmt(head), rule] + [fmt(l) for l in lines] + [rule])

    def totals_text(self):
        mb = 1024 ** 2
        return "\n".join([
            f"input {self.input_shape} -> output {tuple(self.output_shape) if self.output_shape else '-'}",
            f"parameters: {_n(self.total_params)} (trainable {_n(self.trainable_params)}, "
            f"frozen {_n(self.frozen_params)}); buffers (not parameters): {_n(self.total_buffers)}",
            f"MACs per forward pass of {self.input_shape}: {_n(self.total_macs)} "
            f"({self.total_macs / 1e6:.2f} M; bias additions not counted)",
            f"activation memory of a training step at batch {self.batch_size}: "
            f"{self.activation_bytes / mb:.2f} MiB ({self.dtype}; layer outputs kept for backward)",
            f"parameter memory: {self.param_bytes / mb:.2f} MiB (x2 with gradients, x3 with SGD momentum)",
        ])

    def __str__(self):
        return self.table() + "\n" + self.totals_text()

    __repr__ = __str__

    def to_markdown(self):
        head = "| Layer | Type | Output shape | Params | Buffers | MACs | RF | Jump |\n|---|---|---|--:|--:|--:|--:|--:|"
        body = ["| " + " | ".join(["&nbsp;" * 2 * r.depth + f"`{r.name}`", r.type,
                                   "-" if r.output_shape is None else str(tuple(r.output_shape)),
                                   _n(r.params), _n(r.buffers), _n(r.macs), _hw(r.rf), _hw(r.jump)]) + " |"
                for r in self.rows]
        return "\n".join([head] + body + ["", self.totals_text().replace("\n", "  \n")])


def _n(v):
    return f"{int(v):,}"


def _hw(t):
    if t is None:
        return "-"
    return str(t[0]) if t[0] == t[1] else f"{t[0]}x{t[1]}"


# ------------------------------------------------------------------ geometry of one layer
def _geometry(module):
    """(kernel, stride, padding, dilation) pairs of a Conv2d / MaxPool2d / AvgPool2d, else None."""
    if isinstance(module, nn.ConvTranspose2d):
        return None
    if isinstance(module, nn.Conv2d):
        return module.kernel_size, module.stride, module.padding, module.dilation
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        name = type(module).__name__
        return (pair(module.kernel_size, "kernel_size", name, 1), pair(module.stride, "stride", name, 1),
                pair(module.padding, "padding", name, 0), pair(getattr(module, "dilation", 1), "dilation", name, 1))
    return None


def _check_geometry(name, module, shape):
    """Raise SummaryError when the (dilated) kernel is larger than the padded input."""
    geo = _geometry(module)
    if geo is None or len(shape) != 4:
        return
    for axis, w_in, k, s, p, d in zip(("height", "width"), shape[2:], *geo):
        extent = d * (k - 1) + 1
        if extent > w_in + 2 * p:
            raise SummaryError(
                f"layer '{name}' ({type(module).__name__}, kernel {k}, stride {s}, padding {p}, "
                f"dilation {d}): its kernel spans {extent} pixels but the padded input {axis} is only "
                f"{w_in} + 2*{p} = {w_in + 2 * p} (input shape {tuple(shape)}); "
                f"w_out = floor(({w_in} + 2*{p} - {d}*({k} - 1) - 1) / {s}) + 1 = "
                f"{conv_output_size(w_in, k, s, p, d)}. Use a larger input, more padding, or "
                f"fewer downsampling layers before it")


def _macs(module, in_shape, out_shape):
    """Multiply-accumulates of one call (bias additions not counted)."""
    if out_shape is None or in_shape is None:
        return 0
    if isinstance(module, nn.ConvTranspose2d):
        n, c_in, h, w = in_shape
        kh, kw = module.kernel_size
        return n * c_in * h * w * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return int(np.prod(out_shape)) * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return int(np.prod(out_shape)) * module.in_features
    return 0


# --------------------------------------------------------------------------- the walk
def _shape_of(x):
    if isinstance(x, (tuple, list)) and x:
        x = x[0]
    return tuple(int(v) for v in x.shape) if hasattr(x, "shape") else None


def _is_view_of(t, x):
    """True when ``t``'s array shares memory with input ``x``'s (a reshape or Flatten view: no new memory)."""
    if not isinstance(x, Tensor):
        return False
    xp = get_array_module(t.data)
    return bool(xp.may_share_memory(t.data, x.data))


def _first_tensor(x):
    if isinstance(x, (tuple, list)) and x:
        return x[0]
    return x


def summary(model, input_shape=(1, 3, 32, 32), batch_size=None, device="cpu"):
    """Per-layer output shapes, parameters, buffers, MACs and receptive fields of ``model``.

    Args:
        model: a minicnn ``nn.Module`` (never modified: the forward pass runs
            on a deep copy, in eval mode).
        input_shape: (N, C, H, W) of the input (a (C, H, W) gets N = 1). MACs
            are counted for this whole input (per image with N = 1).
        batch_size: batch size for the activation memory of a training step
            (default: N of ``input_shape``).
        device: where the copy runs ('cpu' or 'gpu').

    Returns:
        ``ModelSummary`` (print it; ``.rows``, ``.total_params``, ``.to_dict()``).

    Raises:
        SummaryError: the model cannot run on ``input_shape``; the message
            names the layer that fails (e.g. a kernel larger than its padded input).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"summary: model must be a minicnn nn.Module, got {type(model).__name__}")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is not None and len(shape) == 3:
        shape = (1,) + shape
    if shape is None or len(shape) < 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                              or v <= 0 for v in shape):
        raise ValueError(f"summary: input_shape must be a tuple of positive ints such as (1, 3, 32, 32), "
                         f"got {input_shape!r}")
    shape = tuple(int(v) for v in shape)
    if batch_size is None:
        batch_size = shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"summary: batch_size must be a positive int, got {batch_size!r}")
    floats = [t for t in list(model.parameters()) + list(model.buffers()) if t.dtype.kind == "f"]
    dtype = floats[0].dtype if floats else np.dtype(default_dtype())

    net = copy.deepcopy(model).to(device).eval()
    rows, by_id = [], {}
    lone = not any(True for _ in net.children())     # a single layer: its own row
    for name, mod in net.named_modules():
        if name == "" and not lone:
            continue
        row = LayerRow(name, mod, name.count("."))
        rows.append(row)
        by_id[id(mod)] = row

    kept = {}             # id(tensor) -> tensor: every distinct module output (kept alive so ids stay unique)

    def wrap(name, mod, forward):
        row = by_id[id(mod)]

        def run(*args, **kwargs):
            x = args[0] if args else None
            in_shape = _shape_of(x)
            if in_shape is not None:
                _check_geometry(name, mod, in_shape)
            try:
                out = forward(*args, **kwargs)
            except SummaryError:
                raise
            except Exception as e:
                raise SummaryError(f"layer '{name}' ({row.type}) failed on input shape {in_shape}: "
                                   f"{type(e).__name__}: {e}") from None
            out_shape = _shape_of(out)
            row.calls += 1
            if row.calls == 1:
                row.input_shape, row.output_shape = in_shape, out_shape
            row.macs += _macs(mod, in_shape, out_shape)
            t = _first_tensor(out)
            if isinstance(t, Tensor) and not _is_view_of(t, x):
                kept.setdefault(id(t), t)
            return out

        return run

    for name, mod in net.named_modules():
        if id(mod) in by_id:
            object.__setattr__(mod, "forward", wrap(name or type(mod).__name__, mod, mod.forward))
    from .backend import to_device
    x = Tensor(to_device(np.zeros(shape, dtype=dtype), device))
    with no_grad():
        try:
            out = net(x)
        except SummaryError:
            raise
        except Exception as e:
            raise SummaryError(f"the model failed on input shape {shape}: {type(e).__name__}: {e}") from None

    _receptive_fields(model, shape, rows)
    n = shape[0]
    out_elems = int(np.prod(shape)) + sum(int(t.size) for tid, t in kept.items() if tid != id(x))
    params = list(model.parameters())
    trainable = int(sum(p.size for p in params if p.requires_grad))
    frozen = int(sum(p.size for p in params if not p.requires_grad))
    totals = dict(
        total_params=trainable + frozen, trainable_params=trainable, frozen_params=frozen,
        total_buffers=int(sum(b.size for b in model.buffers())),
        total_macs=int(sum(r.macs for r in rows)),
        activation_bytes=int(out_elems * batch_size // n * dtype.itemsize) if out_elems * batch_size % n == 0
        else int(out_elems / n * batch_size * dtype.itemsize),
        param_bytes=int(sum(p.size * p.dtype.itemsize for p in params)),
    )
    return ModelSummary(rows, shape, int(batch_size), dtype, totals, _shape_of(out))


def _receptive_fields(model, shape, rows):
    """Fill ``row.rf`` and ``row.jump`` from ``minicnn.explain.layer_geometry`` (the shared walker)."""
    if len(shape) != 4:
        return
    from .explain.receptive_field import layer_geometry

    geometry = layer_geometry(model, shape)
    for row in rows:
        g = geometry.get(row.name)
        if g is not None:
            row.rf = tuple(g.size)
            row.jump = tuple(g.jump)
