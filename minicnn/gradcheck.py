"""Gradient checking: compare a backward pass with central differences.

For a function y = f(x) and a fixed random upstream gradient G (same shape
as y), the scalar L(x) = sum(G * f(x)) has dL/dx = (what backward returns for
upstream G). Central differences estimate it one element at a time:

    dL/dx[i] ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)      error O(eps**2)

in float64. A random G (never just ``sum(y)``) matters: with G = 1 a
batchnorm whose backward forgets the mean term still passes, because the
sum of a normalised output does not depend on x at all.

An element passes when

    |analytic - numeric| <= atol + rtol * |numeric|      (both finite: NaN or inf fails)

and the report shows, for every checked tensor, the element closest to
failing: the largest ratio |analytic - numeric| / (atol + rtol * |numeric|)
(a ratio <= 1 passes). A large *relative* error at a value near zero is
fine when the absolute error is within ``atol``; the report says so.

Modules: ``gradcheck(module, [x])`` checks the inputs AND every parameter
that requires a gradient (by name: ``weight``, ``0.bias``), in float64. For
the duration of the check the module's parameters and buffers hold float64
CPU copies; afterwards (also when the check raises) everything is put back
exactly: arrays, dtypes, ``.grad``, ``requires_grad``, buffers (batchnorm
statistics), train/eval mode and attributes. The module is checked in the
mode it is in (batchnorm in train mode uses the batch statistics).

Kinks (ReLU at 0, a max-pool tie): when an element fails, L is also
evaluated at x +- 2 eps, and the one-sided derivatives

    left  = (3 L(x) - 4 L(x - eps) + L(x - 2 eps)) / (2 eps)
    right = (-3 L(x) + 4 L(x + eps) - L(x + 2 eps)) / (2 eps)

are compared (Chainer's ``detect_nondifferentiable`` idea). If they
disagree, the step crosses a non-differentiable point: central differences
mean nothing there, and the element is reported as a "non-differentiable
point", not as a failure of the backward, provided the analytic value lies
between the two one-sided derivatives (one of them, or a subgradient in
between). Outside that range it still fails.

Inputs written in place: a forward or backward that changes its inputs
(``np.maximum(x, 0, out=x)``), a module's parameters, or the upstream
gradient it is given is a bug, and central differences around a point that
moves mean nothing (the damage would look like kinks). Copies taken before
the forward and before the backward are compared with what is left after
each; any change FAILS the check with a message naming the tensor and the
pass (forward or backward), and no kink is reported then.

Randomness: the global NumPy random state is replayed before every
evaluation (so a dropout layer draws the same mask each time) and put back
afterwards.

Usage (homework)::

    report = minicnn.gradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x, w])
    report = minicnn.gradcheck(MyOp.apply, [x])
    report = minicnn.gradcheck(nn.Conv2d(3, 4, 3), [x])      # x and weight, bias
    report = minicnn.gradcheck(big_layer, [x], sample=50)     # 50 random elements each
    print(report)
    assert report.passed
"""
import contextlib
import math

import numpy as np

from .autograd import Function, Tensor, enable_grad, no_grad
from .backend import to_device
from .nn import Module

__all__ = ["numerical_grad", "gradcheck", "GradcheckReport", "CheckReport",
           "GradcheckError", "module_in_float64"]


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _weighted_sum(outputs, grads):
    """L = sum_k sum(G_k * y_k) as a float (on raw arrays)."""
    total = 0.0
    for y, g in zip(outputs, grads):
        y = y.data if isinstance(y, Tensor) else y
        total += float((np.asarray(to_device(y, "cpu"), dtype=np.float64) * g).sum())
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
    _check_eps(eps, "numerical_grad")
    grads = None if grad_output is None else _as_list(grad_output)

    def loss():
        outs = _as_list(f(x))
        g = grads or [np.ones(np.shape(o.data if isinstance(o, Tensor) else o)) for o in outs]
        return _weighted_sum(outs, g)

    flat = data.reshape(-1)  # a view: writes go into x
    if data.size and not np.shares_memory(flat, data):
        raise ValueError("numerical_grad: x must be contiguous so it can be perturbed in place")
    with no_grad():
        plus, minus = _perturbed_losses(loss, flat, np.arange(flat.size), eps, 1)
    return ((plus - minus) / (2 * eps)).reshape(data.shape)


