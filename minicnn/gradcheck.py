"""Gradient checking: compare a backward pass with central differences.

For a function y = f(x) and a fixed random upstream gradient G (same shape
as y), the scalar L(x) = sum(G * f(x)) has dL/dx = (what backward returns for
upstream G). Central differences estimate it one element at a time:

    dL/dx[i] ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)      error O(eps**2)

in float64. A random G (never just ``sum(y)``) matters: with G = 1 a
batchnorm whose backward forgets the mean term still passes, because the
sum of a normalised output does not depend on x at all.

Usage (homework)::

    report = minicnn.gradcheck(lambda x, w: F.conv2d(x, w, padding=1),
                               [x64, w64])
    print(report)            # per input: max abs / rel error, worst index
    assert report.passed

An element passes when |analytic - numeric| <= atol + rtol * |numeric|.
"""
import numpy as np

from .autograd import Tensor, no_grad
from .backend import to_device

__all__ = ["numerical_grad", "gradcheck", "GradcheckReport", "InputReport"]


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _weighted_sum(outputs, grads):
    """L = sum_k sum(G_k * y_k) as a float (on raw arrays)."""
    total = 0.0
    for y, g in zip(outputs, grads):
        y = y.data if isinstance(y, Tensor) else y
        total += float((to_device(y, "cpu").astype(np.float64) * g).sum())
    return total


def numerical_grad(f, x, eps=1e-6, grad_output=None):
    """Central-difference estimate of d sum(grad_output * f(x)) / dx.

    Args:
        f: function of one array (or Tensor) returning an array, Tensor or number.
        x: float64 NumPy array (or Tensor); perturbed in place and restored.
        eps: step of the central difference.
        grad_output: upstream gradient G of f(x)'s shape; ones if None
            (then this is the plain gradient of sum(f(x))).

    Returns:
        A float64 array of x's shape.
    """
    data = x.data if isinstance(x, Tensor) else x
    if data.dtype != np.float64:
        raise TypeError(f"numerical_grad: x must be float64 for accurate differences, got {data.dtype}")
    grads = None if grad_output is None else _as_list(grad_output)

    def loss():
        outs = _as_list(f(x))
        g = grads or [np.ones(np.shape(o.data if isinstance(o, Tensor) else o)) for o in outs]
        return _weighted_sum(outs, g)

    out = np.zeros(data.shape, dtype=np.float64)
    flat = data.reshape(-1)  # a view: writes go into x
    if flat.base is None and data.size:
        raise ValueError("numerical_grad: x must be contiguous so it can be perturbed in place")
    with no_grad():
        for i in range(flat.size):
            orig = flat[i].item()
            flat[i] = orig + eps
            plus = loss()
            flat[i] = orig - eps
            minus = loss()
            flat[i] = orig
            out.reshape(-1)[i] = (plus - minus) / (2 * eps)
    return out


class InputReport:
    """Result for one input: errors, the worst element, and whether all passed."""

    def __init__(self, index, shape, analytic, numeric, atol, rtol, note=""):
        self.index, self.shape, self.note = index, shape, note
        self.analytic, self.numeric = analytic, numeric
        diff = np.abs(analytic - numeric)
        self.max_abs_err = float(diff.max()) if diff.size else 0.0
        scale = np.maximum(np.abs(analytic), np.abs(numeric))
        rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1), 0.0)
        self.max_rel_err = float(rel.max()) if rel.size else 0.0
        bad = diff - (atol + rtol * np.abs(numeric))
        if diff.size:
            flat_worst = int(np.argmax(bad))
            self.worst_index = tuple(int(i) for i in np.unravel_index(flat_worst, diff.shape))
            self.worst_analytic = float(analytic.reshape(-1)[flat_worst])
            self.worst_numeric = float(numeric.reshape(-1)[flat_worst])
        else:
            self.worst_index, self.worst_analytic, self.worst_numeric = (), 0.0, 0.0
        self.n_failed = int((bad > 0).sum())
        self.passed = self.n_failed == 0 and not note.startswith("FAIL")

    def __repr__(self):
        status = "ok  " if self.passed else "FAIL"
        line = (f"  [{status}] input {self.index} {self.shape}: max abs err {self.max_abs_err:.3e}, "
                f"max rel err {self.max_rel_err:.3e}, worst at {self.worst_index} "
                f"(analytic {self.worst_analytic:.6g}, numeric {self.worst_numeric:.6g})")
        if self.n_failed:
            line += f", {self.n_failed} element(s) out of tolerance"
        if self.note:
            line += f"\n         {self.note}"
        return line


