"""Weight initialization: He (Kaiming) and Xavier (Glorot), with PyTorch's conventions.

Why it matters: a layer y = W x with n inputs per output and weights of
variance s**2 gives Var(y) = n s**2 Var(x). Keeping activations at a steady
scale through many layers needs n s**2 ~ 1 (times a correction for the
nonlinearity), which is what these functions choose.

**Fans** (as ``torch.nn.init``): for a weight of shape (d0, d1, k1, k2, ...)
the receptive field is k1*k2*..., and

    fan_in  = d1 * receptive field     (inputs feeding one output)
    fan_out = d0 * receptive field

so a Conv2d weight (C_out, C_in/groups, KH, KW) has fan_in = C_in/groups*KH*KW
and a Linear weight (out, in) has fan_in = in.

**Gains** (``calculate_gain``): linear/conv/sigmoid 1, tanh 5/3, relu
sqrt(2), leaky_relu sqrt(2 / (1 + a**2)), selu 3/4. ReLU zeroes half of a
symmetric input, halving the variance; the gain sqrt(2) puts it back.

- He / Kaiming (He et al. 2015): std = gain / sqrt(fan). ``kaiming_normal_``
  draws N(0, std**2); ``kaiming_uniform_`` draws U(-b, b) with b = sqrt(3) std
  (same variance). With ``nonlinearity='relu'``, mode ``'fan_in'``:
  std = sqrt(2 / fan_in), the default of ``nn.Conv2d`` and ``nn.Linear``.
- Xavier / Glorot (2010): std = gain * sqrt(2 / (fan_in + fan_out));
  ``xavier_uniform_`` uses b = sqrt(3) std.

**Randomness.** Every function takes an optional ``rng``
(``numpy.random.Generator``). Without it they draw from this module's
generator, which starts from fresh OS entropy and is made reproducible by
``minicnn.nn.init.manual_seed(seed)`` (call it before building a model to
get the same initial weights every run). Values are drawn on the CPU in
float64 and then written into the tensor, so the tensor keeps its dtype and
device, and a seed gives the same weights on CPU and GPU.

All functions work in place on a Tensor/Parameter (its ``.data``) or on a
raw array, and return what they were given.
"""
import math

import numpy as np

from ..autograd import Tensor

__all__ = [
    "manual_seed", "get_rng", "calculate_gain", "calculate_fan_in_and_fan_out",
    "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_",
    "normal_", "uniform_", "constant_", "zeros_", "ones_",
]

_rng = np.random.default_rng()


def manual_seed(seed):
    """Reseed the generator the init functions use when no ``rng`` is given."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def get_rng():
    """The module-level ``numpy.random.Generator`` (its ``bit_generator.state`` can be checkpointed)."""
    return _rng


def _array(tensor, fn):
    if isinstance(tensor, Tensor):
        return tensor.data
    if hasattr(tensor, "dtype") and hasattr(tensor, "shape"):
        return tensor
    raise TypeError(f"{fn}: expected a Tensor or an array, got {type(tensor).__name__}")


def _fill(tensor, values, fn):
    """Write ``values`` (a NumPy array or a number) into the tensor's array, keeping dtype and device."""
    arr = _array(tensor, fn)
    if arr.dtype.kind != "f":
        raise TypeError(f"{fn}: the tensor must be floating, got dtype {arr.dtype}")
    if isinstance(values, np.ndarray) and type(arr) is not np.ndarray:
        from ..backend import to_device
        values = to_device(values, "gpu")
    arr[...] = values
    return tensor


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for ``nonlinearity`` (PyTorch's table).

    ================================  =========================
    linear, conv*, sigmoid            1
    tanh                              5/3
    relu                              sqrt(2)
    leaky_relu (slope ``param``)      sqrt(2 / (1 + param**2)), param defaults to 0.01
    selu                              3/4
    ================================  =========================
    """
    linear_like = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                   "conv_transpose2d", "conv_transpose3d", "sigmoid")
    if nonlinearity in linear_like:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; use one of "
                     f"{', '.join(linear_like)}, tanh, relu, leaky_relu, selu")


def calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) = (shape[1] * rf, shape[0] * rf), rf = prod(shape[2:]) (1 for 2-D)."""
    shape = tuple(_array(tensor, "calculate_fan_in_and_fan_out").shape)
    if len(shape) < 2:
        raise ValueError(f"calculate_fan_in_and_fan_out: fan in and fan out need a tensor with at "
                         f"least 2 dimensions, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor, mode, fn):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{fn}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError(f"{fn}: cannot initialize a tensor with zero elements "
                         f"(shape {tuple(_array(tensor, fn).shape)})")
    return fan


def _shape(tensor, fn):
    return tuple(_array(tensor, fn).shape)


def normal_(tensor, mean=0.0, std=1.0, rng=None):
    """Fill with draws from N(mean, std**2)."""
    if std < 0:
        raise ValueError(f"normal_: std must be >= 0, got {std}")
    rng = _rng if rng is None else rng
    return _fill(tensor, rng.normal(mean, std, size=_shape(tensor, "normal_")), "normal_")


def uniform_(tensor, a=0.0, b=1.0, rng=None):
    """Fill with draws from U(a, b)."""
    if not a <= b:
        raise ValueError(f"uniform_: need a <= b, got a={a}, b={b}")
    rng = _rng if rng is None else rng
    return _fill(tensor, rng.uniform(a, b, size=_shape(tensor, "uniform_")), "uniform_")


def constant_(tensor, val):
    """Fill with the number ``val``."""
    return _fill(tensor, val, "constant_")


def zeros_(tensor):
    """Fill with 0 (the default for biases)."""
    return _fill(tensor, 0.0, "zeros_")


def ones_(tensor):
    """Fill with 1 (batchnorm's scale)."""
    return _fill(tensor, 1.0, "ones_")


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He normal: N(0, std**2), std = gain / sqrt(fan), gain = calculate_gain(nonlinearity, a).

    ``mode='fan_in'`` keeps the forward activations' variance, ``'fan_out'``
    the backward gradients'. For ReLU nets use ``nonlinearity='relu'``:
    std = sqrt(2 / fan_in).
    """
    fan = _fan(tensor, mode, "kaiming_normal_")
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(tensor, 0.0, std, rng=rng)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He uniform: U(-b, b), b = sqrt(3) * gain / sqrt(fan) (the variance of ``kaiming_normal_``)."""
    fan = _fan(tensor, mode, "kaiming_uniform_")
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound, rng=rng)


def xavier_normal_(tensor, gain=1.0, rng=None):
    """Glorot normal: N(0, std**2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    if fan_in + fan_out == 0:
        raise ValueError("xavier_normal_: cannot initialize a tensor with zero elements")
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return normal_(tensor, 0.0, std, rng=rng)


def xavier_uniform_(tensor, gain=1.0, rng=None):
    """Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    if fan_in + fan_out == 0:
        raise ValueError("xavier_uniform_: cannot initialize a tensor with zero elements")
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, rng=rng)
