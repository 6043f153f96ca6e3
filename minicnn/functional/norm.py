"""Batch normalization: ``batch_norm`` for (N, C) and (N, C, H, W) (any (N, C, *) in fact)."""
import numbers

from ..autograd import Function, Tensor
from ..backend import get_array_module
from ..speed import affine_rows, column_dot_centred, column_mean_var, column_sums
from .windows import channels_last, from_channels_last
from .implementations import replacement

__all__ = ["batch_norm", "set_batch_norm_sync"]

_sync = None    # set_batch_norm_sync: data-parallel workers share their batch statistics (minicnn.distributed)


def set_batch_norm_sync(sync):
    """Make training-mode batch statistics those of the whole global batch across data-parallel workers.

    ``sync`` (``minicnn.distributed``'s communicator, or None to switch it
    off) has ``mean_var(X) -> (mean, var, M_all)`` and
    ``gradient_sums(dbeta, dgamma, M) -> (dbeta_all, dgamma_all, M_all)``:
    the forward's statistics and the backward's two sums over every
    worker's rows (see ``BatchNorm``). Returns the previous setting.
    """
    global _sync
    previous, _sync = _sync, sync
    return previous


class BatchNorm(Function):
    """Batch normalization over the channel axis 1, statistics over every other axis.

    X is x as an (M, C) matrix, one row per pixel (M = N*H*W values per
    channel; ``windows.channels_last``). Every symbol below is a (C,)
    vector except X, x_hat, g and dx, which are (M, C); sums run over the M
    rows. The loop form is ``minicnn.reference.batch_norm``.

    Training (batch statistics, biased variance):

        mean    = sum(X) / M
        var     = sum((X - mean)**2) / M
        inv_std = 1 / sqrt(var + eps)
        x_hat   = (X - mean) * inv_std
        y       = gamma * x_hat + beta

    and the running statistics are updated in place, r = (1 - momentum) r +
    momentum * stat, with the unbiased variance var * M / (M - 1).

    Evaluation: the same lines with mean = running_mean, var = running_var
    (constants: y is a per-channel affine map of X).

    Backward, with g = dL/dy:

        dbeta   = sum(g)
        dgamma  = sum(g * x_hat)
        dx      = gamma * inv_std * (g - dbeta / M - x_hat * dgamma / M)     (training)
        dx      = gamma * inv_std * g                                        (evaluation)

    Why dx has two more terms in training: every X_i moves mean and var
    too. dmean/dX_i = 1/M and dvar/dX_i = 2 (X_i - mean) / M (the mean's
    own term sums to zero), so dinv_std/dX_i = -inv_std**2 x_hat_i / M and

        dx_hat_j/dX_i = (inv_std / M) (M delta_ij - 1 - x_hat_j x_hat_i);

    with dL/dx_hat_j = gamma g_j, summing over j gives the line above.
    (gradcheck uses a random upstream g: with g = 1 the three terms cancel,
    dx is 0, and a bug in the mean or variance term would go unseen.)

    How the lines are computed: each is a pass over an (M, C) array, and on
    a CPU those passes, not the arithmetic, are the cost. So x_hat is never
    stored (it would double the layer's memory): y and dx are written as
    the same formulas multiplied out, ``A * a + B * b + c`` per channel, by
    ``speed.affine_rows``, and ``speed.column_mean_var`` /
    ``column_dot_centred`` form X - mean block by block (their contracts are
    the numpy one-liners in the comments). In float32 the mean gets the
    corrected two-pass term: with a mean 100 times the spread, y stays
    within 3e-6 and dgamma within 1e-5 of float64 (tested).
    """

    def forward(self, x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1,
                eps=1e-5):
        X = channels_last(x).reshape(-1, x.shape[1])       # (M, C)
        M = X.shape[0]
        self.batch_stats = training or running_mean is None
        self.sync = _sync if training else None
        if self.sync is not None:                           # --sync-bn: over the M rows of every worker
            mean, var, M = self.sync.mean_var(X)
        elif self.batch_stats:
            mean, var = column_mean_var(X)                  # sum(X) / M,  sum((X - mean)**2) / M
        if self.batch_stats:
            if training and running_mean is not None:
                running_mean *= 1.0 - momentum
                running_mean += momentum * mean
                running_var *= 1.0 - momentum
                running_var += momentum * var * (M / (M - 1))      # unbiased
        else:   # copies: a later training step updates the buffers in place before this backward runs
            mean, var = running_mean.astype(x.dtype, copy=True), running_var.astype(x.dtype, copy=True)
        inv_std = 1.0 / get_array_module(x).sqrt(var + eps)
        gamma = 1.0 if gamma is None else gamma
        beta = 0.0 if beta is None else beta
        # y = gamma * x_hat + beta, x_hat = (X - mean) * inv_std:  y = X * gamma*inv_std + (beta - mean*gamma*inv_std)
        y = affine_rows(X, gamma * inv_std, c=beta - mean * gamma * inv_std)
        self.X, self.mean, self.inv_std, self.gamma = X, mean, inv_std, gamma
        return from_channels_last(y.reshape(channels_last_shape(x)))

    def backward(self, g):
        G = channels_last(g).reshape(-1, g.shape[1])        # (M, C)
        X, mean, inv_std, gamma = self.X, self.mean, self.inv_std, self.gamma
        M = G.shape[0]
        dbeta = column_sums(G)                               # sum(g)
        dgamma = column_dot_centred(G, X, mean) * inv_std    # sum(g * x_hat) = sum(g * (X - mean)) * inv_std
        dx = None
        dbeta_all, dgamma_all = dbeta, dgamma
        if self.sync is not None:                            # the sums over every worker's rows
            dbeta_all, dgamma_all, M = self.sync.gradient_sums(dbeta, dgamma, M)
        if self.needs_input_grad[0] and self.batch_stats:
            # dx = gamma*inv_std * (g - dbeta/M - x_hat * dgamma/M), x_hat = (X - mean) * inv_std:
            #    = g * a + X * b + c,  a = gamma*inv_std,  b = -a * inv_std * dgamma/M,  c = -a * dbeta/M - b * mean
            a = gamma * inv_std
            b = -a * inv_std * dgamma_all / M
            dx = affine_rows(G, a, X, b, -a * dbeta_all / M - b * mean)
        elif self.needs_input_grad[0]:
            dx = affine_rows(G, gamma * inv_std)             # dx = gamma * inv_std * g
        if dx is not None:
            dx = from_channels_last(dx.reshape(channels_last_shape(g)))
        return dx, dgamma, dbeta


