"""The doctor's figures (matplotlib, Agg backend chosen inside each function, never at import)."""
import os

import numpy as np

__all__ = ["plot_lr_range", "plot_activations"]


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_lr_range(result, chosen, path):
    """Smoothed (and raw) loss against the learning rate, log x axis, suggested and chosen rates marked."""
    plt = _figure()
    lrs = np.asarray(result["lrs"])
    raw, sm = np.asarray(result["loss"], dtype=float), np.asarray(result["smoothed"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    ok = np.isfinite(raw)
    ax.plot(lrs[ok], raw[ok], color="0.75", lw=1, label="loss (each step)")
    ok = np.isfinite(sm)
    ax.plot(lrs[ok], sm[ok], color="C0", lw=2, label="smoothed loss")
    ax.axvline(result["suggested"], color="C2", ls="--", lw=2, label=f"suggested {result['suggested']:.2g}")
    ax.axvline(chosen, color="C3", ls="-", lw=2, label=f"chosen {chosen:.2g}")
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
    ax.set_title("Learning-rate range test: loss vs exponentially growing lr")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_activations(stats, path, title="Activations through the layers (one standardised batch, the model as given)"):
    """Per-layer activation std (log scale) and, for ReLU layers, the fraction of dead units."""
    plt = _figure()
    names = [s["name"] for s in stats]
    std = np.array([max(s["std"], 1e-30) for s in stats])
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(6, 0.35 * len(names) + 2), 5.5), dpi=100, sharex=True)
    colors = ["C0" if s["weight_layer"] else "0.6" for s in stats]
    a1.bar(range(len(names)), std, color=colors, bottom=0)
    a1.set_yscale("log")
    a1.set_ylim(min(float(std.min()), 0.5) / 2, max(float(std.max()), 2.0) * 2)
    a1.axhline(1.0, color="k", lw=0.8, ls="--")
    a1.set_ylabel("std of the output\n(blue: conv/linear)")
    a1.set_title(title)
    dead = [100 * s.get("dead", np.nan) for s in stats]
    a2.bar(range(len(names)), np.nan_to_num(dead), color="C3")
    a2.set_ylim(0, 100)
    a2.set_ylabel("dead ReLU units (%)")
    a2.set_xticks(range(len(names)))
    a2.set_xticklabels([f"{n}\n{s['type']}" for n, s in zip(names, stats)], rotation=90, fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
