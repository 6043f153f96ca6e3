"""The layer assignments: activations, im2col/col2im, conv2d, max and average pooling, batchnorm, dropout.

Each student function works on NumPy arrays: ``*_forward`` returns the
output and a ``cache`` (anything the backward pass needs), ``*_backward``
takes the upstream gradient and that cache. Expected forward results come
from ``minicnn.reference`` (loops); expected gradients from
``minicnn.gradcheck.numerical_grad`` (central differences in float64, a
random upstream gradient) through the package's op.
"""
import numpy as np

from .. import functional as F
from .. import reference
from ..gradcheck import numerical_grad
from .core import Case, about, call, close, matches, non_finite, transposed

SEED = 2024


def numeric(op, arrays, dy, wrt):
    """dL/d arrays[name] for each name in ``wrt``, L = sum(dy * op(*arrays)), by central differences (float64)."""
    arrays = {k: (v.astype(np.float64).copy() if isinstance(v, np.ndarray) else v) for k, v in arrays.items()}
    values = list(arrays.values())
    names = list(arrays)
    grads = {}
    for name in wrt:
        grads[name] = numerical_grad(lambda _: op(*values), values[names.index(name)], grad_output=dy)
    return grads


def shape_rule(name):
    """A diagnosis rule: ``name`` came back with the wrong shape."""
    return about(name, lambda r, c: r[name].shape != c.expected[name].shape)


OUTPUT_SIZE = ("the output size is wrong: OH = (H + 2*ph - dh*(KH - 1) - 1) // sh + 1 (floor division), "
               "the same for the width with pw, dw, KW, sw", shape_rule("y"))


# --------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------
ACTIVATIONS_SKELETON = '''"""Homework: ReLU, sigmoid, tanh: forward and backward.   minicnn homework check activations

Every function works on NumPy arrays of any shape and dtype (float32 or
float64) and must not modify its arguments. ``*_forward`` returns
(y, cache); ``*_backward(dy, cache)`` returns dx = dL/dx given dy = dL/dy.

    relu:     y = max(x, 0)              dx = dy * [x > 0]
    sigmoid:  y = 1 / (1 + exp(-x))      dx = dy * y * (1 - y)
    tanh:     y = tanh(x)                dx = dy * (1 - y**2)

The sigmoid must not overflow for large |x| (no warning, no inf/NaN):
exp(-x) overflows for x < -710 in float64 (and x < -89 in float32).
"""
import numpy as np


def relu_forward(x):
    # TODO: y and a cache for the backward pass
    raise NotImplementedError("relu_forward")


def relu_backward(dy, cache):
    # TODO: dx = dy * [x > 0]
    raise NotImplementedError("relu_backward")


def sigmoid_forward(x):
    # TODO: a numerically stable sigmoid
    raise NotImplementedError("sigmoid_forward")


def sigmoid_backward(dy, cache):
    raise NotImplementedError("sigmoid_backward")


def tanh_forward(x):
    raise NotImplementedError("tanh_forward")


def tanh_backward(dy, cache):
    raise NotImplementedError("tanh_backward")


if __name__ == "__main__":      # a tiny self-check; the grader runs many more cases
    x = np.array([-2.0, -0.5, 0.5, 3.0])
    y, cache = relu_forward(x)
    print("relu", y, relu_backward(np.ones_like(x), cache))      # [0 0 0.5 3] [0 0 1 1]
    y, cache = sigmoid_forward(np.array([0.0, -1000.0, 1000.0]))
    print("sigmoid", y)                                          # [0.5 0 1]
'''


def activation_cases():
    rng = np.random.default_rng(SEED)
    cases = []
    defs = {"relu": (F.relu, lambda x: np.maximum(x, 0)),
            "sigmoid": (F.sigmoid, lambda x: 0.5 * (1 + np.tanh(x / 2))),
            "tanh": (F.tanh, np.tanh)}
    for name, (op, ref) in defs.items():
        for label, shape, dtype, scale in (("(2, 3, 5, 4)", (2, 3, 5, 4), np.float64, 3.0),
                                           ("batch of 1, (1, 7)", (1, 7), np.float64, 3.0),
                                           ("float32 (4, 6)", (4, 6), np.float32, 3.0),
                                           ("large |x| (3, 8)", (3, 8), np.float64, 800.0)):
            if name == "relu" and scale > 100:
                continue
            x = rng.uniform(-scale, scale, shape)
            x = np.where(np.abs(x) < 0.05, 0.1, x).astype(dtype)      # no kink within the difference step
            dy = rng.standard_normal(shape).astype(dtype)
            x64 = x.astype(np.float64)
            grads = numeric(lambda a: op(a), {"x": x64}, dy.astype(np.float64), ["x"])
            tol = (1e-4, 1e-5) if dtype == np.float64 else (2e-3, 1e-4)
            diagnoses = [("the sigmoid overflows for large |x|: use exp(-|x|) (or tanh) so no exp sees a "
                          "large positive argument", non_finite("y")),
                         ("the backward pass uses the input where it needs the output (or the reverse): "
                          f"for {name}, dx = dy * f'(x)", lambda r, c, n=name: _wrong_derivative_input(n, r, c)),
                         ("relu's gradient at the input is dy * [x > 0]; it must not depend on the sign of dy",
                          matches("dx", lambda c: c.inputs["dy"] * (c.inputs["x"] > 0) * (c.inputs["dy"] > 0)))]
            cases.append(Case(f"{name} {label}", 1, [call(f"{name}_forward", "$x", out=("y", "cache")),
                                                     call(f"{name}_backward", "$dy", "$cache", out=("dx",))],
                              {"x": x, "dy": dy}, {"y": ref(x64), "dx": grads["x"]}, diagnoses=diagnoses,
                              tol=tol, seed=SEED))
    return cases


