"""The package's batch normalization (the formulas of minicnn.functional.BatchNorm), written into the skeleton."""
import numpy as np


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    M = x.size // x.shape[1]
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * var * (M / (M - 1))
    else:
        mean, var = running_mean, running_var
        running_mean, running_var = running_mean.copy(), running_var.copy()
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    y = gamma.reshape(shape) * x_hat + beta.reshape(shape)
    return y, running_mean, running_var, (x_hat, gamma, inv_std, training, axes, shape, M)


def batchnorm_backward(dy, cache):
    x_hat, gamma, inv_std, training, axes, shape, M = cache
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    a = (gamma * inv_std).reshape(shape)
    if training:
        dx = a * (dy - dbeta.reshape(shape) / M - x_hat * dgamma.reshape(shape) / M)
    else:
        dx = a * dy
    return dx, dgamma, dbeta
