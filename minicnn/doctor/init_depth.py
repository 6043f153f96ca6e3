"""Check 5, initialisation and depth: "badly initialised weights", "a network too deep".

On one batch, in training mode, with a forward hook on every layer:

- the **mean and standard deviation of each layer's output**, on the batch
  standardised per channel (mean 0, std 1: the data check judges the
  data, this one the weights; a model that starts with its own
  ``nn.Normalize`` gets the batch as it is). With a good initialisation
  (He: std = sqrt(2 / fan_in) before a ReLU) the spread of the activations
  stays of order 1 from the input to the logits. Weights too small make it
  shrink by the same factor at every layer (*vanishing*: the gradients
  vanish with it); too large, it grows (*exploding*). The smallest and
  largest output std of the weight layers (Conv2d, Linear) are reported,
  the last one left out (a last layer initialised small on purpose, to
  start at loss log C, is good practice).
- the **fraction of dead ReLUs**: units (one channel at one position) that
  output 0 for every sample of the batch. A dead unit passes no gradient
  and never recovers (a large negative bias, a too-high learning rate).
- the **update-to-weight ratio** after one optimizer step,
  ||lr * update|| / ||W|| per weight tensor: about 1e-3 is healthy; much
  larger and the weights churn (learning rate too high), much smaller and
  nothing moves. This one is a WARN at most (the learning-rate check owns
  the rate).
"""
import numpy as np

from .. import nn
from ..autograd import Tensor, no_grad
from ..backend import to_device
from .report import FAIL, OK, WARN, CheckResult

__all__ = ["check_init_depth", "activation_statistics", "update_ratios"]

TITLE = "Initialisation and depth: activation scale through the layers, dead ReLUs, update/weight ratio"
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)
RELUS = (nn.ReLU,)


def _np(t):
    return np.asarray(to_device(t.data, "cpu"), dtype=np.float64)


def activation_statistics(model, x):
    """Per leaf layer (forward order): name, type, mean, std and, for ReLUs, the dead fraction."""
    stats, handles = [], []

    def hook_for(name, module):
        def hook(m, inputs, out):
            a = _np(out[0] if isinstance(out, tuple) else out)
            row = {"name": name, "type": type(m).__name__, "mean": float(a.mean()), "std": float(a.std()),
                   "weight_layer": isinstance(m, WEIGHT_LAYERS)}
            if isinstance(m, RELUS) and a.ndim >= 2:
                alive = (a.reshape(a.shape[0], -1) > 0).any(axis=0)
                row["dead"] = float(1.0 - alive.mean())
            stats.append(row)
        return hook

    try:
        for name, m in model.named_modules():
            if name and not any(True for _ in m.children()):
                handles.append(m.register_forward_hook(hook_for(name, m)))
        with no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return stats


def update_ratios(ctx, x, y):
    """||W after one step - W before|| / ||W before|| for every weight tensor (ndim > 1) of a fresh copy."""
    model = ctx.copy(train=True)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    before = {n: _np(p).copy() for n, p in named}
    opt = ctx.optimizer(model)
    opt.zero_grad()
    ctx.loss(model(x), y).backward()
    opt.step()
    out = {}
    for n, p in named:
        w = before[n]
        norm = float(np.linalg.norm(w))
        out[n] = float(np.linalg.norm(_np(p) - w)) / norm if norm > 0 else float("inf")
    return out


def _standardised(ctx, x):
    """The batch with mean 0 and std 1 per channel (unchanged when the model normalises it itself)."""
    if ctx.first_layer_normalize() is not None or x.ndim < 2:
        return x
    a = x.data
    axes = (0,) + tuple(range(2, a.ndim))
    a = (a - a.mean(axis=axes, keepdims=True)) / (a.std(axis=axes, keepdims=True) + 1e-8)
    return Tensor(a.astype(x.dtype))


