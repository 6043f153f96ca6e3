"""Transposed convolution, the adjoint of ``conv2d``: ``conv_transpose2d``.

Read ``conv.py`` first: this op is conv2d's backward pass run forward (a
GEMM, then ``col2im``), and its backward is conv2d's forward (``im2col``,
then GEMMs). The loop definition is ``minicnn.reference.conv_transpose2d``.
"""
from ..autograd import Function
from ..backend import get_array_module
from ..speed import column_sums, matmul, matmul_t
from ..utils import pair
from .conv import check_conv_args, col2im, im2col, merge_groups, split_groups, weight_from_matrix, weight_matrix
from .windows import channels_last, from_channels_last, output_hw

__all__ = ["conv_transpose2d"]


class ConvTranspose2d(Function):
    """Transposed ("fractionally strided") convolution: the adjoint of ``Conv2d``.

    Shapes: x (N, C_in, H, W), weight (C_in, C_out/G, KH, KW) (PyTorch's
    layout), bias (C_out,) or None -> y (N, C_out, H_out, W_out) with

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

    def forward(self, x, weight, bias, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
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
        OH, OW = output_hw("conv_transpose2d", self.y_shape, (KH, KW), stride, padding, dilation)
        X = channels_last(x)                                            # (N, H, W, C_in)
        if (OH, OW) != (H, W):
            grid = xp.zeros((N, OH, OW, C_in), dtype=x.dtype)
            grid[:, :H, :W, :] = X
            X = grid
        self.x_hw, self.grid_hw, self.w_shape, self.groups = (H, W), (OH, OW), weight.shape, groups

        X_grp = split_groups(X.reshape(N * OH * OW, C_in), groups)      # (G, M, C_in/G)
        W2 = weight_matrix(weight, groups)                              # (G, C_in/G, K)
        cols = merge_groups(matmul(X_grp, W2), KH * KW)                 # (M, KH*KW*C_out): X @ W2
        y = col2im(cols, self.y_shape, **self.settings)
        if bias is not None:
            y += bias[:, None, None]      # y is a fresh array: adding in place is safe
        self.X_grp = X_grp if self.needs_input_grad[1] else None
        self.W2 = W2 if self.needs_input_grad[0] else None
        return y

    def backward(self, g):
        (KH, KW), (H, W), (OH, OW) = self.settings["kernel_size"], self.x_hw, self.grid_hw
        N, C_in = self.y_shape[0], self.w_shape[0]
        dx = dw = db = None
        if self.needs_input_grad[0] or self.needs_input_grad[1]:
            G_c = split_groups(im2col(g, **self.settings), self.groups, KH * KW)     # (G, M, K)
        if self.needs_input_grad[0]:      # dX = G_c @ W2.T
            dX = merge_groups(matmul(G_c, self.W2.transpose(0, 2, 1)))              # (M, C_in)
            dx = from_channels_last(dX.reshape(N, OH, OW, C_in)[:, :H, :W, :])
        if self.needs_input_grad[1]:      # dW2 = X.T @ G_c
            dw = weight_from_matrix(matmul_t(self.X_grp, G_c), self.w_shape)
        if self.needs_input_grad[2]:      # db = sum of dL/dy over N, H, W
            db = column_sums(channels_last(g).reshape(-1, g.shape[1]))
        return dx, dw, db


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
    stride = pair(stride, "stride", fn)
    padding = pair(padding, "padding", fn, minimum=0)
    output_padding = pair(output_padding, "output_padding", fn, minimum=0)
    dilation = pair(dilation, "dilation", fn)
    check_conv_args(fn, x, weight, bias, groups, weight_in_axis=0)
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
    return ConvTranspose2d.apply(x, weight, bias, stride=stride, padding=padding, output_padding=output_padding,
                                 dilation=dilation, groups=int(groups))
