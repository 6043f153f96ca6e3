"""The layers: thin Modules that hold parameters and call ``minicnn.functional``.

Each layer's ``forward`` is one call into ``F`` (``nn.Conv2d.forward`` ->
``F.conv2d`` -> im2col + one GEMM), so the maths lives in one place: the
``Function`` classes of ``minicnn.functional``, whose docstrings give the
forward and backward formulas. Constructor arguments, defaults, parameter
shapes and ``repr`` follow PyTorch, so weights can be copied across, except
for the initialization: see ``Conv2d`` and ``Linear``.
"""
from collections import OrderedDict

import numpy as np

from .. import functional as F
from ..functional.norm import check_batch_norm_settings
from ..backend import default_dtype
from ..utils import pair
from . import init
from .module import Module, Parameter

__all__ = [
    "Sequential", "ModuleList", "Identity", "Linear", "Conv2d", "ConvTranspose2d",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "Dropout",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten", "Normalize",
]


# ---------------------------------------------------------------- helpers
def _positive_int(value, name, layer):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def _new_param(shape):
    """An uninitialised Parameter of ``shape`` in the default dtype (filled by ``reset_parameters``)."""
    return Parameter(np.empty(shape, dtype=default_dtype()))


def _check_input(layer, x, ndim, channels, what):
    """Clear error when a layer gets the wrong number of axes or channels."""
    if x.ndim != ndim or x.shape[1] != channels:
        raise ValueError(f"{layer}: expected input of shape {what} with {channels} channels, "
                         f"got {tuple(x.shape)}")


# ------------------------------------------------------------ containers
class Sequential(Module):
    """Chains modules: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    Children are named ``'0'``, ``'1'``, ... (or by an ``OrderedDict``
    passed as the only argument). Indexable (``seq[0]``, ``seq[-1]``,
    ``seq[1:3]`` gives a Sequential), has ``len``, iterates over its
    modules, and grows with ``append``.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def _key(self, index):
        n = len(self._modules)
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"{type(self).__name__} indices must be ints or slices, got {type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} is out of range for {n} module(s)")
        return list(self._modules)[index % n]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return type(self)(OrderedDict(list(self._modules.items())[index]))
        return self._modules[self._key(index)]

    def __setitem__(self, index, module):
        self.add_module(self._key(index), module)

    def __delitem__(self, index):
        keys = list(self._modules)[index] if isinstance(index, slice) else [self._key(index)]
        for k in keys:
            del self._modules[k]
        # Renumber 0..n-1 (as PyTorch does), so a later append() gets a fresh name.
        kept = list(self._modules.values())
        self._modules.clear()
        for i, m in enumerate(kept):
            self._modules[str(i)] = m

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        """Add ``module`` at the end (named by its position); returns self."""
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        for module in self:
            x = module(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered (use it for ResNet stages).

    Unlike a plain Python list, the modules appear in ``parameters()``,
    ``state_dict()`` (as ``'0.weight'``, ...), ``to()``, ``train()``. It has
    no ``forward``: the owner decides how to call them.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    _key = Sequential._key
    __setitem__ = Sequential.__setitem__
    __len__ = Sequential.__len__
    __iter__ = Sequential.__iter__

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[self._key(index)]

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def forward(self, *args):
        raise NotImplementedError("ModuleList has no forward(): iterate over it and call each module")


class Identity(Module):
    """y = x (a placeholder, e.g. a ResNet shortcut that needs no projection)."""

    def forward(self, x):
        return x


# ---------------------------------------------------------------- linear
class Linear(Module):
    """Fully connected layer: y = x @ W^T + b.

    Shapes: x (N, in_features) (or (..., in_features)), W (out_features,
    in_features), b (out_features,), y (N, out_features).

    Initialization: **He normal**, W ~ N(0, 2 / in_features) (std =
    sqrt(2 / fan_in), ``init.kaiming_normal_(W, nonlinearity='relu')``) and
    **zero bias**, as the lectures teach for ReLU networks. This differs on
    purpose from PyTorch's default (Kaiming-uniform with a=sqrt(5), which
    gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and a uniform bias).
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features", "Linear")
        self.out_features = _positive_int(out_features, "out_features", "Linear")
        self.weight = _new_param((self.out_features, self.in_features))
        if bias:
            self.bias = _new_param((self.out_features,))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """He normal weight (std = sqrt(2 / in_features)), zero bias."""
        init.kaiming_normal_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# ----------------------------------------------------------- convolutions
