"""Reverse-mode automatic differentiation: ``Tensor``, ``Function``, ``no_grad``.

The whole engine in three ideas:

1. A ``Tensor`` wraps one raw array (``.data``: NumPy or CuPy). A Tensor made
   by an op remembers the op that made it (``tensor._ctx``), so the ops of a
   forward pass form a graph.
2. An op is a ``Function`` subclass with ``forward`` and ``backward`` on raw
   arrays. ``forward`` computes the outputs and keeps on ``self`` whatever the
   backward pass needs; ``backward`` receives dL/d(output) and returns
   dL/d(input) for every input (the chain rule, one op at a time).
3. ``Tensor.backward()`` visits the graph's ops in reverse topological order
   (an explicit stack, no recursion), calls each op's ``backward`` once,
   adds up gradients that reach the same tensor along several paths, and
   stores the results in ``.grad`` of the leaf tensors (parameters, inputs).

Writing your own op (the homework extension point)::

    class Cube(minicnn.Function):
        '''y = x**3.   dL/dx = dL/dy * 3 x**2   (shapes: x, y and grads alike)'''

        def forward(self, x):
            self.x = x               # keep what backward needs
            return x ** 3

        def backward(self, grad_y):
            return grad_y * 3 * self.x ** 2

    x = minicnn.tensor(np.random.randn(4, 5), requires_grad=True)
    Cube.apply(x).sum().backward()      # x.grad == 3 * x**2

Positional arguments of ``apply`` are the differentiable inputs (Tensors,
arrays or Python numbers); keyword arguments are passed to ``forward`` as
plain settings (``Sum.apply(x, axis=1)``). An absent input is passed as
None (``Conv2d.apply(x, w, None)`` for a convolution without bias), so an op
has one signature, ``forward(self, x, weight, bias)``. ``backward`` returns
one gradient per positional input, in order (a tuple when there are
several; ``None`` for an input that needs none or is absent). Check it with
``minicnn.gradcheck``.

Two rules every op follows (applied once, in ``Function.apply``):
floating inputs of different dtypes are promoted to the common dtype as
NumPy does (float32 + float64 computes in float64, for ``+`` as for
``conv2d``), and a broadcasting error names the op and both input shapes.
"""
import threading

import numpy as np

from .backend import as_array, check_device, default_dtype, device_of, get_array_module, to_device

__all__ = ["Tensor", "Function", "tensor", "no_grad", "enable_grad", "is_grad_enabled"]


# --------------------------------------------------------------------------
# Grad mode
# --------------------------------------------------------------------------
class _GradMode(threading.local):
    """Whether new ops are recorded, per thread as in PyTorch: ``no_grad()`` in
    one thread (an evaluation loop, say) leaves recording on in the others."""
    enabled = True


_GRAD_MODE = _GradMode()


def is_grad_enabled():
    """Whether new ops are recorded for backward."""
    return _GRAD_MODE.enabled


class no_grad:
    """Context manager (and decorator) that stops recording ops::

        with minicnn.no_grad():
            logits = model(x)      # no graph, no memory kept for backward
    """

    def __enter__(self):
        self._prev = _GRAD_MODE.enabled
        _GRAD_MODE.enabled = False
        return self

    def __exit__(self, *exc):
        _GRAD_MODE.enabled = self._prev
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():      # no_grad or enable_grad, whichever decorated fn
                return fn(*args, **kwargs)
        return wrapper


class enable_grad(no_grad):
    """Context manager that turns recording back on inside ``no_grad``."""

    def __enter__(self):
        self._prev = _GRAD_MODE.enabled
        _GRAD_MODE.enabled = True
        return self