def channels_last_shape(x):
    """The shape of ``channels_last(x)``: (N, *spatial, C)."""
    return (x.shape[0],) + tuple(x.shape[2:]) + (x.shape[1],)


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
    if (replaced := replacement("batch_norm")) is not None:
        return replaced(x, running_mean, running_var, weight, bias, training, momentum, eps)
    stats = check_batch_norm_args(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return BatchNorm.apply(x, weight, bias, running_mean=stats[0], running_var=stats[1], training=bool(training),
                           momentum=float(momentum), eps=float(eps))


def check_batch_norm_args(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """``batch_norm``'s argument checks, each error naming the argument; returns the running statistics as raw arrays."""
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
    if training and x.size // C <= 1:
        raise ValueError(f"{fn}: training needs more than one value per channel to compute a batch variance, "
                         f"got input of shape {tuple(x.shape)}; use a batch of at least 2, or eval mode "
                         f"(.eval() on a layer) to use the running statistics")
    check_batch_norm_settings(fn, momentum, eps)
    return stats


def check_batch_norm_settings(fn, momentum, eps):
    """Raise a ValueError naming ``fn`` unless momentum is a number in [0, 1] and eps a positive number.

    The one check of both, for ``batch_norm`` on every call and for the
    ``nn.BatchNorm`` layers when they are built.
    """
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"{fn}: momentum must be in [0, 1] (the weight of a new batch), got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0.0 < eps < float("inf"):
        raise ValueError(f"{fn}: eps must be a positive number, got {eps!r}")
