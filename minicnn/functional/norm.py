"""Batch normalization: ``batch_norm`` for (N, C) and (N, C, H, W) (any (N, C, *) in fact)."""
import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module, row_blocks
from .conv import _sum_rows

__all__ = ["batch_norm"]


def _channel_rows(x):
    """x (N, C, *spatial) as an (M, C) matrix, M = N * prod(spatial), plus the way back.

    Moving the channel axis last is free when x has channels-last memory (a
    conv output); for NCHW memory it costs one copy. Per-channel statistics
    are then column reductions of one matrix, and the result is built in
    the same (M, C) layout, so it is channels-last memory again.
    """
    xp = get_array_module(x)
    if x.ndim == 2:
        return x, lambda rows: rows
    perm = (0,) + tuple(range(2, x.ndim)) + (1,)
    moved = xp.ascontiguousarray(x.transpose(perm))
    back = tuple(int(i) for i in np.argsort(perm))
    return moved.reshape(-1, x.shape[1]), lambda rows: rows.reshape(moved.shape).transpose(back)


class BatchNorm(Function):
    """Batch normalization over the channel axis 1, statistics over every other axis.

    With X = x as an (M, C) matrix (M = N*H*W values per channel):

    Training (batch statistics; mu, var per channel, biased variance):

        mu = mean(X),  var = mean((X - mu)**2),  s = 1 / sqrt(var + eps)
        xhat = (X - mu) * s,  y = gamma * xhat + beta

    Backward. With g = dL/dy:  dbeta = sum(g),  dgamma = sum(g * xhat). For dx,
    every X_i moves mu and var too. Since dmu/dX_i = 1/M and
    dvar/dX_i = 2 (X_i - mu) / M (the mean's own term sums to zero),
    ds/dX_i = -(s**3 / 2) dvar/dX_i = -s**2 xhat_i / M, so

        dxhat_j/dX_i = s (delta_ij - 1/M) + (X_j - mu) ds/dX_i
                     = (s / M) (M delta_ij - 1 - xhat_j xhat_i)

    and with dL/dxhat_j = gamma g_j, summing over j:

        dx_i = (gamma s / M) (M g_i - sum_j g_j - xhat_i sum_j g_j xhat_j)
             = gamma s (g_i - dbeta / M - xhat_i dgamma / M)

    (gradcheck uses a random upstream g: with g = 1 the three terms cancel,
    dx is 0, and a bug in the mean or variance term would go unseen).

    The running statistics are updated in place, r = (1 - momentum) r +
    momentum * stat, with the unbiased variance var * M / (M - 1).

    Evaluation (running statistics mu_r, var_r; a per-channel affine map):

        y = gamma * (X - mu_r) / sqrt(var_r + eps) + beta
        dx = gamma * g / sqrt(var_r + eps),  dgamma = sum(g * xhat),  dbeta = sum(g)

    How it is computed: every line above is a pass over an (M, C) array, and
    on a CPU those passes (memory traffic), not the arithmetic, are the cost.
    The forward pass writes y = X * scale + shift (scale = gamma * s,
    shift = beta - mu * scale) and nothing else, and backward reads the rows
    of x (x itself for a conv output's channels-last memory) rather than a
    centred copy. The other passes run one block of rows at a time on all
    cores (``row_blocks``), so X - mu only ever exists block by block. In
    float32 the mean gets the corrected two-pass term and dgamma is summed
    from g * (X - mu): with a mean 100 times the spread, y stays within
    3e-6 and dgamma within 1e-5 of float64 (tested).
    """

    def forward(self, x, *affine, running_mean=None, running_var=None, training=True, momentum=0.1,
                eps=1e-5, has_weight=True, has_bias=True):
        xp = get_array_module(x)
        X, to_input_layout = _channel_rows(x)
        M, C = X.shape
        on_gpu = xp is not np
        affine = list(affine)
        gamma = affine.pop(0) if has_weight else None
        beta = affine.pop(0) if has_bias else None
        use_batch_stats = training or running_mean is None

        if use_batch_stats:
            mean = _sum_rows(X) / M

            def deviations(lo, hi):              # sums of d and d**2, d = X - mu, over rows lo..hi-1
                d = X[lo:hi] - mean
                return xp.einsum("mc->c", d), xp.einsum("mc,mc->c", d, d)
            parts = row_blocks(M, X[:1].nbytes, deviations, arrays_on_gpu=on_gpu)
            # The corrected two-pass formula: in exact arithmetic sum(d) = 0; in float32
            # it is the rounding error of mu, which this removes from mu and var.
            sum_d = sum((p[0] for p in parts), xp.zeros(C, X.dtype))
            sum_d2 = sum((p[1] for p in parts), xp.zeros(C, X.dtype))
            mean = mean + sum_d / M
            var = (sum_d2 - sum_d * sum_d / M) / M      # biased: the batch's own spread
            if training and running_mean is not None:
                running_mean *= 1.0 - momentum
                running_mean += momentum * mean
                running_var *= 1.0 - momentum
                running_var += momentum * var * (M / (M - 1))     # unbiased
        else:
            # Copies: a later training step updates the buffers in place before this backward runs.
            mean, var = running_mean.astype(x.dtype, copy=True), running_var.astype(x.dtype, copy=True)
        inv_std = 1.0 / xp.sqrt(var + eps)
        scale = inv_std if gamma is None else gamma * inv_std
        shift = -mean * scale if beta is None else beta - mean * scale
        y = xp.empty_like(X)

        def normalize(lo, hi):                   # y = (X - mu) * scale + beta = X * scale + shift
            out = xp.multiply(X[lo:hi], scale, out=y[lo:hi])
            out += shift
        row_blocks(M, X[:1].nbytes, normalize, arrays_on_gpu=on_gpu)
        self.X, self.mean, self.inv_std, self.scale = X, mean, inv_std, scale
        self.batch_stats, self.has_weight, self.has_bias = use_batch_stats, has_weight, has_bias
        return to_input_layout(y)

    def backward(self, g):
        xp = get_array_module(g)
        G, to_input_layout = _channel_rows(g)
        X, mean, inv_std, scale = self.X, self.mean, self.inv_std, self.scale
        M, C = G.shape
        on_gpu = xp is not np
        dbeta = _sum_rows(G)

        def g_times_centred(lo, hi):             # sum of g * (X - mu) over rows lo..hi-1
            return xp.einsum("mc,mc->c", G[lo:hi], X[lo:hi] - mean)
        parts = row_blocks(M, G[:1].nbytes, g_times_centred, arrays_on_gpu=on_gpu)
        dgamma = sum(parts, xp.zeros(C, G.dtype)) * inv_std        # sum(g * xhat)
        dx = None
        if self.needs_input_grad[0]:
            dx = xp.empty_like(G)
            if self.batch_stats:
                # dx = gamma s (g - dbeta/M - xhat dgamma/M) = scale*g - k*X - c per channel,
                # with k = scale * s * dgamma / M and c = scale * dbeta / M - k * mu.
                k = scale * inv_std * dgamma / M
                c = scale * dbeta / M - k * mean

                def input_grad(lo, hi):
                    out = xp.multiply(G[lo:hi], scale, out=dx[lo:hi])
                    out -= X[lo:hi] * k
                    out -= c
            else:
                # Eval mode: mu and s are constants, dx = scale * g.
                def input_grad(lo, hi):
                    xp.multiply(G[lo:hi], scale, out=dx[lo:hi])
            row_blocks(M, G[:1].nbytes, input_grad, arrays_on_gpu=on_gpu)
            dx = to_input_layout(dx)
        grads = [dx]
        if self.has_weight:
            grads.append(dgamma)
        if self.has_bias:
            grads.append(dbeta)
        return tuple(grads) if len(grads) > 1 else dx


