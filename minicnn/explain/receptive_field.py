"""Receptive fields: which input pixels a unit can see (theory) and which it uses (practice).

Theoretical receptive field (Dumoulin & Visin's "guide to convolution
arithmetic"; Araujo et al., Distill 2019). Along each axis a layer with
kernel k, stride s, padding p and dilation d (effective kernel
k_eff = d*(k - 1) + 1) maps the geometry of its input units to that of its
output units:

    size_out  = size_in + (k_eff - 1) * jump_in        pixels one unit sees
    jump_out  = jump_in * s                            input pixels between neighbouring units
    start_out = start_in + ((k_eff - 1)/2 - p) * jump_in   centre of unit 0, in input pixels

starting from the image itself: size 1, jump 1, start 0 (pixel i has its
centre at i). Unit i of a layer is centred at ``start + i * jump`` and sees
``size`` pixels around it (some of them may lie in the padding, outside the
image). Element-wise layers (batchnorm, ReLU, dropout) keep the geometry; a
residual block keeps the larger of its paths (the convolutions, not the
shortcut); ``Flatten`` and global pooling give one unit that sees the union
of all units of the map before it.

``layer_geometry(model, input_shape)`` computes this for every named module
(by running one forward pass with hooks, so any architecture built from
``Conv2d``, pooling and element-wise layers works, whatever its ``forward``
does); ``receptive_field`` picks one layer. ``effective_receptive_field``
measures the gradient of a centre unit with respect to the input (Luo,
Li, Urtasun & Zemel, "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NIPS 2016): it is much smaller than the
theoretical field and roughly Gaussian.
"""
import numbers
from collections import OrderedDict, namedtuple

import numpy as np

from ..autograd import Tensor, no_grad
from ..backend import get_array_module, to_device
from ..nn import AdaptiveAvgPool2d, AvgPool2d, Conv2d, ConvTranspose2d, Flatten, MaxPool2d, Normalize
from ..analysis import analysis_mode, find_layer, model_device_dtype

__all__ = ["Pair", "Geometry", "layer_geometry", "receptive_field", "effective_receptive_field"]


class Pair(tuple):
    """A (height, width) pair that also equals a single number when both are it.

    ``Pair(5, 5) == 5`` and ``Pair(5, 5) == (5, 5)`` are both True, so square
    receptive fields read naturally (``rf.size == 18``).
    """

    def __new__(cls, h, w=None):
        return super().__new__(cls, (h, h if w is None else w))

    def __eq__(self, other):
        if isinstance(other, numbers.Number):
            return self[0] == other and self[1] == other
        return tuple.__eq__(self, tuple(other)) if isinstance(other, (tuple, list)) else NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = tuple.__hash__

    def __repr__(self):
        return f"({self[0]!r}, {self[1]!r})"


def _number(v):
    """An int when v is integral (4.0 -> 4), else the float (0.5 stays 0.5)."""
    return int(v) if float(v).is_integer() else float(v)


class Geometry(namedtuple("Geometry", ["size", "jump", "start"])):
    """Receptive-field geometry of a layer's units, each field a ``Pair`` (height, width).

    size: input pixels one unit sees along each axis; jump: input pixels
    between neighbouring units (the product of the strides); start: the
    centre of unit (0, 0) in input pixel coordinates (pixel i is centred at
    i; may be fractional or negative).
    """

    __slots__ = ()

    def centre(self, i, j):
        """Input-pixel coordinates (row, column) of the centre of unit (i, j)."""
        return (self.start[0] + i * self.jump[0], self.start[1] + j * self.jump[1])

    def region(self, i, j):
        """((top, bottom), (left, right)): the inclusive pixel range unit (i, j) sees.

        Can reach outside the image (into the padding); clip it yourself.
        """
        (ci, cj) = self.centre(i, j)
        half_h, half_w = (self.size[0] - 1) / 2, (self.size[1] - 1) / 2
        return ((int(np.ceil(ci - half_h)), int(np.floor(ci + half_h))),
                (int(np.ceil(cj - half_w)), int(np.floor(cj + half_w))))


_IMAGE = Geometry(Pair(1), Pair(1), Pair(0))