def _wrong_derivative_input(name, r, c):
    x, dy = c.inputs["x"].astype(np.float64), c.inputs["dy"]
    if name == "sigmoid":
        return close(r["dx"], dy * x * (1 - x))
    if name == "tanh":
        return close(r["dx"], dy * (1 - x ** 2))
    return False


# --------------------------------------------------------------------------
# im2col / col2im
# --------------------------------------------------------------------------
IM2COL_SKELETON = '''"""Homework: im2col and col2im.   minicnn homework check im2col

im2col(x, kernel, stride, padding) unfolds every receptive field of
x (N, C, H, W) into one row of a matrix; kernel, stride and padding are
(height, width) pairs, padding reads 0:

    cols[(n*OH + i)*OW + j, (kh*KW + kw)*C + c] = x[n, c, i*sh - ph + kh, j*sw - pw + kw]

    cols has shape (N*OH*OW, KH*KW*C): a row per window (n, i, j), its
    columns ordered (kh, kw, c), channels innermost.
    OH = (H + 2*ph - KH) // sh + 1,  OW = (W + 2*pw - KW) // sw + 1

col2im(cols, x_shape, kernel, stride, padding) is its adjoint (the backward
pass of im2col): every entry of cols is ADDED back onto the pixel it was
read from (overlapping windows add up), entries from the padding are
dropped; returns an array of shape x_shape. Do not modify the arguments.
"""
import numpy as np


def im2col(x, kernel, stride, padding):
    # TODO
    raise NotImplementedError("im2col")


def col2im(cols, x_shape, kernel, stride, padding):
    # TODO: the adjoint of im2col
    raise NotImplementedError("col2im")


if __name__ == "__main__":
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    print(im2col(x, (2, 2), (1, 1), (0, 0)))    # [[0 1 3 4] [1 2 4 5] [3 4 6 7] [4 5 7 8]]
    print(col2im(np.ones((4, 4)), (1, 1, 3, 3), (2, 2), (1, 1), (0, 0))[0, 0])   # [[1 2 1] [2 4 2] [1 2 1]]
'''

WINDOW_GEOMETRIES = [   # label, x shape, kernel, stride, padding, dilation
    ("3x3 kernel, stride 1, padding 1", (2, 3, 6, 6), (3, 3), (1, 1), (1, 1), (1, 1)),
    ("batch of 1, 1x1 kernel", (1, 4, 5, 5), (1, 1), (1, 1), (0, 0), (1, 1)),
    ("stride 2, odd size 7x9", (2, 2, 7, 9), (3, 3), (2, 2), (0, 0), (1, 1)),
    ("stride 3 larger than the 2x2 kernel", (2, 2, 8, 7), (2, 2), (3, 3), (0, 0), (1, 1)),
    ("non-square: 2x3 kernel, stride (1, 2), padding (1, 0), 5x8 input", (2, 3, 5, 8), (2, 3), (1, 2), (1, 0),
     (1, 1)),
    ("padding 2, more than half the 3x3 kernel", (1, 2, 4, 5), (3, 3), (1, 1), (2, 2), (1, 1)),
    ("dilation 2", (2, 2, 7, 7), (3, 3), (1, 1), (1, 1), (2, 2)),
]


def im2col_cases():
    rng = np.random.default_rng(SEED + 1)
    cases = []
    for label, shape, k, s, p, d in WINDOW_GEOMETRIES:
        if d != (1, 1):
            continue
        x = rng.standard_normal(shape)
        cols = reference.im2col(x, k, s, p)
        dcols = rng.standard_normal(cols.shape)
        dx = reference.col2im(dcols, shape, k, s, p)
        args = dict(kernel=k, stride=s, padding=p)
        cases.append(Case(f"im2col {label}", 1, [call("im2col", "$x", list(k), list(s), list(p), out=("cols",))],
                          {"x": x}, {"cols": cols}, args=args, seed=SEED + 1, diagnoses=[
                              ("the columns are ordered (c, kh, kw); the layout asks for (kh, kw, c), channels "
                               "innermost", matches("cols", lambda c, k=k: _c_first(c.expected["cols"], k))),
                              ("the output size is wrong: OH = (H + 2*ph - KH) // sh + 1",
                               about("cols", lambda r, c: r["cols"].shape[0] != c.expected["cols"].shape[0])),
                              ("padding is applied on one side only (pad both top and bottom, left and right)",
                               about("cols", lambda r, c, p=p: max(p) > 0
                                     and r["cols"].shape != c.expected["cols"].shape))]))
        cases.append(Case(f"col2im {label}", 1,
                          [call("col2im", "$dcols", list(shape), list(k), list(s), list(p), out=("dx",))],
                          {"dcols": dcols}, {"dx": dx}, args=args, seed=SEED + 1, diagnoses=[
                              ("col2im assigns where it must add: pixels read by several windows get the sum of "
                               "their entries", about("dx", lambda r, c, a=(shape, k, s, p): any(
                                   close(r["dx"], wrong) for wrong in _col2im_assign(c.inputs["dcols"], *a))))]))
    return cases


