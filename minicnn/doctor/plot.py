"""The doctor's figures (matplotlib, Agg backend chosen inside each function, never at import)."""
import os

import numpy as np

__all__ = ["plot_lr_range", "plot_activations"]


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_lr_range(result, chosen, path, start=None):
    """Smoothed (and raw) loss against the learning rate, log x axis; the lowest loss's rate and the recipe's
    marked (and, for a recipe that warms up, the ``start`` of its warm-up)."""
    plt = _figure()
    lrs = np.asarray(result["lrs"])
    raw, sm = np.asarray(result["loss"], dtype=float), np.asarray(result["smoothed"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    ok = np.isfinite(raw)
    ax.plot(lrs[ok], raw[ok], color="0.75", lw=1, label="loss (each step)")
    ok = np.isfinite(sm)
    ax.plot(lrs[ok], sm[ok], color="C0", lw=2, label="smoothed loss")
    ax.axvline(result["lr_at_min"], color="C2", ls="--", lw=2, label=f"lowest loss at {result['lr_at_min']:.2g}")
    ax.axvline(chosen, color="C3", ls="-", lw=2, label=f"the recipe's lr {chosen:.2g}")
    if start is not None and start < chosen:
        ax.axvline(start, color="C3", ls=":", lw=2, label=f"its warm-up starts at {start:.2g}")
    if result.get("diverged_at"):
        ax.axvline(result["diverged_at"], color="k", ls=":", lw=1.5, label=f"blow-up {result['diverged_at']:.2g}")
    if ok.any():
        finite = sm[ok]
        top = min(float(finite.max()), max(1.2 * float(finite[0]), 4.5 * float(finite.min())))
        if top > 0:
            ax.set_ylim(0, top * 1.05)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"Learning-rate range test: loss vs exponentially growing lr\n"
                 f"({len(lrs)} steps of {result['batch']} samples, the recipe's optimizer)", fontsize=11)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_activations(stats, path, title="Activations through the layers\n(one standardised batch, the model as given)"):
    """Per-layer activation std (log scale, plain tick labels) and, for ReLU layers, the percent of dead units.

    The dead-unit panel is scaled to its largest value (at least 10%) and
    every ReLU bar carries its number, so a healthy network (a few percent)
    still shows readable bars; layers without a ReLU are marked "-".
    """
    plt = _figure()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    names = [s["name"] for s in stats]
    std = np.array([max(s["std"], 1e-30) for s in stats])
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(7, 0.45 * len(names) + 2), 6.5), dpi=100, sharex=True)
    colors = ["C0" if s["weight_layer"] else "0.6" for s in stats]
    x = np.arange(len(names))
    a1.bar(x, std, color=colors)
    a1.set_yscale("log")
    a1.set_ylim(min(float(std.min()), 0.5) / 2, max(float(std.max()), 2.0) * 2)
    a1.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    a1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a1.yaxis.set_minor_formatter(NullFormatter())
    a1.axhline(1.0, color="k", lw=0.8, ls="--")
    a1.set_ylabel("std of the output\n(blue: conv/linear)")
    a1.set_title(title, fontsize=11)
    dead = np.array([100 * s["dead"] if "dead" in s else np.nan for s in stats])
    relu = np.isfinite(dead)
    top = max(10.0, 1.3 * float(np.nanmax(dead))) if relu.any() else 10.0
    a2.bar(x[relu], dead[relu], color="C3")
    for i in x:
        a2.text(i, (dead[i] if relu[i] else 0) + top * 0.02, (f"{dead[i]:.0f}%" if dead[i] >= 10 else f"{dead[i]:.1f}%") if relu[i] else "-",
                ha="center", va="bottom", fontsize=7)
    a2.set_ylim(0, min(100.0, top) if top < 100 else 105)
    a2.set_ylabel("dead ReLU units (%)\n(ReLU layers only)")
    a2.set_xticks(x)
    a2.set_xticklabels([f"{n}\n{s['type']}" for n, s in zip(names, stats)], rotation=90, fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