def _pair(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _compose(g, kernel, stride, padding, dilation):
    """Geometry after a window op (conv or pooling) applied to units of geometry ``g``."""
    size, jump, start = [], [], []
    for a in range(2):
        k_eff = dilation[a] * (kernel[a] - 1) + 1
        size.append(_number(g.size[a] + (k_eff - 1) * g.jump[a]))
        jump.append(_number(g.jump[a] * stride[a]))
        start.append(_number(g.start[a] + ((k_eff - 1) / 2 - padding[a]) * g.jump[a]))
    return Geometry(Pair(*size), Pair(*jump), Pair(*start))


def _whole_map(g, hw):
    """One unit that sees every unit of an (h, w) map of geometry ``g`` (Flatten, global pooling)."""
    return _compose(g, hw, hw, (0, 0), (1, 1))


def _spatial(t):
    """(H, W) of an (N, C, H, W) tensor; None for anything else."""
    return tuple(t.shape[2:]) if isinstance(t, Tensor) and t.ndim == 4 else None


def _area(g):
    return g.size[0] * g.size[1]


def _own_geometry(module, g_in, x, out):
    """Geometry of ``module``'s output from its input geometry, for the layers that set it; else None."""
    if isinstance(module, ConvTranspose2d):
        return None                      # upsampling: not a receptive-field op
    if isinstance(module, Conv2d):
        return _compose(g_in, module.kernel_size, module.stride, module.padding, module.dilation)
    if isinstance(module, MaxPool2d):
        return _compose(g_in, _pair(module.kernel_size), _pair(module.stride), _pair(module.padding),
                        _pair(module.dilation))
    if isinstance(module, AvgPool2d):
        return _compose(g_in, _pair(module.kernel_size), _pair(module.stride), _pair(module.padding), (1, 1))
    if isinstance(module, AdaptiveAvgPool2d):
        (h, w), (oh, ow) = _spatial(x), _spatial(out)
        # windows of ceil(in/out) pixels every floor(in/out) (exact when out divides in)
        kernel = (-(-h // oh), -(-w // ow))
        return _compose(g_in, kernel, (h // oh, w // ow), (0, 0), (1, 1))
    if isinstance(module, Flatten) and _spatial(x) is not None:
        return _whole_map(g_in, _spatial(x))
    return None


def layer_geometry(model, input_shape=(3, 32, 32)):
    """The theoretical receptive field of every named module of ``model``.

    Args:
        model: any ``nn.Module`` that takes (N, C, H, W) images.
        input_shape: (H, W), (C, H, W) or (N, C, H, W); without C, the number
            of input channels is read from the first ``Conv2d`` (or
            ``Normalize``) of the model.

    Returns an ``OrderedDict`` name -> ``Geometry(size, jump, start)`` (each
    a ``Pair`` (height, width), see the module docstring) for every name of
    ``model.named_modules()`` in that order, '' being the whole model; None
    for a module whose geometry cannot be known (it did not run, or it
    changes the map size and is not a conv or pooling layer). Modules after
    ``Flatten``/global pooling see the union of the last map's units. A
    module used at several places gets the geometry of its last call.

    How: one forward pass of zeros in eval mode with a hook on every module
    (the model is not changed). Each tensor a hook sees gets a geometry:
    convolutions and pooling compose it (formulas in the module docstring),
    element-wise layers keep it, and a container whose output was made
    outside any module (a residual ``relu(f(x) + x)``) takes the largest
    geometry, of the same map size, among its sub-modules' outputs and its
    input. A tensor made by a plain function between modules (``F.relu``)
    inherits the geometry of the latest module output of its map size.
    """
    shape = _full_shape(model, input_shape)
    device, dtype = model_device_dtype(model)
    x = Tensor(to_device(np.zeros(shape, dtype=dtype), device))

    known = {}        # id(tensor) -> (tensor, geometry): the tensor is kept so its id stays unique
    history = []      # (spatial shape, geometry) of each module output, in completion order
    result = OrderedDict((name, None) for name, _ in model.named_modules())
    names = {}
    for name, m in model.named_modules():
        names.setdefault(id(m), name)
    descendants = {id(m): [id(d) for d in m.modules() if d is not m] for _, m in model.named_modules()}
    latest = {}       # id(module) -> (spatial shape, geometry) of its latest output

    def remember(t, g):
        if isinstance(t, Tensor) and g is not None:
            known[id(t)] = (t, g)
            history.append((_spatial(t), g))

    def lookup(t):
        """Geometry of tensor t: known exactly, or inherited from the latest output of its map size."""
        if isinstance(t, Tensor) and id(t) in known:
            return known[id(t)][1]
        hw = _spatial(t)
        if hw is None:                   # a vector (F.flatten of a map): the union of the last map's units
            if not history:
                return None
            seen_hw, g = history[-1]
            return g if seen_hw is None else _whole_map(g, seen_hw)
        for seen_hw, g in reversed(history):
            if seen_hw == hw:
                return g
        return None

    def hook(module, inputs, out):
        inp = inputs[0] if inputs else None
        g_in = lookup(inp)
        g = None
        if isinstance(out, Tensor) and id(out) in known:
            g = known[id(out)][1]                         # Sequential, Identity: an output already seen
        elif g_in is not None:
            if _spatial(inp) is not None and _spatial(out) is None and not isinstance(module, Flatten):
                g_in = _whole_map(g_in, _spatial(inp))     # e.g. a Linear applied to a 4-D map's flattening
            g = _own_geometry(module, g_in, inp, out)
            if g is None and not isinstance(module, (Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d)):
                same = _spatial(out) == _spatial(inp)
                inner = [latest[d] for d in descendants[id(module)] if d in latest]
                candidates = [gd for hw, gd in inner if hw == _spatial(out)] + ([g_in] if same else [])
                if candidates:
                    g = max(candidates, key=_area)        # a residual block: the larger path
        if isinstance(out, Tensor):
            latest[id(module)] = (_spatial(out), g)
            remember(out, g)
        result[names[id(module)]] = g

    remember(x, _IMAGE)
    handles = []
    with analysis_mode(model), no_grad():
        try:
            for _, m in model.named_modules():
                handles.append(m.register_forward_hook(hook))
            model(x)
        finally:
            for h in handles:
                h.remove()
    return result


def _full_shape(model, input_shape):
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 4:
        return (1,) + shape[1:]
    if len(shape) == 3:
        return (1,) + shape
    if len(shape) != 2:
        raise ValueError(f"input_shape must be (H, W), (C, H, W) or (N, C, H, W), got {input_shape!r}")
    for m in model.modules():
        if isinstance(m, Conv2d):
            return (1, m.in_channels) + shape
        if isinstance(m, Normalize):
            return (1, int(m.mean.shape[0])) + shape
    raise ValueError("input_shape: give the number of channels, (C, H, W); the model has no Conv2d "
                     "or Normalize to read it from")


def receptive_field(model, layer, input_size=(32, 32)):
    """Theoretical receptive field of one unit of ``layer`` (a name or the module).

    Returns ``Geometry(size, jump, start)``, each a ``Pair`` (height, width):
    ``size`` input pixels seen by one unit, ``jump`` pixels between
    neighbouring units (product of the strides), ``start`` the centre of
    unit (0, 0) in input pixels; ``geometry.region(i, j)`` gives the pixel
    range of unit (i, j). ``input_size`` is (H, W) or (C, H, W). Residual
    blocks take their larger path. See ``layer_geometry`` for every layer at once.
    """
    name, _ = find_layer(model, layer)
    g = layer_geometry(model, input_size)[name]
    if g is None:
        raise ValueError(f"receptive_field: the geometry of layer {name!r} is unknown (it did not run "
                         f"in the forward pass, or it changes the map size without being a "
                         f"convolution or pooling layer)")
    return g


def effective_receptive_field(model, layer, input_size=(32, 32), x=None, samples=8, seed=0):
    """Luo et al.'s effective receptive field: |d unit / d input| of a centre unit, averaged.

    The unit is the centre position (h // 2, w // 2) of ``layer``'s output
    map, summed over its channels (Luo et al. put gradient 1 at the centre
    of every channel). The gradient with respect to the input is summed in
    absolute value over the input channels and averaged over ``samples``
    inputs: uniform noise in [0, 1] (seeded by ``seed``) of shape
    ``input_size`` ((H, W) or (C, H, W)), or the images ``x`` (N, C, H, W)
    when given.

    Returns an (H, W) array (on x's device; without x, on the model's): the raw mean magnitude
    of the gradient. Its non-zero pixels lie inside the theoretical field
    (``receptive_field(...).region(h // 2, w // 2)``); most of the mass sits
    in a much smaller, roughly Gaussian blob around the centre.
    """
    from ..analysis import as_images, capture, on_device_of

    name, module = find_layer(model, layer)
    if x is None:
        shape = _full_shape(model, input_size)
        device, dtype = model_device_dtype(model)
        rng = np.random.default_rng(seed)
        data = to_device(rng.random((int(samples),) + shape[1:]).astype(dtype), device)
    else:
        data = as_images(x, model)
    xp = get_array_module(data)
    with analysis_mode(model):
        xt = Tensor(data, requires_grad=True)
        with capture({name: module}) as outs:
            model(xt)
        if name not in outs:
            raise ValueError(f"effective_receptive_field: layer {name!r} did not run in the forward pass")
        a = outs[name]
        if a.ndim != 4:
            raise ValueError(f"effective_receptive_field: layer {name!r} gives shape {tuple(a.shape)}; "
                             f"a spatial (N, C, h, w) map is needed")
        seed_grad = xp.zeros(a.shape, dtype=a.dtype)
        seed_grad[:, :, a.shape[2] // 2, a.shape[3] // 2] = 1
        a.backward(seed_grad)
        grad = xt.grad
    erf = xp.abs(grad).sum(axis=1).mean(axis=0)
    return erf if x is None else on_device_of(x, erf)