# --------------------------------------------------------------------------
# Tensor
# --------------------------------------------------------------------------
class Tensor:
    """An array plus what autograd needs to differentiate through it.

    Attributes:
        data: the raw array (``numpy.ndarray`` or ``cupy.ndarray``).
        grad: the accumulated gradient dL/d(data), a raw array of the same
            shape, dtype and device, or None before any backward pass.
        requires_grad: whether backward should compute ``grad`` for it.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_out_index", "_retain", "__weakref__")
    __array_priority__ = 1000  # so ``ndarray * Tensor`` calls Tensor.__rmul__
    is_minicnn_tensor = True   # how backend recognises a Tensor without importing this module

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = as_array(data, dtype=dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"requires_grad=True needs a floating dtype, got {self.data.dtype}; "
                f"only floating tensors have gradients")
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None        # the Function that produced this tensor (None for leaves)
        self._out_index = 0     # which output of _ctx this tensor is
        self._retain = False    # keep .grad on a non-leaf tensor (retain_grad())

    # ---- array-like properties --------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)
    xp = property(lambda self: get_array_module(self.data), doc="numpy or cupy")
    device = property(lambda self: device_of(self.data), doc="'cpu' or 'gpu'")
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self):
        return len(self.data)

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                             f"use .any() / .all() on .data, or .item() for one element")
        return bool(self.data.reshape(()).item())

    def __repr__(self):
        body = np.array2string(self.numpy(), precision=4, separator=", ", threshold=20,
                               prefix="tensor(")
        extra = ""
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self.dtype != default_dtype() and self.dtype.kind == "f":
            extra += f", dtype={self.dtype}"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # ---- conversion -------------------------------------------------------
    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed)."""
        return to_device(self.data, "cpu")

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """A new leaf Tensor sharing the data, cut from the graph."""
        return Tensor(self.data)

    def to(self, device):
        """A copy on ``'cpu'`` or ``'gpu'`` (self if already there). Gradients flow back."""
        if device_of(self.data) == device:
            return self
        from .functional import to_device as _to
        return _to(self, device)

    def cpu(self):
        return self.to("cpu")

    def gpu(self):
        return self.to("gpu")

    def astype(self, dtype):
        from .functional import cast
        return cast(self, dtype)

    def float(self):
        return self.astype(np.float32)

    def double(self):
        return self.astype(np.float64)

    def requires_grad_(self, flag=True):
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self):
        self.grad = None

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (e.g. for saliency on an activation)."""
        self._retain = True
        return self

    # ---- backward ---------------------------------------------------------
    def backward(self, grad=None, retain_graph=False, check_finite=False):
        """Compute d(self)/d(leaf) for every leaf that requires grad, into ``leaf.grad``.

        Args:
            grad: dL/d(self), same shape as self. May be omitted only for a
                one-element tensor (a loss), where it defaults to 1.
            retain_graph: keep the graph so backward can be called again.
            check_finite: raise ``FloatingPointError`` if self is NaN/inf
                (catches a diverging loss before it poisons the weights).
        """
        grad = check_start_grad(self, grad, check_finite)     # 1 for a scalar loss
        if self._ctx is None:
            _accumulate_leaf(self, grad)
            return
        run_backward(self, grad, retain_graph)

    # ---- operators (implemented in minicnn.functional) --------------------
    def __add__(self, other): return F.add(self, other)
    def __radd__(self, other): return F.add(other, self)
    def __sub__(self, other): return F.sub(self, other)
    def __rsub__(self, other): return F.sub(other, self)
    def __mul__(self, other): return F.mul(self, other)
    def __rmul__(self, other): return F.mul(other, self)
    def __truediv__(self, other): return F.div(self, other)
    def __rtruediv__(self, other): return F.div(other, self)
    def __pow__(self, other): return F.pow(self, other)
    def __rpow__(self, other): return F.pow(other, self)
    def __matmul__(self, other): return F.matmul(self, other)
    def __rmatmul__(self, other): return F.matmul(other, self)
    def __neg__(self): return F.neg(self)
    def __pos__(self): return self
    def __getitem__(self, index): return F.getitem(self, index)

    # comparisons give plain boolean Tensors (no gradient)
    def _cmp(self, other, op):
        o = other.data if isinstance(other, Tensor) else other
        if hasattr(o, "shape") and not isinstance(o, np.generic):
            o = to_device(o, device_of(self.data))      # a NumPy array compared with a GPU tensor
        return Tensor(op(self.data, o))

    def __lt__(self, o): return self._cmp(o, lambda a, b: a < b)
    def __le__(self, o): return self._cmp(o, lambda a, b: a <= b)
    def __gt__(self, o): return self._cmp(o, lambda a, b: a > b)
    def __ge__(self, o): return self._cmp(o, lambda a, b: a >= b)
    __hash__ = object.__hash__

    def eq(self, o): return self._cmp(o, lambda a, b: a == b)

    # methods mirroring PyTorch / NumPy names
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return F.sum(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return F.mean(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return F.max(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def argmax(self, axis=None):
        return Tensor(self.data.argmax(axis=axis))

    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def sqrt(self): return F.sqrt(self)
    def abs(self): return F.abs(self)
    def relu(self): return F.relu(self)
    def sigmoid(self): return F.sigmoid(self)
    def tanh(self): return F.tanh(self)
    def softmax(self, axis=-1, *, dim=None): return F.softmax(self, axis, dim=dim)
    def log_softmax(self, axis=-1, *, dim=None): return F.log_softmax(self, axis, dim=dim)
    def clip(self, min=None, max=None): return F.clip(self, min, max)
    clamp = clip

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return F.reshape(self, shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        return F.flatten(self, start_dim, end_dim)

    def transpose(self, *axes):
        """NumPy-style ``transpose(*axes)``; with exactly two ints, swaps those two axes (PyTorch-style)."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if len(axes) == 2 and self.ndim != 2:
            perm = list(range(self.ndim))
            a, b = (ax % self.ndim for ax in axes)
            perm[a], perm[b] = perm[b], perm[a]
            axes = tuple(perm)
        return F.transpose(self, axes or None)

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return F.transpose(self, axes)

    @property
    def T(self):
        return F.transpose(self, None)


