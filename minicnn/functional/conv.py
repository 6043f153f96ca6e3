"""Convolution by im2col + one matrix multiply: ``im2col``, ``col2im``, ``conv2d``.

The path of a convolution, from ``nn.Conv2d`` to the GEMM::

    conv2d(x, w)  ->  cols = im2col(x)            (M, K) = (N*OH*OW, KH*KW*C_in)   every window as a row
                      Y = cols @ W2.T              (M, C_out)     W2 = w as (C_out, K)
                      y = Y as (N, C_out, OH, OW)

and back, two more GEMMs and ``col2im``, which adds every row of ``dcols``
back onto the pixels it was read from::

    dW2 = G_y.T @ cols        dcols = G_y @ W2;   dx = col2im(dcols)

``Conv2d`` below is exactly that, with three named steps, the speed
helpers at the end of this file, each with its contract:

- ``im2col_product(x, b)`` returns ``im2col(x) @ b`` (Y, with b = W2.T);
- ``im2col_t_product(x, g)`` returns ``im2col(x).T @ g`` (dW2.T, g = G_y);
- ``col2im_of_product(a, b)`` returns ``col2im(a @ b)`` (dx, a = G_y, b = W2).

On the GPU each is that formula (cuBLAS, the im2col/col2im kernels). On
the CPU the (M, K) matrices cols and dcols are never stored whole: the
first two call ``im2col`` on a few images at a time, each core on its own
images, and multiply that small block while it is still in the cache
(about 1.5x faster, no 75 MB buffer per layer); the third runs col2im's
own loop over the KH*KW kernel taps (``add_tap``) and computes each tap's
block of dcols just before adding it (about 3x faster). tests/test_conv.py
checks the three contracts. The definition it is all tested against is
the loop in ``minicnn.reference.conv2d``. The window geometry and the
strided views live in ``windows.py`` (read its note on channels-last
memory: ``Y`` rows are (pixel, channel), so y is a free view of them).
Products go through ``speed.matmul`` (the same as ``@``, split over the cores).
The transposed convolution is in ``conv_transpose.py``.
"""
import numpy as np

from ..autograd import Function
from ..backend import get_array_module, raw
from .. import speed
from ..speed import column_sums, matmul, matmul_t, parallel_copy, row_block_sum, row_blocks, single_threaded_blas
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

    How (``unfold`` below, after the argument checks), without a loop
    over pixels: ``windows.window_view`` builds a
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
    out_hw = output_hw("im2col", x.shape, kernel, stride, padding, dilation)
    if get_array_module(x) is not np:     # on the GPU: kernels/im2col.cu, same contract
        return gpu_kernels().im2col_gpu(x, kernel, stride, padding, dilation)
    return unfold(x, kernel, stride, padding, dilation, out_hw)