def _c_first(cols, k):
    M, KC = cols.shape
    C = KC // (k[0] * k[1])
    return cols.reshape(M, k[0], k[1], C).transpose(0, 3, 1, 2).reshape(M, KC)


def _col2im_assign(dcols, shape, k, s, p):
    """What col2im gives when it assigns instead of adding: by windows, or by kernel taps (the last write wins)."""
    N, C, H, W = shape
    OH, OW = reference.output_size(H, k[0], s[0], p[0]), reference.output_size(W, k[1], s[1], p[1])
    d6 = dcols.reshape(N, OH, OW, k[0], k[1], C)
    by_window, by_tap = (np.zeros((N, C, H + 2 * p[0], W + 2 * p[1])) for _ in range(2))
    for i in range(OH):
        for j in range(OW):
            by_window[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]] = d6[:, i, j].transpose(0, 3, 1, 2)
    for kh in range(k[0]):
        for kw in range(k[1]):
            by_tap[:, :, kh:kh + s[0] * (OH - 1) + 1:s[0], kw:kw + s[1] * (OW - 1) + 1:s[1]] = \
                d6[:, :, :, kh, kw].transpose(0, 3, 1, 2)
    return [a[:, :, p[0]:p[0] + H, p[1]:p[1] + W] for a in (by_window, by_tap)]


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
CONV2D_SKELETON = '''"""Homework: conv2d forward and backward.   minicnn homework check conv2d

Shapes: x (N, C, H, W), w (F, C, KH, KW), b (F,); stride, padding and
dilation are (height, width) pairs; padding reads 0. The output
y (N, F, OH, OW), OH = (H + 2*ph - dh*(KH - 1) - 1) // sh + 1 (OW alike):

    y[n, f, i, j] = b[f] + sum_{c, kh, kw} w[f, c, kh, kw] * x[n, c, i*sh - ph + kh*dh, j*sw - pw + kw*dw]

(a cross-correlation: the kernel is not flipped). Backward, given dy = dL/dy:

    dx[n, c, h, v]   = sum of dy[n, f, i, j] * w[f, c, kh, kw] over all (f, i, j, kh, kw) that read x[n, c, h, v]
    dw[f, c, kh, kw] = sum_{n, i, j} dy[n, f, i, j] * x[n, c, i*sh - ph + kh*dh, j*sw - pw + kw*dw]
    db[f]            = sum_{n, i, j} dy[n, f, i, j]

With im2col (cols: (N*OH*OW, KH*KW*C)) this is one matrix product each way:
y = cols @ W2.T + b, dW2 = dY.T @ cols, dcols = dY @ W2, dx = col2im(dcols).
Loops are correct too, only slower. Do not modify x, w, b or dy.
"""
import numpy as np


def conv2d_forward(x, w, b, stride, padding, dilation):
    # TODO: y, and a cache of what the backward pass needs
    raise NotImplementedError("conv2d_forward")


def conv2d_backward(dy, cache):
    # TODO: dx, dw, db
    raise NotImplementedError("conv2d_backward")


if __name__ == "__main__":
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2))
    y, cache = conv2d_forward(x, w, np.zeros(1), (2, 2), (0, 0), (1, 1))
    print(y)                               # [[[[10. 18.] [42. 50.]]]]
    dx, dw, db = conv2d_backward(np.ones_like(y), cache)
    print(dw, db)                          # [[[[20. 24.] [36. 40.]]]] [4.]
'''


def conv2d_cases():
    rng = np.random.default_rng(SEED + 2)
    cases = []
    for label, shape, k, s, p, d in WINDOW_GEOMETRIES + [
            ("float32 input", (2, 3, 6, 5), (3, 3), (1, 1), (1, 1), (1, 1))]:
        dtype = np.float32 if label.startswith("float32") else np.float64
        N, C = shape[:2]
        Fo = 4 if C != 4 else 3
        x = rng.standard_normal(shape)
        w = rng.standard_normal((Fo, C) + k) / np.sqrt(C * k[0] * k[1])
        b = rng.standard_normal(Fo)
        y = reference.conv2d(x, w, b, s, p, d)
        dy = rng.standard_normal(y.shape)
        grads = numeric(lambda x_, w_, b_: F.conv2d(x_, w_, b_, s, p, d), {"x": x, "w": w, "b": b}, dy,
                        ["x", "w", "b"])
        inputs = {k_: v.astype(dtype) for k_, v in dict(x=x, w=w, b=b, dy=dy).items()}
        tol = (1e-4, 1e-5) if dtype == np.float64 else (1e-3, 1e-4)
        cases.append(Case(
            f"conv2d {label}", 2 if dtype == np.float64 else 1,
            [call("conv2d_forward", "$x", "$w", "$b", list(s), list(p), list(d), out=("y", "cache")),
             call("conv2d_backward", "$dy", "$cache", out=("dx", "dw", "db"))],
            inputs, {"y": y, "dx": grads["x"], "dw": grads["w"], "db": grads["b"]},
            args=dict(stride=s, padding=p, dilation=d), tol=tol, seed=SEED + 2,
            diagnoses=_conv2d_diagnoses(k, s, p, d)))
    return cases