def _perturbed_losses(loss, flat, indices, eps, k):
    """L(x + k eps e_i) and L(x - k eps e_i) for each flat index i (x is perturbed in place, then restored)."""
    plus, minus = np.empty(len(indices)), np.empty(len(indices))
    for j, i in enumerate(indices):
        orig = flat[i].item()
        try:
            flat[i] = orig + k * eps
            plus[j] = loss()
            flat[i] = orig - k * eps
            minus[j] = loss()
        finally:
            flat[i] = orig
    return plus, minus


def _check_eps(eps, fn):
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)) \
            or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"{fn}: eps (the finite-difference step) must be a positive number, got {eps!r}")


# --------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------
def _idx(flat_index, shape):
    return tuple(int(i) for i in np.unravel_index(int(flat_index), shape)) if shape else ()


class CheckReport:
    """The result for one checked tensor (an input, or a module's parameter).

    Attributes:
        name: ``'input 0'``, ``'input 1'``, ... or the parameter's dotted name (``'0.weight'``).
        kind: ``'input'`` or ``'parameter'``; ``index``: the input's position (None for a parameter).
        shape, analytic (float64 array), numeric (float64 array; NaN where not sampled).
        n_checked / n_elements, sampled (True when only some elements were checked).
        max_abs_err, max_rel_err (over the counted elements) and where the latter is (``rel_index``).
        worst_index, worst_analytic, worst_numeric, worst_ratio: the element closest to
            failing, ratio = |analytic - numeric| / (atol + rtol |numeric|) (<= 1 passes).
        n_failed: elements out of tolerance (non-differentiable points excluded).
        kinks: list of dicts (index, left, right, analytic, accepted) for the elements where
            the step crosses a non-differentiable point.
        passed, note.
    """

    def __init__(self, name, kind, index, shape, analytic, numeric, checked, atol, rtol,
                 kinks=(), note="", seed=0):
        self.name, self.kind, self.index, self.shape = name, kind, index, tuple(shape)
        self.analytic, self.numeric, self.note, self.seed = analytic, numeric, note, seed
        self.atol, self.rtol = atol, rtol
        self.n_elements, self.n_checked = int(np.prod(self.shape, dtype=np.int64)), len(checked)
        self.sampled = self.n_checked < self.n_elements
        self.kinks = list(kinks)
        skipped = {k["flat"] for k in self.kinks if k["accepted"]}
        counted = np.asarray(checked, dtype=np.int64)
        counted = counted[~np.isin(counted, list(skipped))]
        a, n = analytic.reshape(-1)[counted], numeric.reshape(-1)[counted]
        diff = np.abs(a - n)
        tol = atol + rtol * np.abs(n)
        ok = _within(a, n, atol, rtol)
        ratio = np.where(tol > 0, diff / np.where(tol > 0, tol, 1), np.where(diff > 0, np.inf, 0.0))
        ratio = np.where(np.isnan(ratio), np.inf, ratio)     # NaN in either value: as bad as it gets
        scale = np.maximum(np.abs(a), np.abs(n))
        rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1), 0.0)
        self.n_failed = int((~ok).sum())     # a kink whose analytic value is not accepted is among these
        if diff.size:
            w, r = int(np.argmax(ratio)), int(np.argmax(rel))
            self.worst_index = _idx(counted[w], self.shape)
            self.worst_analytic, self.worst_numeric = float(a[w]), float(n[w])
            self.worst_abs_err, self.worst_ratio, self.worst_tol = float(diff[w]), float(ratio[w]), float(tol[w])
            self.max_abs_err, self.max_rel_err = float(diff.max()), float(rel[r])
            self.rel_index = _idx(counted[r], self.shape)
            self.rel_numeric, self.rel_abs_err = float(n[r]), float(diff[r])
            self.rel_ok = bool(ok[r])
        else:
            self.worst_index, self.worst_analytic, self.worst_numeric = None, 0.0, 0.0
            self.worst_abs_err = self.worst_ratio = self.worst_tol = 0.0
            self.max_abs_err = self.max_rel_err = 0.0
            self.rel_index, self.rel_numeric, self.rel_abs_err, self.rel_ok = None, 0.0, 0.0, True
        self.passed = self.n_failed == 0 and not note.startswith("FAIL")

    @property
    def label(self):
        return f"input {self.index}" if self.kind == "input" else f"parameter {self.name}"

    def __repr__(self):
        status = "ok  " if self.passed else "FAIL"
        what = (f"sampled {self.n_checked} of {self.n_elements} elements (seed {self.seed})" if self.sampled
                else f"{self.n_checked} elements")
        n_kinks = sum(k["accepted"] for k in self.kinks)
        head = f"  [{status}] {self.label} {self.shape}: {what}, "
        head += (f"{self.n_failed} out of tolerance" if self.n_failed else "all within tolerance")
        if n_kinks:
            head += f", {n_kinks} at a non-differentiable point (not counted)"
        lines = [head]
        pad = "         "
        if self.worst_index is not None:
            which = "furthest out of tolerance" if self.worst_ratio > 1 else "closest to failing"
            w = (f"{pad}worst at {self.worst_index} ({which}): analytic {self.worst_analytic:.6g}, "
                 f"numeric {self.worst_numeric:.6g}, |diff| {self.worst_abs_err:.2e} = "
                 f"{self.worst_ratio:.2g}x its tolerance {self.worst_tol:.1e}")
            if self.worst_ratio > 1 and self.worst_numeric != 0:
                w += f" (analytic/numeric = {self.worst_analytic / self.worst_numeric:.3g})"
            lines.append(w)
            lines.append(pad + self._rel_text())
        elif self.kinks:
            lines.append(f"{pad}every checked element sits at a non-differentiable point, so none could be "
                         f"compared with central differences: draw inputs away from the kinks")
        for k in self.kinks[:3]:
            verdict = ("between them: not counted as a failure of the backward" if k["accepted"] else
                       "NOT between them: counted as a failure")
            lines.append(f"{pad}non-differentiable point at index {k['index']}: the step eps crosses a kink "
                         f"(left derivative {k['left']:.6g}, right derivative {k['right']:.6g}); "
                         f"analytic {k['analytic']:.6g} is {verdict}")
        if len(self.kinks) > 3:
            lines.append(f"{pad}... and {len(self.kinks) - 3} more non-differentiable point(s)")
        if self.note:
            lines.append(pad + self.note)
        return "\n".join(lines)

    def _rel_text(self):
        text = f"max abs err {self.max_abs_err:.2e}, max rel err {self.max_rel_err:.1e}"
        if self.max_rel_err <= max(self.rtol, 1e-6):
            return text
        text += f" at {self.rel_index}, where |numeric| is {abs(self.rel_numeric):.1e}: "
        if not self.rel_ok:
            return text + "out of tolerance"
        within = (f"within atol={self.atol:g}" if self.rel_abs_err <= self.atol else
                  f"within atol + rtol*|numeric| = {self.atol + self.rtol * abs(self.rel_numeric):.1e}")
        return text + (f"|diff| {self.rel_abs_err:.1e} is {within}, fine "
                       f"(near zero a relative error means little: the tolerance is what counts)")


