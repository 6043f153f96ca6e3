"""Activation functions and softmax, each a ``Function`` with its derivative in the docstring."""
from ..autograd import Function
from ..backend import get_array_module
from .basic import normalize_axis_args

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax"]


class ReLU(Function):
    """y = max(x, 0).   dL/dx = g * [x > 0].

    The mask is stored as booleans and applied by multiplication
    (``g * mask``), several times faster than ``where(mask, g, 0)``.
    """

    def forward(self, x):
        self.mask = x > 0
        return get_array_module(x).maximum(x, 0)     # (x * mask would turn -inf into NaN)

    def backward(self, g):
        return g * self.mask


class LeakyReLU(Function):
    """y = x if x > 0 else slope * x.   dL/dx = g * (1 if x > 0 else slope)."""

    def forward(self, x, negative_slope=0.01):
        xp = get_array_module(x)
        self.scale = xp.where(x > 0, x.dtype.type(1), x.dtype.type(negative_slope))
        return x * self.scale

    def backward(self, g):
        return g * self.scale


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)).   dL/dx = g * y * (1 - y).

    Computed as 0.5 * (1 + tanh(x / 2)), which never overflows.
    """

    def forward(self, x):
        xp = get_array_module(x)
        self.y = 0.5 * (1 + xp.tanh(0.5 * x))
        return self.y

    def backward(self, g):
        return g * self.y * (1 - self.y)


class Tanh(Function):
    """y = tanh(x).   dL/dx = g * (1 - y**2)."""

    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, g):
        return g * (1 - self.y * self.y)


class Softmax(Function):
    """y_i = exp(x_i - max x) / sum_j exp(x_j - max x) along ``axis``.

    dL/dx = y * (g - sum(g * y, axis)) (the Jacobian diag(y) - y y^T applied to g).
    """

    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        self.y = e / e.sum(axis=axis, keepdims=True)
        self.axis = axis
        return self.y

    def backward(self, g):
        y = self.y
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y = x - max x - log(sum exp(x - max x)) along ``axis`` (stable log-sum-exp).

    dL/dx = g - softmax(x) * sum(g, axis).
    """

    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        shifted = x - x.max(axis=axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        self.axis = axis
        return self.y

    def backward(self, g):
        xp = get_array_module(g)
        return g - xp.exp(self.y) * g.sum(axis=self.axis, keepdims=True)


def relu(x):
    return ReLU.apply(x)


def leaky_relu(x, negative_slope=0.01):
    return LeakyReLU.apply(x, negative_slope=negative_slope)


def sigmoid(x):
    return Sigmoid.apply(x)


def tanh(x):
    return Tanh.apply(x)


def softmax(x, axis=-1, *, dim=None):
    axis, _ = normalize_axis_args(axis, False, dim)
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1, *, dim=None):
    axis, _ = normalize_axis_args(axis, False, dim)
    return LogSoftmax.apply(x, axis=axis)
