"""Activation functions and softmax, each a ``Function`` with its derivative in the docstring.

ReLU's backward rule can be switched (``relu_backward_rule``): that one
switch turns the ordinary gradient into Zeiler & Fergus's deconvnet or
Springenberg et al.'s guided backpropagation (``minicnn.explain``).
"""
import threading

from ..autograd import Function
from ..backend import get_array_module
from ..speed import positive_part
from .basic import normalize_axis_args
from .implementations import replacement

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax",
           "relu_backward_rule", "RELU_BACKWARD_RULES"]

# What ReLU's backward passes on, given the upstream gradient g and the forward input x:
RELU_BACKWARD_RULES = ("gradient",    # g * [x > 0]            the true derivative (default)
                       "deconvnet",   # g * [g > 0]            Zeiler & Fergus 2014
                       "guided")      # g * [x > 0] * [g > 0]  Springenberg et al. 2015


class _ReluRule(threading.local):
    """The rule that ReLU.backward applies now; per thread, like grad mode."""
    rule = "gradient"


_RELU_RULE = _ReluRule()


class relu_backward_rule:
    """Context manager: ReLU backward passes inside it follow ``rule``::

        with F.relu_backward_rule("guided"):
            model(x)[0, c].backward()      # x.grad is the guided backpropagation map

    ``rule`` is one of ``RELU_BACKWARD_RULES``: ``"gradient"`` (the derivative,
    g * [x > 0]), ``"deconvnet"`` (g * [g > 0]: the backward signal is
    rectified, whatever the forward input was) or ``"guided"`` (both masks,
    g * [x > 0] * [g > 0]). The rule is read when ``backward`` runs, so the
    forward pass may happen inside or outside the block; nothing in the
    network changes, and the previous rule comes back on exit (also on an
    error). Only ReLU consults it; every other op keeps its true derivative.
    """

    def __init__(self, rule):
        if rule not in RELU_BACKWARD_RULES:
            raise ValueError(f"relu_backward_rule: rule must be one of {', '.join(RELU_BACKWARD_RULES)}, "
                             f"got {rule!r}")
        self.rule = rule

    def __enter__(self):
        self._prev = _RELU_RULE.rule
        _RELU_RULE.rule = self.rule
        return self

    def __exit__(self, *exc):
        _RELU_RULE.rule = self._prev
        return False


class ReLU(Function):
    """y = max(x, 0).   dL/dx = g * [x > 0].

    The mask is stored as booleans and applied by multiplication
    (``g * mask``), several times faster than ``where(mask, g, 0)``.

    Inside ``relu_backward_rule("deconvnet")`` the backward pass returns
    g * [g > 0] instead, and inside ``relu_backward_rule("guided")``
    g * [x > 0] * [g > 0] (see ``RELU_BACKWARD_RULES``).
    """

    def forward(self, x):
        self.mask = x > 0
        return positive_part(x)      # np.maximum(x, 0), on every core (x * mask would turn -inf into NaN)

    def backward(self, g):
        rule = _RELU_RULE.rule
        if rule == "gradient":
            return g * self.mask
        positive_g = get_array_module(g).maximum(g, 0)     # g * [g > 0]
        if rule == "deconvnet":
            return positive_g
        return positive_g * self.mask                      # guided


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
    if (replaced := replacement("relu")) is not None:
        return replaced(x)
    return ReLU.apply(x)


def leaky_relu(x, negative_slope=0.01):
    return LeakyReLU.apply(x, negative_slope=negative_slope)


def sigmoid(x):
    if (replaced := replacement("sigmoid")) is not None:
        return replaced(x)
    return Sigmoid.apply(x)


def tanh(x):
    if (replaced := replacement("tanh")) is not None:
        return replaced(x)
    return Tanh.apply(x)


def softmax(x, axis=-1, *, dim=None):
    axis, _ = normalize_axis_args(axis, False, dim)
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1, *, dim=None):
    axis, _ = normalize_axis_args(axis, False, dim)
    return LogSoftmax.apply(x, axis=axis)