def check_start_grad(t, grad, check_finite=False):
    """dL/d(t) to start ``t.backward(grad)`` from, checked: ones for a one-element t (a loss) when grad is None."""
    xp = get_array_module(t.data)
    if check_finite and not bool(xp.all(xp.isfinite(t.data))):
        raise FloatingPointError(
            f"backward(): the value is not finite ({t.numpy().ravel()[:4]}...); "
            f"the loss diverged. Try a lower learning rate.")
    if grad is None:
        if t.data.size != 1:
            raise RuntimeError(
                f"backward(): grad can be omitted only for a one-element tensor (a scalar loss), "
                f"got shape {t.shape}; pass grad= of that shape, or reduce with .sum()/.mean() first")
        grad = xp.ones_like(t.data)
    else:
        grad = to_device(as_array(grad), device_of(t.data))     # a NumPy grad for a GPU loss
        if grad.shape != t.shape:
            raise ValueError(f"backward(): grad has shape {grad.shape}, expected {t.shape}")
        grad = grad.astype(t.dtype, copy=False)
    if not t.requires_grad:
        raise RuntimeError(
            "backward(): this tensor does not require grad (no input had requires_grad=True, "
            "or it was computed under no_grad())")
    return grad


def _accumulate_leaf(t, g):
    """Add gradient ``g`` into ``t.grad``.

    The first gradient is copied (``g`` may be a broadcast view, or the same
    array an op handed to another input), later ones are added out of place,
    so no two tensors ever share a ``.grad`` buffer.
    """
    t.grad = g.copy() if t.grad is None else t.grad + g


def tensor(data, requires_grad=False, dtype=None):
    """Make a leaf Tensor.

    Python floats and lists become float32; a NumPy/CuPy array keeps its
    dtype (use float64 arrays for gradient checks); integer data stays
    integer (class labels). ``dtype`` forces a dtype.
    """
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


