"""The definitions: convolution, im2col/col2im, pooling and batch normalization as plain loops.

Each function here computes its op exactly as the textbook formula reads,
one output element at a time, on NumPy arrays in float64. They are slow
(use them on tiny inputs) and they are the truth: the fast ops in
``minicnn.functional`` are tested against them element by element
(tests/test_reference.py and the op tests), and PyTorch is a second
oracle. Read one next to its fast twin:

==============================  ==========================================
definition (here)               fast op
==============================  ==========================================
``conv2d``                      ``functional.conv2d`` (im2col + GEMM)
``conv_transpose2d``            ``functional.conv_transpose2d``
``im2col`` / ``col2im``         ``functional.im2col`` / ``functional.col2im``
``max_pool2d``                  ``functional.max_pool2d`` (values and indices)
``avg_pool2d``                  ``functional.avg_pool2d``
``batch_norm``                  ``functional.batch_norm`` (training and eval)
``batch_norm_backward``         ``functional.BatchNorm.backward``
==============================  ==========================================

Conventions: NCHW arrays; ``kernel``, ``stride``, ``padding``, ``dilation``
are (height, width) pairs (an int means both); window (i, j), tap (kh, kw)
reads input pixel (i*sh - ph + kh*dh, j*sw - pw + kw*dw), and a pixel
outside the input is padding.
"""
import numpy as np

