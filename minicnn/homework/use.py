"""``use(folder)``: minicnn with the student's own ops in place of the package's.

For every assignment that the folder completes (its NAME.py or NAME.ipynb
grades full marks; ``require_full_marks=False`` takes any file that defines
the functions), the matching public op of ``minicnn.functional`` runs the
student's forward and backward through ``F.use_implementation`` (the
documented switch), inside a ``Function`` of its own:

    with minicnn.homework.use("mywork/") as used:
        print(used)          # {'conv2d': 'mywork/conv2d.py', ...}
        ...                  # nn.Conv2d, training, explain, attacks: all on the student's conv2d

The student's code runs in THIS process (that is the point: it trains the
network), unlike the grader, which sandboxes it. Arguments the assignment
does not cover (groups > 1 without conv2d_groups, dilated pooling,
returned indices, GPU arrays) go to the package's own op.
"""
import contextlib
import os

import numpy as np

from .. import functional as F
from ..autograd import Function, Tensor
from ..backend import get_array_module
from ..utils import pair
from .grader import check, find_submission, read_submission
from .registry import ASSIGNMENTS


class StudentOp(Function):
    """A Function whose forward and backward are a student's ``*_forward(*arrays, *settings)`` / ``*_backward``.

    forward returns (outputs..., cache); the outputs are cast back to the
    input's dtype (a student computing in float64 does not change the
    network's dtype). backward returns one gradient per array input.
    """

    def forward(self, *arrays, student=None, settings=(), keep=None):
        forward, self.backward_fn = student
        result = forward(*arrays, *settings)
        outs, self.cache = result[:-1], result[-1]
        dtype = next(a.dtype for a in arrays if a is not None)
        outs = [np.asarray(o).astype(dtype, copy=False) for o in outs]
        if keep is not None:
            keep(outs[1:])                 # extra outputs (batchnorm's running statistics)
        self.dtypes = [None if a is None else a.dtype for a in arrays]
        return outs[0]

    def backward(self, g):
        grads = self.backward_fn(g, self.cache)
        grads = grads if isinstance(grads, tuple) else (grads,)
        return tuple(None if d is None or t is None else np.asarray(d).astype(t, copy=False)
                     for d, t in zip(grads, self.dtypes))


def _on_gpu(*xs):
    return any(x is not None and get_array_module(x) is not np for x in xs)


def _raw(a):
    return a.data if isinstance(a, Tensor) else a


