"""Check 4, the gradients: "bad gradients" (a layer whose backward is wrong).

A float64 gradient check of the *whole model* on a tiny batch: the
gradient that backpropagation gives for the input and for every parameter
is compared with central differences of L = sum(G * model(x)) for a random
upstream G (see ``minicnn.gradcheck``). It covers the model's own layers
and any user ``Function`` inside it. To stay fast on a real network it
checks a random sample of elements of each tensor (``sample``).

Because backpropagation runs from the loss towards the input, a wrong
backward at one layer corrupts the gradients of everything *before* it
(the input, earlier parameters) and none after it: the check reports the
last parameter whose gradient is wrong and the first one after it that is
right, and the culprit sits between them.

The check runs on a float64 copy of the model in training mode (batchnorm
on batch statistics); ``minicnn.gradcheck`` replays the random state, so
dropout draws the same mask at every evaluation.
"""
import inspect

import numpy as np

from ..autograd import Tensor, no_grad
from ..backend import to_device
from ..gradcheck import gradcheck
from .report import FAIL, OK, CheckResult

__all__ = ["check_gradients", "directional_gradcheck"]

TITLE = "Gradients: a float64 gradient check of the whole model on a tiny batch"
SAMPLE = 6           # elements checked per tensor (a wrong backward spoils them all)


def directional_gradcheck(model, x, directions=2, eps=1e-6, rtol=1e-4, seed=0):
    """Compare backprop with central differences along random directions, tensor by tensor.

    For each tensor T (the input, then every parameter) and a random unit
    direction v of T's shape: analytic = <dL/dT, v>, numeric =
    (L(T + eps v) - L(T - eps v)) / (2 eps), with L = sum(G * model(x)).
    Passes when |analytic - numeric| <= rtol * ||dL/dT|| + 1e-7 |L|
    (the second term is float64 round-off of the difference quotient).
    Used when ``minicnn.gradcheck`` cannot sample elements. Returns a list
    of (name, passed, analytic, numeric) tuples. ``model`` must be a float64
    copy that draws no random numbers (dropout off).
    """
    rng = np.random.default_rng(seed)
    xt = Tensor(to_device(x, "cpu").astype(np.float64), requires_grad=True)
    out = model(xt)
    g = rng.standard_normal(out.shape)
    for p in model.parameters():
        p.grad = None
    out.backward(g)
    targets = [("input 0", xt)] + [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def loss():
        with no_grad():
            return float((np.asarray(model(xt).data, dtype=np.float64) * g).sum())

    base = abs(loss())
    results = []
    for name, t in targets:
        grad = np.zeros(t.shape) if t.grad is None else np.asarray(t.grad, dtype=np.float64)
        ok, worst = True, (0.0, 0.0)
        for _ in range(directions):
            v = rng.standard_normal(t.shape)
            v /= np.linalg.norm(v) or 1.0
            orig = t.data.copy()
            t.data = orig + eps * v
            plus = loss()
            t.data = orig - eps * v
            minus = loss()
            t.data = orig
            numeric, analytic = (plus - minus) / (2 * eps), float((grad * v).sum())
            if abs(analytic - numeric) > rtol * np.linalg.norm(grad) + 1e-7 * base:
                ok, worst = False, (analytic, numeric)
        results.append((name, ok) + worst)
    return results


def _localise(names, failed):
    """Where a wrong backward sits, from which parameter gradients are wrong (forward order)."""
    params = [n for n in names if not n.startswith("input")]
    bad = [i for i, n in enumerate(params) if n in failed]
    if not bad:
        return ("only the gradient with respect to the input is wrong: the faulty backward is in the "
                "first layer(s), before any parameter")
    last = bad[-1]
    after = next((params[i] for i in range(last + 1, len(params)) if params[i] not in failed), None)
    if after is None:
        return f"the gradient is already wrong at the last parameter {params[last]}: look at the layers after it"
    return (f"gradients are wrong up to {params[last]} and right from {after} on: the layer with the "
            f"faulty backward sits between them")


def check_gradients(ctx):
    """Checklist item 4: backprop of the whole model agrees with central differences (float64)."""
    s = ctx.settings
    x, _ = ctx.tensors(min(s.gradcheck_samples, len(ctx.images)), dtype=np.float64, device="cpu")
    # Real images have flat regions: equal pixels give exactly equal conv outputs, i.e. max-pool
    # ties, where the network is not differentiable and central differences mean nothing. A
    # jitter far above the step eps (but far below the data's scale) breaks every such tie.
    jitter = np.random.default_rng(s.seed).normal(0.0, 1e-2, x.shape)
    x = Tensor(x.data + jitter)
    if "sample" in inspect.signature(gradcheck).parameters:
        model = ctx.copy(train=True, device="cpu")
        xt = Tensor(x.data, requires_grad=True)
        n_elem = xt.size + sum(p.size for p in model.parameters() if p.requires_grad)
        sample = None if n_elem <= s.gradcheck_max_elements else SAMPLE
        report = gradcheck(model, [xt], sample=sample, seed=s.seed, name=type(ctx.model).__name__)
        names = [c.name for c in report.checks]
        failed = {c.name for c in report.checks if not c.passed}
        worst = max((c.worst_ratio for c in report.checks), default=0.0)
        max_rel = max((c.max_rel_err for c in report.checks if not c.passed), default=0.0)
        how = (f"{len(names)} tensors (the input and {len(names) - 1} parameters), "
               + (f"{SAMPLE} sampled elements each" if sample else "every element"))
        details = {"checked": names, "failed": sorted(failed), "worst_ratio_to_tolerance": worst,
                   "report": str(report)}
        value = worst
    else:   # an older minicnn.gradcheck: random directions, tensor by tensor
        model = ctx.copy(train=True, dropout=False, dtype=np.float64, device="cpu")
        rows = directional_gradcheck(model, x.data, s.gradcheck_directions, seed=s.seed)
        names = [r[0] for r in rows]
        failed = {r[0] for r in rows if not r[1]}
        bad = [r for r in rows if not r[1]]
        max_rel = max((abs(a - n) / max(abs(a), abs(n), 1e-30) for _, _, a, n in bad), default=0.0)
        how = f"{len(names)} tensors, {s.gradcheck_directions} random directions each"
        details = {"checked": names, "failed": sorted(failed)}
        value = max_rel
    if not failed:
        return CheckResult("gradients", TITLE, OK, value, f"float64 check of {how}: all agree",
                           "backpropagation agrees with central differences for every layer", "", details)
    first = [n for n in names if n in failed]
    measured = (f"float64 check of {how}: {len(failed)} disagree ({', '.join(first[:4])}"
                f"{', ...' if len(first) > 4 else ''}), max rel err {max_rel:.2g}")
    where = _localise(names, failed)
    details["where"] = where
    return CheckResult(
        "gradients", TITLE, FAIL, value, measured,
        f"backpropagation disagrees with the numerical gradient: some layer's backward is wrong; {where}",
        "gradient-check that layer alone (minicnn gradcheck --layer file.py:YourLayer) and fix its "
        "backward: one gradient per input, of the input's shape, by the chain rule", details)
