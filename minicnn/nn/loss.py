"""Loss modules: callable wrappers around ``F.cross_entropy`` and ``F.mse_loss``."""
from .. import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(layer, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{layer}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


class CrossEntropyLoss(Module):
    """Softmax cross-entropy of logits (N, C) against integer class targets (N,).

    loss_n = -sum_c q_nc log softmax(x_n)_c with q the one-hot target,
    smoothed to (1 - s) onehot + s / C by ``label_smoothing`` s; reduced by
    ``'mean'`` (default), ``'sum'`` or ``'none'``. Call as ``loss_fn(logits, targets)``.
    """

    def __init__(self, label_smoothing=0.0, reduction="mean"):
        super().__init__()
        if not (isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing <= 1.0):
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.reduction = _check_reduction("CrossEntropyLoss", reduction)

    def forward(self, input, target):  # noqa: A002 (PyTorch's name)
        return F.cross_entropy(input, target, label_smoothing=self.label_smoothing,
                               reduction=self.reduction)

    def extra_repr(self):
        parts = []
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        if self.reduction != "mean":
            parts.append(f"reduction='{self.reduction}'")
        return ", ".join(parts)


class MSELoss(Module):
    """Mean squared error, mean((input - target)**2) (or ``'sum'`` / ``'none'``)."""

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _check_reduction("MSELoss", reduction)

    def forward(self, input, target):  # noqa: A002
        return F.mse_loss(input, target, reduction=self.reduction)

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction='{self.reduction}'"