def adapters(module):
    """{assignment name: (functional op name, replacement)} for the student's functions in ``module`` (a dict)."""
    m = module
    own = {}

    def convolution(name, grouped):
        def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
            if (groups != 1 and not grouped) or _on_gpu(x):
                return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
            if bias is None:
                bias = Tensor(np.zeros(weight.shape[0], dtype=weight.dtype))
            settings = (pair(stride, "stride", "conv2d"), pair(padding, "padding", "conv2d", minimum=0),
                        pair(dilation, "dilation", "conv2d")) + ((int(groups),) if grouped else ())
            return StudentOp.apply(x, weight, bias, student=(m[f"{name}_forward"], m[f"{name}_backward"]),
                                   settings=settings)
        return "conv2d", conv2d
    own["conv2d"] = convolution("conv2d", grouped=False)
    own["conv2d_groups"] = convolution("conv2d_groups", grouped=True)

    def pooling(name, key, x, kernel_size, stride, padding):
        k = pair(kernel_size, "kernel_size", key)
        s = k if stride is None else pair(stride, "stride", key)
        return StudentOp.apply(x, student=(m[f"{name}_forward"], m[f"{name}_backward"]),
                               settings=(k, s, pair(padding, "padding", key, minimum=0)))

    def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        if dilation not in (1, (1, 1)) or ceil_mode or return_indices or _on_gpu(x):
            return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
        return pooling("max_pool", "max_pool2d", x, kernel_size, stride, padding)
    own["max_pool"] = ("max_pool2d", max_pool2d)

    def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                   divisor_override=None):
        if ceil_mode or not count_include_pad or divisor_override is not None or _on_gpu(x):
            return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        return pooling("avg_pool", "avg_pool2d", x, kernel_size, stride, padding)
    own["avg_pool"] = ("avg_pool2d", avg_pool2d)

    def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
        if running_mean is None or _on_gpu(x):
            return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
        C = x.shape[1]
        weight = Tensor(np.ones(C, x.dtype)) if weight is None else weight
        bias = Tensor(np.zeros(C, x.dtype)) if bias is None else bias
        rm, rv = _raw(running_mean), _raw(running_var)

        def keep(stats):                   # the buffers are updated in place, as the package's op does
            rm[...], rv[...] = stats

        return StudentOp.apply(x, weight, bias, student=(
            lambda x_, g_, b_, *s: m["batchnorm_forward"](x_, g_, b_, rm.copy(), rv.copy(), *s),
            m["batchnorm_backward"]), settings=(bool(training), float(momentum), float(eps)), keep=keep)
    own["batchnorm"] = ("batch_norm", batch_norm)

    def activation(name):
        def op(x):
            if _on_gpu(x):
                return getattr(F, name)(x)
            return StudentOp.apply(x, student=(m[f"{name}_forward"], m[f"{name}_backward"]))
        return name, op
    own["activations"] = [activation(n) for n in ("relu", "sigmoid", "tanh")]

    def dropout(x, p=0.5, training=True, rng=None):
        if not training or p == 0 or _on_gpu(x):
            return F.dropout(x, p, training, rng=rng)
        rng = rng or np.random.default_rng(np.random.randint(2 ** 31))    # the global seed decides
        return StudentOp.apply(x, student=(m["dropout_forward"], m["dropout_backward"]),
                               settings=(float(p), True, rng))
    own["dropout"] = ("dropout", dropout)

    def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
        if pair(dilation, "dilation", "im2col") != (1, 1) or _on_gpu(x):
            return F.im2col(x, kernel_size, stride, padding, dilation)
        cols = m["im2col"](_raw(x), pair(kernel_size, "kernel_size", "im2col"), pair(stride, "stride", "im2col"),
                           pair(padding, "padding", "im2col", 0))
        return np.asarray(cols).astype(_raw(x).dtype, copy=False)
    own["im2col"] = ("im2col", im2col)
    return own


def load_module(path):
    """Execute a submission (a notebook: its imports and definitions only) in a fresh namespace, in-process."""
    namespace = {"__name__": f"student_{os.path.splitext(os.path.basename(path))[0]}", "__file__": path}
    exec(compile(read_submission(path), path, "exec"), namespace)
    return namespace


@contextlib.contextmanager
def use(folder, require_full_marks=True, verbose=True):
    """Context manager: the student's ops from ``folder`` in place of minicnn's; yields {op: file}.

    Each assignment with a replaceable op is looked for in ``folder``; with
    ``require_full_marks`` it is graded first (in the sandbox) and used only at
    full marks. ``verbose`` prints which pieces are the student's.
    """
    used, skipped, stack = {}, [], contextlib.ExitStack()
    for name, assignment in ASSIGNMENTS.items():
        if not assignment.use:
            continue
        try:
            path = find_submission(folder, name)
        except FileNotFoundError:
            continue
        if os.path.basename(path) not in (f"{name}.py", f"{name}.ipynb"):
            continue
        if require_full_marks:
            grade = check(name, path)
            if not grade.full_marks:
                skipped.append(f"{name} ({grade.score:g}/{grade.points:g}: run minicnn homework check {name})")
                continue
        module = load_module(path)
        ops = adapters(module)[name]
        for op_name, fn in ops if isinstance(ops, list) else [ops]:
            stack.enter_context(F.use_implementation(op_name, fn))
            used[op_name] = path
    with stack:
        if verbose:
            print("minicnn homework use: your " + (", ".join(f"{op} ({os.path.basename(p)})" for op, p in used.items())
                                                   or "nothing (no completed assignment found)")
                  + "; everything else is the package's own")
            if skipped:
                print("  not used (not full marks yet): " + "; ".join(skipped))
        yield used