# --------------------------------------------------------------------------
# Function
# --------------------------------------------------------------------------
class Function:
    """Base class of every differentiable op.

    Subclasses implement, on raw arrays:

    - ``forward(self, *arrays, **settings) -> array or tuple of arrays``
    - ``backward(self, *grad_outputs) -> grad or tuple of grads``, one per
      positional input, each of that input's shape (None where not needed).

    ``self.needs_input_grad`` (a tuple of bools, one per input) is set before
    ``forward`` runs, so an op can skip work for inputs that need no gradient.
    Call the op as ``MyFunction.apply(*inputs, **settings)``.
    """

    def forward(self, *arrays, **settings):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, *grad_outputs):
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    @classmethod
    def apply(cls, *inputs, **settings):
        """Run ``forward`` on the inputs' arrays and record the op in the graph if needed.

        An input may be None (an absent bias, say): ``forward`` receives None,
        no gradient is asked for it, and ``backward`` returns None in its place.
        Floating inputs of different dtypes are promoted to their common dtype
        first, as NumPy does (float32 with float64 computes in float64; each
        input's gradient comes back in its own dtype). Python numbers take the
        dtype of the tensor they meet (``x * 0.5`` stays float32).
        """
        fn = cls()
        ref = None                      # a tensor input, whose dtype/device Python numbers adopt
        for x in inputs:
            if isinstance(x, Tensor):
                ref = x
                break
        arrays = [x.data if isinstance(x, Tensor) else None if x is None else _constant(x, ref) for x in inputs]
        check_device(cls.__name__, arrays)
        if len(arrays) > 1:
            arrays = _promote_floats(arrays)

        needs = tuple(isinstance(x, Tensor) and x.requires_grad for x in inputs)
        record = _GRAD_MODE.enabled and any(needs)
        fn.needs_input_grad = needs
        try:
            out = _forward_hook(fn, arrays, settings)
        except ValueError as e:
            if "could not be broadcast" not in str(e):
                raise
            shapes = " and ".join(str(tuple(a.shape)) for a in arrays if a is not None)
            raise ValueError(f"{cls.__name__}: input shapes {shapes} cannot be broadcast together "
                             f"(NumPy's rule: trailing dimensions must be equal or 1)") from None

        if isinstance(out, tuple):
            outputs = tuple(Tensor.__new__(Tensor) for _ in out)
            for i, (t, a) in enumerate(zip(outputs, out)):
                _init_output(t, a, fn if record else None, i)
        else:
            outputs = Tensor.__new__(Tensor)
            _init_output(outputs, out, fn if record else None, 0)
        if record:
            fn.inputs = inputs
            fn.out_grads = None
            if isinstance(out, tuple):
                fn.n_outputs = len(out)
                fn.output_meta = [(a.shape, a.dtype) for a in out]
            else:
                fn.n_outputs = 1
        else:
            # Nothing will call backward: drop what forward saved right away.
            fn.__dict__.clear()
        return outputs


def _promote_floats(arrays):
    """The arrays, floating ones cast to their common dtype when they differ (NumPy's promotion)."""
    first = None
    for a in arrays:
        if a is not None and a.dtype.kind == "f":
            if first is None:
                first = a.dtype
            elif a.dtype != first:
                break
    else:
        return arrays                  # the usual case: one floating dtype
    common = np.result_type(*[a.dtype for a in arrays if a is not None and a.dtype.kind == "f"])
    return [a.astype(common) if a is not None and a.dtype.kind == "f" and a.dtype != common else a
            for a in arrays]


# --------------------------------------------------------------------------
# The one hook point of the engine (used by minicnn.profiler)
# --------------------------------------------------------------------------
def _plain_forward(fn, arrays, settings):
    return fn.forward(*arrays, **settings)


def _plain_backward(fn, grads):
    return fn.backward(*grads)


_forward_hook = _plain_forward      # how Function.apply calls forward
_backward_hook = _plain_backward    # how the backward walk calls backward


def set_op_hooks(forward=None, backward=None):
    """Replace how the engine calls every ``Function.forward`` / ``backward``; None restores the plain call.

    The one documented point where a tool (``minicnn.profiler``) hooks the
    engine: ``forward(fn, arrays, settings)`` must return
    ``fn.forward(*arrays, **settings)`` and ``backward(fn, grads)`` must
    return ``fn.backward(*grads)``, doing whatever else they like around
    the call. Returns the previous pair, to restore them.
    """
    global _forward_hook, _backward_hook
    previous = (_forward_hook, _backward_hook)
    _forward_hook = forward or _plain_forward
    _backward_hook = backward or _plain_backward
    return previous


def _init_output(t, array, ctx, index):
    t.data = array
    t.grad = None
    # Only floating outputs can carry gradients (argmax indices, masks cannot).
    t.requires_grad = ctx is not None and array.dtype.kind == "f"
    t._ctx = ctx if t.requires_grad else None
    t._out_index = index
    t._retain = False


def _constant(x, ref):
    """A non-Tensor input as an array: Python numbers adopt the dtype and device of ``ref``."""
    if isinstance(x, (int, float, bool, np.number, np.bool_)) or (isinstance(x, np.ndarray) and x.ndim == 0):
        # A scalar constant takes the tensor's floating dtype (x * 0.5 stays float32),
        # also when it is a NumPy scalar, which NumPy 2 would otherwise promote.
        if ref is not None and ref.dtype.kind == "f":
            dtype = ref.dtype
        else:
            dtype = default_dtype() if isinstance(x, (float, np.floating)) else None
        arr = np.asarray(x, dtype=dtype)
        if ref is not None and ref.device == "gpu":
            arr = to_device(arr, "gpu")
        return arr
    return as_array(x)


