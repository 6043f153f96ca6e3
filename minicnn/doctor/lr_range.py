"""Check 8, the learning rate: "an incorrect learning rate" (Smith's range test).

Train a fresh copy for ``lr_steps`` steps while the learning rate grows
exponentially from ``lr_min`` to ``lr_max``,

    lr_k = lr_min * (lr_max / lr_min) ** (k / (steps - 1)),

on successive batches, and smooth the loss with an exponential moving
average (beta = 0.9, bias-corrected). Stop when the smoothed loss exceeds
``lr_stop_factor`` (4) times its minimum, or is not finite: beyond that
rate training diverges. The **suggested rate** is the one at the minimum
of the smoothed loss divided by 10 (the loss still falls fast there and
is far from the cliff; Smith 2017, fast.ai's rule of thumb).

The rate the recipe chose (the optimizer factory's ``lr``) is then judged:
at or past the divergence point it FAILs; above the minimum's rate, or
more than 100x below the suggestion, it WARNs (100 short steps are a noisy
test: a batchnorm network that spikes there may still train well with a
warm-up, as minicnn train's one-cycle schedule does). The plot (``lr_range.png``
in the output folder) shows the smoothed loss against the rate with both
rates marked.
"""
import math

from .report import FAIL, OK, WARN, CheckResult

__all__ = ["check_learning_rate", "lr_range_test"]

TITLE = "Learning rate: range test (exponential lr, stop at 4x the minimum loss), suggested vs chosen"
BETA = 0.9


def lr_range_test(ctx):
    """Run the range test on a fresh copy; returns a dict of lrs, raw and smoothed losses, and the stop."""
    s = ctx.settings
    model = ctx.copy(train=True)
    opt = ctx.optimizer(model)
    batch = max(1, min(s.lr_batch, ctx.batch_size, len(ctx.images)))
    lrs, raw, smooth = [], [], []
    avg, best, stopped = 0.0, math.inf, None
    for k in range(s.lr_steps):
        lr = s.lr_min * (s.lr_max / s.lr_min) ** (k / max(s.lr_steps - 1, 1))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = ctx.tensors(batch, start=k * batch)
        loss = ctx.loss(model(x), y)
        value = float(loss.item())
        lrs.append(lr)
        raw.append(value)
        if not math.isfinite(value):
            smooth.append(float("inf"))
            stopped = lr
            break
        avg = BETA * avg + (1 - BETA) * value
        sm = avg / (1 - BETA ** (k + 1))
        smooth.append(sm)
        best = min(best, sm)
        if sm > s.lr_stop_factor * best:
            stopped = lr
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    finite = [i for i, v in enumerate(smooth) if math.isfinite(v)]
    i_min = min(finite, key=lambda i: smooth[i]) if finite else 0
    return {"lrs": lrs, "loss": raw, "smoothed": smooth, "lr_at_min": lrs[i_min],
            "suggested": lrs[i_min] / 10, "diverged_at": stopped, "batch": batch,
            "min_loss": smooth[i_min] if finite else float("nan"),
            "start_loss": smooth[0] if smooth else float("nan")}


def check_learning_rate(ctx):
    """Checklist item 6: is the chosen learning rate on the good side of the range test's cliff?"""
    r = lr_range_test(ctx)
    chosen, suggested, diverged = ctx.lr, r["suggested"], r["diverged_at"]
    figures = []
    if ctx.out:
        from .plot import plot_lr_range
        figures.append(plot_lr_range(r, chosen, f"{ctx.out}/lr_range.png"))
    div_text = f"loss blew up at {diverged:.2g}" if diverged else f"no blow-up up to {r['lrs'][-1]:.2g}"
    measured = (f"chosen lr {chosen:.3g}; suggested {suggested:.3g} (min loss at {r['lr_at_min']:.3g}); "
                f"{div_text}; {len(r['lrs'])} steps of {r['batch']} samples")
    details = dict(r, chosen=chosen)
    fell = math.isfinite(r["min_loss"]) and r["min_loss"] < 0.9 * r["start_loss"]
    advice = f"use a learning rate near {suggested:.2g} (between it and {r['lr_at_min']:.2g})"
    at_chosen = next((sm for lr, sm in zip(r["lrs"], r["smoothed"]) if lr >= chosen), None)
    details["loss_at_chosen"] = at_chosen
    if diverged is not None and chosen >= diverged:
        status, meaning = FAIL, ("the chosen learning rate is at or past the rate where the loss blows up: "
                                 "training will diverge or thrash")
    elif diverged is None and chosen > r["lrs"][-1]:
        status, meaning = WARN, "the chosen learning rate is above the whole range tested"
    elif not fell:
        status, meaning = WARN, ("no learning rate in the range lowered the loss much: the problem is "
                                 "probably elsewhere (see the other checks)")
        advice = "fix the failing checks first, then run the range test again"
    elif chosen > r["lr_at_min"]:
        status, meaning = WARN, ("the chosen learning rate is above the rate of the lowest loss, close to the "
                                 "cliff: training may be unstable"
                                 + (f" (in the test the loss there was {at_chosen:.3g}, against a minimum of "
                                    f"{r['min_loss']:.3g}; a warm-up or a one-cycle schedule helps)"
                                    if at_chosen is not None else ""))
    elif chosen < suggested / 100:
        status, meaning = WARN, "the chosen learning rate is far below the suggestion: training will crawl"
    else:
        status, meaning = OK, "the chosen learning rate is in the range where the loss falls steadily"
        advice = ""
    return CheckResult("learning_rate", TITLE, status, chosen / suggested if suggested else None, measured,
                       meaning, advice, details, figures)
