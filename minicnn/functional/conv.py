"""Convolution by im2col + one matrix multiply: ``im2col``, ``col2im``, ``conv2d``.

The path of a convolution, from ``nn.Conv2d`` to the GEMM::

    conv2d(x, w)  ->  cols = im2col(x)            (M, K) = (N*OH*OW, KH*KW*C_in)   every window as a row
                      Y = cols @ W2.T              (M, C_out)     W2 = w as (C_out, K)
                      y = Y as (N, C_out, OH, OW)

and back, two more GEMMs and ``col2im``, which adds every row of ``dcols``
back onto the pixels it was read from::

    dW2 = G_y.T @ cols        dcols = G_y @ W2;   dx = col2im(dcols)

``Conv2d`` below is exactly that, with one named step: dx is computed by
``col2im_of_product(G_y, W2)``, whose contract is ``col2im(G_y @ W2)``.
On the GPU it is those two calls (cuBLAS, then the col2im kernel). On the
CPU it runs col2im's own loop over the KH*KW kernel taps (``add_tap``,
the loop inside ``col2im``) and computes each tap's block of dcols just
before adding it, so the (M, KH*KW*C_in) dcols is never stored (less
memory, about 3x faster); ``col2im`` itself is not called there.
tests/test_conv.py checks that it equals ``col2im(G_y @ W2)``. The
definition it is all tested against is the loop in ``minicnn.reference.conv2d``. The window geometry and the
strided views live in ``windows.py`` (read its note on channels-last
memory: ``Y`` rows are (pixel, channel), so y is a free view of them).
Products go through ``speed.matmul``/``speed.matmul_t`` (the same as ``@``,
split over the cores) and one speed helper sits at the end of this file,
``col2im_of_product``, with its contract: it returns ``col2im(a @ b)``.
The transposed convolution is in ``conv_transpose.py``.
"""
import numpy as np

from ..autograd import Function
from ..backend import get_array_module, raw
from ..speed import column_sums, matmul, matmul_t, parallel_copy
from ..utils import pair
from .implementations import replacement
from .windows import (add_tap, channels_last, check_4d, conv_output_size, from_channels_last, gpu_kernels,
                      output_hw, padded_channels_last, sum_windows, window_args, window_view)

__all__ = ["im2col", "col2im", "conv2d", "conv_output_size"]