def unfold(x, kernel, stride, padding, dilation, out_hw):
    """The work of ``im2col`` on a CPU array, its arguments already checked: (height, width) pairs, out_hw = (OH, OW).

    The speed helpers below call it once per block of a few images, where
    checking the same arguments again would cost more than the copy.
    """
    N, C = x.shape[:2]
    (OH, OW), taps = out_hw, kernel[0] * kernel[1]
    windows = window_view(padded_channels_last(x, padding), kernel, out_hw, stride, dilation)
    if taps == 1 and windows[:, :, :, 0, 0, :].flags.c_contiguous:
        return windows.reshape(N * OH * OW, C)     # a 1x1 stride-1 kernel: cols is x itself
    cols = parallel_copy(np.empty(windows.shape, dtype=x.dtype), windows)   # the one copy: np.copyto
    return cols.reshape(N * OH * OW, taps * C)                                 # free: cols is contiguous


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

    Three named steps compute these products without storing the (M, K)
    matrices (tests/test_conv.py checks each against its formula):
    Y is ``im2col_product(x, W2.T)``, the same as ``im2col(x) @ W2.T``;
    dW2 is the transpose of ``im2col_t_product(x, G_y)``, the same as
    ``im2col(x).T @ G_y``; dx is ``col2im_of_product(G_y, W2)``, the same
    as ``col2im(G_y @ W2)``. So what is kept for the backward pass is x,
    not cols (KH*KW times smaller).

    Inputs whose ``needs_input_grad`` is False get no gradient computed (the
    first layer's dx, frozen weights), and what only they need is not kept.
    """

    def forward(self, x, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, out_hw=None):
        N, C_out, (KH, KW) = x.shape[0], weight.shape[0], weight.shape[2:]
        OH, OW = out_hw or output_hw("conv2d", x.shape, (KH, KW), stride, padding, dilation)
        self.settings = dict(kernel_size=(KH, KW), stride=stride, padding=padding, dilation=dilation)
        self.x_shape, self.w_shape, self.groups = x.shape, weight.shape, groups

        W2 = weight_matrix(weight, groups)                                  # (G, C_out/G, K)
        Y = im2col_product(x, W2.transpose(0, 2, 1), **self.settings)       # (M, C_out): im2col(x) @ W2.T
        if bias is not None:
            Y += bias
        self.x = x if self.needs_input_grad[1] else None                    # for dW2 (cols = im2col(x))
        self.W2 = W2 if self.needs_input_grad[0] else None                  # for dcols
        return from_channels_last(Y.reshape(N, OH, OW, C_out))              # Y's rows are NHWC memory

    def backward(self, g):
        G_y = channels_last(g).reshape(-1, g.shape[1])                      # (M, C_out)
        G_grp = split_groups(G_y, self.groups)                              # (G, M, C_out/G)
        dx = dw = db = None
        if self.needs_input_grad[0]:     # dx = col2im(G_y @ W2), tap by tap on the CPU
            dx = col2im_of_product(G_grp, self.W2, self.x_shape, **self.settings)
        if self.needs_input_grad[1]:     # dW2 = G_y.T @ cols = (im2col(x).T @ G_y).T
            dw = weight_from_matrix(im2col_t_product(self.x, G_grp, **self.settings).transpose(0, 2, 1),
                                    self.w_shape)
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
# The speed helpers of this module (contracts tested in tests/test_conv.py)
# --------------------------------------------------------------------------
def _image_blocks(n_images, bytes_per_image, work):
    """``[work(lo, hi) for each block of images [lo, hi)]``, in order, the blocks split over the cores.

    A block holds as many images as take about ``speed.BLOCK_BYTES`` of
    the block's temporary (``bytes_per_image`` each); OpenBLAS runs
    single-threaded meanwhile.
    """
    with single_threaded_blas():
        return row_blocks(n_images, bytes_per_image, work)


def _image_block_sum(n_images, bytes_per_image, work):
    """``sum(work(lo, hi) for each block of images [lo, hi))``, the blocks as ``_image_blocks`` makes them.

    ``speed.row_block_sum``: one running sum per core, not one result per block.
    """
    with single_threaded_blas():
        return row_block_sum(n_images, bytes_per_image, work)


def _blocks_pay(n_images, bytes_per_image):
    """Whether blocks of images pay on the CPU: the batch makes at least two blocks per core.

    With fewer blocks (one image for style transfer or a saliency map) the
    cores would sit idle, so the helpers use their whole-batch formula,
    whose products ``speed.matmul`` splits by rows over the cores instead.
    """
    return -(-n_images // speed.rows_per_block(bytes_per_image)) >= 2 * speed.cpu_threads()


def _unfold_in_blocks(x, kernel, stride, padding, cols_bytes_per_image):
    """Whether ``im2col_product`` and ``im2col_t_product`` go by blocks: a CPU array, im2col not free, blocks pay."""
    if get_array_module(x) is not np or (kernel == (1, 1) and stride == (1, 1) and padding == (0, 0)):
        return False         # the GPU runs the whole formula; a 1x1 stride-1 im2col is x itself, nothing to copy
    return _blocks_pay(x.shape[0], cols_bytes_per_image)


def _im2col_of_blocks(kernel, stride, padding, dilation, out_hw):
    """``im2col`` for blocks of one checked input: ``unfold`` with the checks done once, or a replaced im2col.

    A block of a few images is unfolded in about 100 us, and checking the
    same arguments again each time took half of that.
    ``F.use_implementation("im2col", ...)`` still sees every block.
    """
    if replacement("im2col") is not None:
        return lambda xs: im2col(xs, kernel, stride, padding, dilation)
    return lambda xs: unfold(xs, kernel, stride, padding, dilation, out_hw)


def _cols_bytes_per_image(x, out_hw, taps):
    """Bytes of one image's rows of im2col(x): OH*OW * KH*KW*C."""
    return out_hw[0] * out_hw[1] * taps * x.shape[1] * x.dtype.itemsize


def im2col_product(x, b, kernel_size, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """Returns the same as ``merge_groups(split_groups(im2col(x, ...), G, KH*KW) @ b)``; for one group ``im2col(x) @ b[0]``.

    x (N, C, H, W); b (G, KH*KW*C/G, P) per group (W2.T in ``Conv2d``);
    the result is (N*OH*OW, G*P). On the GPU, when im2col is free (a 1x1
    stride-1 kernel) or for a small batch (``_blocks_pay``), it is that
    formula. Otherwise, on the CPU, the (M, K) cols
    is never stored whole: each core takes a few images at a time
    (about ``speed.BLOCK_BYTES`` = 1 MiB of cols), unfolds them with
    ``im2col`` and multiplies the block while it is still in the cache,
    writing its own rows of the result (no 75 MB buffer per layer, and
    the product reads hot data: about 1.5x faster on 2 cores).
    """
    kernel, stride, padding, dilation = (tuple(v) for v in (kernel_size, stride, padding, dilation))
    taps, G = kernel[0] * kernel[1], b.shape[0]
    out_hw = output_hw("im2col", x.shape, kernel, stride, padding, dilation)
    bytes_per_image = _cols_bytes_per_image(x, out_hw, taps)
    if not _unfold_in_blocks(x, kernel, stride, padding, bytes_per_image):
        return merge_groups(matmul(split_groups(im2col(x, kernel, stride, padding, dilation), G, taps), b))
    N, rows = x.shape[0], out_hw[0] * out_hw[1]
    out = np.empty((N * rows, G * b.shape[2]), dtype=np.result_type(x, b))
    cols_of = _im2col_of_blocks(kernel, stride, padding, dilation, out_hw)

    def work(lo, hi):
        out[lo * rows:hi * rows] = merge_groups(matmul(split_groups(cols_of(x[lo:hi]), G, taps), b))
    _image_blocks(N, bytes_per_image, work)
    return out


def im2col_t_product(x, g, kernel_size, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """Returns the same as ``split_groups(im2col(x, ...), G, KH*KW).swapaxes(1, 2) @ g``; for one group ``im2col(x).T @ g[0]``.

    x (N, C, H, W); g (G, N*OH*OW, P) per group (G_y in ``Conv2d``); the
    result is (G, KH*KW*C/G, P), the transposed weight gradient. On the GPU,
    when im2col is free or for a small batch, it is that formula
    (``speed.matmul_t``). Otherwise, on the CPU, it unfolds a few images at
    a time as ``im2col_product`` does, so the forward pass need not keep
    cols: each core adds up its blocks' products ``cols_block.T @ g_block``
    as it goes, and the cores' sums are added.
    """
    kernel, stride, padding, dilation = (tuple(v) for v in (kernel_size, stride, padding, dilation))
    taps, G = kernel[0] * kernel[1], g.shape[0]
    out_hw = output_hw("im2col", x.shape, kernel, stride, padding, dilation)
    bytes_per_image = _cols_bytes_per_image(x, out_hw, taps)
    if not _unfold_in_blocks(x, kernel, stride, padding, bytes_per_image):
        return matmul_t(split_groups(im2col(x, kernel, stride, padding, dilation), G, taps), g)
    rows = out_hw[0] * out_hw[1]
    cols_of = _im2col_of_blocks(kernel, stride, padding, dilation, out_hw)

    def work(lo, hi):
        return matmul_t(split_groups(cols_of(x[lo:hi]), G, taps), g[:, lo * rows:hi * rows])
    return _image_block_sum(x.shape[0], bytes_per_image, work)


def col2im_of_product(a, b, x_shape, kernel_size, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """Returns the same as ``col2im(merge_groups(a @ b, KH*KW), x_shape, ...)``: dx = col2im(dcols), dcols = a @ b.

    a (G, M, C_out/G) is G_y per group, b (G, C_out/G, KH*KW*C_in/G) is W2.
    On the GPU it is exactly that formula (one cuBLAS GEMM and the col2im
    kernel). On the CPU, col2im adds dcols one kernel tap at a time, and
    tap (kh, kw)'s block of dcols is a @ (tap (kh, kw)'s columns of b), so
    each block is computed just before it is added: the (M, K) dcols never
    exists and every add moves whole runs of C_in floats instead of strided
    ones. For a batch large enough (``_blocks_pay``) it does so for a few
    images at a time, each core its own images (dx of an image depends only
    on its own rows of a), so all of that stays in the cache.
    """
    kernel, taps = tuple(kernel_size), kernel_size[0] * kernel_size[1]
    if get_array_module(a) is not np:
        return col2im(merge_groups(a @ b, taps), x_shape, kernel, stride, padding, dilation)
    (G, _, Cg_out), (N, C_in, H, W) = a.shape, x_shape
    OH, OW = output_hw("col2im", x_shape, kernel, stride, padding, dilation)
    rows = OH * OW
    b_taps = np.ascontiguousarray(b.reshape(G, Cg_out, taps, C_in // G).transpose(2, 0, 1, 3))
    dx = np.empty((N, H, W, C_in), dtype=np.result_type(a, b))

    def images(lo, hi):          # dx of images lo..hi-1 reads only their rows of a
        dx_block = dx[lo:hi]
        dx_block[...] = 0
        a_block = a[:, lo * rows:hi * rows]
        for k in range(taps):
            dcols_k = merge_groups(matmul(a_block, b_taps[k])).reshape(hi - lo, OH, OW, C_in)   # block k of dcols
            add_tap(dx_block, dcols_k, divmod(k, kernel[1]), stride, padding, dilation)
    bytes_per_image = (rows + H * W) * C_in * dx.dtype.itemsize    # of dcols_k and dx: a block's, about 1 MiB
    if _blocks_pay(N, bytes_per_image):
        _image_blocks(N, bytes_per_image, images)
    else:                        # a small batch: the whole batch at once, each product split over the cores
        images(0, N)
    return from_channels_last(dx)