class GradcheckReport:
    """What ``gradcheck`` found.

    ``passed`` (also ``bool(report)``); ``checks`` (also called ``inputs``): one
    ``CheckReport`` per checked tensor, the inputs first, then a Module's
    parameters; ``parameters``: only the parameters' rows; ``report['weight']``,
    ``report['input 0']``, ``report[0]``: a row by name, or an input by position;
    ``not_checked``: frozen parameters' names; ``warnings``: e.g. an output that
    is not float64; ``errors``: what fails the check as a whole (a forward or
    backward that wrote into its inputs, parameters or upstream gradient).
    Prints readably.
    """

    def __init__(self, name, checks, eps, atol, rtol, not_checked=(), module=False, seed=0, warnings=(), errors=()):
        self.name, self.checks, self.eps, self.atol, self.rtol = name, list(checks), eps, atol, rtol
        self.warnings, self.errors = list(warnings), list(errors)
        self.inputs = self.checks
        self.parameters = [c for c in self.checks if c.kind == "parameter"]
        self.not_checked, self.module, self.seed = list(not_checked), module, seed
        self.passed = all(c.passed for c in self.checks) and not self.errors

    @property
    def sampled(self):
        return any(c.sampled for c in self.checks)

    @property
    def kinks(self):
        """(name, index) of every non-differentiable point met (accepted or not)."""
        return [(c.name, k["index"]) for c in self.checks for k in c.kinks]

    def __getitem__(self, key):
        if isinstance(key, str):
            for c in self.checks:
                if c.name == key:
                    return c
            raise KeyError(f"gradcheck report: nothing called {key!r} was checked; "
                           f"checked: {', '.join(c.name for c in self.checks)}")
        for c in self.checks:
            if c.kind == "input" and c.index == key:
                return c
        raise KeyError(f"gradcheck report: input {key!r} was not checked")

    def __bool__(self):
        return self.passed

    def __repr__(self):
        lines = [f"gradcheck {self.name}: {'PASSED' if self.passed else 'FAILED'}"]
        where = "on copies (your module is left unchanged)" if self.module else "on copies of the inputs"
        lines.append(f"  checked in float64, {where}: " + ", ".join(f"{c.label} {c.shape}" for c in self.checks))
        if self.not_checked:
            lines.append("  not checked (requires_grad=False): " + ", ".join(self.not_checked))
        lines.append(f"  an element passes when |analytic - numeric| <= atol + rtol*|numeric| with atol={self.atol:g}, "
                     f"rtol={self.rtol:g}; numeric = central difference with eps={self.eps:g}, "
                     f"random upstream gradient (seed {self.seed})")
        lines += [f"  FAIL: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        lines += [repr(c) for c in self.checks]
        n_kinks = sum(k["accepted"] for c in self.checks for k in c.kinks)
        if self.passed and n_kinks:
            lines.append(f"  PASSED: every other element is within tolerance; {n_kinks} element(s) sit within "
                         f"2*eps of a non-differentiable point, where central differences cannot check a "
                         f"gradient (not a failure; draw inputs away from kinks to check them too)")
        if any(c.sampled for c in self.checks):
            lines.append("  sampled: only some elements were checked (sample=...); use sample=None for all")
        return "\n".join(lines)

    __str__ = __repr__


class GradcheckError(AssertionError):
    """Raised by ``gradcheck(..., raise_on_fail=True)``; ``.report`` holds the details."""

    def __init__(self, report):
        super().__init__(str(report))
        self.report = report


# --------------------------------------------------------------------------
# Checking a Module in float64 without changing it
# --------------------------------------------------------------------------
_REGISTRIES = ("_parameters", "_buffers", "_modules", "_forward_hooks")
_TENSOR_SLOTS = ("data", "grad", "requires_grad", "_ctx", "_out_index", "_retain")


@contextlib.contextmanager
def module_in_float64(module):
    """Inside the block, every floating parameter and buffer of ``module`` holds a float64 CPU copy.

    Integer buffers hold CPU copies too, and ``.grad`` starts at None. On
    exit, also after an exception, everything is put back exactly: each
    Tensor's array, ``.grad`` and ``requires_grad``; each module's registries
    (parameters, buffers, children, hooks), mode and plain attributes.
    Yields the module.
    """
    mods = list(module.modules())
    saved_mods = [(m, dict(m.__dict__), {r: dict(m.__dict__[r]) for r in _REGISTRIES if r in m.__dict__})
                  for m in mods]
    tensors, seen = [], set()
    for m in mods:
        for reg in ("_parameters", "_buffers"):
            for t in m.__dict__[reg].values():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    tensors.append(t)
    saved_tensors = [(t, [getattr(t, s) for s in _TENSOR_SLOTS]) for t in tensors]
    try:
        for t in tensors:
            arr = to_device(t.data, "cpu")
            t.data = np.array(arr, dtype=np.float64 if arr.dtype.kind == "f" else arr.dtype, copy=True, order="C")
            t.grad = None
        yield module
    finally:
        for t, values in saved_tensors:
            for s, v in zip(_TENSOR_SLOTS, values):
                setattr(t, s, v)
        for m, attrs, registries in saved_mods:
            d = m.__dict__
            for k in [k for k in d if k not in attrs]:
                del d[k]
            d.update(attrs)
            for r, contents in registries.items():
                d[r].clear()
                d[r].update(contents)


@contextlib.contextmanager
def _replayed_random_state():
    """``replay()`` puts NumPy's global random state back to what it was on entry; so does exit."""
    state = np.random.get_state()
    try:
        yield lambda: np.random.set_state(state)
    finally:
        np.random.set_state(state)


# --------------------------------------------------------------------------
# gradcheck
# --------------------------------------------------------------------------
def _name_of(fn):
    if isinstance(fn, Module):
        return type(fn).__name__
    owner = getattr(fn, "__self__", None)      # MyOp.apply: a classmethod bound to the class
    if isinstance(owner, type) and issubclass(owner, Function):
        return owner.__name__
    return getattr(fn, "__name__", type(fn).__name__)


def _check_settings(eps, atol, rtol, sample):
    _check_eps(eps, "gradcheck")
    for name, v in (("atol", atol), ("rtol", rtol)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                or not math.isfinite(v) or v < 0:
            raise ValueError(f"gradcheck: {name} must be a number >= 0, got {v!r}")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1):
        raise ValueError(f"gradcheck: sample must be a positive number of elements per tensor "
                         f"(or None to check all), got {sample!r}")


def _float64_inputs(inputs):
    """float64 CPU copies of the inputs (Tensors) and which of them to check."""
    tensors, check = [], []
    any_flagged = any(isinstance(x, Tensor) and x.requires_grad for x in inputs)
    for x in inputs:
        if isinstance(x, Tensor):
            arr, wants = x.numpy(), x.requires_grad or not any_flagged
        elif x is None:
            tensors.append(None)
            check.append(False)
            continue
        else:
            arr, wants = (to_device(x, "cpu") if hasattr(x, "shape") else np.asarray(x)), not any_flagged
        floating = arr.dtype.kind == "f"
        arr = np.array(arr, dtype=np.float64 if floating else arr.dtype, copy=True, order="C")
        tensors.append(Tensor(arr, requires_grad=floating and wants))
        check.append(floating and wants)
    return tensors, check


def _parameters_to_check(module, params):
    """(name, Parameter) pairs to check and the names of frozen ones left out."""
    named = list(module.named_parameters())
    if params is False:
        return [], []
    if params is None or params is True:
        return ([(n, p) for n, p in named if p.requires_grad], [n for n, p in named if not p.requires_grad])
    wanted = [params] if isinstance(params, str) else list(params)
    known = dict(named)
    for n in wanted:
        if n not in known:
            raise ValueError(f"gradcheck: params names {n!r}, which {type(module).__name__} does not have; "
                             f"its parameters: {', '.join(known) or '(none)'}")
        if not known[n].requires_grad:
            raise ValueError(f"gradcheck: parameter {n!r} has requires_grad=False, so it has no gradient to check")
    return [(n, known[n]) for n in wanted], []


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, raise_on_fail=False, seed=0, name=None,
              sample=None, params=None, detect_kinks=True):
    """Check ``fn``'s backward against central differences in float64.

    Args:
        fn: a function of Tensors returning a Tensor (or a tuple of Tensors),
            ``MyOp.apply`` (or the Function class itself), or a ``Module``.
        inputs: list of Tensors / arrays. Tensors with ``requires_grad=True``
            are checked (all floating inputs if none has it). Inputs are
            converted to float64 copies; the originals are not touched.
        eps, atol, rtol: step and tolerances: an element passes when
            |analytic - numeric| <= atol + rtol * |numeric|.
        raise_on_fail: raise ``GradcheckError`` (with the report) on failure.
        seed: seed of the random upstream gradient (and of the sampled elements).
        name: the name printed in the report (default: the Function's class,
            the Module's class, or the function's name).
        sample: check only this many random elements per input and
            parameter (seeded); None checks them all.
        params: for a Module, which parameters to check: None (every one that
            requires a gradient), a list of names, or False (inputs only).
        detect_kinks: when an element fails, look for a non-differentiable
            point within the step (see the module docstring).

    Returns:
        ``GradcheckReport`` (truthy when passed; prints readably).
    """
    _check_settings(eps, atol, rtol, sample)
    if isinstance(fn, type) and issubclass(fn, Function):
        fn = fn.apply
    if isinstance(fn, type) and issubclass(fn, Module):
        raise TypeError(f"gradcheck: give a {fn.__name__} instance (e.g. {fn.__name__}(...)), not the class")
    if not callable(fn):
        raise TypeError(f"gradcheck: fn must be a function, Function.apply or Module, got {type(fn).__name__}")
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    name = name or _name_of(fn)
    is_module = isinstance(fn, Module)
    tensors, check = _float64_inputs(inputs)
    context = module_in_float64(fn) if is_module else contextlib.nullcontext()
    with context, _replayed_random_state() as replay:
        named_params, frozen = _parameters_to_check(fn, params) if is_module else ([], [])
        targets = [(f"input {i}", "input", i, t) for i, (t, c) in enumerate(zip(tensors, check)) if c]
        targets += [(n, "parameter", None, p) for n, p in named_params]
        if not targets:
            raise ValueError("gradcheck: no floating input to check (give float arrays or Tensors with "
                             "requires_grad=True)" + (", and no parameter requires a gradient" if is_module else ""))
        for _, _, _, t in targets:
            t.grad = None
        watched = [(f"input {i}", t) for i, t in enumerate(tensors) if t is not None]
        watched += [(f"parameter {n}", p) for n, p in fn.named_parameters()] if is_module else []
        checks, warnings, errors = _run_checks(fn, tensors, targets, watched, replay, eps, atol, rtol, seed,
                                               sample, detect_kinks)
    report = GradcheckReport(name, checks, eps, atol, rtol, frozen, is_module, seed, warnings, errors)
    if raise_on_fail and not report.passed:
        raise GradcheckError(report)
    return report


