"""Check 8, the learning rate: "an incorrect learning rate" (Smith's range test).

Train a fresh copy with the recipe's optimizer and batch size for
``lr_steps`` steps while the learning rate grows exponentially from
``lr_min`` to ``lr_max``,

    lr_k = lr_min * (lr_max / lr_min) ** (k / (steps - 1)),

on successive batches (parameter groups keep their ratios to the base
rate), and smooth the loss with an exponential moving average (beta = 0.9,
bias-corrected). Stop when the smoothed loss exceeds ``lr_stop_factor`` (4)
times its minimum, or is not finite: beyond that rate training diverges.
The **suggested rate** is the one at the minimum of the smoothed loss
divided by 10 (Smith 2017, fast.ai's rule of thumb for a constant rate).

The recipe's own rate (the optimizer's ``lr``) is then placed on the curve:
the smoothed loss there, how much of the fall from the start to the
minimum it has made, and how far it is from the blow-up. A recipe that
warms up (``start_lr`` below ``lr``: a one-cycle schedule, as ``minicnn
train`` uses for most models) is placed by the rate it starts from, where
the test's fresh network is; by the time it reaches its peak the network
has trained, and the peak need only stay clear of the blow-up.

It FAILs at or past the blow-up, and WARNs: above the tested range, less
than 3x below the blow-up, where the loss has risen again above what lower
rates reached (past a minimum, or in the spike a fresh batchnorm network
shows), or more than 100x below the suggestion. When no rate lowered the
loss, the advice depends on the other checks: fix the ones that failed;
and a model that starts well below chance (already trained) is fine: it
sits at a minimum that the range test can only climb out of. The plot
(``lr_range.png`` in the output folder) shows the smoothed loss against the
rate with the recipe's rate and the lowest loss's rate marked.
"""
import math

from .report import FAIL, OK, WARN, CheckResult

__all__ = ["check_learning_rate", "lr_range_test", "place_on_curve", "risen_again"]

TITLE = "Learning rate: range test (the recipe's optimizer and batch, exponential lr), where the recipe's rate sits"
BETA = 0.9
SAFE_MARGIN = 3.0      # the recipe's rate is comfortably below the blow-up when this many times lower


def lr_range_test(ctx):
    """Run the range test on a fresh copy; returns a dict of lrs, raw and smoothed losses, and the stop."""
    s = ctx.settings
    model = ctx.copy(train=True)
    opt = ctx.optimizer(model)
    base = float(opt.param_groups[0]["lr"])
    scales = [float(g["lr"]) / base if base > 0 else 1.0 for g in opt.param_groups]   # e.g. a bias lr x4
    batch = max(1, min(s.lr_batch or ctx.batch_size, len(ctx.images)))
    lrs, raw, smooth = [], [], []
    avg, best, stopped = 0.0, math.inf, None
    for k in range(s.lr_steps):
        lr = s.lr_min * (s.lr_max / s.lr_min) ** (k / max(s.lr_steps - 1, 1))
        for group, scale in zip(opt.param_groups, scales):
            group["lr"] = lr * scale
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


def place_on_curve(r, lr):
    """Where rate ``lr`` sits on the range test ``r``: the smoothed loss at the first tested rate >= lr and
    the fraction of the fall from the start loss to the minimum made there (None outside the tested rates)."""
    at = next((sm for rate, sm in zip(r["lrs"], r["smoothed"]) if rate >= lr), None)
    if at is None or not math.isfinite(at):
        return {"loss": at, "fall": None}
    drop = r["start_loss"] - r["min_loss"]
    return {"loss": at, "fall": (r["start_loss"] - at) / drop if drop > 0 else None}


def risen_again(r, lr):
    """Whether the smoothed loss at rate ``lr`` is back up by more than a quarter of the test's whole fall
    above the lowest loss of the lower rates (past a minimum, or in a spike)."""
    below = [sm for rate, sm in zip(r["lrs"], r["smoothed"]) if rate < lr and math.isfinite(sm)]
    at = place_on_curve(r, lr)["loss"]
    if not below or at is None:
        return False
    return not math.isfinite(at) or at > min(below) + 0.25 * (r["start_loss"] - r["min_loss"])