class Conv2d(Module):
    """2-D convolution (cross-correlation, as in every framework), NCHW.

    y[n, o] = b[o] + sum over the input channels c of group(o), and kernel
    offsets (i, j), of W[o, c, i, j] * x_padded[n, c, s_h*h + d_h*i, s_w*w + d_w*j]

    Shapes: x (N, C_in, H, W), weight (C_out, C_in/groups, KH, KW), bias
    (C_out,), y (N, C_out, H_out, W_out) with
    H_out = floor((H + 2*padding - dilation*(KH-1) - 1) / stride) + 1.
    ``forward`` calls ``F.conv2d`` (im2col + one GEMM; see
    ``minicnn.functional.conv``).

    Initialization: **He normal**, W ~ N(0, 2 / fan_in) with fan_in =
    C_in/groups * KH * KW (``init.kaiming_normal_(W, nonlinearity='relu')``),
    and **zero bias**, as the lectures teach. This differs on purpose from
    PyTorch's default (Kaiming-uniform with a=sqrt(5) and a uniform bias).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True):
        super().__init__()
        name = type(self).__name__
        self.in_channels = _positive_int(in_channels, "in_channels", name)
        self.out_channels = _positive_int(out_channels, "out_channels", name)
        self.kernel_size = pair(kernel_size, "kernel_size", name, 1)
        self.stride = pair(stride, "stride", name, 1)
        self.padding = pair(padding, "padding", name, 0)
        self.dilation = pair(dilation, "dilation", name, 1)
        self.groups = _positive_int(groups, "groups", name)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{name}: in_channels ({self.in_channels}) and out_channels "
                             f"({self.out_channels}) must both be divisible by groups ({self.groups})")
        self.weight = _new_param(self._weight_shape())
        if bias:
            self.bias = _new_param((self.out_channels,))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _weight_shape(self):
        return (self.out_channels, self.in_channels // self.groups) + self.kernel_size

    def reset_parameters(self):
        """He normal weight (std = sqrt(2 / fan_in)), zero bias."""
        init.kaiming_normal_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        _check_input(type(self).__name__, x, 4, self.in_channels, "(N, C_in, H, W)")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if getattr(self, "output_padding", (0, 0)) != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class ConvTranspose2d(Conv2d):
    """Transposed ("fractionally strided", "deconvolution") 2-D convolution, NCHW.

    The gradient of ``Conv2d`` with respect to its input, used as a layer:
    each input pixel scatters a weighted copy of the kernel into the output,
    upsampling by ``stride``.

    Shapes: x (N, C_in, H, W), weight (C_in, C_out/groups, KH, KW) (PyTorch's
    layout), bias (C_out,), y (N, C_out, H_out, W_out) with
    H_out = (H - 1)*stride - 2*padding + dilation*(KH - 1) + output_padding + 1.
    ``forward`` calls ``F.conv_transpose2d``.

    Initialization: He normal with PyTorch's fan convention applied to this
    weight (fan_in = weight.shape[1] * KH * KW = C_out/groups * KH * KW) and
    zero bias; PyTorch's default differs (see ``Conv2d``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1):
        self.output_padding = pair(output_padding, "output_padding", "ConvTranspose2d", 0)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be smaller "
                                 f"than either stride {self.stride} or dilation {self.dilation}")

    def _weight_shape(self):
        return (self.in_channels, self.out_channels // self.groups) + self.kernel_size

    def forward(self, x):
        _check_input("ConvTranspose2d", x, 4, self.in_channels, "(N, C_in, H, W)")
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.dilation, self.groups)


