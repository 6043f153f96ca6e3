"""The catalogue of classic wrong solutions: each is the package's own solution with one mistake edited in.

An entry is (assignment, id, edits, diagnosis): ``edits`` is a list of
(old, new) text replacements of tests/homework_solutions/ASSIGNMENT.py (each
``old`` must occur) or a string appended to it (a later ``def`` replaces the
function); ``diagnosis`` is a phrase the grade's diagnosis must contain, or
None where no diagnosis is defined. Every entry must score below full marks.
CORRECT lists alternatives that are right and must score full marks.
"""
import pathlib

SOLUTIONS = pathlib.Path(__file__).parent / "homework_solutions"

MISTAKES = [
    # ---- activations
    ("activations", "sigmoid_overflows",
     [("y = 0.5 * (1 + np.tanh(0.5 * x))", "y = np.exp(x) / (1 + np.exp(x))")], "overflows"),
    ("activations", "relu_backward_masks_dy", [("return dy * cache", "return dy * cache * (dy > 0)")],
     "sign of dy"),
    ("activations", "sigmoid_backward_uses_input",
     [("    y = 0.5 * (1 + np.tanh(0.5 * x))       # = 1 / (1 + exp(-x)), with no overflow\n    return y, y",
       "    y = 0.5 * (1 + np.tanh(0.5 * x))\n    return y, x")], "uses the input where it needs the output"),
    ("activations", "tanh_derivative_not_squared", [("return dy * (1 - cache ** 2)", "return dy * (1 - cache)")],
     None),
    ("activations", "relu_backward_in_place_on_dy", [("    return dy * cache", "    dy[~cache] = 0\n    return dy")],
     "in place"),
    ("activations", "relu_forward_in_place_on_x", [("return np.maximum(x, 0), mask", "return np.maximum(x, 0, out=x), mask")],
     "in place"),
    # ---- im2col / col2im
    ("im2col", "col2im_assigns_instead_of_adding",
     [("+= \\\n                c6[:, :, :, kh, kw]", "= \\\n                c6[:, :, :, kh, kw]")], "assigns where it must add"),
    ("im2col", "columns_channels_first",
     [("return v.reshape(N * OH * OW, -1)", "return v.transpose(0, 1, 2, 5, 3, 4).reshape(N * OH * OW, -1)")],
     "(c, kh, kw)"),
    ("im2col", "output_size_off_by_one",
     [("OH = (H + 2 * padding[0] - kernel[0]) // stride[0] + 1\n    OW = (W + 2 * padding[1] - kernel[1]) // stride[1] + 1\n    xp",
       "OH = (H + 2 * padding[0] - kernel[0]) // stride[0]\n    OW = (W + 2 * padding[1] - kernel[1]) // stride[1]\n    xp")],
     "output size"),
    ("im2col", "col2im_keeps_the_padding",
     [("return xp[:, padding[0]:padding[0] + H, padding[1]:padding[1] + W].transpose(0, 3, 1, 2)",
       "return xp[:, :H, :W].transpose(0, 3, 1, 2)")], None),
    # ---- conv2d
    ("conv2d", "dw_transposed", [("dw = (G.T @ cols).reshape(F, KH, KW, C).transpose(0, 3, 1, 2)",
                                  "dw = (G.T @ cols).reshape(F, KH, KW, C).transpose(3, 0, 1, 2)")], "dW is transposed"),
    ("conv2d", "db_not_summed_over_batch", [("db = G.sum(axis=0)", "db = dy.sum(axis=(2, 3))")],
     "db is not summed over the batch"),
    ("conv2d", "kernel_flipped", [("    W2 = w.transpose(0, 2, 3, 1).reshape(F, -1)\n    y =",
                                   "    W2 = w[:, :, ::-1, ::-1].transpose(0, 2, 3, 1).reshape(F, -1)\n    y =")],
     "flipped"),
    ("conv2d", "bias_not_added", [("y = (cols @ W2.T + b)", "y = (cols @ W2.T)")], "bias is not added"),
    ("conv2d", "dilation_ignored", [("cols = _windows(xp, (KH, KW), (OH, OW), stride, dilation)",
                                     "cols = _windows(xp, (KH, KW), (OH, OW), stride, (1, 1))")], "dilation is ignored"),
    ("conv2d", "stride_arithmetic",
     [("OH = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1",
       "OH = (H + 2 * padding[0] - dilation[0] * (KH - 1)) // stride[0]"),
      ("OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1",
       "OW = (W + 2 * padding[1] - dilation[1] * (KW - 1)) // stride[1]")], "output size is wrong"),
    ("conv2d", "only_square_inputs", [("OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1",
                                       "OW = OH")], "output size is wrong"),
    ("conv2d", "padding_one_side",
     [("OH = (H + 2 * padding[0]", "OH = (H + padding[0]"), ("OW = (W + 2 * padding[1]", "OW = (W + padding[1]"),
      ("xp = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (padding[0],) * 2, (padding[1],) * 2, (0, 0)))",
       "xp = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (padding[0], 0), (padding[1], 0), (0, 0)))")],
     "one side only"),
    ("conv2d", "dw_only_right_for_batch_of_1",
     [("dw = (G.T @ cols)", "dw = (G[:OH * OW].T @ cols[:OH * OW])")], "batch of 1"),
    ("conv2d", "dx_assigns_where_windows_overlap",
     [("] += \\\n                dcols[:, :, :, kh, kw]", "] = \\\n                dcols[:, :, :, kh, kw]")],
     "assigns where it must add"),
    ("conv2d", "dx_padding_not_cropped",
     [("dx = dxp[:, padding[0]:padding[0] + H, padding[1]:padding[1] + W]", "dx = dxp[:, :H, :W]")], None),
    ("conv2d", "dy_modified_in_place",
     [("    G = dy.transpose(0, 2, 3, 1).reshape(-1, F)\n    W2",
       "    dy *= 1.0 / dy.size\n    G = dy.transpose(0, 2, 3, 1).reshape(-1, F) * dy.size\n    W2")], "in place"),
    # ---- grouped convolution (extra credit)
    ("conv2d_groups", "group_of_a_filter_by_modulo", """
def conv2d_groups_forward(x, w, b, stride, padding, dilation, groups):
    cg = x.shape[1] // groups
    ys = [_conv(x[:, (f % groups) * cg:(f % groups + 1) * cg], w[f:f + 1], b[f:f + 1], stride, padding, dilation)[0]
          for f in range(w.shape[0])]
    return np.concatenate(ys, axis=1), None
""", "not f % G"),
    ("conv2d_groups", "dx_of_every_group_on_the_first_channels",
     [("    return np.concatenate(dxs, axis=1), np.concatenate(dws)",
       "    dxs = [sum(dxs)] + [np.zeros_like(d) for d in dxs[1:]]\n    return np.concatenate(dxs, axis=1), np.concatenate(dws)")],
     None),
    ("conv2d_groups", "groups_ignored_in_backward_db", [("dy.sum(axis=(0, 2, 3))", "dy.sum(axis=(0, 2, 3))[:w.shape[0] // groups]")],
     None),
    # ---- max pooling
    ("max_pool", "ties_to_every_maximum",
     """
def max_pool_backward(dy, cache):
    (N, C, H, W), at, kernel, stride, padding, x = cache
    xw = x.reshape(N, C, H // 2, 2, W // 2, 2)
    is_max = xw == xw.max(axis=(3, 5), keepdims=True)
    return (is_max * dy[:, :, :, None, :, None]).reshape(N, C, H, W)


_forward = max_pool_forward


def max_pool_forward(x, kernel, stride, padding):
    y, cache = _forward(x, kernel, stride, padding)
    return y, cache + (x,)
""", "every maximum"),
    ("max_pool", "ties_split_the_gradient",
     """
def max_pool_backward(dy, cache):
    (N, C, H, W), at, kernel, stride, padding, x = cache
    xw = x.reshape(N, C, H // 2, 2, W // 2, 2)
    is_max = xw == xw.max(axis=(3, 5), keepdims=True)
    share = is_max / is_max.sum(axis=(3, 5), keepdims=True)
    return (share * dy[:, :, :, None, :, None]).reshape(N, C, H, W)


_forward = max_pool_forward


def max_pool_forward(x, kernel, stride, padding):
    y, cache = _forward(x, kernel, stride, padding)
    return y, cache + (x,)
""", "split the gradient"),
    ("max_pool", "padding_reads_zero", [(", constant_values=-np.inf)", ")")], "reads 0 instead of -inf"),
    ("max_pool", "gradient_to_the_whole_window", [("dy * (at == k)", "dy")], "whole window"),
    ("max_pool", "backward_assigns_where_windows_overlap",
     [("] += \\\n            dy * (at == k)", "] = \\\n            dy * (at == k)")], None),
    ("max_pool", "stride_ignored_in_backward",
     [("dxp[:, :, kh:kh + stride[0] * (OH - 1) + 1:stride[0], kw:kw + stride[1] * (OW - 1) + 1:stride[1]] += \\\n            dy",
       "dxp[:, :, kh:kh + kernel[0] * (OH - 1) + 1:kernel[0], kw:kw + kernel[1] * (OW - 1) + 1:kernel[1]] += \\\n            dy")],
     None),
    # ---- average pooling
    ("avg_pool", "backward_not_divided", [("share = dy / (kernel[0] * kernel[1])", "share = dy")],
     "does not divide by the window size"),
    ("avg_pool", "forward_not_divided", [("return y / (kernel[0] * kernel[1]), ", "return y, ")], None),
    # ---- batchnorm
    ("batchnorm", "running_statistics_in_training",
     [("mean, var = x.mean(axis=axes), x.var(axis=axes)", "mean, var = running_mean, running_var")],
     "running statistics in training"),
    ("batchnorm", "unbiased_variance_when_normalising",
     [("mean, var = x.mean(axis=axes), x.var(axis=axes)", "mean, var = x.mean(axis=axes), x.var(axis=axes, ddof=1)")],
     "biased one"),
    ("batchnorm", "backward_missing_mean_and_variance_terms",
     [("dx = a * (dy - dbeta.reshape(shape) / M - x_hat * dgamma.reshape(shape) / M)", "dx = a * dy")],
     "missing the terms through the mean and the variance"),
    ("batchnorm", "backward_missing_variance_term",
     [("dx = a * (dy - dbeta.reshape(shape) / M - x_hat * dgamma.reshape(shape) / M)",
       "dx = a * (dy - dbeta.reshape(shape) / M)")], "missing the term through the variance"),
    ("batchnorm", "statistics_over_the_batch_axis_only",
     [("    axes = (0,) + tuple(range(2, x.ndim))\n    shape", "    axes = (0,)\n    shape")], None),
    ("batchnorm", "running_variance_biased",
     [("momentum * var * (M / (M - 1))", "momentum * var")], "running variance is updated with the biased"),
    ("batchnorm", "momentum_reversed",
     [("running_mean = (1 - momentum) * running_mean + momentum * mean",
       "running_mean = momentum * running_mean + (1 - momentum) * mean")], "momentum is applied the wrong way"),
    ("batchnorm", "eval_mode_uses_batch_statistics", [("    if training:\n        mean, var", "    if True:\n        mean, var")],
     "eval-mode batchnorm uses the batch statistics"),
    ("batchnorm", "input_modified_in_place",
     [("x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)",
       "x -= mean.reshape(shape)\n    x_hat = x * inv_std.reshape(shape)")], "in place"),
    ("batchnorm", "running_mean_updated_in_place",
     [("running_mean = (1 - momentum) * running_mean + momentum * mean",
       "running_mean *= 1 - momentum\n        running_mean += momentum * mean")], "in place"),
    ("batchnorm", "dgamma_not_summed_over_pixels", [("dgamma = (dy * x_hat).sum(axis=axes)", "dgamma = (dy * x_hat).sum(axis=0)")],
     "have gamma's shape"),
    ("batchnorm", "eval_backward_with_training_terms", [("    if training:\n        dx", "    if True:\n        dx")],
     "mean and variance are constants"),
    # ---- autograd ops
    ("autograd_ops", "add_not_unbroadcast", [("return unbroadcast(g, a_shape), unbroadcast(g, b_shape)", "return g, g")],
     "must have the input's shape"),
    ("autograd_ops", "unbroadcast_only_leading_axes",
     [("    for axis, n in enumerate(shape):           # axes of length 1 that were stretched\n"
       "        if n == 1 and g.shape[axis] != 1:\n            g = g.sum(axis=axis, keepdims=True)\n", "")],
     "must have the input's shape"),
    ("autograd_ops", "mul_gradients_swapped",
     [("return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)",
       "return unbroadcast(g * a, a.shape), unbroadcast(g * b, b.shape)")], "swapped"),
    ("autograd_ops", "matmul_db_transposed", [("return g @ b.T, a.T @ g", "return g @ b.T, g.T @ a")], "db is transposed"),
    ("autograd_ops", "mean_not_divided", [("    return dx / count", "    return dx.copy()")], "not divided"),
    ("autograd_ops", "sum_axis_not_reinserted", [("    if not keepdims:\n        g = np.expand_dims(g, axis)\n", "")],
     None),
    ("autograd_ops", "log_derivative_times_x", [("return g / x", "return g * x")], "1 / x"),
    # ---- softmax cross-entropy
    ("softmax_ce", "no_max_shift",
     [("    z = logits - logits.max(axis=1, keepdims=True)\n", "    z = logits\n")], "overflows for large logits"),
    ("softmax_ce", "log_of_softmax_underflows",
     [("    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))",
       "    logp = np.log(np.exp(z) / np.exp(z).sum(axis=1, keepdims=True))")], "overflows for large logits"),
    ("softmax_ce", "loss_summed_not_averaged", [("loss = -logp[np.arange(N), labels].mean()",
                                                 "loss = -logp[np.arange(N), labels].sum()")], "summed over the batch"),
    ("softmax_ce", "gradient_not_divided_by_batch", [("return loss, d / N", "return loss, d")], "batch of 1"),
    ("softmax_ce", "gradient_without_onehot", [("    d[np.arange(N), labels] -= 1\n", "")], "subtract 1"),
    # ---- He initialisation
    ("he_init", "fan_out", [("fan_in = shape[1] * int(np.prod(shape[2:]))", "fan_in = shape[0] * int(np.prod(shape[2:]))")],
     "fan_out"),
    ("he_init", "variance_for_std", [("np.sqrt(2.0 / fan_in)", "(2.0 / fan_in)")], "square root"),
    ("he_init", "xavier_std", [("np.sqrt(2.0 / fan_in)", "np.sqrt(1.0 / fan_in)")], "LeCun/Xavier"),
    ("he_init", "fan_in_without_kernel", [("fan_in = shape[1] * int(np.prod(shape[2:]))", "fan_in = shape[1]")],
     "kernel size"),
    ("he_init", "uniform_draw", [("rng.standard_normal(shape)", "rng.uniform(-np.sqrt(3), np.sqrt(3), shape)")],
     "not normal"),
    ("he_init", "global_random_state", [("rng.standard_normal(shape)", "np.random.standard_normal(shape)")],
     "do not come from rng"),
    # ---- optimizers
    ("optimizers", "momentum_applied_twice", [("step = dw + momentum * v if nesterov else v",
                                               "step = dw + momentum * v if nesterov else momentum * v + dw")],
     "momentum is applied twice"),
    ("optimizers", "nesterov_ignored", [("step = dw + momentum * v if nesterov else v", "step = v")],
     "Nesterov is ignored"),
    ("optimizers", "adam_without_bias_correction",
     [("m_hat = m / (1 - beta1 ** t)", "m_hat = m"), ("v_hat = v / (1 - beta2 ** t)", "v_hat = v")],
     "without bias correction"),
    ("optimizers", "adam_t_off_by_one",
     [("m_hat = m / (1 - beta1 ** t)", "m_hat = m / (1 - beta1 ** (t + 1))"),
      ("v_hat = v / (1 - beta2 ** t)", "v_hat = v / (1 - beta2 ** (t + 1))")], "t + 1"),
    ("optimizers", "sgd_ascends", [("return w - lr * step, v", "return w + lr * step, v")], "up the gradient"),
    # ---- analysis: saliency, FGSM, Grad-CAM
    ("saliency", "no_absolute_value", [("return np.abs(xt.grad).max(axis=1)", "return xt.grad.max(axis=1)")],
     "absolute value"),
    ("saliency", "sum_over_channels", [("return np.abs(xt.grad).max(axis=1)", "return np.abs(xt.grad).sum(axis=1)")],
     "sum or mean"),
    ("saliency", "gradient_of_the_loss",
     """
import minicnn.functional as F


def saliency(model, x, target):
    xt = Tensor(x, requires_grad=True)
    F.cross_entropy(model(xt), target, reduction="sum").backward()
    return np.abs(xt.grad).max(axis=1)
""", "the target's logit"),
    ("fgsm", "not_clipped", [("return np.clip(x + eps * np.sign(xt.grad), 0, 1)", "return x + eps * np.sign(xt.grad)")],
     "not clipped"),
    ("fgsm", "steps_down_the_loss", [("x + eps * np.sign(xt.grad)", "x - eps * np.sign(xt.grad)")], "steps UP"),
    ("fgsm", "gradient_not_its_sign", [("x + eps * np.sign(xt.grad)", "x + eps * xt.grad")], "SIGN"),
    ("gradcam", "no_relu", [("return np.maximum(np.einsum(\"nk,nkhw->nhw\", alpha, A), 0)",
                             "return np.einsum(\"nk,nkhw->nhw\", alpha, A)")], "positive part"),
    ("gradcam", "alpha_summed", [("alpha = dA.mean(axis=(2, 3))", "alpha = dA.sum(axis=(2, 3))")], "MEAN"),
    ("gradcam", "weights_the_gradient",
     [("return np.maximum(np.einsum(\"nk,nkhw->nhw\", alpha, A), 0)",
       "return np.maximum(np.einsum(\"nk,nkhw->nhw\", alpha, dA), 0)")], "not the activations"),
    # ---- dropout
    ("dropout", "not_rescaled", [(" / x.dtype.type(1 - p)", "")], "not rescaled"),
    ("dropout", "p_is_the_keep_probability", [("rng.random(x.shape) >= p", "rng.random(x.shape) < p")],
     "probability of dropping"),
    ("dropout", "mask_in_eval_mode", [("if not training or p == 0:", "if p == 0:")], "identity"),
    ("dropout", "backward_draws_a_new_mask",
     [("return dy if cache is None else dy * cache",
       "return dy if cache is None else dy * (np.random.default_rng(1).random(dy.shape) >= 0.5) * 2.0")],
     "forward pass's mask"),
]