def _run_checks(fn, tensors, targets, watched, replay, eps, atol, rtol, seed, sample, detect_kinks):
    """Analytic gradients by one backward pass, then central differences per target.

    ``watched``: (label, Tensor) pairs that neither pass may change (the
    inputs, a module's parameters). Returns the rows (``CheckReport``),
    warnings and errors (strings) for the report.
    """
    start = [t.data.copy() for _, t in watched]
    replay()
    with enable_grad():
        outs = _as_list(fn(*tensors))
    damaged = {label: ("forward", m) for label, m in _written_in_place("forward", watched, start).items()}
    warnings = [f"output {k} has dtype {o.dtype}, not float64: something in the forward pass casts, so the "
                f"numeric gradient is only as precise as {o.dtype}" for k, o in enumerate(outs)
                if isinstance(o, Tensor) and o.dtype.kind == "f" and o.dtype != np.float64]
    rng = np.random.default_rng(seed)
    upstream = [rng.standard_normal(np.shape(o.data if isinstance(o, Tensor) else o)) for o in outs]
    # Analytic: backward of L = sum_k sum(G_k * y_k). Each backward gets a copy of G_k: a backward
    # that writes into its upstream gradient must not change the G the numeric side uses.
    before_backward = [t.data.copy() for _, t in watched]
    given = [g.copy() for g in upstream]
    for o, g in zip(outs, given):
        if isinstance(o, Tensor) and o.requires_grad:
            o.backward(g, retain_graph=True)
    del outs
    for label, message in _written_in_place("backward", watched, before_backward).items():
        damaged.setdefault(label, ("backward", message))
    errors = [message for _, message in damaged.values()]
    errors += [f"the backward pass wrote into the upstream gradient it was given (output {k}): a backward "
               f"must compute its result into a new array (write g * 2, not g *= 2)"
               for k, (g, g0) in enumerate(zip(given, upstream)) if not np.array_equal(g, g0, equal_nan=True)]
    if errors:            # check from the point the caller gave, and call no damage a kink
        detect_kinks = False
        for (_, t), x0 in zip(watched, start):
            if t.data.shape == x0.shape and t.data.dtype == x0.dtype:
                t.data[...] = x0

    def loss():
        replay()
        return _weighted_sum(_as_list(fn(*tensors)), upstream)

    base = []       # L(x) at the unperturbed point, computed once when a kink check needs it
    reports = []
    for label, kind, index, t in targets:
        key = label if kind == "input" else f"parameter {label}"       # as in ``watched``
        note = f"FAIL: written in place by the {damaged[key][0]} pass (see above)" if key in damaged else ""
        analytic = t.grad
        if analytic is None:
            analytic = np.zeros(t.shape)
            note = "backward gave no gradient for this one (treated as zeros)"
        elif analytic.dtype != np.float64 and not note:
            note = f"FAIL: the gradient has dtype {analytic.dtype}, expected float64 like the input"
        a = np.asarray(to_device(analytic, "cpu"), dtype=np.float64).reshape(-1)
        flat = t.data.reshape(-1)          # a view: perturbing it perturbs the input / parameter
        n = flat.size
        if sample is not None and sample < n:
            checked = np.sort(rng.choice(n, size=int(sample), replace=False))
        else:
            checked = np.arange(n)
        with no_grad():
            plus, minus = _perturbed_losses(loss, flat, checked, eps, 1)
        numeric = np.full(n, np.nan)
        numeric[checked] = (plus - minus) / (2 * eps)

        kinks = []
        bad = ~_within(a[checked], numeric[checked], atol, rtol)
        for j in np.flatnonzero(bad) if detect_kinks else ():
            i = int(checked[j])
            with no_grad():
                if not base:
                    base.append(loss())
                plus2, minus2 = _perturbed_losses(loss, flat, [i], eps, 2)
            kink = _kink(base[0], minus[j], minus2[0], plus[j], plus2[0], eps, a[i], atol, rtol)
            if kink is not None:
                kinks.append(dict(kink, index=_idx(i, t.shape), flat=i))
        row = CheckReport(label, kind, index, t.shape, a.reshape(t.shape), numeric.reshape(t.shape),
                          checked, atol, rtol, kinks, note, seed)
        reports.append(row)
        largest = float(np.max(np.abs(np.concatenate([a[checked], numeric[checked]])), initial=0.0))
        if largest <= atol:      # NaN compares False: it fails on its own
            warnings.append(f"{row.label}: every checked gradient is within atol={atol:g} of 0 (the largest is "
                            f"{largest:.1e}), so a wrong backward would pass here too; use inputs that give "
                            f"larger gradients, or a smaller atol")
    return reports, warnings, errors