def _conv2d_diagnoses(k, s, p, d):
    return [
        ("padding is applied on one side only: pad ph rows at the top AND the bottom, pw columns "
         "left AND right", about("y", lambda r, c: _one_sided(r["y"], c, s, d))),
        OUTPUT_SIZE,
        ("the kernel is flipped: deep learning's convolution is a cross-correlation (no flip)",
         matches("y", lambda c: reference.conv2d(c.inputs["x"], c.inputs["w"][:, :, ::-1, ::-1],
                                                 c.inputs["b"], s, p, d))),
        ("the bias is not added (or added twice)",
         about("y", lambda r, c: any(close(r["y"], c.expected["y"] + m * c.inputs["b"][:, None, None])
                                     for m in (-1, 1)))),
        ("dilation is ignored: tap (kh, kw) reads x[..., i*sh - ph + kh*dh, j*sw - pw + kw*dw]",
         matches("y", lambda c: reference.conv2d(c.inputs["x"], c.inputs["w"], c.inputs["b"], s, p)[
             (...,) + tuple(slice(n) for n in c.expected["y"].shape[2:])])),
        ("db is not summed over the batch: db[f] sums dy over n, i and j",
         about("db", lambda r, c: r["db"].ndim > 1 or close(r["db"], c.inputs["dy"][0].sum((1, 2))))),
        ("dW is transposed: dw must have w's shape (F, C, KH, KW)", transposed("dw")),
        ("dw is only right for a batch of 1: sum over every image n",
         about("dw", lambda r, c: c.inputs["x"].shape[0] > 1 and close(r["dw"], numeric(
             lambda x_, w_, b_: F.conv2d(x_, w_, b_, s, p, d),
             {"x": c.inputs["x"][:1].astype(float), "w": c.inputs["w"].astype(float),
              "b": c.inputs["b"].astype(float)}, c.inputs["dy"][:1].astype(float), ["w"])["w"]))),
        ("dx assigns where it must add: where windows overlap (stride < kernel) a pixel gets the sum "
         "over every window that read it", about("dx", lambda r, c: _overlap_assign(r, c, k, s, p, d))),
    ]


def _one_sided(y, c, s, d):
    x, w, b = c.inputs["x"], c.inputs["w"], c.inputs["b"]
    ph, pw = c.args["padding"]
    if not (ph or pw):
        return False
    for pads in (((ph, 0), (pw, 0)), ((0, ph), (0, pw)), ((2 * ph, 0), (2 * pw, 0)), ((0, 2 * ph), (0, 2 * pw))):
        xp = np.pad(x, ((0, 0), (0, 0)) + pads)
        if close(y, reference.conv2d(xp, w, b, s, 0, d)):
            return True
    return False


def _overlap_assign(r, c, k, s, p, d):
    if all(si >= ki for si, ki in zip(s, k)):
        return False
    return not np.allclose(r["dx"], c.expected["dx"]) and np.allclose(r["dw"], c.expected["dw"]) and np.allclose(
        r["y"], c.expected["y"])


# --------------------------------------------------------------------------
# max pooling and average pooling
# --------------------------------------------------------------------------
MAX_POOL_SKELETON = '''"""Homework: max pooling with the argmax stored.   minicnn homework check max_pool

x (N, C, H, W); kernel, stride, padding are (height, width) pairs
(padding <= kernel // 2). Padding reads -inf: it is never the maximum.

    y[n, c, i, j] = max over (kh, kw) of x[n, c, i*sh - ph + kh, j*sw - pw + kw]
    OH = (H + 2*ph - KH) // sh + 1,  OW alike

Backward: the whole dy[n, c, i, j] goes to the input that was the maximum
of window (i, j) (remember where it was in the forward pass); where windows
overlap an input collects the sum. On a tie any ONE of the maxima may get
the gradient (the first in scan order is the usual rule), never several,
and the gradient is never split. Do not modify x or dy.
"""
import numpy as np


def max_pool_forward(x, kernel, stride, padding):
    # TODO: y, and a cache with where each window's maximum is
    raise NotImplementedError("max_pool_forward")


def max_pool_backward(dy, cache):
    # TODO: dx
    raise NotImplementedError("max_pool_backward")


if __name__ == "__main__":
    x = np.array([[[[1.0, 2, 5, 0], [3, 4, 1, 1], [0, 0, 2, 2], [0, 1, 2, 2]]]])
    y, cache = max_pool_forward(x, (2, 2), (2, 2), (0, 0))
    print(y)                                               # [[[[4. 5.] [1. 2.]]]]
    print(max_pool_backward(np.ones_like(y), cache))       # one 1 per window (the 2x2 tie: one of the 2s)
'''

