"""Check 6, batch independence (Karpathy's recipe: "use backprop to chart dependencies").

In evaluation mode the examples of a batch must not influence each other:
the loss of sample i may depend on input i only. The check backpropagates
from sample i's outputs alone (a random upstream gradient on row i of the
logits, zeros elsewhere) and measures the gradient that reaches every
*other* sample's input; it must be exactly zero. A non-zero leak means
something mixes samples: a reshape or transpose that moves the batch axis
(``x.reshape(C, N, ...)`` instead of ``(N, C, ...)``), a mean over the
wrong axis, a "batch" statistic in an eval-mode layer. (Batchnorm in
*training* mode mixes samples on purpose; that is why the check uses eval.)
Done for the first and the last sample of the batch.
"""
import numpy as np

from ..autograd import Tensor
from ..backend import to_device
from .report import FAIL, OK, WARN, CheckResult

__all__ = ["check_batch_independence"]

TITLE = "Batch independence: in eval mode, d loss_i / d x_j = 0 for i != j"


def _leak(model, x, i, rng):
    xt = Tensor(x.data.copy(), requires_grad=True)
    out = model(xt)
    g = np.zeros(out.shape)
    g[i] = rng.standard_normal(out.shape[1:])
    out.backward(to_device(g.astype(np.float64), out.device))
    grad = np.abs(np.asarray(to_device(xt.grad, "cpu"), dtype=np.float64)).reshape(len(g), -1).max(axis=1)
    own = float(grad[i])
    others = float(np.delete(grad, i).max())
    return own, others


def check_batch_independence(ctx):
    """Checklist (recipe): no gradient flows from sample i's loss into sample j's input."""
    n = min(max(ctx.settings.independence_samples, 2), len(ctx.images))
    if n < 2:
        return CheckResult("batch_independence", TITLE, WARN, None, "only one sample available",
                           "batch independence needs at least two samples", "give more data")
    model = ctx.copy(train=False)
    for p in model.parameters():
        p.requires_grad = False        # only input gradients are needed
    x, _ = ctx.tensors(n)
    rng = np.random.default_rng(ctx.settings.seed)
    results = [_leak(model, x, i, rng) for i in (0, n - 1)]
    own = max(r[0] for r in results)
    leak = max(r[1] for r in results)
    ratio = leak / own if own > 0 else (float("inf") if leak > 0 else 0.0)
    measured = (f"max |d loss_i / d x_j| for j != i is {leak:.3g} vs {own:.3g} for j = i "
                f"(ratio {ratio:.2g}, {n} samples, eval mode)")
    details = {"own_gradient": own, "leaked_gradient": leak, "ratio": ratio, "samples": n}
    if leak > 0 and (own == 0 or ratio > 1e-6):
        return CheckResult(
            "batch_independence", TITLE, FAIL, ratio, measured,
            "the loss of one sample depends on the inputs of other samples: an operation mixes the batch "
            "(the network can cheat by looking at other examples, and its predictions change with the "
            "batch they come in)",
            "look for a reshape/view/transpose that moves the batch axis (keep N first: x.reshape(N, -1)), "
            "or a mean/sum over axis 0 inside the model", details)
    if own == 0:
        return CheckResult("batch_independence", TITLE, WARN, ratio, measured,
                           "no gradient reaches the input at all, so independence cannot be judged",
                           "see the initialisation check (dead units) and the gradient check", details)
    return CheckResult("batch_independence", TITLE, OK, ratio, measured,
                       "each sample's loss depends on its own input only", "", details)
