"""Regularisers and constraints on parameters: L1 and L2 penalties as loss terms, max-norm after a step.

    params = nn.utils.penalized_parameters(model)        # conv and linear weights (no biases, no batchnorm)
    loss = F.cross_entropy(model(x), y) + 1e-4 * nn.utils.l2_penalty(params) + 1e-5 * nn.utils.l1_penalty(params)
    loss.backward()
    optimizer.step()
    nn.utils.max_norm_(params, 3.0)                      # each filter / weight row back inside the ball

As the lectures note, biases and batchnorm's scale and shift are usually
left out: they do not make a unit's response more complex, and shrinking
batchnorm's scale towards 0 fights the normalisation.

- L2 ("weight decay"): R(W) = sum_i w_i^2, dR/dw = 2 w. Adding
  ``lambda / 2 * l2_penalty`` to the loss is SGD's ``weight_decay=lambda``.
- L1: R(W) = sum_i |w_i|, dR/dw = sign(w) (0 at w = 0): pushes weights to
  exactly zero (sparse weights).
- Max-norm (Srivastava et al., "Dropout", JMLR 2014, section 5.1): after
  each update, every unit's incoming weight vector w (a row of a linear
  layer's weight, one filter of a convolution) with ||w||_2 > c is scaled
  back onto the ball: w <- w * c / ||w||_2. Rows inside are left alone.
"""
import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from .layers import BatchNorm1d, BatchNorm2d
from .module import Module

__all__ = ["penalized_parameters", "l1_penalty", "l2_penalty", "max_norm_"]


def penalized_parameters(module, include_bias=False, include_norm=False):
    """The parameters a penalty or constraint applies to, in ``named_parameters`` order.

    By default the weights of every layer except batchnorm, without
    biases: a parameter is left out when its name is ``bias`` or it belongs
    to a batchnorm layer. ``include_bias`` / ``include_norm`` bring them
    back. Frozen parameters (``requires_grad=False``) are left out too.
    """
    if not isinstance(module, Module):
        raise TypeError(f"penalized_parameters: module must be an nn.Module, got {type(module).__name__}")
    chosen, seen = [], set()
    for _, m in module.named_modules():
        is_norm = isinstance(m, (BatchNorm1d, BatchNorm2d))
        for name, p in m.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            if (is_norm and not include_norm) or (name == "bias" and not include_bias and not is_norm):
                continue
            seen.add(id(p))
            chosen.append(p)
    return chosen


def _as_list(params, who):
    if isinstance(params, Tensor):
        params = [params]
    params = list(params)
    if not params:
        raise ValueError(f"{who}: params is empty; pass parameters, e.g. nn.utils.penalized_parameters(model)")
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"{who}: params must be Tensors (parameters), got {type(p).__name__}")
    return params


def l2_penalty(params):
    """R = sum over the parameters of sum_i w_i^2 (a scalar Tensor); dR/dw = 2 w.

    ``params``: a Tensor or an iterable of them (``penalized_parameters(model)``).
    """
    params = _as_list(params, "l2_penalty")
    total = F.sum(params[0] * params[0])
    for p in params[1:]:
        total = total + F.sum(p * p)
    return total


def l1_penalty(params):
    """R = sum over the parameters of sum_i |w_i| (a scalar Tensor); dR/dw = sign(w).

    ``params``: a Tensor or an iterable of them (``penalized_parameters(model)``).
    """
    params = _as_list(params, "l1_penalty")
    total = F.sum(F.abs(params[0]))
    for p in params[1:]:
        total = total + F.sum(F.abs(p))
    return total


def max_norm_(params, c, dim=0):
    """Max-norm constraint, in place: every slice along ``dim`` with L2 norm above ``c`` is scaled to norm ``c``.

    ``dim=0`` constrains each output unit: a row of a Linear weight (out,
    in), a filter of a Conv2d weight (out, in, kh, kw) (PyTorch's
    ``torch.renorm(w, 2, dim, c)`` convention); ``dim=None`` the whole
    tensor. A slice whose norm is <= c is not touched. A scaled slice lands
    a hair inside the ball (a factor 1 - 1e-6 below c), so its norm is <= c
    also after rounding to the parameter's dtype. Tensors with fewer than 2
    axes (biases) are constrained element-wise along ``dim=0`` like any
    other; leave them out of ``params`` (``penalized_parameters``).

    Call it after ``optimizer.step()``; no gradient is recorded. Returns
    the number of slices that were rescaled.
    """
    params = _as_list(params, "max_norm_")
    if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)) or not c > 0 \
            or not np.isfinite(c):
        raise ValueError(f"max_norm_: c must be a positive number, got {c!r}")
    rescaled = 0
    with no_grad():
        for p in params:
            w = p.data
            xp = p.xp
            if dim is None:
                axes = tuple(range(w.ndim))
            else:
                if not -max(w.ndim, 1) <= dim < max(w.ndim, 1):
                    raise ValueError(f"max_norm_: dim {dim} is out of range for a parameter of shape {w.shape}")
                axes = tuple(a for a in range(w.ndim) if a != dim % max(w.ndim, 1))
            norms = xp.sqrt(xp.sum(w.astype(xp.float64) ** 2, axis=axes, keepdims=True))
            outside = norms > c
            if not bool(outside.any()):
                continue
            factor = xp.where(outside, (c * (1.0 - 1e-6)) / xp.where(outside, norms, 1.0), 1.0)
            w[...] = (w.astype(xp.float64) * factor).astype(w.dtype)     # in place: rows inside get * 1.0
            rescaled += int(outside.sum())
    return rescaled
