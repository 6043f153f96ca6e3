"""The package's max pooling (a scan over the kernel taps; the argmax stored, the first maximum wins)."""
import numpy as np


def max_pool_forward(x, kernel, stride, padding):
    N, C, H, W = x.shape
    OH = (H + 2 * padding[0] - kernel[0]) // stride[0] + 1
    OW = (W + 2 * padding[1] - kernel[1]) // stride[1] + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=-np.inf)
    y = np.full((N, C, OH, OW), -np.inf, dtype=x.dtype)
    at = np.zeros((N, C, OH, OW), dtype=np.int64)          # which tap holds the maximum
    for k in range(kernel[0] * kernel[1]):
        kh, kw = divmod(k, kernel[1])
        tap = xp[:, :, kh:kh + stride[0] * (OH - 1) + 1:stride[0], kw:kw + stride[1] * (OW - 1) + 1:stride[1]]
        better = tap > y                                    # strictly greater: ties keep the first
        at[better] = k
        np.maximum(y, tap, out=y)
    return y, (x.shape, at, kernel, stride, padding)


def max_pool_backward(dy, cache):
    (N, C, H, W), at, kernel, stride, padding = cache
    OH, OW = dy.shape[2:]
    dxp = np.zeros((N, C, H + 2 * padding[0], W + 2 * padding[1]), dtype=dy.dtype)
    for k in range(kernel[0] * kernel[1]):
        kh, kw = divmod(k, kernel[1])
        dxp[:, :, kh:kh + stride[0] * (OH - 1) + 1:stride[0], kw:kw + stride[1] * (OW - 1) + 1:stride[1]] += \
            dy * (at == k)
    return dxp[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W]
