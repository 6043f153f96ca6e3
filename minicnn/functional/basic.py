"""Elementwise arithmetic, reductions and shape ops, each a small ``Function``.

Notation in the docstrings: ``g`` is the upstream gradient dL/dy (shape of
y); each backward returns dL/d(input) of the input's shape. Ops that
broadcast sum the gradient back to each input's shape (``unbroadcast``).
"""
import builtins

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module, scatter_add, to_device as _to_device
from ..speed import matmul as matmul_2d, matmul_t

__all__ = [
    "unbroadcast", "normalize_axis_args",
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "exp", "log", "sqrt", "abs",
    "sum", "mean", "max", "reshape", "flatten", "transpose", "permute", "getitem",
    "concatenate", "cat", "stack", "pad", "where", "clip", "clamp", "cast", "to_device",
]


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, giving ``shape``.

    If ``y = a + b`` broadcast ``a`` of shape (1, C) to (N, C), every row of
    ``y`` used the same ``a``, so dL/da is the sum of dL/dy over the rows.
    """
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


def full_in_layout(xp, shape, strides, value, dtype):
    """An array of ``shape`` filled with ``value``, laid out in the axis order that ``strides`` has.

    Given a channels-last array's strides, the result is channels-last too.
    Ops that build a new array around their input (pad, the backward of
    indexing) use it, so that one NCHW-ordered array in a channels-last
    network does not spread through layout-mixing elementwise ops and force
    layout copies in every op after it (about 10% of a ResNet-20 step).
    """
    order = sorted(range(len(shape)), key=lambda a: -abs(strides[a]))    # outermost axis first
    buf = xp.full(tuple(shape[a] for a in order), value, dtype=dtype)
    return buf.transpose(tuple(int(i) for i in np.argsort(order)))


def normalize_axis_args(axis, keepdims, dim=None, keepdim=None):
    """Accept NumPy's ``axis``/``keepdims`` or PyTorch's ``dim``/``keepdim``."""
    if dim is not None:
        axis = dim
    if keepdim is not None:
        keepdims = keepdim
    if isinstance(axis, list):
        axis = tuple(axis)
    return axis, bool(keepdims)


def _norm_axes(axis, ndim):
    """``axis`` (None, int or tuple) as a tuple of non-negative axes."""
    # This module defines sum/max/abs/pow like torch does; builtins are spelled out.
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimension(s)")
    return tuple(builtins.sorted(a % ndim for a in axes))


# ---------------------------------------------------------------- arithmetic
class Add(Function):
    """y = a + b (broadcasting).   dL/da = unbroadcast(g),  dL/db = unbroadcast(g)."""

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, g):
        return unbroadcast(g, self.a_shape), unbroadcast(g, self.b_shape)


class Sub(Function):
    """y = a - b.   dL/da = unbroadcast(g),  dL/db = -unbroadcast(g)."""

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, g):
        gb = -unbroadcast(g, self.b_shape) if self.needs_input_grad[1] else None
        return unbroadcast(g, self.a_shape), gb


class Mul(Function):
    """y = a * b.   dL/da = unbroadcast(g * b),  dL/db = unbroadcast(g * a)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        ga = unbroadcast(g * self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(g * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """y = a / b.   dL/da = unbroadcast(g / b),  dL/db = unbroadcast(-g * a / b**2)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga = unbroadcast(g / self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(-g * self.a / (self.b * self.b), self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    """y = -x.   dL/dx = -g."""

    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class PowScalar(Function):
    """y = x ** p for a constant number p.   dL/dx = g * p * x**(p-1)."""

    def forward(self, x, p):
        self.x, self.p = x, p
        return x ** p

    def backward(self, g):
        p = self.p
        if p == 2:
            return g * 2 * self.x
        return g * p * self.x ** (p - 1)


class Pow(Function):
    """y = a ** b (both tensors).   dL/da = g * b * a**(b-1),  dL/db = g * y * log(a)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a ** b
        return self.y

    def backward(self, g):
        xp = get_array_module(g)
        ga = unbroadcast(g * self.b * self.a ** (self.b - 1), self.a.shape) if self.needs_input_grad[0] else None
        gb = None
        if self.needs_input_grad[1]:
            gb = unbroadcast(g * self.y * xp.log(self.a), self.b.shape)
        return ga, gb


def _check_matmul(a, b):
    ka = a.shape[-1]
    kb = b.shape[-2] if b.ndim >= 2 else b.shape[0]
    if a.ndim == 0 or b.ndim == 0 or ka != kb:
        raise ValueError(
            f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not match: the last dimension of "
            f"the first ({ka if a.ndim else 'scalar'}) must equal the "
            f"{'second-to-last' if b.ndim >= 2 else 'only'} dimension of the second "
            f"({kb if b.ndim else 'scalar'})")


class MatMul(Function):
    """y = a @ b, a: (..., n, k), b: (..., k, m) -> (..., n, m).

    dL/da = g @ b^T,  dL/db = a^T @ g (batch axes unbroadcast). 1-D operands
    are treated as a row (a) or a column (b) vector, as in NumPy.
    """

    def forward(self, a, b):
        _check_matmul(a, b)
        self.a_shape, self.b_shape = a.shape, b.shape
        # Promote vectors to matrices so one backward formula covers every case.
        self.a2 = a[None, :] if a.ndim == 1 else a
        self.b2 = b[:, None] if b.ndim == 1 else b
        return matmul_2d(a, b) if a.ndim == b.ndim == 2 else a @ b

    def backward(self, g):
        a, b = self.a2, self.b2
        # g as the result of the promoted product a2 @ b2 (vector axes restored as length 1)
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        g = g.reshape(batch + (a.shape[-2], b.shape[-1]))
        ga = gb = None
        plain = g.ndim == a.ndim == b.ndim == 2       # speed.matmul / matmul_t: the same as @, on every core
        if self.needs_input_grad[0]:
            ga = matmul_2d(g, b.T) if plain else g @ b.swapaxes(-1, -2)
            ga = unbroadcast(ga, a.shape).reshape(self.a_shape)
        if self.needs_input_grad[1]:
            gb = matmul_t(a, g) if plain else a.swapaxes(-1, -2) @ g
            gb = unbroadcast(gb, b.shape).reshape(self.b_shape)
        return ga, gb


# ------------------------------------------------------------- elementwise
class Exp(Function):
    """y = exp(x).   dL/dx = g * y."""

    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, g):
        return g * self.y


class Log(Function):
    """y = log(x).   dL/dx = g / x."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, g):
        return g / self.x


class Sqrt(Function):
    """y = sqrt(x).   dL/dx = g / (2 y)."""

    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, g):
        return g / (2 * self.y)


class Abs(Function):
    """y = |x|.   dL/dx = g * sign(x) (0 at x = 0)."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).abs(x)

    def backward(self, g):
        return g * get_array_module(g).sign(self.x)


class Clip(Function):
    """y = min(max(x, lo), hi).   dL/dx = g where lo <= x <= hi, else 0."""

    def forward(self, x, lo=None, hi=None):
        xp = get_array_module(x)
        self.mask = xp.ones(x.shape, dtype=bool)
        if lo is not None:
            self.mask &= x >= lo
        if hi is not None:
            self.mask &= x <= hi
        return xp.clip(x, lo, hi)

    def backward(self, g):
        return g * self.mask


class Where(Function):
    """y = cond ? a : b (broadcasting).   dL/da = unbroadcast(g * cond), dL/db = unbroadcast(g * !cond)."""

    def forward(self, a, b, cond=None):
        self.cond, self.a_shape, self.b_shape = cond, a.shape, b.shape
        return get_array_module(a).where(cond, a, b)

    def backward(self, g):
        ga = unbroadcast(g * self.cond, self.a_shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(g * ~self.cond, self.b_shape) if self.needs_input_grad[1] else None
        return ga, gb


class Cast(Function):
    """y = x converted to ``dtype``.   dL/dx = g converted back to x's dtype."""

    def forward(self, x, dtype=None):
        self.src = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return g.astype(self.src)


class ToDevice(Function):
    """y = x copied to ``device``.   dL/dx = g copied back to x's device."""

    def forward(self, x, device=None):
        self.src = "gpu" if get_array_module(x) is not np else "cpu"
        return _to_device(x, device)

    def backward(self, g):
        return _to_device(g, self.src)


# -------------------------------------------------------------- reductions
class Sum(Function):
    """y = sum of x over ``axis``.   dL/dx = g broadcast back over the summed axes."""

    def forward(self, x, axis=None, keepdims=False):
        self.shape = x.shape
        self.axes = _norm_axes(axis, x.ndim)
        self.keepdims = keepdims
        return x.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        xp = get_array_module(g)
        if not self.keepdims:
            g = xp.expand_dims(g, self.axes) if self.axes else g
        return xp.broadcast_to(g, self.shape)


class Mean(Function):
    """y = mean of x over ``axis`` (n elements each).   dL/dx = g / n, broadcast back."""

    def forward(self, x, axis=None, keepdims=False):
        self.shape = x.shape
        self.axes = _norm_axes(axis, x.ndim)
        self.keepdims = keepdims
        self.n = int(np.prod([x.shape[a] for a in self.axes])) if self.axes else 1
        return x.mean(axis=axis, keepdims=keepdims)

    def backward(self, g):
        xp = get_array_module(g)
        if not self.keepdims and self.axes:
            g = xp.expand_dims(g, self.axes)
        return xp.broadcast_to(g / self.n, self.shape)


class Max(Function):
    """y = max of x over ``axis``.

    dL/dx = g at the position(s) of the maximum, 0 elsewhere; where several
    entries tie for the maximum, the gradient is split evenly among them
    (like ``torch.amax``).
    """

    def forward(self, x, axis=None, keepdims=False):
        self.x = x
        self.axes = _norm_axes(axis, x.ndim)
        self.keepdims = keepdims
        if x.size == 0:
            raise ValueError(f"max: cannot reduce an empty tensor of shape {x.shape}")
        self.y = x.max(axis=axis, keepdims=True)
        return self.y if keepdims else self.y.reshape(
            [s for i, s in enumerate(x.shape) if i not in self.axes])

    def backward(self, g):
        xp = get_array_module(g)
        if not self.keepdims and self.axes:
            g = xp.expand_dims(g, self.axes)
        mask = (self.x == self.y)
        count = mask.sum(axis=self.axes, keepdims=True).astype(g.dtype)
        return g * mask / count


# ------------------------------------------------------------------ shapes
class Reshape(Function):
    """y = x viewed with a new shape (same elements in C order).   dL/dx = g reshaped back."""

    def forward(self, x, shape=None):
        self.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape a tensor of shape {tuple(x.shape)} ({x.size} elements) "
                f"into shape {tuple(shape)}") from None

    def backward(self, g):
        return g.reshape(self.shape)


class Transpose(Function):
    """y = x with axes permuted by ``axes`` (reversed if None).   dL/dx = g permuted back."""

    def forward(self, x, axes=None):
        if axes is not None:
            axes = tuple(a % x.ndim for a in axes)
            if sorted(axes) != list(range(x.ndim)):
                raise ValueError(f"transpose: axes {axes} are not a permutation of a {x.ndim}-D tensor's axes")
        self.axes = axes
        return x.transpose(axes)

    def backward(self, g):
        if self.axes is None:
            return g.transpose()
        return g.transpose(tuple(int(i) for i in np.argsort(self.axes)))


def _raw_index(index, xp):
    """Replace Tensors, lists and NumPy arrays inside an index by arrays of ``xp`` (where x lives)."""
    def one(i):
        if isinstance(i, Tensor):
            i = i.data
        if isinstance(i, (list, np.ndarray)):
            return xp.asarray(i)
        return i
    return tuple(one(i) for i in index) if isinstance(index, tuple) else one(index)


def _has_int_array(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(hasattr(i, "dtype") and i.dtype.kind in "iu" for i in items)


class GetItem(Function):
    """y = x[index] (slices, integers, integer arrays, boolean masks).

    dL/dx = zeros of x's shape with g placed at ``index``. Integer-array
    indices may repeat an element, so those gradients are added
    (``add.at``), not assigned.
    """

    def forward(self, x, index=None):
        self.index, self.shape, self.strides = index, x.shape, x.strides
        return x[index]

    def backward(self, g):
        xp = get_array_module(g)
        gx = full_in_layout(xp, self.shape, self.strides, 0, g.dtype)     # zeros, in x's memory order
        if _has_int_array(self.index):
            scatter_add(gx, self.index, g)
        else:
            gx[self.index] = g
        return gx


class Concatenate(Function):
    """y = concatenation of the inputs along ``axis``.   dL/dx_i = the slice of g that x_i filled."""

    def forward(self, *xs, axis=0):
        if not xs:
            raise ValueError("concatenate: needs at least one tensor")
        xp = get_array_module(*xs)
        self.axis = axis % xs[0].ndim
        self.bounds = np.cumsum([0] + [x.shape[self.axis] for x in xs])
        try:
            return xp.concatenate(xs, axis=axis)
        except ValueError as e:
            raise ValueError(f"concatenate along axis {axis}: shapes {[tuple(x.shape) for x in xs]} "
                             f"must match except on that axis ({e})") from None

    def backward(self, g):
        idx = [slice(None)] * g.ndim
        grads = []
        for lo, hi in zip(self.bounds[:-1], self.bounds[1:]):
            idx[self.axis] = slice(int(lo), int(hi))
            grads.append(g[tuple(idx)])
        return tuple(grads)


class Stack(Function):
    """y = the inputs stacked along a new ``axis``.   dL/dx_i = g taken at index i of that axis."""

    def forward(self, *xs, axis=0):
        if not xs:
            raise ValueError("stack: needs at least one tensor")
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) > 1:
            raise ValueError(f"stack: all tensors must have the same shape, got {[tuple(x.shape) for x in xs]}")
        self.axis = axis % (xs[0].ndim + 1)
        return get_array_module(*xs).stack(xs, axis=axis)

    def backward(self, g):
        return tuple(g.take(i, axis=self.axis) for i in range(g.shape[self.axis]))


class Pad(Function):
    """y = x padded with a constant ``value``; ``pad_width`` as in ``numpy.pad``.

    dL/dx = the central slice of g (padding entries are constants).
    """

    def forward(self, x, pad_width=0, value=0.0):
        xp = get_array_module(x)
        pw = np.broadcast_to(np.asarray(pad_width, dtype=int), (x.ndim, 2))
        if (pw < 0).any():
            raise ValueError(f"pad: pad_width must be non-negative, got {pad_width}")
        self.slices = tuple(slice(int(lo), int(lo) + s) for (lo, _), s in zip(pw, x.shape))
        shape = tuple(int(s + lo + hi) for s, (lo, hi) in zip(x.shape, pw))
        out = full_in_layout(xp, shape, x.strides, value, x.dtype)
        out[self.slices] = x
        return out

    def backward(self, g):
        return g[self.slices]


# ------------------------------------------------------- functional wrappers
def add(a, b): return Add.apply(a, b)
def sub(a, b): return Sub.apply(a, b)
def mul(a, b): return Mul.apply(a, b)
def div(a, b): return Div.apply(a, b)
def neg(x): return Neg.apply(x)
def exp(x): return Exp.apply(x)
def log(x): return Log.apply(x)
def sqrt(x): return Sqrt.apply(x)
def abs(x): return Abs.apply(x)  # noqa: A001 (mirrors torch.abs)


def pow(a, b):  # noqa: A001 (mirrors torch.pow)
    """a ** b; a constant Python-number exponent uses the cheaper PowScalar."""
    if isinstance(b, (int, float)) and isinstance(a, Tensor):
        return PowScalar.apply(a, p=b)
    return Pow.apply(a, b)


def matmul(a, b): return MatMul.apply(a, b)


def sum(x, axis=None, keepdims=False, *, dim=None, keepdim=None):  # noqa: A001
    axis, keepdims = normalize_axis_args(axis, keepdims, dim, keepdim)
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    axis, keepdims = normalize_axis_args(axis, keepdims, dim, keepdim)
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False, *, dim=None, keepdim=None):  # noqa: A001
    axis, keepdims = normalize_axis_args(axis, keepdims, dim, keepdim)
    return Max.apply(x, axis=axis, keepdims=keepdims)