# Correct alternatives: each must score full marks.
CORRECT = [
    ("conv2d", "loops", """
def conv2d_forward(x, w, b, stride, padding, dilation):
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    y = np.zeros((N, F, OH, OW))
    for n in range(N):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    h, v = i * stride[0], j * stride[1]
                    patch = xp[n, :, h:h + dilation[0] * (KH - 1) + 1:dilation[0], v:v + dilation[1] * (KW - 1) + 1:dilation[1]]
                    y[n, f, i, j] = np.sum(patch * w[f]) + b[f]
    return y, (x, w, xp)


def conv2d_backward(dy, cache):
    x, w, xp = cache
    stride, padding, dilation = _settings
    N, F, OH, OW = dy.shape
    _, _, KH, KW = w.shape
    dxp, dw = np.zeros_like(xp, dtype=float), np.zeros_like(w, dtype=float)
    for n in range(N):
        for f in range(F):
            for i in range(OH):
                for j in range(OW):
                    h, v = i * stride[0], j * stride[1]
                    sl = (n, slice(None), slice(h, h + dilation[0] * (KH - 1) + 1, dilation[0]),
                          slice(v, v + dilation[1] * (KW - 1) + 1, dilation[1]))
                    dw[f] += dy[n, f, i, j] * xp[sl]
                    dxp[sl] += dy[n, f, i, j] * w[f]
    H, W = x.shape[2:]
    return dxp[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W], dw, dy.sum(axis=(0, 2, 3))


_loop_forward = conv2d_forward


def conv2d_forward(x, w, b, stride, padding, dilation):
    global _settings
    _settings = (stride, padding, dilation)
    return _loop_forward(x, w, b, stride, padding, dilation)
"""),
    ("conv2d", "float32_arithmetic", """
_f64_forward, _f64_backward = conv2d_forward, conv2d_backward


def conv2d_forward(x, w, b, stride, padding, dilation):
    return _f64_forward(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), stride, padding, dilation)


def conv2d_backward(dy, cache):
    return _f64_backward(dy.astype(np.float32), cache)
"""),
    ("conv2d", "channels_first_columns", """
def conv2d_forward(x, w, b, stride, padding, dilation):
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    cols = np.empty((C, KH, KW, N, OH, OW))       # rows (c, kh, kw), CS231n's layout
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * dilation[0], kw * dilation[1]
            cols[:, kh, kw] = xp[:, :, h0:h0 + stride[0] * (OH - 1) + 1:stride[0],
                                 w0:w0 + stride[1] * (OW - 1) + 1:stride[1]].transpose(1, 0, 2, 3)
    cols = cols.reshape(C * KH * KW, -1)
    y = (w.reshape(F, -1) @ cols + b[:, None]).reshape(F, N, OH, OW).transpose(1, 0, 2, 3)
    return y, (x.shape, w, cols, stride, padding, dilation)


def conv2d_backward(dy, cache):
    (N, C, H, W), w, cols, stride, padding, dilation = cache
    F, _, KH, KW = w.shape
    OH, OW = dy.shape[2:]
    G = dy.transpose(1, 0, 2, 3).reshape(F, -1)
    dw = (G @ cols.T).reshape(w.shape)
    dcols = (w.reshape(F, -1).T @ G).reshape(C, KH, KW, N, OH, OW)
    dxp = np.zeros((N, C, H + 2 * padding[0], W + 2 * padding[1]))
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * dilation[0], kw * dilation[1]
            dxp[:, :, h0:h0 + stride[0] * (OH - 1) + 1:stride[0], w0:w0 + stride[1] * (OW - 1) + 1:stride[1]] += \\
                dcols[:, kh, kw].transpose(1, 0, 2, 3)
    return dxp[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W], dw, G.sum(axis=1)
"""),
    ("max_pool", "last_maximum_wins_ties", [("better = tap > y ", "better = tap >= y ")]),
    ("max_pool", "loops", """
def max_pool_forward(x, kernel, stride, padding):
    N, C, H, W = x.shape
    OH = (H + 2 * padding[0] - kernel[0]) // stride[0] + 1
    OW = (W + 2 * padding[1] - kernel[1]) // stride[1] + 1
    y = np.zeros((N, C, OH, OW))
    arg = {}
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    best = None
                    for kh in range(kernel[0]):
                        for kw in range(kernel[1]):
                            h, v = i * stride[0] - padding[0] + kh, j * stride[1] - padding[1] + kw
                            if 0 <= h < H and 0 <= v < W and (best is None or x[n, c, h, v] > x[n, c, best[0], best[1]]):
                                best = (h, v)
                    y[n, c, i, j] = x[n, c, best[0], best[1]]
                    arg[n, c, i, j] = best
    return y, (x.shape, arg)


def max_pool_backward(dy, cache):
    shape, arg = cache
    dx = np.zeros(shape)
    for (n, c, i, j), (h, v) in arg.items():
        dx[n, c, h, v] += dy[n, c, i, j]
    return dx
"""),
    ("batchnorm", "float32_arithmetic", """
_f64_forward, _f64_backward = batchnorm_forward, batchnorm_backward


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    f = np.float32
    return _f64_forward(x.astype(f), gamma.astype(f), beta.astype(f), running_mean.astype(f),
                        running_var.astype(f), training, momentum, eps)


def batchnorm_backward(dy, cache):
    return _f64_backward(dy.astype(np.float32), cache)
"""),
    ("im2col", "col2im_with_add_at", """
def col2im(cols, x_shape, kernel, stride, padding):
    N, C, H, W = x_shape
    OH = (H + 2 * padding[0] - kernel[0]) // stride[0] + 1
    OW = (W + 2 * padding[1] - kernel[1]) // stride[1] + 1
    xp = np.zeros((N, C, H + 2 * padding[0], W + 2 * padding[1]))
    n, i, j, kh, kw, c = np.indices((N, OH, OW, kernel[0], kernel[1], C)).reshape(6, -1)
    np.add.at(xp, (n, c, i * stride[0] + kh, j * stride[1] + kw), cols.reshape(-1))
    return xp[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W]
"""),
    ("dropout", "binomial_mask", [("mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1 - p)",
                                   "mask = rng.binomial(1, 1 - p, x.shape) / (1 - p)")]),
    ("optimizers", "cs231n_velocity_convention", """
def sgd_step(w, dw, v, lr, momentum, nesterov):
    v_new = momentum * v - lr * dw                 # CS231n's velocity: a step, not a gradient sum
    if nesterov:
        return w - momentum * v + (1 + momentum) * v_new, v_new
    return w + v_new, v_new
"""),
    ("softmax_ce", "float32_arithmetic", [("    N = logits.shape[0]\n", "    N = logits.shape[0]\n    logits = logits.astype(np.float32)\n")]),
    ("fgsm", "mean_loss", [("reduction=\"sum\"", "reduction=\"mean\"")]),     # the same sign
    ("saliency", "one_image_at_a_time", """
def saliency(model, x, target):
    maps = []
    for n in range(len(x)):
        xt = Tensor(x[n:n + 1], requires_grad=True)
        model(xt)[0, int(target[n])].backward()
        maps.append(np.abs(xt.grad).max(axis=1)[0])
    return np.stack(maps)
"""),
    ("activations", "sigmoid_by_cases", """
def sigmoid_forward(x):
    e = np.exp(-np.abs(x))
    y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return y, y
"""),
]


def mutate(assignment, edits):
    """The solution of ``assignment`` with ``edits`` applied (see the module docstring)."""
    text = (SOLUTIONS / f"{assignment}.py").read_text()
    if isinstance(edits, str):
        return text + "\n" + edits
    for old, new in edits:
        assert old in text, f"{assignment}: {old!r} is not in the solution"
        text = text.replace(old, new)
    return text
