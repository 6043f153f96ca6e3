"""Losses and the fully connected layer's op."""
import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module
from .basic import MatMul, Add, mean

__all__ = ["cross_entropy", "mse_loss", "linear"]


class CrossEntropy(Function):
    """Softmax cross-entropy of logits (N, C) against integer classes (N,).

    With p = softmax(x) and the target distribution
    q = (1 - s) * onehot(t) + s / C (label smoothing s, 0 by default):

        loss_n = -sum_c q_nc * log p_nc,  loss = mean_n loss_n  (or sum / none)

    dL/dx = (p - q) * g / N for the mean (g the upstream gradient). Computing
    log p by log-sum-exp never overflows, and the fused gradient avoids
    ever dividing by p.
    """

    def forward(self, x, targets, label_smoothing=0.0, reduction="mean"):
        xp = get_array_module(x)
        n, c = x.shape
        shifted = x - x.max(axis=1, keepdims=True)
        logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        # q as a (N, C) matrix: s/C everywhere plus (1 - s) at the target class.
        q = xp.full((n, c), label_smoothing / c, dtype=x.dtype)
        q[xp.arange(n), targets] += x.dtype.type(1.0 - label_smoothing)
        self.p, self.q, self.reduction = xp.exp(logp), q, reduction
        per_sample = -(q * logp).sum(axis=1)
        if reduction == "none":
            return per_sample
        total = per_sample.sum()
        return total / n if reduction == "mean" else total

    def backward(self, g):
        n = self.p.shape[0]
        if self.reduction == "none":
            g = g[:, None]
        elif self.reduction == "mean":
            g = g / n
        return (self.p - self.q) * g


def cross_entropy(logits, targets, label_smoothing=0.0, reduction="mean"):
    """Mean softmax cross-entropy between ``logits`` (N, C) and integer ``targets`` (N,)."""
    t = targets.data if isinstance(targets, Tensor) else targets
    xp = get_array_module(logits, t)
    t = xp.asarray(t)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must have shape (N, C), got {tuple(logits.shape)}")
    n, c = logits.shape
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got dtype {t.dtype}")
    if t.shape != (n,):
        raise ValueError(f"cross_entropy: targets must have shape ({n},) to match logits "
                         f"{tuple(logits.shape)}, got {tuple(t.shape)}")
    if n and bool(((t < 0) | (t >= c)).any()):      # one device read on the GPU, not two
        raise ValueError(f"cross_entropy: targets must lie in [0, {c - 1}], "
                         f"got values from {int(t.min())} to {int(t.max())}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    # Targets are a setting, not an input: integer labels never enter the float math.
    return CrossEntropy.apply(logits, label_smoothing=float(label_smoothing),
                              reduction=reduction, targets=t)


class SquaredError(Function):
    """y = (a - b)**2 elementwise (same shapes).   dL/da = 2 g (a - b),  dL/db = -2 g (a - b)."""

    def forward(self, a, b):
        self.diff = a - b
        return self.diff * self.diff

    def backward(self, g):
        d = 2 * g * self.diff
        return d, (-d if self.needs_input_grad[1] else None)


def mse_loss(input, target, reduction="mean"):  # noqa: A002 (PyTorch's name)
    """Mean squared error: mean((input - target)**2) (or ``'sum'`` / ``'none'``)."""
    a = input.shape
    b = target.shape
    if tuple(a) != tuple(b):
        raise ValueError(f"mse_loss: input shape {tuple(a)} and target shape {tuple(b)} must match")
    sq = SquaredError.apply(input, target)
    if reduction == "mean":
        return mean(sq)
    if reduction == "sum":
        return sq.sum()
    if reduction == "none":
        return sq
    raise ValueError(f"mse_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def linear(x, weight, bias=None):
    """y = x @ weight^T + bias, x: (N, in), weight: (out, in) as in PyTorch, bias: (out,)."""
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got {tuple(weight.shape)}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input has {x.shape[-1]} features (shape {tuple(x.shape)}) but weight expects "
            f"{weight.shape[1]} (weight shape {tuple(weight.shape)})")
    y = MatMul.apply(x, weight.T)
    return y if bias is None else Add.apply(y, bias)
