"""Dropout (inverted): ``dropout``."""
import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module
from .implementations import replacement

__all__ = ["dropout"]


class Dropout(Function):
    """y = x * m, with m_i = 1/(1-p) with probability 1-p and 0 otherwise (drawn once per call).

    "Inverted" dropout: kept units are scaled up by 1/(1-p) at training time,
    so E[y] = x and evaluation needs no rescaling (dropout is the identity).
    The mask is a constant for the backward pass:   dL/dx = g * m.
    """

    def forward(self, x, p=0.5, rng=None):
        xp = get_array_module(x)
        if rng is None:
            u = xp.random.random_sample(x.shape)      # the global RNG: seed with np.random.seed
        else:
            u = xp.asarray(rng.random(x.shape, dtype=np.float32))   # a NumPy generator for GPU data: copied over
        # The scaled mask in x's dtype: 1/(1-p) where kept, 0 where dropped.
        self.mask = (u >= p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
        return x * self.mask

    def backward(self, g):
        return g * self.mask


def dropout(x, p=0.5, training=True, *, rng=None):
    """Zero each element of x with probability ``p`` and scale the rest by 1/(1-p) (training only).

    As ``torch.nn.functional.dropout``; in eval mode (``training=False``) or
    with p = 0 it returns x unchanged. ``rng`` is an optional
    ``numpy.random.Generator`` (``cupy.random.Generator`` for GPU data) for
    reproducible masks; by default the global ``xp.random`` state is used.
    """
    if (replaced := replacement("dropout")) is not None:
        return replaced(x, p, training, rng)
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) or not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be a probability in [0, 1), got {p!r}")
    if not training or p == 0:
        return x if isinstance(x, Tensor) else Tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"dropout: input must be floating, got dtype {x.dtype}")
    return Dropout.apply(x, p=float(p), rng=rng)