AVG_POOL_SKELETON = '''"""Homework: average pooling.   minicnn homework check avg_pool

x (N, C, H, W); kernel, stride, padding are (height, width) pairs
(padding <= kernel // 2, reads 0 and counts in the divisor):

    y[n, c, i, j] = (1 / (KH*KW)) * sum over (kh, kw) of x[n, c, i*sh - ph + kh, j*sw - pw + kw]

Backward: every input of window (i, j) gets dy[n, c, i, j] / (KH*KW);
overlapping windows add up. Do not modify x or dy.
"""
import numpy as np


def avg_pool_forward(x, kernel, stride, padding):
    raise NotImplementedError("avg_pool_forward")


def avg_pool_backward(dy, cache):
    raise NotImplementedError("avg_pool_backward")


if __name__ == "__main__":
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    y, cache = avg_pool_forward(x, (2, 2), (2, 2), (0, 0))
    print(y)                                          # [[[[ 2.5  4.5] [10.5 12.5]]]]
    print(avg_pool_backward(np.ones_like(y), cache))  # 0.25 everywhere
'''

POOL_GEOMETRIES = [   # label, x shape, kernel, stride, padding
    ("2x2 stride 2", (2, 3, 6, 6), (2, 2), (2, 2), (0, 0)),
    ("batch of 1, odd size 7x5, 3x3 stride 2 (overlapping)", (1, 2, 7, 5), (3, 3), (2, 2), (0, 0)),
    ("3x3 stride 1 padding 1", (2, 2, 5, 6), (3, 3), (1, 1), (1, 1)),
    ("stride 3 larger than the 2x2 kernel", (2, 2, 8, 7), (2, 2), (3, 3), (0, 0)),
    ("non-square: 2x3 kernel, stride (2, 1), padding (1, 1), 5x8 input", (2, 2, 5, 8), (2, 3), (2, 1), (1, 1)),
]


def _distinct(rng, shape, negative=False):
    """Inputs with no ties and no two values closer than 0.01 (the difference step never changes a maximum)."""
    v = (rng.permutation(int(np.prod(shape))) + 1) * 0.01
    v = v - (v.max() + 0.5 if negative else v.mean())
    return v.reshape(shape)


def max_pool_cases():
    rng = np.random.default_rng(SEED + 3)
    cases = []
    for label, shape, k, s, p in POOL_GEOMETRIES + [("all-negative inputs with padding 1", (1, 2, 4, 4), (3, 3),
                                                      (1, 1), (1, 1))]:
        x = _distinct(rng, shape, negative=label.startswith("all-negative"))
        y, _ = reference.max_pool2d(x, k, s, p)
        dy = rng.standard_normal(y.shape)
        dx = numeric(lambda a: F.max_pool2d(a, k, s, p), {"x": x}, dy, ["x"])["x"]
        cases.append(_pool_case("max_pool", f"max_pool {label}", x, dy, k, s, p, {"y": y, "dx": dx},
                                SEED + 3, _max_pool_diagnoses(k, s, p)))
    for dtype in (np.float64, np.float32):     # ties: integer values, several maxima per window
        x = rng.integers(0, 3, (2, 2, 6, 6)).astype(dtype)
        y, _ = reference.max_pool2d(x.astype(np.float64), (2, 2), (2, 2), 0)
        dy = rng.standard_normal(y.shape).astype(dtype)
        cases.append(_pool_case("max_pool", f"max_pool ties, {np.dtype(dtype).name}", x, dy, (2, 2), (2, 2),
                                (0, 0), {"y": y}, SEED + 3, _max_pool_diagnoses((2, 2), (2, 2), (0, 0)),
                                checks=[_one_maximum_gets_it], keep=("dx",), points=2))
    return cases


def _pool_case(fn, name, x, dy, k, s, p, expected, seed, diagnoses, checks=(), keep=(), points=1):
    tol = (1e-4, 1e-5) if x.dtype == np.float64 else (1e-3, 1e-4)
    return Case(name, points, [call(f"{fn}_forward", "$x", list(k), list(s), list(p), out=("y", "cache")),
                               call(f"{fn}_backward", "$dy", "$cache", out=("dx",))],
                {"x": x, "dy": dy}, expected, checks=checks, keep=keep, diagnoses=diagnoses, tol=tol,
                args=dict(kernel=k, stride=s, padding=p), seed=seed)