# --------------------------------------------------------------------------
# im2col / col2im (the heart of the lesson)
# --------------------------------------------------------------------------
def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Unfold every receptive field of ``x`` into one row of a matrix.

    Args:
        x: raw array (N, C, H, W), any strides (NCHW or channels-last memory).
        kernel_size, stride, padding, dilation: ints or (height, width) pairs.

    Returns:
        cols of shape (N*OH*OW, KH*KW*C), with
        ``cols[(n*OH + oh)*OW + ow, (kh*KW + kw)*C + c]
        = x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]`` (0 where that
        position lies in the padding). A row is one receptive field, flattened
        as (kh, kw, c): channels innermost.

    Worked example: x = arange(9) as (1, 1, 3, 3), a 2x2 kernel, stride 1::

        x = 0 1 2      cols = [[0, 1, 3, 4],    window at (oh, ow) = (0, 0)
            3 4 5              [1, 2, 4, 5],    (0, 1)
            6 7 8              [3, 4, 6, 7],    (1, 0)
                               [4, 5, 7, 8]]    (1, 1)

    A convolution is then ``cols @ W2.T`` with the weights flattened the
    same way, W2 = w.transpose(0, 2, 3, 1).reshape(C_out, KH*KW*C).

    How, without a loop over pixels: ``windows.window_view`` builds a
    (N, OH, OW, KH, KW, C) strided *view* of the (padded, channels-last)
    input, where neighbouring windows overlap in memory. That view is
    copied once into a new (N, OH, OW, KH, KW, C) array,
    ``speed.parallel_copy`` (the same as ``np.copyto``, each core copying
    its own images), and the ``reshape`` of that contiguous array to 2-D
    is free. When no copy is needed (a 1x1 kernel with stride 1 on
    channels-last memory) the result is a view of x: treat cols as read-only.
    """
    if (replaced := replacement("im2col")) is not None:     # F.use_implementation("im2col", ...)
        return replaced(x, kernel_size, stride, padding, dilation)
    x = raw(x)
    check_4d(x, "im2col")
    kernel, stride, padding, dilation = window_args("im2col", kernel_size, stride, padding, dilation)
    N, C = x.shape[:2]
    OH, OW = output_hw("im2col", x.shape, kernel, stride, padding, dilation)
    if get_array_module(x) is not np:     # on the GPU: kernels/im2col.cu, same contract
        return gpu_kernels().im2col_gpu(x, kernel, stride, padding, dilation)
    windows = window_view(padded_channels_last(x, padding), kernel, (OH, OW), stride, dilation)
    if windows.shape[3:5] == (1, 1) and windows[:, :, :, 0, 0, :].flags.c_contiguous:
        return windows.reshape(N * OH * OW, C)     # a 1x1 stride-1 kernel: cols is x itself
    cols = parallel_copy(np.empty(windows.shape, dtype=x.dtype), windows)   # the one copy: np.copyto
    return cols.reshape(N * OH * OW, kernel[0] * kernel[1] * C)                # free: cols is contiguous


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """The adjoint of ``im2col``: add every entry of ``cols`` back onto the pixel it came from.

    Args:
        cols: (N*OH*OW, KH*KW*C), laid out as ``im2col`` returns it.
        x_shape: (N, C, H, W) of the image that ``im2col`` unfolded.
        kernel_size, stride, padding, dilation: as given to ``im2col``.

    Returns:
        dx of shape (N, C, H, W) (channels-last memory), where each pixel
        holds the sum of all cols entries that ``im2col`` read from it;
        entries that came from the padding are dropped.

    Where windows overlap a pixel is read several times, so its entries add
    up. With the 3x3 image and 2x2 kernel of ``im2col``'s example,
    ``col2im(ones((4, 4)), (1, 1, 3, 3), 2)`` counts the windows covering
    each pixel::

        1 2 1
        2 4 2
        1 2 1

    This is exactly the backward pass of im2col: if cols = im2col(x) then
    dL/dx = col2im(dL/dcols), because <im2col(x), c> = <x, col2im(c)> for
    every x and c. It is computed by a loop over the KH*KW kernel taps, each
    adding one strided slice (never ``np.add.at``, never a loop over pixels).
    """
    if (replaced := replacement("col2im")) is not None:
        return replaced(cols, x_shape, kernel_size, stride, padding, dilation)
    cols = raw(cols)
    if len(x_shape) != 4:
        raise ValueError(f"col2im: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    N, C, H, W = (int(s) for s in x_shape)
    kernel, stride, padding, dilation = window_args("col2im", kernel_size, stride, padding, dilation)
    OH, OW = output_hw("col2im", x_shape, kernel, stride, padding, dilation)
    expected = (N * OH * OW, kernel[0] * kernel[1] * C)
    if tuple(cols.shape) != expected:
        raise ValueError(
            f"col2im: cols must have shape (N*OH*OW, KH*KW*C) = {expected} for x_shape {tuple(x_shape)}, "
            f"got {tuple(cols.shape)}")
    if get_array_module(cols) is not np:  # on the GPU: kernels/im2col.cu (a gather per pixel)
        return gpu_kernels().col2im_gpu(cols, x_shape, kernel, stride, padding, dilation)
    windows6 = cols.reshape(N, OH, OW, kernel[0], kernel[1], C)
    return from_channels_last(sum_windows(windows6, (H, W), stride, padding, dilation))


# --------------------------------------------------------------------------
# Groups and weights as matrices (shared with conv_transpose.py)
# --------------------------------------------------------------------------
def split_groups(a, groups, taps=1):
    """(M, taps*C) with channels innermost -> (G, M, taps*C/G): each group's columns together.

    Free for groups == 1 (adds a leading axis of length 1); one copy otherwise.
    """
    if groups == 1:
        return a[None]
    xp = get_array_module(a)
    M = a.shape[0]
    cg = a.shape[1] // (taps * groups)
    a = a.reshape(M, taps, groups, cg).transpose(2, 0, 1, 3)
    return xp.ascontiguousarray(a).reshape(groups, M, taps * cg)


def merge_groups(a, taps=1):
    """The inverse of ``split_groups``: (G, M, taps*Cg) -> (M, taps*G*Cg)."""
    G, M, n = a.shape
    if G == 1:
        return a[0]
    cg = n // taps
    return a.reshape(G, M, taps, cg).transpose(1, 2, 0, 3).reshape(M, taps * G * cg)


def weight_matrix(weight, groups):
    """(A, B, KH, KW) conv weights -> (G, A/G, KH*KW*B): one row per filter, taps flattened as (kh, kw, b)."""
    A, B, KH, KW = weight.shape
    return weight.transpose(0, 2, 3, 1).reshape(groups, A // groups, KH * KW * B)


def weight_from_matrix(w2, shape):
    """The inverse of ``weight_matrix``: (G, A/G, KH*KW*B) -> contiguous (A, B, KH, KW)."""
    xp = get_array_module(w2)
    A, B, KH, KW = shape
    return xp.ascontiguousarray(w2.reshape(A, KH, KW, B).transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
class Conv2d(Function):
    """2-D cross-correlation (what deep learning calls convolution), by im2col + GEMM.

    Shapes: x (N, C_in, H, W), weight (C_out, C_in/G, KH, KW), bias (C_out,)
    or None -> y (N, C_out, OH, OW), OH = conv_output_size(H, KH, sh, ph, dh).

        y[n, o, i, j] = b[o] + sum_{c, kh, kw} w[o, c, kh, kw]
                                                * x[n, g*C_in/G + c, i*sh - ph + kh*dh, j*sw - pw + kw*dw]

    (g the group of filter o; out-of-range x is 0; the loop form is
    ``minicnn.reference.conv2d``.) With M = N*OH*OW and K = KH*KW*C_in/G,
    per group:

        forward:   cols = im2col(x)            (M, K)
                   Y = cols @ W2.T             (M, C_out/G)      W2 = weight as (C_out/G, K)
        backward:  dW2   = G_y.T @ cols        (C_out/G, K)      G_y = dL/dY as (M, C_out/G)
                   dcols = G_y @ W2            (M, K);   dx = col2im(dcols)
                   db    = sum of G_y over its M rows

    (dx is ``col2im_of_product(G_y, W2)``, the same as ``col2im(G_y @ W2)``,
    which on the CPU adds dcols tap by tap without storing it.)

    Inputs whose ``needs_input_grad`` is False get no gradient computed (the
    first layer's dx, frozen weights), and what only they need is not kept.
    """

    def forward(self, x, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, out_hw=None):
        N, C_out, (KH, KW) = x.shape[0], weight.shape[0], weight.shape[2:]
        OH, OW = out_hw or output_hw("conv2d", x.shape, (KH, KW), stride, padding, dilation)
        self.settings = dict(kernel_size=(KH, KW), stride=stride, padding=padding, dilation=dilation)
        self.x_shape, self.w_shape, self.groups = x.shape, weight.shape, groups

        cols = split_groups(im2col(x, **self.settings), groups, KH * KW)   # (G, M, K)
        W2 = weight_matrix(weight, groups)                                  # (G, C_out/G, K)
        Y = merge_groups(matmul(cols, W2.transpose(0, 2, 1)))               # (M, C_out): cols @ W2.T
        if bias is not None:
            Y += bias
        self.cols = cols if self.needs_input_grad[1] else None              # for dW2
        self.W2 = W2 if self.needs_input_grad[0] else None                  # for dcols
        return from_channels_last(Y.reshape(N, OH, OW, C_out))              # Y's rows are NHWC memory

    def backward(self, g):
        G_y = channels_last(g).reshape(-1, g.shape[1])                      # (M, C_out)
        G_grp = split_groups(G_y, self.groups)                              # (G, M, C_out/G)
        dx = dw = db = None
        if self.needs_input_grad[0]:     # dx = col2im(G_y @ W2), tap by tap on the CPU
            dx = col2im_of_product(G_grp, self.W2, self.x_shape, **self.settings)
        if self.needs_input_grad[1]:     # dW2 = G_y.T @ cols
            dw = weight_from_matrix(matmul_t(G_grp, self.cols), self.w_shape)
        if self.needs_input_grad[2]:     # db = sum of G_y over its rows
            db = column_sums(G_y)
        return dx, dw, db


def check_conv_args(fn, x, weight, bias, groups, weight_in_axis):
    """Shared argument checks of conv2d and conv_transpose2d; returns (C_in, C_out).

    ``weight_in_axis`` is the weight axis that holds the input channels
    (1 for conv2d's (C_out, C_in/G, KH, KW), 0 for conv_transpose2d's (C_in, C_out/G, KH, KW)).
    """
    check_4d(x, fn)
    check_4d(weight, fn, "weight")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int, got {groups!r}")
    c_in = x.shape[1]
    if weight_in_axis == 1:
        expect_in, rule, c_out = weight.shape[1] * groups, "weight.shape[1] * groups", weight.shape[0]
    else:
        expect_in, rule, c_out = weight.shape[0], "weight.shape[0]", weight.shape[1] * groups
    if c_in % groups:
        raise ValueError(f"{fn}: input channels C_in = {c_in} are not divisible by groups = {groups}")
    if c_out % groups:
        raise ValueError(f"{fn}: output channels C_out = {c_out} are not divisible by groups = {groups}")
    if c_in != expect_in:
        raise ValueError(
            f"{fn}: input has C_in = {c_in} channels (shape {tuple(x.shape)}) but the weight "
            f"{tuple(weight.shape)} expects {rule} = {expect_in}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"{fn}: bias must have shape (C_out,) = ({c_out},), got {tuple(bias.shape)}")
    return c_in, c_out


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution of x (N, C_in, H, W) with weight (C_out, C_in/groups, KH, KW), as ``torch.nn.functional.conv2d``.

    ``stride``, ``padding`` and ``dilation`` are ints or (height, width)
    pairs; ``groups`` splits the channels into independent convolutions.
    Returns (N, C_out, OH, OW) with OH = conv_output_size(H, KH, stride, padding, dilation).
    See ``Conv2d`` for the math and ``im2col`` for the layout.
    """
    if (replaced := replacement("conv2d")) is not None:
        return replaced(x, weight, bias, stride, padding, dilation, groups)
    stride = pair(stride, "stride", "conv2d")
    padding = pair(padding, "padding", "conv2d", minimum=0)
    dilation = pair(dilation, "dilation", "conv2d")
    check_conv_args("conv2d", x, weight, bias, groups, weight_in_axis=1)
    out_hw = output_hw("conv2d", x.shape, weight.shape[2:], stride, padding, dilation)   # a clear error if too small
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=int(groups),
                        out_hw=out_hw)