def _raw(a):
    return a.data if isinstance(a, Tensor) else a


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalization of x (N, C) or (N, C, H, W) per channel, as ``torch.nn.functional.batch_norm``.

    Args:
        running_mean, running_var: (C,) arrays or grad-less Tensors, updated
            in place when ``training`` (may be None: then batch statistics are
            always used and nothing is updated).
        weight, bias: gamma and beta, (C,) Tensors, or None (no affine part).
        training: normalise with the batch's statistics (True) or the
            running ones (False).
        momentum: weight of the new batch in the running averages.
        eps: added to the variance for stability.

    See ``BatchNorm`` for the formulas and the derivation of the backward pass.
    """
    fn = "batch_norm"
    if x.ndim < 2:
        raise ValueError(f"{fn}: input must be (N, C) or (N, C, H, W), got shape {tuple(x.shape)}")
    C = x.shape[1]
    if x.dtype.kind != "f":
        raise TypeError(f"{fn}: input must be floating, got dtype {x.dtype}")
    stats = []
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is None:
            stats.append(None)
            continue
        if isinstance(r, Tensor) and r.requires_grad:
            raise ValueError(f"{fn}: {name} is a buffer and must not require grad")
        r = _raw(r)
        if tuple(r.shape) != (C,):
            raise ValueError(f"{fn}: {name} must have shape ({C},) for input {tuple(x.shape)}, got {tuple(r.shape)}")
        stats.append(r)
    if (stats[0] is None) != (stats[1] is None):
        raise ValueError(f"{fn}: give both running_mean and running_var, or neither")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (C,):
            raise ValueError(f"{fn}: {name} must have shape ({C},) for input {tuple(x.shape)}, got {tuple(p.shape)}")
    if training:
        m = x.size // C
        if m <= 1:
            raise ValueError(f"{fn}: training needs more than 1 value per channel, got input shape "
                             f"{tuple(x.shape)}; use a larger batch or eval mode")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"{fn}: momentum must be in [0, 1], got {momentum}")
    if eps <= 0:
        raise ValueError(f"{fn}: eps must be positive, got {eps}")
    inputs = [x] + [p for p in (weight, bias) if p is not None]
    return BatchNorm.apply(*inputs, running_mean=stats[0], running_var=stats[1], training=bool(training),
                           momentum=float(momentum), eps=float(eps),
                           has_weight=weight is not None, has_bias=bias is not None)