def check_init_depth(ctx):
    """Checklist items 8-9: activation scale through depth, dead ReLUs, update/weight ratio."""
    x, y = ctx.tensors(min(ctx.settings.depth_samples, len(ctx.images)))
    x = _standardised(ctx, x)
    stats = activation_statistics(ctx.copy(train=True), x)
    x_std = float(np.asarray(to_device(x.data, "cpu"), dtype=np.float64).std()) or 1.0
    weights = [r for r in stats if r["weight_layer"]]
    gains = [(r["name"], r["std"] / x_std) for r in weights[:-1]]
    dead = [(r["name"], r["dead"]) for r in stats if "dead" in r]
    ratios = update_ratios(ctx, x, y)
    finite = [v for v in ratios.values() if np.isfinite(v)]
    median_ratio = float(np.median(finite)) if finite else float("nan")
    details = {"layers": stats, "input_std": x_std, "gains": dict(gains), "dead_relu": dict(dead),
               "update_ratio": ratios, "median_update_ratio": median_ratio}

    lo = min(gains, key=lambda g: g[1]) if gains else None
    hi = max(gains, key=lambda g: g[1]) if gains else None
    worst_dead = max(dead, key=lambda d: d[1]) if dead else None
    mean_dead = float(np.mean([d for _, d in dead])) if dead else 0.0
    parts = []
    if gains:
        parts.append(f"activation std from {lo[1]:.2g} (layer {lo[0]}) to {hi[1]:.2g} (layer {hi[0]}) for a "
                     f"standardised input")
    if dead:
        parts.append(f"dead ReLUs {100 * mean_dead:.0f}% on average, {100 * worst_dead[1]:.0f}% at layer {worst_dead[0]}")
    parts.append(f"update/weight ratio after one step {median_ratio:.2g} (median)")
    measured = "; ".join(parts)

    status, problems, advice = OK, [], []
    if any(not np.isfinite(r["std"]) for r in stats):
        status = FAIL
        problems.append("activations become NaN or infinite")
        advice.append("check the data and the initialisation scale")
    if gains and (lo[1] < 1e-3):
        status = FAIL
        problems.append(f"activations vanish: at layer {lo[0]} their std is {lo[1]:.1g} for an input of std 1, so the "
                        f"gradients vanish too and the early layers cannot learn")
        advice.append("initialise with He (std = sqrt(2 / fan_in), nn.init.kaiming_normal_) or Xavier, "
                      "not a small constant; or add batchnorm")
    elif gains and hi[1] > 1e3:
        status = FAIL
        problems.append(f"activations explode: at layer {hi[0]} their std is {hi[1]:.1g} for an input of std 1")
        advice.append("initialise with He (std = sqrt(2 / fan_in)); add batchnorm")
    elif gains and (lo[1] < 0.05 or hi[1] > 50):
        status = WARN
        problems.append("the activation scale drifts a lot through the layers")
        advice.append("check the initialisation scale (He for ReLU networks) or add batchnorm")
    if dead and (worst_dead[1] > 0.9 or mean_dead > 0.5):
        status = FAIL
        problems.append(f"dead ReLUs: {100 * worst_dead[1]:.0f}% of the units of layer {worst_dead[0]} never fire "
                        f"on this batch, and a dead unit passes no gradient")
        advice.append("look for large negative biases before the ReLUs (init them at 0), a too-high "
                      "learning rate, or use LeakyReLU")
    elif dead and worst_dead[1] > 0.25:
        status = WARN if status == OK else status
        problems.append(f"{100 * worst_dead[1]:.0f}% of the ReLUs of layer {worst_dead[0]} never fire on this batch")
        advice.append("check the biases before the ReLUs")
    if finite and not 1e-5 <= median_ratio <= 1e-1:
        status = WARN if status == OK else status
        side = "large (weights churn: learning rate too high?)" if median_ratio > 1e-1 else \
            "small (nothing moves: learning rate too low?)"
        problems.append(f"the update/weight ratio {median_ratio:.1g} is {side}; about 1e-3 is healthy")
        advice.append("tune the learning rate (see the learning-rate check)")
    meaning = ("; ".join(problems) if problems else
               "activations keep their scale through the layers, the ReLUs are alive, and one step moves "
               "the weights by a healthy fraction")
    value = lo[1] if gains else mean_dead
    figures = []
    if ctx.out:
        from .plot import plot_activations
        figures.append(plot_activations(stats, f"{ctx.out}/activations.png"))
    return CheckResult("init_depth", TITLE, status, value, measured, meaning, "; ".join(advice), details, figures)