# --------------------------------------------------------------------------
# The backward walk
# --------------------------------------------------------------------------
def _topological_order(root_fn):
    """Functions reachable from ``root_fn``, each after every Function that consumes its outputs.

    Iterative depth-first post-order (an explicit stack, so a 10,000-op
    chain is fine), then reversed.
    """
    _check_not_freed(root_fn)
    order, visited = [], {id(root_fn)}
    stack = [(root_fn, iter(root_fn.inputs))]
    while stack:
        fn, children = stack[-1]
        for x in children:
            if isinstance(x, Tensor) and x._ctx is not None and id(x._ctx) not in visited:
                visited.add(id(x._ctx))
                _check_not_freed(x._ctx)
                stack.append((x._ctx, iter(x._ctx.inputs)))
                break
        else:  # every input visited: fn is finished
            stack.pop()
            order.append(fn)
    order.reverse()
    return order


def _check_not_freed(fn):
    if getattr(fn, "freed", False):
        raise RuntimeError(
            f"backward(): the graph was already freed after the first backward (at {type(fn).__name__}; "
            f"it is freed to keep memory flat); to call backward twice through the same graph, pass "
            f"retain_graph=True to the first call: loss.backward(retain_graph=True)")


def _add_grad(fn, index, g):
    if fn.out_grads is None:
        fn.out_grads = [None] * fn.n_outputs
    cur = fn.out_grads[index]
    fn.out_grads[index] = g if cur is None else cur + g


def run_backward(root, grad, retain_graph=False):
    """Propagate ``grad`` = dL/d(root) through the graph into the leaves' ``.grad``."""
    root_fn = root._ctx
    order = _topological_order(root_fn)      # raises a clear error if an earlier backward freed the graph
    _add_grad(root_fn, root._out_index, grad)
    for fn in order:
        if fn.out_grads is None:   # no gradient reached this op (e.g. an unused output)
            continue
        grads = _backward_hook(fn, _output_grads(fn))        # fn.backward(*dL/d(outputs))
        grads = check_grads(fn, grads if isinstance(grads, tuple) else (grads,))
        for x, g in zip(fn.inputs, grads):
            if g is None:
                continue
            if x._ctx is None:        # a leaf: parameters, inputs
                _accumulate_leaf(x, g)
            else:                     # made by another op: that op's backward will pass it on
                if x._retain:
                    _accumulate_leaf(x, g)
                _add_grad(x._ctx, x._out_index, g)
        fn.out_grads = None
        if not retain_graph:
            # Free saved arrays and graph edges now: memory stays flat across steps.
            fn.__dict__.clear()
            fn.freed = True


def _output_grads(fn):
    """dL/d(each output of fn); outputs that received no gradient contribute zeros."""
    gouts = fn.out_grads
    if fn.n_outputs > 1 and any(g is None for g in gouts):
        xp = get_array_module(*[g for g in gouts if g is not None])
        gouts = [xp.zeros(*fn.output_meta[i]) if g is None else g for i, g in enumerate(gouts)]
    return gouts


def check_grads(fn, grads):
    """The gradients ``fn.backward`` returned, checked: one per input, each of its input's shape.

    Returns them with None for every input that needs no gradient, and each
    gradient in its input's dtype (a float64 constant may meet a float32 tensor).
    """
    if len(grads) != len(fn.inputs):
        raise RuntimeError(
            f"{type(fn).__name__}.backward returned {len(grads)} gradient(s) "
            f"for {len(fn.inputs)} input(s)")
    checked = []
    for i, (x, g) in enumerate(zip(fn.inputs, grads)):
        if not (isinstance(x, Tensor) and x.requires_grad) or g is None:
            checked.append(None)
            continue
        if g.shape != x.data.shape:
            raise RuntimeError(
                f"{type(fn).__name__}.backward returned a gradient of shape {g.shape} "
                f"for input {i}, whose shape is {x.data.shape}")
        checked.append(g if g.dtype == x.data.dtype else g.astype(x.data.dtype))
    return checked


# Tensor operators are implemented in functional; imported last (it imports this module).
from . import functional as F  # noqa: E402