def _windows(a, k):
    """(N, C, OH, OW, KH*KW) blocks of a, for windows that tile it (stride == kernel)."""
    N, C, H, W = a.shape
    return a.reshape(N, C, H // k[0], k[0], W // k[1], k[1]).transpose(0, 1, 2, 4, 3, 5).reshape(
        N, C, H // k[0], W // k[1], -1)


def _tie_shares(r, c):
    """Per window: (how many inputs got a gradient, whether all of them are maxima, the sum they got / dy)."""
    xw, dxw = _windows(c.inputs["x"].astype(np.float64), (2, 2)), _windows(r["dx"].astype(np.float64), (2, 2))
    dy = c.inputs["dy"].astype(np.float64)
    is_max = xw == xw.max(axis=-1, keepdims=True)
    got = dxw != 0
    return got.sum(-1), np.all(is_max | ~got), dxw.sum(-1) / dy


def _one_maximum_gets_it(r, c):
    if r["dx"].shape != c.inputs["x"].shape:
        return f"dx has shape {r['dx'].shape}, expected {c.inputs['x'].shape}"
    count, on_max, share = _tie_shares(r, c)
    if not on_max:
        return "a gradient went to an input that is not its window's maximum"
    if not np.all(count == 1) or not np.allclose(share, 1, rtol=1e-3):
        return (f"each window must send all of dy to exactly one maximum; {int(np.sum(count != 1))} windows "
                f"sent it to {sorted(set(int(v) for v in count.ravel()) - {1})} inputs")
    return None


def _max_pool_diagnoses(k, s, p):
    def every_max(r, c):
        count, on_max, share = _tie_shares(r, c)
        return on_max and np.any(count > 1) and np.allclose(share, count)

    def split(r, c):
        count, on_max, share = _tie_shares(r, c)
        return on_max and np.any(count > 1) and np.allclose(share, 1)

    return [OUTPUT_SIZE,
            ("max-pool ties send the gradient to every maximum: send it to one (e.g. the first)", every_max),
            ("max-pool ties split the gradient among the maxima: send all of it to one", split),
            ("the padding reads 0 instead of -inf, so a padded window of negative inputs has maximum 0",
             matches("y", lambda c: _zero_padded_max(c.inputs["x"], k, s, p))),
            ("the backward pass spreads dy over the whole window (that is average pooling's gradient)",
             about("dx", lambda r, c: np.count_nonzero(r["dx"]) > 2 * c.inputs["dy"].size)),
            ("the backward pass assigns where windows overlap: an input that is the maximum of several windows "
             "gets the sum of their gradients", about("dx", lambda r, c: _overlap_pool(r, c, k, s)))]


def _zero_padded_max(x, k, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    return reference.max_pool2d(xp, k, s, 0)[0]


def _overlap_pool(r, c, k, s):
    return any(si < ki for si, ki in zip(s, k)) and close(r["y"], c.expected["y"]) and not close(
        r["dx"], c.expected["dx"]) and np.all((r["dx"] != 0) <= (c.expected["dx"] != 0))


def avg_pool_cases():
    rng = np.random.default_rng(SEED + 4)
    cases = []
    for label, shape, k, s, p in POOL_GEOMETRIES + [("float32", (2, 3, 4, 4), (2, 2), (2, 2), (0, 0))]:
        dtype = np.float32 if label == "float32" else np.float64
        x = rng.standard_normal(shape)
        y = reference.avg_pool2d(x, k, s, p)
        dy = rng.standard_normal(y.shape)
        dx = numeric(lambda a: F.avg_pool2d(a, k, s, p), {"x": x}, dy, ["x"])["x"]
        cases.append(_pool_case("avg_pool", f"avg_pool {label}", x.astype(dtype), dy.astype(dtype), k, s, p,
                                {"y": y, "dx": dx}, SEED + 4, _avg_pool_diagnoses(k, s, p)))
    return cases


def _avg_pool_diagnoses(k, s, p):
    return [OUTPUT_SIZE,
            ("the padding is not counted in the divisor: it counts (divide by KH*KW)",
             matches("y", lambda c: reference.avg_pool2d(c.inputs["x"], k, s, p, count_include_pad=False))),
            ("the backward pass does not divide by the window size KH*KW",
             matches("dx", lambda c: c.expected["dx"] * k[0] * k[1]))]


# --------------------------------------------------------------------------
# batch normalization
# --------------------------------------------------------------------------
BATCHNORM_SKELETON = '''"""Homework: batch normalization, training and evaluation.   minicnn homework check batchnorm

x is (N, C) or (N, C, H, W); gamma, beta, running_mean, running_var are (C,).
Statistics are per channel over every other axis (M = N*H*W values):

    training:  mean = sum(X) / M,   var = sum((X - mean)**2) / M          (the biased variance)
               new_running_mean = (1 - momentum) * running_mean + momentum * mean
               new_running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)
    eval:      mean = running_mean,  var = running_var                     (running stats returned unchanged)
    both:      x_hat = (X - mean) / sqrt(var + eps),    y = gamma * x_hat + beta

Backward, given dy (sums over the M values of a channel):

    dbeta  = sum(dy),   dgamma = sum(dy * x_hat)
    training:  dx = gamma / sqrt(var + eps) * (dy - dbeta / M - x_hat * dgamma / M)
    eval:      dx = gamma / sqrt(var + eps) * dy

(the two extra terms in training are the paths through the mean and the
variance). Return new arrays; do not modify any argument.
"""
import numpy as np


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    # TODO: return y, new_running_mean, new_running_var, cache
    raise NotImplementedError("batchnorm_forward")


def batchnorm_backward(dy, cache):
    # TODO: return dx, dgamma, dbeta
    raise NotImplementedError("batchnorm_backward")


if __name__ == "__main__":
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    y, rm, rv, cache = batchnorm_forward(x, np.ones(2), np.zeros(2), np.zeros(2), np.ones(2), True, 0.1, 1e-5)
    print(y)               # about [[-1 -1] [1 1]]
    print(rm, rv)          # [0.2 0.4] [1.1 1.7]
'''


def batchnorm_cases():
    rng = np.random.default_rng(SEED + 5)
    cases = []
    for label, shape, training, dtype in (("training (N, C, H, W) = (4, 3, 3, 5)", (4, 3, 3, 5), True, np.float64),
                                          ("training (N, C) = (6, 4)", (6, 4), True, np.float64),
                                          ("training, batch of 1 with 2x3 pixels", (1, 2, 2, 3), True, np.float64),
                                          ("eval mode (4, 3, 3, 3)", (4, 3, 3, 3), False, np.float64),
                                          ("eval mode (N, C) = (1, 5)", (1, 5), False, np.float64),
                                          ("training, float32 with a large mean", (8, 3, 4, 4), True, np.float32)):
        C = shape[1]
        x = rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, C) + (1,) * (len(shape) - 2)) + 2.0
        if dtype == np.float32:
            x = x + 50.0
        gamma, beta = rng.uniform(0.5, 2, C), rng.standard_normal(C)
        rm, rv = rng.standard_normal(C), rng.uniform(0.5, 2, C)
        momentum, eps = 0.1, 1e-5
        y, new_m, new_v = reference.batch_norm(x, gamma, beta, rm, rv, training, momentum, eps)
        dy = rng.standard_normal(shape)
        if training:
            op = lambda x_, g_, b_: F.batch_norm(x_, None, None, g_, b_, training=True, eps=eps)  # noqa: E731
        else:
            op = lambda x_, g_, b_: F.batch_norm(x_, rm.copy(), rv.copy(), g_, b_, training=False, eps=eps)  # noqa
        grads = numeric(op, {"x": x, "gamma": gamma, "beta": beta}, dy, ["x", "gamma", "beta"])
        inputs = {k: v.astype(dtype) for k, v in dict(x=x, gamma=gamma, beta=beta, running_mean=rm,
                                                      running_var=rv, dy=dy).items()}
        tol = (1e-4, 1e-5) if dtype == np.float64 else (2e-3, 2e-4)
        cases.append(Case(
            f"batchnorm {label}", 2 if len(shape) == 4 else 1,
            [call("batchnorm_forward", "$x", "$gamma", "$beta", "$running_mean", "$running_var", training,
                  momentum, eps, out=("y", "running_mean_out", "running_var_out", "cache")),
             call("batchnorm_backward", "$dy", "$cache", out=("dx", "dgamma", "dbeta"))],
            inputs, {"y": y, "running_mean_out": new_m, "running_var_out": new_v, "dx": grads["x"],
                     "dgamma": grads["gamma"], "dbeta": grads["beta"]},
            args=dict(training=training, momentum=momentum, eps=eps), tol=tol, seed=SEED + 5,
            diagnoses=_batchnorm_diagnoses(training, momentum, eps)))
    return cases


