"""Convolution by im2col + one matrix multiply: ``im2col``, ``col2im``, ``conv2d``, ``conv_transpose2d``.

The path of a convolution, from ``nn.Conv2d`` to the GEMM::

    conv2d(x, w)  ->  cols = im2col(x)            (N*OH*OW, KH*KW*C_in)   every receptive field as a row
                      out2d = cols @ W2.T          (N*OH*OW, C_out)       W2 = w as (C_out, KH*KW*C_in)
                      y = out2d as (N, C_out, OH, OW)

and its backward pass is two more GEMMs plus ``col2im``, which adds every
row of ``dcols`` back onto the pixels it was read from (conv2d does that
GEMM and col2im one kernel tap at a time, see ``Conv2d.backward``).

Memory layout (the one trick of this module, read this first)
-------------------------------------------------------------
Tensors are NCHW in *shape* everywhere (the API, the tests, PyTorch), but
the arrays this module returns have channels-last (NHWC) *memory*: ``y`` is
``out2d.reshape(N, OH, OW, C_out).transpose(0, 3, 1, 2)``, a free view whose
strides say "channels innermost". Why:

- The GEMM produces (pixel, channel) rows, i.e. NHWC memory. Returning it as
  a view skips a full transpose copy of every conv output (and ``_rows``
  gets the incoming gradient as (pixel, channel) rows for free).
- ``im2col`` on NHWC memory copies runs of KW*C contiguous floats per window
  row; on NCHW memory it would gather single floats. The slice-adds of
  ``col2im`` likewise move runs of contiguous floats.
- The next layers (batchnorm, ReLU, pooling) get channels-last input and keep
  it, so ``xp.ascontiguousarray(x.transpose(0, 2, 3, 1))``, the first line of
  most ops here, is a free view in a network rather than a copy. On a 2-core
  CPU such copies, not the GEMMs, are what NumPy spends its time on.

Correctness does not depend on the layout: every op indexes through the
array's own strides (``transpose``, ``as_strided`` built from ``x.strides``),
so an NCHW-contiguous input (as in the tests) gives the same numbers, only
through one extra copy.
"""
import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module, parallel_chunks
from ..utils import pair

__all__ = ["im2col", "col2im", "conv2d", "conv_transpose2d", "conv_output_size"]


# --------------------------------------------------------------------------
# Argument helpers (shared with pooling)
# --------------------------------------------------------------------------
_pair = pair   # shared with the layers and the CUDA wrappers (minicnn/utils.py)


