"""Extra credit: grouped convolution (``conv2d_groups``), up to depthwise (groups = C_in)."""
import numpy as np

from .. import functional as F
from .. import reference
from .core import Case, call, matches
from .layers import OUTPUT_SIZE, numeric

SEED = 5150

CONV2D_GROUPS_SKELETON = '''"""Extra credit: grouped convolution.   minicnn homework check conv2d_groups

As conv2d (x (N, C, H, W), stride, padding, dilation (height, width)
pairs), with the channels split into G = groups independent groups:
w is (F, C/G, KH, KW), and filter f belongs to group g = f // (F/G), which
reads only the input channels g*C/G ... (g+1)*C/G - 1:

    y[n, f, i, j] = b[f] + sum_{c < C/G, kh, kw} w[f, c, kh, kw] * x[n, g*C/G + c, i*sh - ph + kh*dh, j*sw - pw + kw*dw]

G = 1 is the ordinary convolution; G = C (one input channel per group) is
the depthwise convolution of MobileNet. The backward pass is each group's
conv2d backward; dx puts each group's gradient back on its own channels.
Return (y, cache) and (dx, dw, db); do not modify the arguments.
"""
import numpy as np


def conv2d_groups_forward(x, w, b, stride, padding, dilation, groups):
    raise NotImplementedError("conv2d_groups_forward")


def conv2d_groups_backward(dy, cache):
    raise NotImplementedError("conv2d_groups_backward")


if __name__ == "__main__":
    x = np.ones((1, 2, 3, 3))
    w = np.stack([np.ones((1, 2, 2)), 2 * np.ones((1, 2, 2))])     # (2, 1, 2, 2): one filter per channel
    y, cache = conv2d_groups_forward(x, w, np.zeros(2), (1, 1), (0, 0), (1, 1), 2)
    print(y[0, :, 0, 0])                                            # [4. 8.]
'''


def conv2d_groups_cases():
    rng = np.random.default_rng(SEED)
    cases = []
    for label, shape, F_out, groups, k, s, p, d, dtype in (
            ("2 groups, 3x3, padding 1", (2, 4, 6, 6), 6, 2, (3, 3), (1, 1), (1, 1), (1, 1), np.float64),
            ("depthwise (groups = C = 3), stride 2", (2, 3, 7, 7), 3, 3, (3, 3), (2, 2), (1, 1), (1, 1), np.float64),
            ("depthwise multiplier 2 (C = 2, F = 4)", (1, 2, 5, 6), 4, 2, (2, 3), (1, 2), (0, 1), (1, 1), np.float64),
            ("groups = 1", (2, 3, 5, 5), 4, 1, (3, 3), (1, 1), (0, 0), (1, 1), np.float64),
            ("4 groups, dilation 2, float32", (2, 8, 7, 7), 4, 4, (3, 3), (1, 1), (2, 2), (2, 2), np.float32)):
        C = shape[1]
        x = rng.standard_normal(shape)
        w = rng.standard_normal((F_out, C // groups) + k) / np.sqrt(C // groups * k[0] * k[1])
        b = rng.standard_normal(F_out)
        y = reference.conv2d(x, w, b, s, p, d, groups)
        dy = rng.standard_normal(y.shape)
        grads = numeric(lambda x_, w_, b_: F.conv2d(x_, w_, b_, s, p, d, groups), {"x": x, "w": w, "b": b}, dy,
                        ["x", "w", "b"])
        tol = (1e-4, 1e-5) if dtype == np.float64 else (1e-3, 1e-4)
        cases.append(Case(
            f"conv2d_groups {label}", 1,
            [call("conv2d_groups_forward", "$x", "$w", "$b", list(s), list(p), list(d), groups, out=("y", "cache")),
             call("conv2d_groups_backward", "$dy", "$cache", out=("dx", "dw", "db"))],
            {n: v.astype(dtype) for n, v in dict(x=x, w=w, b=b, dy=dy).items()},
            {"y": y, "dx": grads["x"], "dw": grads["w"], "db": grads["b"]},
            args=dict(stride=s, padding=p, dilation=d, groups=groups), tol=tol, seed=SEED,
            diagnoses=[OUTPUT_SIZE,
                       ("filter f belongs to group f // (F/G) (consecutive filters share a group), not f % G",
                        matches("y", lambda c, a=(s, p, d, groups): _modulo_groups(c, *a)))]))
    return cases


def _modulo_groups(c, s, p, d, groups):
    x, w, b = (c.inputs[n].astype(np.float64) for n in ("x", "w", "b"))
    cg = x.shape[1] // groups
    return np.concatenate([reference.conv2d(x[:, (f % groups) * cg:(f % groups + 1) * cg], w[f:f + 1], b[f:f + 1],
                                            s, p, d) for f in range(w.shape[0])], axis=1)