class GradcheckReport:
    """What ``gradcheck`` found: ``passed`` and one ``InputReport`` per checked input."""

    def __init__(self, name, inputs, eps, atol, rtol):
        self.name, self.inputs, self.eps, self.atol, self.rtol = name, inputs, eps, atol, rtol
        self.passed = all(r.passed for r in inputs)

    def __bool__(self):
        return self.passed

    def __repr__(self):
        head = (f"gradcheck {self.name}: {'PASSED' if self.passed else 'FAILED'} "
                f"(eps={self.eps:g}, pass if |analytic - numeric| <= {self.atol:g} + {self.rtol:g}*|numeric|)")
        return "\n".join([head] + [repr(r) for r in self.inputs])

    __str__ = __repr__


class GradcheckError(AssertionError):
    """Raised by ``gradcheck(..., raise_on_fail=True)``; ``.report`` holds the details."""

    def __init__(self, report):
        super().__init__(str(report))
        self.report = report


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, raise_on_fail=False, seed=0, name=None):
    """Check ``fn``'s backward against central differences in float64.

    Args:
        fn: function of Tensors returning a Tensor (or a tuple of Tensors).
        inputs: list of Tensors / arrays. Tensors with ``requires_grad=True``
            are checked (all floating inputs if none has it). Inputs are
            converted to float64 copies; the originals are not touched.
        eps, atol, rtol: step and tolerances (see the module docstring).
        raise_on_fail: raise ``GradcheckError`` (with the report) on failure.
        seed: seed of the random upstream gradient.

    Returns:
        ``GradcheckReport`` (truthy when passed; prints readably).
    """
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    tensors, check = [], []
    any_flagged = any(isinstance(x, Tensor) and x.requires_grad for x in inputs)
    for x in inputs:
        if isinstance(x, Tensor):
            arr, wants = x.numpy(), x.requires_grad
        else:
            arr, wants = to_device(x, "cpu") if hasattr(x, "shape") else np.asarray(x), not any_flagged
        floating = arr.dtype.kind == "f"
        arr = np.array(arr, dtype=np.float64 if floating else arr.dtype, copy=True, order="C")
        t = Tensor(arr, requires_grad=floating and wants)
        tensors.append(t)
        check.append(floating and wants)
    if not any(check):
        raise ValueError("gradcheck: no floating input to check (give float arrays or Tensors with requires_grad=True)")

    outs = _as_list(fn(*tensors))
    rng = np.random.default_rng(seed)
    upstream = [rng.standard_normal(o.shape) for o in outs]
    # Analytic: backward of L = sum_k sum(G_k * y_k).
    for o, g in zip(outs, upstream):
        if o.requires_grad:
            o.backward(g, retain_graph=True)

    reports = []
    for i, (t, wants) in enumerate(zip(tensors, check)):
        if not wants:
            continue
        note = ""
        analytic = t.grad
        if analytic is None:
            analytic = np.zeros(t.shape)
            note = "backward gave no gradient for this input (treated as zeros)"
        elif analytic.dtype != np.float64:
            note = f"FAIL: the gradient has dtype {analytic.dtype}, expected float64 like the input"
        analytic = to_device(analytic, "cpu").astype(np.float64)

        def f_i(_x, i=i):
            return fn(*tensors)

        numeric = numerical_grad(f_i, t.data, eps=eps, grad_output=upstream)
        reports.append(InputReport(i, tuple(t.shape), analytic, numeric, atol, rtol, note))
    report = GradcheckReport(name or getattr(fn, "__name__", "fn"), reports, eps, atol, rtol)
    if raise_on_fail and not report.passed:
        raise GradcheckError(report)
    return report