def check_learning_rate(ctx):
    """Checklist item 6: where does the recipe's learning rate sit on the range test's curve?"""
    r = lr_range_test(ctx)
    chosen, suggested, diverged = ctx.lr, r["suggested"], r["diverged_at"]
    start = ctx.start_lr
    warms_up = start < chosen
    figures = []
    if ctx.out:
        from .plot import plot_lr_range
        figures.append(plot_lr_range(r, chosen, f"{ctx.out}/lr_range.png", start=start))
    place = place_on_curve(r, start if warms_up else chosen)      # where the recipe's training starts
    here = (f"loss {place['loss']:.3g} there" if place["loss"] is not None and math.isfinite(place["loss"])
            else "beyond the tested curve")
    fell = math.isfinite(r["min_loss"]) and r["min_loss"] < 0.9 * r["start_loss"]
    if place["fall"] is not None and fell:
        here += f", {100 * place['fall']:.0f}% of the fall from {r['start_loss']:.3g} to the minimum"
    div_text = f"loss blew up at {diverged:.2g}" if diverged else f"no blow-up up to {r['lrs'][-1]:.2g}"
    rate = f"the recipe's lr {chosen:.3g}, warming up from {start:.3g}" if warms_up else f"the recipe's lr {chosen:.3g}"
    measured = (f"{rate}: {here}; lowest loss {r['min_loss']:.3g} at {r['lr_at_min']:.3g}; "
                f"{div_text}; {len(r['lrs'])} steps of {r['batch']} samples")
    details = dict(r, chosen=chosen, start_lr=start, loss_at_chosen=place_on_curve(r, chosen)["loss"],
                   loss_at_start_lr=place["loss"], fall_at_start_lr=place["fall"])
    chance = math.log(ctx.num_classes) if ctx.num_classes and ctx.num_classes > 1 else None
    trained = chance is not None and math.isfinite(r["start_loss"]) and r["start_loss"] < 0.5 * chance
    failed = [res.name for res in ctx.results if res.status == FAIL]
    advice = f"use a learning rate near {suggested:.2g} (between it and {r['lr_at_min']:.2g})"
    risen = risen_again(r, start if warms_up else chosen)
    if diverged is not None and chosen >= diverged:
        status, meaning = FAIL, ("the recipe's learning rate is at or past the rate where the loss blows up: "
                                 "training will diverge or thrash")
    elif diverged is None and chosen > r["lrs"][-1]:
        status, meaning = WARN, "the recipe's learning rate is above the whole range tested"
        advice = "test higher rates (Settings(lr_max=...)) or lower the learning rate"
    elif trained and not fell:
        status, meaning = OK, (f"the model is already trained (its loss starts at {r['start_loss']:.3g}, well below "
                               f"chance, ln {ctx.num_classes} = {chance:.3g}): the range test can only climb out of "
                               f"its minimum, so it suggests no rate; the recipe's rate is below the blow-up")
        advice = ""
    elif not fell:
        status, meaning = WARN, "no learning rate in the range lowered the loss much"
        advice = (f"fix the failing checks first ({', '.join(failed)}), then run the range test again" if failed
                  else f"no other check failed: the {len(r['lrs'])} steps may be too few for this model and data; "
                       f"try more (Settings(lr_steps=...)) before changing the learning rate")
    elif diverged is not None and chosen * SAFE_MARGIN > diverged:
        status, meaning = WARN, (f"the recipe's learning rate is less than {SAFE_MARGIN:g}x below the rate where "
                                 f"the loss blows up: training may be unstable")
    elif risen:
        status, meaning = WARN, ("the recipe's training starts at a rate where the test's loss has risen again "
                                 "above what lower rates reached: training may be unstable"
                                 + ("" if warms_up else " (a warm-up from a lower rate would start where it falls)"))
    elif chosen < suggested / 100:
        status, meaning = WARN, "the recipe's learning rate is far below the suggestion: training will crawl"
    elif warms_up:
        status, meaning = OK, (f"the recipe starts at {start:.3g}, where the loss falls, and its peak {chosen:.3g} "
                               + (f"is {diverged / chosen:.0f}x below the blow-up" if diverged else
                                  "is below any blow-up")
                               + ": the warm-up reaches the peak once the network has trained a little")
        advice = ""
    else:
        status, meaning = OK, ("the recipe's learning rate is where the loss falls"
                               + (f", and {diverged / chosen:.0f}x below the blow-up" if diverged else ""))
        advice = ""
    return CheckResult("learning_rate", TITLE, status, chosen / suggested if suggested else None, measured,
                       meaning, advice, details, figures)