# --------------------------------------------------------------------------
# The speed helper of this module (contract tested in tests/test_conv.py)
# --------------------------------------------------------------------------
def col2im_of_product(a, b, x_shape, kernel_size, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """Returns the same as ``col2im(merge_groups(a @ b, KH*KW), x_shape, ...)``: dx = col2im(dcols), dcols = a @ b.

    a (G, M, C_out/G) is G_y per group, b (G, C_out/G, KH*KW*C_in/G) is W2.
    On the GPU it is exactly that formula (one cuBLAS GEMM and the col2im
    kernel). On the CPU, col2im adds dcols one kernel tap at a time, and
    tap (kh, kw)'s block of dcols is a @ (tap (kh, kw)'s columns of b), so
    each block is computed just before it is added: the (M, K) dcols never
    exists (KH*KW times less temporary memory) and every add moves whole
    runs of C_in floats instead of strided ones (about 3x faster).
    """
    kernel, taps = tuple(kernel_size), kernel_size[0] * kernel_size[1]
    if get_array_module(a) is not np:
        return col2im(merge_groups(a @ b, taps), x_shape, kernel, stride, padding, dilation)
    (G, _, Cg_out), (N, C_in, H, W) = a.shape, x_shape
    OH, OW = output_hw("col2im", x_shape, kernel, stride, padding, dilation)
    b_taps = np.ascontiguousarray(b.reshape(G, Cg_out, taps, C_in // G).transpose(2, 0, 1, 3))
    dx = np.zeros((N, H, W, C_in), dtype=np.result_type(a, b))
    for k in range(taps):
        dcols_k = merge_groups(matmul(a, b_taps[k])).reshape(N, OH, OW, C_in)     # block k of dcols
        add_tap(dx, dcols_k, divmod(k, kernel[1]), stride, padding, dilation)
    return from_channels_last(dx)