def reshape(x, shape):
    return Reshape.apply(x, shape=tuple(shape))


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes ``start_dim..end_dim`` into one (``flatten(x, 1)`` turns (N,C,H,W) into (N, C*H*W))."""
    shape = x.shape
    nd = len(shape)
    s, e = start_dim % nd if nd else 0, end_dim % nd if nd else 0
    merged = int(np.prod(shape[s:e + 1]))
    return reshape(x, tuple(shape[:s]) + (merged,) + tuple(shape[e + 1:]))


def transpose(x, axes=None):
    return Transpose.apply(x, axes=None if axes is None else tuple(axes))


def permute(x, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return transpose(x, axes)


def getitem(x, index):
    return GetItem.apply(x, index=_raw_index(index, get_array_module(x)))


def concatenate(tensors, axis=0, *, dim=None):
    return Concatenate.apply(*tensors, axis=axis if dim is None else dim)


cat = concatenate


def stack(tensors, axis=0, *, dim=None):
    return Stack.apply(*tensors, axis=axis if dim is None else dim)


def pad(x, pad_width, value=0.0):
    """Constant padding; ``pad_width`` is an int, or ((before, after), ...) per axis as in ``numpy.pad``."""
    return Pad.apply(x, pad_width=pad_width, value=value)


def where(cond, a, b):
    """Elementwise ``cond ? a : b``; ``cond`` is a boolean array or Tensor (no gradient)."""
    c = cond.data if isinstance(cond, Tensor) else cond
    xp = get_array_module(c, a, b)
    c = xp.asarray(c)
    if c.dtype != bool:
        raise TypeError(f"where: cond must be boolean, got dtype {c.dtype}")
    return Where.apply(a, b, cond=c)


def clip(x, min=None, max=None):  # noqa: A002 (PyTorch's names)
    if min is None and max is None:
        raise ValueError("clip: give at least one of min and max")
    return Clip.apply(x, lo=min, hi=max)


clamp = clip


def cast(x, dtype):
    return Cast.apply(x, dtype=np.dtype(dtype))


def to_device(x, device):
    return ToDevice.apply(x, device=device)