__all__ = ["conv2d", "conv_transpose2d", "im2col", "col2im", "max_pool2d", "avg_pool2d",
           "batch_norm", "batch_norm_backward", "output_size"]


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def output_size(in_size, kernel, stride=1, padding=0, dilation=1):
    """Number of window positions along one axis: floor((in + 2p - d(k - 1) - 1) / s) + 1.

    The number of positions a window of effective size ``d*(k-1)+1`` takes,
    moving by ``s``, inside the input padded by ``p`` on both sides. This is
    the one place the formula is written: the fast ops (as
    ``functional.conv_output_size``) and the CUDA wrappers import it.
    """
    return (in_size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _geometry(x_shape, kernel, stride, padding, dilation):
    H, W = x_shape[2:]
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = (_pair(a) for a in (kernel, stride, padding, dilation))
    OH, OW = output_size(H, KH, sh, ph, dh), output_size(W, KW, sw, pw, dw)
    return H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """y[n, o, i, j] = b[o] + sum_{c, kh, kw} w[o, c, kh, kw] * x[n, g*Cg + c, i*sh - ph + kh*dh, j*sw - pw + kw*dw].

    x (N, C_in, H, W), w (C_out, C_in/groups, KH, KW), b (C_out,) or None;
    g = o // (C_out/groups) is the group of filter o, Cg = C_in/groups, and
    padding reads 0.
    """
    N = x.shape[0]
    O, Cg, KH, KW = w.shape
    H, W, _, _, sh, sw, ph, pw, dh, dw, OH, OW = _geometry(x.shape, (KH, KW), stride, padding, dilation)
    Og = O // groups
    y = np.zeros((N, O, OH, OW))
    for n in range(N):
        for o in range(O):
            g = o // Og
            for i in range(OH):
                for j in range(OW):
                    s = 0.0 if b is None else b[o]
                    for c in range(Cg):
                        for kh in range(KH):
                            for kw in range(KW):
                                h, v = i * sh - ph + kh * dh, j * sw - pw + kw * dw
                                if 0 <= h < H and 0 <= v < W:
                                    s += w[o, c, kh, kw] * x[n, g * Cg + c, h, v]
                    y[n, o, i, j] = s
    return y


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Every x[n, c, i, j] adds x * w[c, o, kh, kw] to y[n, g*Og + o, i*sh - ph + kh*dh, j*sw - pw + kw*dw].

    x (N, C_in, H, W), w (C_in, C_out/groups, KH, KW) (PyTorch's layout), b
    (C_out,) or None; the output is (N, C_out, H_out, W_out) with
    H_out = (H - 1)*sh - 2*ph + dh*(KH - 1) + output_padding_h + 1.
    """
    N, C, H, W = x.shape
    _, Og, KH, KW = w.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = (_pair(a) for a in (stride, padding, output_padding, dilation))
    HO = (H - 1) * sh - 2 * ph + dh * (KH - 1) + oph + 1
    WO = (W - 1) * sw - 2 * pw + dw * (KW - 1) + opw + 1
    Cg = C // groups
    y = np.zeros((N, Og * groups, HO, WO))
    if b is not None:
        y += np.asarray(b)[None, :, None, None]
    for n in range(N):
        for c in range(C):
            g = c // Cg
            for i in range(H):
                for j in range(W):
                    for o in range(Og):
                        for kh in range(KH):
                            for kw in range(KW):
                                h, v = i * sh - ph + kh * dh, j * sw - pw + kw * dw
                                if 0 <= h < HO and 0 <= v < WO:
                                    y[n, g * Og + o, h, v] += x[n, c, i, j] * w[c, o, kh, kw]
    return y


def im2col(x, kernel, stride=1, padding=0, dilation=1):
    """cols[(n*OH + i)*OW + j, (kh*KW + kw)*C + c] = x[n, c, i*sh - ph + kh*dh, j*sw - pw + kw*dw] (0 in the padding).

    One row per window, flattened as (kh, kw, c): channels innermost, as
    ``functional.im2col`` lays it out.
    """
    N, C = x.shape[:2]
    H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW = _geometry(x.shape, kernel, stride, padding, dilation)
    cols = np.zeros((N * OH * OW, KH * KW * C))
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                for kh in range(KH):
                    for kw in range(KW):
                        for c in range(C):
                            h, v = i * sh - ph + kh * dh, j * sw - pw + kw * dw
                            if 0 <= h < H and 0 <= v < W:
                                cols[(n * OH + i) * OW + j, (kh * KW + kw) * C + c] = x[n, c, h, v]
    return cols


def col2im(cols, x_shape, kernel, stride=1, padding=0, dilation=1):
    """The adjoint of ``im2col``: dx[n, c, h, w] = sum of every cols entry that im2col read from x[n, c, h, w].

    Entries that came from the padding are dropped.
    """
    N, C = x_shape[:2]
    H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW = _geometry(x_shape, kernel, stride, padding, dilation)
    dx = np.zeros(tuple(x_shape))
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                for kh in range(KH):
                    for kw in range(KW):
                        for c in range(C):
                            h, v = i * sh - ph + kh * dh, j * sw - pw + kw * dw
                            if 0 <= h < H and 0 <= v < W:
                                dx[n, c, h, v] += cols[(n * OH + i) * OW + j, (kh * KW + kw) * C + c]
    return dx


def max_pool2d(x, kernel, stride=None, padding=0, dilation=1):
    """(y, indices): y[n, c, i, j] = max of window (i, j); indices = its flat position h*W + w in the plane.

    The window's taps are scanned in order (kh outer, kw inner) and only
    taps inside the input count (padding is never chosen). The first tap
    inside the input starts the scan; a later one takes over when it is
    strictly greater (ties keep the first) or when it is NaN (so a window
    with a NaN gives NaN, its last NaN). A window whose inputs are all -inf
    gives -inf at its first input; a window with no input at all gives -inf
    and index -1. These are PyTorch's rules.
    """
    N, C = x.shape[:2]
    stride = kernel if stride is None else stride
    H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW = _geometry(x.shape, kernel, stride, padding, dilation)
    y = np.full((N, C, OH, OW), -np.inf)
    indices = np.full((N, C, OH, OW), -1, dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    for kh in range(KH):
                        for kw in range(KW):
                            h, v = i * sh - ph + kh * dh, j * sw - pw + kw * dw
                            if not (0 <= h < H and 0 <= v < W):
                                continue                      # padding: never the maximum
                            value = x[n, c, h, v]
                            if indices[n, c, i, j] < 0 or value > y[n, c, i, j] or np.isnan(value):
                                y[n, c, i, j], indices[n, c, i, j] = value, h * W + v
    return y, indices


def avg_pool2d(x, kernel, stride=None, padding=0, count_include_pad=True, divisor_override=None):
    """y[n, c, i, j] = (sum of window (i, j), padding = 0) / d.

    d = KH*KW (``count_include_pad``), or the number of the window's taps
    inside the input, or ``divisor_override``.
    """
    N, C = x.shape[:2]
    stride = kernel if stride is None else stride
    H, W, KH, KW, sh, sw, ph, pw, _, _, OH, OW = _geometry(x.shape, kernel, stride, padding, 1)
    y = np.zeros((N, C, OH, OW))
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    total, count = 0.0, 0
                    for kh in range(KH):
                        for kw in range(KW):
                            h, v = i * sh - ph + kh, j * sw - pw + kw
                            if 0 <= h < H and 0 <= v < W:
                                total += x[n, c, h, v]
                                count += 1
                    d = divisor_override or (KH * KW if count_include_pad else count)
                    y[n, c, i, j] = total / d
    return y


def batch_norm(x, gamma=None, beta=None, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5):
    """(y, new_running_mean, new_running_var) of batch normalization over axis 1 of x (N, C, *).

    For each channel c, over its M = x.size / C values X:

        training:   mean = sum(X) / M,   var = sum((X - mean)**2) / M     (biased)
                    new running_mean = (1 - momentum) running_mean + momentum mean
                    new running_var  = (1 - momentum) running_var + momentum var * M / (M - 1)
        eval:       mean = running_mean[c],   var = running_var[c]     (running statistics unchanged)
        both:       y = gamma[c] * (X - mean) / sqrt(var + eps) + beta[c]

    gamma/beta None mean 1 and 0; running statistics None (training only)
    are returned as None.
    """
    x = np.asarray(x, dtype=np.float64)
    C = x.shape[1]
    y = np.zeros(x.shape)
    new_mean = None if running_mean is None else np.array(running_mean, dtype=np.float64)
    new_var = None if running_var is None else np.array(running_var, dtype=np.float64)
    for c in range(C):
        values = [float(v) for v in np.moveaxis(x, 1, 0)[c].ravel()]
        M = len(values)
        if training:
            mean = sum(values) / M
            var = sum((v - mean) ** 2 for v in values) / M
            if new_mean is not None:
                new_mean[c] = (1 - momentum) * new_mean[c] + momentum * mean
                new_var[c] = (1 - momentum) * new_var[c] + momentum * var * M / (M - 1)
        else:
            mean, var = float(running_mean[c]), float(running_var[c])
        g = 1.0 if gamma is None else float(gamma[c])
        b = 0.0 if beta is None else float(beta[c])
        plane = np.moveaxis(y, 1, 0)[c]              # a view: writing it fills y
        src = np.moveaxis(x, 1, 0)[c]
        for idx in np.ndindex(*src.shape):
            plane[idx] = g * (src[idx] - mean) / np.sqrt(var + eps) + b
    return y, new_mean, new_var


def batch_norm_backward(x, g, gamma=None, training=True, running_mean=None, running_var=None, eps=1e-5):
    """(dx, dgamma, dbeta) of batch normalization for the upstream gradient g, per channel:

        x_hat  = (X - mean) * inv_std,   inv_std = 1 / sqrt(var + eps)
        dbeta  = sum(g)
        dgamma = sum(g * x_hat)
        dx     = gamma * inv_std * (g - dbeta / M - x_hat * dgamma / M)     (training: batch mean, var)
        dx     = gamma * inv_std * g                                        (eval: running mean, var)
    """
    x, g = np.asarray(x, dtype=np.float64), np.asarray(g, dtype=np.float64)
    C = x.shape[1]
    dx = np.zeros(x.shape)
    dgamma, dbeta = np.zeros(C), np.zeros(C)
    for c in range(C):
        X = [float(v) for v in np.moveaxis(x, 1, 0)[c].ravel()]
        G = [float(v) for v in np.moveaxis(g, 1, 0)[c].ravel()]
        M = len(X)
        gam = 1.0 if gamma is None else float(gamma[c])
        if training:
            mean = sum(X) / M
            var = sum((v - mean) ** 2 for v in X) / M
        else:
            mean, var = float(running_mean[c]), float(running_var[c])
        inv_std = 1.0 / np.sqrt(var + eps)
        x_hat = [(v - mean) * inv_std for v in X]
        dbeta[c] = sum(G)
        dgamma[c] = sum(gv * xh for gv, xh in zip(G, x_hat))
        if training:
            d = [gam * inv_std * (gv - dbeta[c] / M - xh * dgamma[c] / M) for gv, xh in zip(G, x_hat)]
        else:
            d = [gam * inv_std * gv for gv in G]
        np.moveaxis(dx, 1, 0)[c][...] = np.array(d).reshape(np.moveaxis(x, 1, 0)[c].shape)
    return dx, dgamma, dbeta