def _written_in_place(stage, watched, before):
    """{label: message} for each watched tensor whose array differs from its copy ``before`` the ``stage`` pass."""
    found = {}
    for (label, t), x0 in zip(watched, before):
        x1 = np.asarray(to_device(t.data, "cpu"))
        floating = x0.dtype.kind in "fc"
        if x1.shape == x0.shape and np.array_equal(x1, x0, equal_nan=floating):
            continue
        if x1.shape != x0.shape:
            what = f"its shape went from {x0.shape} to {x1.shape}"
        else:
            same = (x1 == x0) | (np.isnan(x1) & np.isnan(x0)) if floating else x1 == x0
            changed = np.flatnonzero(~same)
            i = int(changed[0])
            what = (f"{len(changed)} of {x0.size} elements, e.g. at {_idx(i, x0.shape)}: "
                    f"{x0.reshape(-1)[i]:.6g} became {x1.reshape(-1)[i]:.6g}")
        found[label] = (f"the {stage} pass changed {label} in place ({what}): a {stage} must not write into "
                        f"its inputs or parameters (write np.maximum(x, 0), not np.maximum(x, 0, out=x)); "
                        f"the gradients below were measured around a moving point and mean nothing")
    return found


def _within(analytic, numeric, atol, rtol):
    """|analytic - numeric| <= atol + rtol * |numeric|, element-wise; False where either is NaN or inf."""
    return np.isfinite(analytic) & np.isfinite(numeric) & (np.abs(analytic - numeric) <= atol + rtol * np.abs(numeric))


