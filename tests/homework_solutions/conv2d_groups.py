"""The package's grouped conv2d (im2col + GEMM per group), written into the skeleton."""
import numpy as np
from numpy.lib.stride_tricks import as_strided


def _conv(x, w, b, stride, padding, dilation):
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    xp = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (padding[0],) * 2, (padding[1],) * 2, (0, 0)))
    sn, sh, sw, sc = xp.strides
    cols = as_strided(xp, (N, OH, OW, KH, KW, C), (sn, sh * stride[0], sw * stride[1], sh * dilation[0],
                                                   sw * dilation[1], sc), writeable=False).reshape(N * OH * OW, -1)
    W2 = w.transpose(0, 2, 3, 1).reshape(F, -1)
    return (cols @ W2.T + b).reshape(N, OH, OW, F).transpose(0, 3, 1, 2), cols


def conv2d_groups_forward(x, w, b, stride, padding, dilation, groups):
    cg, fg = x.shape[1] // groups, w.shape[0] // groups
    ys, cols = zip(*[_conv(x[:, g * cg:(g + 1) * cg], w[g * fg:(g + 1) * fg], b[g * fg:(g + 1) * fg],
                           stride, padding, dilation) for g in range(groups)])
    return np.concatenate(ys, axis=1), (x.shape, w, cols, stride, padding, dilation, groups)


def conv2d_groups_backward(dy, cache):
    (N, C, H, W), w, cols, stride, padding, dilation, groups = cache
    F, cg, KH, KW = w.shape
    fg = F // groups
    OH, OW = dy.shape[2:]
    dxs, dws = [], []
    for g in range(groups):
        G = dy[:, g * fg:(g + 1) * fg].transpose(0, 2, 3, 1).reshape(-1, fg)
        W2 = w[g * fg:(g + 1) * fg].transpose(0, 2, 3, 1).reshape(fg, -1)
        dws.append((G.T @ cols[g]).reshape(fg, KH, KW, cg).transpose(0, 3, 1, 2))
        dcols = (G @ W2).reshape(N, OH, OW, KH, KW, cg)
        dxp = np.zeros((N, H + 2 * padding[0], W + 2 * padding[1], cg), dtype=dcols.dtype)
        for kh in range(KH):
            for kw in range(KW):
                h0, w0 = kh * dilation[0], kw * dilation[1]
                dxp[:, h0:h0 + stride[0] * (OH - 1) + 1:stride[0], w0:w0 + stride[1] * (OW - 1) + 1:stride[1]] += \
                    dcols[:, :, :, kh, kw]
        dxs.append(dxp[:, padding[0]:padding[0] + H, padding[1]:padding[1] + W].transpose(0, 3, 1, 2))
    return np.concatenate(dxs, axis=1), np.concatenate(dws), dy.sum(axis=(0, 2, 3))