def conv_output_size(in_size, kernel_size, stride=1, padding=0, dilation=1):
    """Output length of a convolution (or pooling) along one axis.

    ``floor((in + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1``: the
    number of positions a window of effective size ``dilation*(kernel-1)+1``
    takes, moving by ``stride``, inside the padded input.
    """
    return (in_size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _check_4d(x, fn, name="input"):
    if x.ndim != 4:
        raise ValueError(f"{fn}: {name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")


def _output_hw(fn, x_shape, kernel, stride, padding, dilation):
    """(OH, OW) of a window op, or a clear error when the window does not fit."""
    H, W = x_shape[2], x_shape[3]
    OH = conv_output_size(H, kernel[0], stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, kernel[1], stride[1], padding[1], dilation[1])
    if OH <= 0 or OW <= 0:
        eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        raise ValueError(
            f"{fn}: the kernel {kernel[0]}x{kernel[1]} (dilation {dilation}, effective {eff[0]}x{eff[1]}) "
            f"is larger than the padded input {H + 2 * padding[0]}x{W + 2 * padding[1]} "
            f"(input {H}x{W}, padding {padding}), so the output size would be {OH}x{OW}; "
            f"use a smaller kernel or dilation, or more padding")
    return OH, OW


# --------------------------------------------------------------------------
# The strided-window machinery
# --------------------------------------------------------------------------
def _cuda():
    """The raw-kernel wrappers (``minicnn.cuda``), imported only when data is on the GPU."""
    from .. import cuda
    return cuda


def _nhwc_padded(x, padding, value=0.0):
    """x (N, C, H, W), any strides, as an (N, H + 2ph, W + 2pw, C) array.

    Without padding this is the free view ``x.transpose(0, 2, 3, 1)``. With
    padding, one buffer is allocated, filled with ``value`` and the interior
    assigned (cheaper than ``xp.pad``, which copies through several steps).
    """
    xp = get_array_module(x)
    xh = x.transpose(0, 2, 3, 1)
    ph, pw = padding
    if ph == 0 and pw == 0:
        return xh
    N, H, W, C = xh.shape
    if value == 0:
        buf = xp.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
    else:
        buf = xp.full((N, H + 2 * ph, W + 2 * pw, C), value, dtype=x.dtype)
    buf[:, ph:ph + H, pw:pw + W, :] = xh
    return buf


def _window_view(xh, kernel, out_hw, stride, dilation):
    """All receptive fields of xh (N, Hp, Wp, C) as a (N, OH, OW, KH, KW, C) view (no copy).

    ``view[n, oh, ow, kh, kw, c] = xh[n, oh*sh + kh*dh, ow*sw + kw*dw, c]``: moving
    one step along oh moves ``stride`` rows in memory, one step along kh moves
    ``dilation`` rows, so both are just strides of the same memory.
    """
    xp = get_array_module(xh)
    N, _, _, C = xh.shape
    sN, sH, sW, sC = xh.strides
    (KH, KW), (OH, OW) = kernel, out_hw
    return xp.lib.stride_tricks.as_strided(
        xh, shape=(N, OH, OW, KH, KW, C),
        strides=(sN, sH * stride[0], sW * stride[1], sH * dilation[0], sW * dilation[1], sC))


def _valid_span(k, out_len, in_len, stride, pad, dil):
    """Which outputs' tap ``k`` lands inside the (unpadded) input along one axis.

    Output o reads input position ``o*stride - pad + k*dil``. Returns
    ``(o_start, o_stop, i_start)``: outputs o_start..o_stop-1 land inside,
    the first of them on input position i_start (empty when o_start >= o_stop).
    """
    offset = k * dil - pad
    o_start = max(0, -(offset // stride))          # ceil(-offset / stride)
    o_stop = min(out_len, (in_len - 1 - offset) // stride + 1)
    return o_start, o_stop, o_start * stride + offset


def _add_tap(dx, values, tap, stride, padding, dilation):
    """dx[pixels read by kernel tap (kh, kw)] += values, skipping taps that fell in the padding.

    dx is (N, H, W, C); values is (N, OH, OW, C), one entry per window. Tap
    (kh, kw) of window (oh, ow) read pixel ``(oh*sh - ph + kh*dh, ow*sw - pw + kw*dw)``:
    over all windows a regular grid of pixels, so this is one strided
    slice-add (windows never read a pixel twice through the same tap).
    """
    N, H, W, C = dx.shape
    OH, OW = values.shape[1:3]
    oh0, oh1, h0 = _valid_span(tap[0], OH, H, stride[0], padding[0], dilation[0])
    ow0, ow1, w0 = _valid_span(tap[1], OW, W, stride[1], padding[1], dilation[1])
    if oh0 >= oh1 or ow0 >= ow1:
        return
    rows = slice(h0, h0 + (oh1 - oh0 - 1) * stride[0] + 1, stride[0])
    cols = slice(w0, w0 + (ow1 - ow0 - 1) * stride[1] + 1, stride[1])
    target, source = dx[:, rows, cols, :], values[:, oh0:oh1, ow0:ow1, :]

    def add(lo, hi):        # images lo..hi-1; the threads write disjoint images
        chunk = target[lo:hi]
        chunk += source[lo:hi]
    parallel_chunks(N, add, arrays_on_gpu=get_array_module(dx) is not np)


def _col2im_nhwc(cols6, in_hw, stride, padding, dilation):
    """Sum cols6 (N, OH, OW, KH, KW, C), any strides, onto an (N, H, W, C) image.

    One strided slice-add per kernel tap (KH*KW of them, no loop over
    pixels), see ``_add_tap``. Entries read from the padding are dropped.
    """
    xp = get_array_module(cols6)
    N, OH, OW, KH, KW, C = cols6.shape
    dx = xp.zeros((N, in_hw[0], in_hw[1], C), dtype=cols6.dtype)
    for kh in range(KH):
        for kw in range(KW):
            _add_tap(dx, cols6[:, :, :, kh, kw, :], (kh, kw), stride, padding, dilation)
    return dx


# --------------------------------------------------------------------------
# im2col / col2im (public: the heart of the lesson)
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

    How, without a loop over pixels: ``_window_view`` builds a
    (N, OH, OW, KH, KW, C) strided *view* of the (padded, channels-last)
    input, where neighbouring windows overlap in memory; the one
    ``reshape`` to 2-D is the only copy. When no copy is needed (a 1x1
    kernel with stride 1 on channels-last memory) the result is a view of
    x: treat cols as read-only.
    """
    x = x.data if isinstance(x, Tensor) else x
    _check_4d(x, "im2col")
    kernel = _pair(kernel_size, "kernel_size", "im2col")
    stride = _pair(stride, "stride", "im2col")
    padding = _pair(padding, "padding", "im2col", minimum=0)
    dilation = _pair(dilation, "dilation", "im2col")
    N, C = x.shape[:2]
    OH, OW = _output_hw("im2col", x.shape, kernel, stride, padding, dilation)
    if get_array_module(x) is not np:     # on the GPU: kernels/im2col.cu, same contract
        return _cuda().im2col_gpu(x, kernel, stride, padding, dilation)
    windows = _window_view(_nhwc_padded(x, padding), kernel, (OH, OW), stride, dilation)
    if windows.shape[3:5] == (1, 1) and windows[:, :, :, 0, 0, :].flags.c_contiguous:
        return windows.reshape(N * OH * OW, C)     # a 1x1 stride-1 kernel: cols is x itself
    # The one copy: each half of the batch copied by its own thread (see parallel_chunks).
    cols = np.empty(windows.shape, dtype=x.dtype)
    parallel_chunks(N, lambda lo, hi: np.copyto(cols[lo:hi], windows[lo:hi]))
    return cols.reshape(N * OH * OW, kernel[0] * kernel[1] * C)


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
    cols = cols.data if isinstance(cols, Tensor) else cols
    if len(x_shape) != 4:
        raise ValueError(f"col2im: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    N, C, H, W = (int(s) for s in x_shape)
    kernel = _pair(kernel_size, "kernel_size", "col2im")
    stride = _pair(stride, "stride", "col2im")
    padding = _pair(padding, "padding", "col2im", minimum=0)
    dilation = _pair(dilation, "dilation", "col2im")
    OH, OW = _output_hw("col2im", x_shape, kernel, stride, padding, dilation)
    expected = (N * OH * OW, kernel[0] * kernel[1] * C)
    if tuple(cols.shape) != expected:
        raise ValueError(
            f"col2im: cols must have shape (N*OH*OW, KH*KW*C) = {expected} for x_shape {tuple(x_shape)}, "
            f"got {tuple(cols.shape)}")
    if get_array_module(cols) is not np:  # on the GPU: kernels/im2col.cu (a gather per pixel)
        return _cuda().col2im_gpu(cols, x_shape, kernel, stride, padding, dilation)
    cols6 = cols.reshape(N, OH, OW, kernel[0], kernel[1], C)
    return _col2im_nhwc(cols6, (H, W), stride, padding, dilation).transpose(0, 3, 1, 2)


# --------------------------------------------------------------------------
# Small shared pieces of the GEMM formulation
# --------------------------------------------------------------------------
def _rows(x):
    """(N, C, H, W) -> (N*H*W, C) matrix of pixels (free for channels-last memory)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(N * H * W, C)


def _sum_rows(a):
    """Column sums of a 2-D array, as a matrix-vector product.

    ``ones @ a`` runs in BLAS on all cores; NumPy's ``a.sum(axis=0)`` walks
    the rows one by one on one thread (about 10x slower for (131072, 16)).
    """
    xp = get_array_module(a)
    return xp.ones(a.shape[0], dtype=a.dtype) @ a


def _split_groups(a, groups, taps=1):
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


def _merge_groups(a, taps=1):
    """The inverse of ``_split_groups``: (G, M, taps*Cg) -> (M, taps*G*Cg)."""
    G, M, n = a.shape
    if G == 1:
        return a[0]
    cg = n // taps
    return a.reshape(G, M, taps, cg).transpose(1, 2, 0, 3).reshape(M, taps * G * cg)


def _weight_matrix(weight, groups):
    """(A, B, KH, KW) conv weights -> (G, A/G, KH*KW*B): one row per filter, taps flattened as (kh, kw, b)."""
    A, B, KH, KW = weight.shape
    return weight.transpose(0, 2, 3, 1).reshape(groups, A // groups, KH * KW * B)


def _weight_from_matrix(w2, shape):
    """The inverse of ``_weight_matrix``: (G, A/G, KH*KW*B) -> contiguous (A, B, KH, KW)."""
    xp = get_array_module(w2)
    A, B, KH, KW = shape
    return xp.ascontiguousarray(w2.reshape(A, KH, KW, B).transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
class Conv2d(Function):
    """2-D cross-correlation (what deep learning calls convolution), by im2col + GEMM.

    Shapes: x (N, C_in, H, W), weight (C_out, C_in/G, KH, KW), optional bias
    (C_out,) -> y (N, C_out, OH, OW), OH = conv_output_size(H, KH, sh, ph, dh).

        y[n, o, i, j] = b[o] + sum_{c, kh, kw} w[o, c, kh, kw]
                                                * x[n, g*C_in/G + c, i*sh - ph + kh*dh, j*sw - pw + kw*dw]

    (g the group of filter o; out-of-range x is 0.) With M = N*OH*OW and
    K = KH*KW*C_in/G, per group:

        forward:   cols = im2col(x)            (M, K)
                   Y = cols @ W2.T             (M, C_out/G)      W2 = weight as (C_out/G, K)
        backward:  dW2   = G_y.T @ cols        (C_out/G, K)      G_y = dL/dY as (M, C_out/G)
                   dcols = G_y @ W2            (M, K);   dx = col2im(dcols)
                   db    = sum of G_y over its M rows

    (On the CPU dx is computed tap by tap, see ``backward``: the same sums
    as col2im without materialising the large dcols. On the GPU it is the
    formula as written, one GEMM and the col2im kernel: ``_dx_by_col2im``.)

    Inputs whose ``needs_input_grad`` is False get no gradient computed (the
    first layer's dx, frozen weights), and their inputs are not kept.
    """

    def forward(self, x, weight, *bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        N = x.shape[0]
        C_out, _, KH, KW = weight.shape
        OH, OW = _output_hw("conv2d", x.shape, (KH, KW), stride, padding, dilation)
        self.settings = dict(kernel_size=(KH, KW), stride=stride, padding=padding, dilation=dilation)
        self.geometry = dict(stride=stride, padding=padding, dilation=dilation)
        self.x_shape, self.w_shape, self.groups = x.shape, weight.shape, groups

        cols = _split_groups(im2col(x, **self.settings), groups, KH * KW)   # (G, M, K)
        w2 = _weight_matrix(weight, groups)                                  # (G, C_out/G, K)
        out = _merge_groups(cols @ w2.transpose(0, 2, 1))                    # (M, C_out)
        if bias:
            out += bias[0]
        # Keep only what backward will use: cols for dW, the weights for dx.
        self.cols = cols if self.needs_input_grad[1] else None
        self.weight = weight if self.needs_input_grad[0] else None
        # (M, C_out) rows are NHWC memory; the NCHW result is a free view of them.
        return out.reshape(N, OH, OW, C_out).transpose(0, 3, 1, 2)

    def backward(self, g):
        G, (KH, KW) = self.groups, self.settings["kernel_size"]
        N, C_in, H, W = self.x_shape
        OH, OW = g.shape[2:]
        g_rows = _rows(g)                                  # (M, C_out), free if g is channels-last
        g_grp = _split_groups(g_rows, G)                    # (G, M, C_out/G)
        dx = dw = None
        if self.needs_input_grad[0] and get_array_module(g) is not np:
            dx = self._dx_by_col2im(g_grp)
        elif self.needs_input_grad[0]:
            # dx = col2im(dcols) with dcols = G_y @ W2, computed one kernel tap at a time:
            # tap (kh, kw) of every window receives G_y @ W[:, :, kh, kw] (an (M, C_in)
            # block of dcols) and sends it back to the pixels it read. Same sums as
            # col2im, but the (M, KH*KW*C_in) dcols never exists: KH*KW times less
            # temporary memory, and each add moves whole image rows (~3x faster on CPU).
            xp = get_array_module(g)
            w_taps = xp.ascontiguousarray(self.weight.transpose(2, 3, 0, 1))     # (KH, KW, C_out, C_in/G)
            dx = xp.zeros((N, H, W, C_in), dtype=g.dtype)
            for kh in range(KH):
                for kw in range(KW):
                    w_k = w_taps[kh, kw].reshape(G, -1, C_in // G)                 # (G, C_out/G, C_in/G)
                    dcols_k = _merge_groups(g_grp @ w_k).reshape(N, OH, OW, C_in)
                    _add_tap(dx, dcols_k, (kh, kw), **self.geometry)
            dx = dx.transpose(0, 3, 1, 2)
        if self.needs_input_grad[1]:
            # dW2 = G_y.T @ cols, computed as (cols.T @ G_y).T: the same sums, but OpenBLAS
            # runs this orientation of the long (M-deep) reduction 20-30% faster.
            dw2 = (self.cols.transpose(0, 2, 1) @ g_grp).transpose(0, 2, 1)
            dw = _weight_from_matrix(dw2, self.w_shape)
        if len(self.needs_input_grad) == 3:
            db = _sum_rows(g_rows) if self.needs_input_grad[2] else None
            return dx, dw, db
        return dx, dw

    def _dx_by_col2im(self, g_grp):
        """dx = col2im(G_y @ W2) as written in the class docstring: the GPU's path.

        On the GPU every call is a kernel launch, so the per-tap form (KH*KW
        small GEMMs and KH*KW adds) costs 2*KH*KW launches; one GEMM on cuBLAS
        and one col2im kernel (kernels/im2col.cu, a gather per input pixel, no
        atomics) do the same sums in two, at the price of the (M, K) dcols.
        """
        taps = self.settings["kernel_size"][0] * self.settings["kernel_size"][1]
        dcols = _merge_groups(g_grp @ _weight_matrix(self.weight, self.groups), taps)   # (M, KH*KW*C_in)
        return col2im(dcols, self.x_shape, **self.settings)


def _check_conv_args(fn, x, weight, bias, groups, weight_in_axis):
    """Shared argument checks of conv2d and conv_transpose2d; returns (C_in, C_out).

    ``weight_in_axis`` is the weight axis that holds the input channels
    (1 for conv2d's (C_out, C_in/G, KH, KW), 0 for conv_transpose2d's (C_in, C_out/G, KH, KW)).
    """
    _check_4d(x, fn)
    _check_4d(weight, fn, "weight")
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
    if x.dtype != weight.dtype:
        raise TypeError(f"{fn}: input dtype {x.dtype} and weight dtype {weight.dtype} differ; "
                        f"convert one of them (minicnn uses float32, float64 for gradient checks)")
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
    stride = _pair(stride, "stride", "conv2d")
    padding = _pair(padding, "padding", "conv2d", minimum=0)
    dilation = _pair(dilation, "dilation", "conv2d")
    _check_conv_args("conv2d", x, weight, bias, groups, weight_in_axis=1)
    _output_hw("conv2d", x.shape, weight.shape[2:], stride, padding, dilation)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*inputs, stride=stride, padding=padding, dilation=dilation, groups=int(groups))


# --------------------------------------------------------------------------
# conv_transpose2d
# --------------------------------------------------------------------------
class ConvTranspose2d(Function):
    """Transposed ("fractionally strided") convolution: the adjoint of ``Conv2d``.

    Shapes: x (N, C_in, H, W), weight (C_in, C_out/G, KH, KW) (PyTorch's
    layout), optional bias (C_out,) -> y (N, C_out, H_out, W_out) with

        H_out = (H - 1)*sh - 2*ph + dh*(KH - 1) + output_padding_h + 1.

    Every input pixel scatters a weighted copy of the kernel into the output:

        y[n, o, i*sh - ph + kh*dh, j*sw - pw + kw*dw] += x[n, c, i, j] * w[c, o', kh, kw]

    which is exactly what conv2d's backward pass does with dL/dy. So, with
    W2 = weight as (C_in/G, KH*KW*C_out/G) per group and X = x as (N*H*W, C_in):

        forward:   cols = X @ W2            (N*H*W, KH*KW*C_out/G);   y = col2im(cols)
        backward:  G_c = im2col(dL/dy)      (N*H*W, KH*KW*C_out/G)
                   dX  = G_c @ W2.T,   dW2 = X.T @ G_c,   db = sum of dL/dy over N, H, W

    (``output_padding`` only adds rows/columns at the bottom/right that no
    input reaches; when it is >= stride, x is extended by zero rows so that
    conv2d over y has an output grid to match.)
    """

    def forward(self, x, weight, *bias, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                dilation=(1, 1), groups=1):
        xp = get_array_module(x)
        N, C_in, H, W = x.shape
        _, C_out_g, KH, KW = weight.shape
        C_out = C_out_g * groups
        H_out = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (KH - 1) + output_padding[0] + 1
        W_out = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (KW - 1) + output_padding[1] + 1
        self.settings = dict(kernel_size=(KH, KW), stride=stride, padding=padding, dilation=dilation)
        self.y_shape = (N, C_out, H_out, W_out)
        # The grid of a conv2d over y; (H, W) unless output_padding >= stride adds a row/column.
        OH, OW = _output_hw("conv_transpose2d", self.y_shape, (KH, KW), stride, padding, dilation)
        x_rows = _rows(x)
        if (OH, OW) != (H, W):
            grid = xp.zeros((N, OH, OW, C_in), dtype=x.dtype)
            grid[:, :H, :W, :] = x_rows.reshape(N, H, W, C_in)
            x_rows = grid.reshape(N * OH * OW, C_in)
        self.x_hw, self.grid_hw, self.w_shape, self.groups = (H, W), (OH, OW), weight.shape, groups

        x_grp = _split_groups(x_rows, groups)                          # (G, M, C_in/G)
        w2 = _weight_matrix(weight, groups)                            # (G, C_in/G, K)
        cols = _merge_groups(x_grp @ w2, KH * KW)                       # (M, KH*KW*C_out)
        y = col2im(cols, self.y_shape, **self.settings)
        if bias:
            y += bias[0][:, None, None]      # y is a fresh array: adding in place is safe
        self.x_grp = x_grp if self.needs_input_grad[1] else None
        self.w2 = w2 if self.needs_input_grad[0] else None
        return y

    def backward(self, g):
        G, (KH, KW) = self.groups, self.settings["kernel_size"]
        (H, W), (OH, OW) = self.x_hw, self.grid_hw
        N, C_in = self.y_shape[0], self.w_shape[0]
        dx = dw = None
        if self.needs_input_grad[0] or self.needs_input_grad[1]:
            g_cols = _split_groups(im2col(g, **self.settings), G, KH * KW)   # (G, M, K)
        if self.needs_input_grad[0]:
            dx = _merge_groups(g_cols @ self.w2.transpose(0, 2, 1))      # (M, C_in)
            dx = dx.reshape(N, OH, OW, C_in)[:, :H, :W, :].transpose(0, 3, 1, 2)
        if self.needs_input_grad[1]:
            dw = _weight_from_matrix(self.x_grp.transpose(0, 2, 1) @ g_cols, self.w_shape)
        if len(self.needs_input_grad) == 3:
            db = g.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None
            return dx, dw, db
        return dx, dw


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Transposed convolution of x (N, C_in, H, W) with weight (C_in, C_out/groups, KH, KW).

    As ``torch.nn.functional.conv_transpose2d`` (but note: PyTorch's order
    is ``..., output_padding, groups, dilation``; pass those two by keyword
    to be safe in both): the output is
    (N, C_out, H_out, W_out), H_out = (H-1)*stride - 2*padding +
    dilation*(KH-1) + output_padding + 1, and conv2d with the same weight
    and settings maps that shape back to (N, C_in, H, W). See
    ``ConvTranspose2d`` for the math.
    """
    fn = "conv_transpose2d"
    stride = _pair(stride, "stride", fn)
    padding = _pair(padding, "padding", fn, minimum=0)
    output_padding = _pair(output_padding, "output_padding", fn, minimum=0)
    dilation = _pair(dilation, "dilation", fn)
    _check_conv_args(fn, x, weight, bias, groups, weight_in_axis=0)
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= max(s, d):
            raise ValueError(f"{fn}: output_padding {output_padding} must be smaller than stride {stride} "
                             f"or dilation {dilation} (in each dimension)")
    H, W = x.shape[2:]
    KH, KW = weight.shape[2:]
    H_out = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (KH - 1) + output_padding[0] + 1
    W_out = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (KW - 1) + output_padding[1] + 1
    if H_out <= 0 or W_out <= 0:
        raise ValueError(f"{fn}: the output size would be {H_out}x{W_out} for input {H}x{W}, kernel "
                         f"{KH}x{KW}, stride {stride}, padding {padding}; use less padding")
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return ConvTranspose2d.apply(*inputs, stride=stride, padding=padding, output_padding=output_padding,
                                 dilation=dilation, groups=int(groups))
