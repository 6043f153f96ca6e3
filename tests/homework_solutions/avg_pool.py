"""The package's average pooling (a sum over the kernel taps; backward adds dy / (KH*KW) per tap)."""
import numpy as np


def avg_pool_forward(x, kernel, stride, padding):
    N, C, H, W = x.shape
    OH = (H + 2 * padding[0] - kernel[0]) // stride[0] + 1
    OW = (W + 2 * padding[1] - kernel[1]) // stride[1] + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for kh in range(kernel[0]):
        for kw in range(kernel[1]):
            y += xp[:, :, kh:kh + stride[0] * (OH - 1) + 1:stride[0], kw:kw + stride[1] * (OW - 1) + 1:stride[1]]
    return y / (kernel[0] * kernel[1]), (x.shape, kernel, stride, padding)


def avg_pool_backward(dy, cache):
    (N, C, H, W), kernel, stride, padding = cache
    OH, OW = dy.shape[2:]
    share = dy / (kernel[0] * kernel[1])
    dxp = np.zeros((N, C, H + 2 * padding[0], W + 2 * padding[1]), dtype=dy.dtype)
    for kh in range(kernel[0]):
        for kw in range(kernel[1]):
            dxp[:, :, kh:kh + stride[0] * (OH - 1) + 1:stride[0], kw:kw + stride[1] * (OW - 1) + 1:stride[1]] += share
    return dxp[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W]