# ---------------------------------------------------------------- pooling
class MaxPool2d(Module):
    """Max pooling: each output is the largest input in its window (padding counts as -inf).

    ``stride`` defaults to ``kernel_size``. The forward pass stores the
    argmax of each window; the backward pass sends each gradient to exactly
    that input. ``return_indices=True`` also returns the flat argmax indices.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False):
        super().__init__()
        pair(kernel_size, "kernel_size", "MaxPool2d", 1)
        if stride is not None:
            pair(stride, "stride", "MaxPool2d", 1)
        pair(padding, "padding", "MaxPool2d", 0)
        pair(dilation, "dilation", "MaxPool2d", 1)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = bool(return_indices)

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            return_indices=self.return_indices)

    def extra_repr(self):
        s = (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
             f"dilation={self.dilation}")
        if self.return_indices:
            s += ", return_indices=True"
        return s


class AvgPool2d(Module):
    """Average pooling over KH x KW windows (``stride`` defaults to ``kernel_size``).

    With ``count_include_pad=True`` (the default, as PyTorch) padded zeros
    count in the divisor; otherwise only real inputs do.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__()
        pair(kernel_size, "kernel_size", "AvgPool2d", 1)
        if stride is not None:
            pair(stride, "stride", "AvgPool2d", 1)
        pair(padding, "padding", "AvgPool2d", 0)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                            count_include_pad=self.count_include_pad)

    def extra_repr(self):
        s = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if not self.count_include_pad:
            s += ", count_include_pad=False"
        return s


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` (int or pair) whatever the input size.

    ``AdaptiveAvgPool2d(1)`` is global average pooling: (N, C, H, W) -> (N, C, 1, 1).
    """

    def __init__(self, output_size):
        super().__init__()
        sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        if len(sizes) != 2 or not all(s is None or (isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                                    and s >= 1) for s in sizes):
            raise ValueError(f"AdaptiveAvgPool2d: output_size must be a positive int or a pair of them "
                             f"(None keeps that input size), got {output_size!r}")
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


# ---------------------------------------------------------- normalization
class _BatchNorm(Module):
    """Shared code of BatchNorm1d / BatchNorm2d (see ``BatchNorm2d``)."""

    _expected = ""  # input shapes accepted, for error messages

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        name = type(self).__name__
        self.num_features = _positive_int(num_features, "num_features", name)
        check_batch_norm_settings(name, momentum, eps)
        self.eps = eps
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dtype = default_dtype()
        if self.affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))    # gamma
            self.bias = Parameter(np.zeros(num_features, dtype=dtype))     # beta
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x):
        """``F.batch_norm`` in the layer's mode, after the layer's own check (x's rank and C; the op checks the rest)."""
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): expected input of shape {self._expected} "
                             f"with C = {self.num_features}, got {tuple(x.shape)}")
        use_batch = self.training or self.running_mean is None   # batch statistics, or when no running ones are kept
        x4 = F.reshape(x, x.shape + (1,)) if x.ndim == 3 else x    # (N, C, L) is an image of height L and width 1
        y = F.batch_norm(x4, self.running_mean, self.running_var, self.weight, self.bias, use_batch,
                         momentum=self.momentum, eps=self.eps)
        return F.reshape(y, x.shape) if x.ndim == 3 else y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization over (N, C) or (N, C, L) inputs, per channel C.

    Same maths as ``BatchNorm2d``, with the statistics taken over N (and L).
    """

    _ndims = (2, 3)
    _expected = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) inputs, per channel (Ioffe & Szegedy 2015).

    Training: mu, var = mean and biased variance of x over (N, H, W);
    y = weight * (x - mu) / sqrt(var + eps) + bias; the buffers are updated
    as running = (1 - momentum) * running + momentum * batch_stat, with the
    unbiased variance for ``running_var`` (PyTorch's convention).
    Evaluation (``.eval()``): the same affine map with the running
    statistics. ``weight`` starts at 1, ``bias`` at 0. ``forward`` calls
    ``F.batch_norm``, whose docstring gives the backward pass.
    """

    _ndims = (4,)
    _expected = "(N, C, H, W)"


# --------------------------------------------------------- regularization
class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and
    scale the rest by 1/(1-p) (so evaluation needs no rescaling); identity in eval mode."""

    def __init__(self, p=0.5):
        super().__init__()
        if isinstance(p, bool) or not (isinstance(p, (int, float)) and 0 <= p < 1):
            raise ValueError(f"Dropout: p must be a probability in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training)

    def extra_repr(self):
        return f"p={self.p}"


# ------------------------------------------------------------ activations
class ReLU(Module):
    """y = max(x, 0)."""

    def forward(self, x):
        return F.relu(x)


class LeakyReLU(Module):
    """y = x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """y = 1 / (1 + exp(-x))."""

    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    """y = tanh(x)."""

    def forward(self, x):
        return F.tanh(x)


class Flatten(Module):
    """Merge axes ``start_dim..end_dim`` into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Normalize(Module):
    """Per-channel standardisation: ``y[:, c] = (x[:, c] - mean[c]) / std[c]``.

    The first layer of a model from ``minicnn.load_model``, so that the model
    takes pixels in [0, 1] and gradients with respect to its input are
    gradients with respect to the pixels (saliency, attacks, synthesis).
    ``mean`` and ``std`` are buffers (saved in ``state_dict``, never optimised).
    Backward: ``dx[:, c] = dy[:, c] / std[c]``, which autograd derives from
    the subtraction and the division.
    """

    def __init__(self, mean, std):
        super().__init__()
        mean = np.asarray(mean, dtype=default_dtype()).reshape(-1)
        std = np.asarray(std, dtype=default_dtype()).reshape(-1)
        if mean.shape != std.shape or mean.size == 0:
            raise ValueError(f"Normalize: mean and std must be non-empty and of one length, got "
                             f"{mean.size} and {std.size} values")
        if not (np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError(f"Normalize: every std must be positive and finite, got {std.tolist()}")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        c = self.mean.shape[0]
        if x.ndim < 2 or x.shape[1] != c:
            raise ValueError(f"Normalize({c} channels): expected input of shape (N, {c}, ...), "
                             f"got {tuple(x.shape)}")
        shape = (1, c) + (1,) * (x.ndim - 2)
        return (x - self.mean.reshape(shape)) / self.std.reshape(shape)

    def extra_repr(self):
        return (f"mean={[round(float(v), 4) for v in self.mean.numpy()]}, "
                f"std={[round(float(v), 4) for v in self.std.numpy()]}")