def _bn(c, training, unbiased=False, axes=None):
    x = c.inputs["x"].astype(np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim)) if axes is None else axes
    if training:
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, ddof=1 if unbiased else 0, keepdims=True)
    else:
        mean, var = c.inputs["running_mean"].reshape(shape), c.inputs["running_var"].reshape(shape)
    return (x - mean) / np.sqrt(var + 1e-5), mean, var


def _batchnorm_diagnoses(training, momentum, eps):
    def y_of(c, **kw):
        x_hat = _bn(c, **kw)[0]
        shape = (1, -1) + (1,) * (x_hat.ndim - 2)
        return c.inputs["gamma"].reshape(shape) * x_hat + c.inputs["beta"].reshape(shape)

    def dx_without_stats(c):
        x_hat, mean, var = _bn(c, True)
        shape = (1, -1) + (1,) * (x_hat.ndim - 2)
        return c.inputs["gamma"].reshape(shape) / np.sqrt(var + eps) * c.inputs["dy"]

    def dx_without_var(c):
        x_hat, mean, var = _bn(c, True)
        shape = (1, -1) + (1,) * (x_hat.ndim - 2)
        dy = c.inputs["dy"]
        axes = (0,) + tuple(range(2, dy.ndim))
        return c.inputs["gamma"].reshape(shape) / np.sqrt(var + eps) * (dy - dy.mean(axis=axes, keepdims=True))

    rules = []
    if training:
        rules += [
            ("batchnorm uses the running statistics in training: normalise with the batch's mean and variance",
             matches("y", lambda c: y_of(c, training=False))),
            ("the batch variance must be the biased one (divide by M) when normalising",
             matches("y", lambda c: y_of(c, training=True, unbiased=True))),
            ("the statistics are taken over the batch axis only; they run over N, H and W (every axis but "
             "the channels)", matches("y", lambda c: y_of(c, training=True, axes=(0,)))),
            ("the running statistics are not updated in training",
             about("running_mean_out", lambda r, c: close(r["running_mean_out"],
                                                          c.inputs["running_mean"].astype(float)))),
            ("the running variance is updated with the biased variance; it takes var * M / (M - 1)",
             about("running_var_out", lambda r, c: close(r["running_var_out"], (1 - momentum) * c.inputs["running_var"]
                                                         + momentum * _bn(c, True)[2].ravel()))),
            ("momentum is applied the wrong way round: new = (1 - momentum) * running + momentum * batch",
             about("running_mean_out", lambda r, c: close(r["running_mean_out"], momentum * c.inputs["running_mean"]
                                                          + (1 - momentum) * _bn(c, True)[1].ravel()))),
            ("the batchnorm backward is missing the terms through the mean and the variance",
             matches("dx", dx_without_stats)),
            ("the batchnorm backward is missing the term through the variance",
             matches("dx", dx_without_var)),
        ]
    else:
        rules += [("eval-mode batchnorm uses the batch statistics; it must use the running ones",
                   matches("y", lambda c: y_of(c, training=True))),
                  ("eval mode must leave the running statistics unchanged",
                   about("running_mean_out", lambda r, c: not close(r["running_mean_out"],
                                                                     c.inputs["running_mean"].astype(float)))),
                  ("in eval mode the mean and variance are constants: dx = gamma / sqrt(var + eps) * dy",
                   about("dx", lambda r, c: close(r["y"], c.expected["y"]) and not close(r["dx"], c.expected["dx"])))]
    rules += [("dgamma/dbeta are not summed over the batch (and the pixels): they have gamma's shape (C,)",
               lambda r, c: r["dgamma"].shape != (c.inputs["x"].shape[1],)
               or r["dbeta"].shape != (c.inputs["x"].shape[1],))]
    return rules


