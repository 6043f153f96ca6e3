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
    "normal_", "uniform_", "constant_", "zeros_", "ones_", "dirac_", "patch_whitening_",
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


def dirac_(tensor):
    """Identity-like convolution weight: w[o, o, centre] = 1 for o < min(C_out, C_in), 0 elsewhere.

    A 'same'-padded convolution with this weight copies its first
    min(C_out, C_in) input channels to its outputs (and outputs 0 on the
    other channels): a network starts close to passing its input through.
    """
    shape = _shape(tensor, "dirac_")
    if len(shape) != 4:
        raise ValueError(f"dirac_: expected a 4-D convolution weight (C_out, C_in, KH, KW), got shape {shape}")
    values = np.zeros(shape)
    k = min(shape[0], shape[1])
    values[np.arange(k), np.arange(k), shape[2] // 2, shape[3] // 2] = 1.0
    return _fill(tensor, values, "dirac_")


def patch_statistics(images, kernel_size, chunk=256):
    """Mean (D,) and covariance (D, D) of every ``kernel_size`` x ``kernel_size`` patch of ``images``.

    ``images`` is (N, C, H, W); a patch is flattened in a convolution
    weight's order (C, KH, KW), so D = C * KH * KW, and the patches are all
    (H - KH + 1) * (W - KW + 1) positions of every image (stride 1, no
    padding). Accumulated in float64, ``chunk`` images at a time.
    """
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"patch_statistics: images must be (N, C, H, W), got shape {x.shape}")
    kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else tuple(kernel_size)
    if kh > x.shape[2] or kw > x.shape[3]:
        raise ValueError(f"patch_statistics: kernel {kh}x{kw} is larger than the images {x.shape[2]}x{x.shape[3]}")
    d = x.shape[1] * kh * kw
    total, outer, count = np.zeros(d), np.zeros((d, d)), 0
    for i in range(0, len(x), chunk):
        windows = np.lib.stride_tricks.sliding_window_view(x[i:i + chunk].astype(np.float64), (kh, kw),
                                                           axis=(2, 3))      # (n, C, H', W', KH, KW)
        patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, d)       # one row per position
        total += patches.sum(axis=0)
        outer += patches.T @ patches
        count += len(patches)
    mean = total / count
    return mean, outer / count - np.outer(mean, mean)


def patch_whitening_(conv, images, eps=5e-4):
    """Set a convolution to whiten the patches of ``images`` (PCA whitening); returns ``conv``.

    With m and S = V diag(lam) V^T the mean and covariance of the K x K
    patches p of ``images`` (``patch_statistics``; D = C K K values each),
    the whitening map is

        y = W (p - m),   W = diag(1 / sqrt(lam + eps)) V^T   (D x D)

    so Cov(y) = diag(lam / (lam + eps)), the identity up to ``eps``: each
    output channel is one principal direction of the patches, scaled to unit
    variance. The weight is W reshaped to (D, C, K, K) and the bias is
    -W m. A convolution with 2D outputs gets the rows (W, -W) and biases
    (b, -b), so a following ReLU keeps both signs of every direction.

    ``images`` must be what the network's first layer sees (normalized the
    same way). ``conv`` needs ``in_channels == C``, a square kernel, stride 1
    and no padding, dilation 1, groups 1, and D or 2D output channels. The
    fast CIFAR-10 recipe freezes this weight (``requires_grad = False``).
    """
    weight = getattr(conv, "weight", None)
    if weight is None or _array(weight, "patch_whitening_").ndim != 4:
        raise TypeError(f"patch_whitening_: conv must be a Conv2d, got {type(conv).__name__}")
    c_out, c_in, kh, kw = _shape(weight, "patch_whitening_")
    x = np.asarray(images.data if isinstance(images, Tensor) else images)
    if x.ndim != 4 or x.shape[1] != c_in:
        raise ValueError(f"patch_whitening_: images must be (N, {c_in}, H, W) for a conv with {c_in} input "
                         f"channels, got shape {x.shape}")
    d = c_in * kh * kw
    if c_out not in (d, 2 * d):
        raise ValueError(f"patch_whitening_: a {kh}x{kw} conv on {c_in} channels whitens D = {d} patch "
                         f"values; it needs out_channels {d} or {2 * d}, got {c_out}")
    geometry = {k: getattr(conv, k, None) for k in ("stride", "padding", "dilation", "groups")}
    if geometry != {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}:
        raise ValueError(f"patch_whitening_: conv must have stride 1, padding 0, dilation 1 and groups 1, "
                         f"got {geometry}")
    if not eps > 0:
        raise ValueError(f"patch_whitening_: eps must be > 0, got {eps}")
    mean, cov = patch_statistics(x, (kh, kw))
    lam, vecs = np.linalg.eigh(cov)                       # ascending
    lam, vecs = lam[::-1], vecs[:, ::-1]                  # the largest variance first
    w = vecs.T / np.sqrt(np.clip(lam, 0, None) + eps)[:, None]      # (D, D): row i = direction i
    b = -w @ mean
    if c_out == 2 * d:
        w, b = np.concatenate([w, -w]), np.concatenate([b, -b])
    _fill(weight, w.reshape(c_out, c_in, kh, kw), "patch_whitening_")
    if getattr(conv, "bias", None) is not None:
        _fill(conv.bias, b, "patch_whitening_")
    return conv
