"""The package's inverted dropout, written into the skeleton."""
import numpy as np


def dropout_forward(x, p, training, rng):
    if not training or p == 0:
        return x, None
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1 - p)
    return x * mask, mask


def dropout_backward(dy, cache):
    return dy if cache is None else dy * cache