def _kink(l0, l_m1, l_m2, l_p1, l_p2, eps, analytic, atol, rtol):
    """Is there a non-differentiable point within 2 eps of x? None if not, else what was found.

    From L at x, x -+ eps and x -+ 2 eps, the one-sided derivatives (exact
    for a quadratic on that side):

        left  = (3 L(x) - 4 L(x - eps) + L(x - 2 eps)) / (2 eps)
        right = (-3 L(x) + 4 L(x + eps) - L(x + 2 eps)) / (2 eps)

    At a smooth point both equal dL/dx (up to O(eps**2)). If they differ by
    more than the tolerance, the steps cross a kink; the analytic value is
    then ``accepted`` when it lies between them (the derivative on one side,
    or a subgradient between the two).
    """
    left = (3 * l0 - 4 * l_m1 + l_m2) / (2 * eps)
    right = (-3 * l0 + 4 * l_p1 - l_p2) / (2 * eps)
    if not (math.isfinite(left) and math.isfinite(right) and math.isfinite(analytic)):
        return None                     # NaN/inf: nothing to compare, the element fails as it is
    tol = atol + rtol * max(abs(left), abs(right))
    if abs(left - right) <= tol:
        return None                     # smooth here: the mismatch is genuine
    accepted = min(left, right) - tol <= analytic <= max(left, right) + tol
    return {"left": float(left), "right": float(right), "analytic": float(analytic), "accepted": bool(accepted)}