# --------------------------------------------------------------------------
# dropout
# --------------------------------------------------------------------------
DROPOUT_SKELETON = '''"""Homework: inverted dropout.   minicnn homework check dropout

dropout_forward(x, p, training, rng): in training, drop each element with
probability p and scale the kept ones by 1 / (1 - p), so E[y] = x:

    mask = (rng.random(x.shape) >= p) / (1 - p)      y = x * mask

(rng is a numpy.random.Generator: draw the mask from it). In evaluation
(training False) y = x. Return (y, cache); dropout_backward(dy, cache)
returns dx = dy * mask (dy in evaluation). Do not modify x or dy.
"""
import numpy as np


def dropout_forward(x, p, training, rng):
    raise NotImplementedError("dropout_forward")


def dropout_backward(dy, cache):
    raise NotImplementedError("dropout_backward")


if __name__ == "__main__":
    x = np.ones((2, 8))
    y, cache = dropout_forward(x, 0.5, True, np.random.default_rng(0))
    print(y)                                       # zeros and 2s
    print(dropout_backward(np.ones_like(x), cache))
'''


def dropout_cases():
    rng = np.random.default_rng(SEED + 6)
    cases = []
    for label, p, training, dtype in (("training p = 0.5", 0.5, True, np.float64),
                                      ("training p = 0.2, float32", 0.2, True, np.float32),
                                      ("training p = 0.8", 0.8, True, np.float64),
                                      ("eval mode", 0.5, False, np.float64)):
        x = rng.uniform(0.5, 2.0, (64, 128)).astype(dtype) * rng.choice([-1, 1], (64, 128))
        dy = rng.standard_normal(x.shape).astype(dtype)
        steps = [call("dropout_forward", "$x", p, training, {"rng": 7}, out=("y", "cache")),
                 call("dropout_backward", "$dy", "$cache", out=("dx",))]
        if not training:
            cases.append(Case(f"dropout {label}", 1, steps, {"x": x, "dy": dy}, {"y": x.astype(float),
                              "dx": dy.astype(float)}, seed=SEED + 6, args=dict(p=p, training=training),
                              diagnoses=[("in evaluation dropout is the identity (no mask, no scaling)",
                                          lambda r, c: True)]))
            continue
        cases.append(Case(f"dropout {label}", 1, steps, {"x": x, "dy": dy}, checks=[_dropout_check(p)],
                          keep=("y", "dx"), seed=SEED + 6, args=dict(p=p, training=training), diagnoses=[
                              ("dropout is not rescaled: kept units must be divided by (1 - p) (inverted dropout)",
                               lambda r, c: np.all(np.isclose(r["y"], 0) | np.isclose(r["y"], c.inputs["x"]))),
                              ("p is the probability of dropping a unit, not of keeping it",
                               lambda r, c, p=p: abs(np.mean(r["y"] == 0) - (1 - p)) < 0.03),
                              ("the backward pass must use the forward pass's mask (dx = dy * mask), scaled the "
                               "same way", lambda r, c: True)]))
    return cases


def _dropout_check(p):
    def check(r, c):
        x, y, dx, dy = (np.asarray(a, dtype=np.float64) for a in (c.inputs["x"], r.get("y"), r.get("dx"),
                                                                  c.inputs["dy"]))
        if y.shape != x.shape or dx.shape != x.shape:
            return f"y and dx must have x's shape {x.shape}, got {y.shape} and {dx.shape}"
        kept = y != 0
        scale = 1.0 / (1.0 - p)
        if not np.allclose(y[kept], x[kept] * scale, rtol=1e-4):
            return "kept elements must be x / (1 - p)"
        dropped = 1 - kept.mean()
        if abs(dropped - p) > 4 * np.sqrt(p * (1 - p) / x.size) + 1e-3:
            return f"dropped {dropped:.3f} of the elements, expected about p = {p}"
        if not np.allclose(dx, dy * kept * scale, rtol=1e-4, atol=1e-6):
            return "dx must be dy * mask with the same mask and scale as the forward pass"
        return None
    return check
