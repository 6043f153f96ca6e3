"""Accuracy against training time for several runs, from their metrics.csv (docs/13-fast-recipe.md).

    python bench/plot_recipe_curves.py runs/a/metrics.csv "fast recipe" runs/b/metrics.csv "simple_cnn" \
        --out docs/img/fast-recipe-curves.png

Each run is drawn as its validation accuracy after every epoch against the
training time so far (the sum of ``epoch_time_s``; validation and test are
not counted). The runs must have held out validation images (``--val-split``).
"""
import argparse
import csv

import numpy as np


def read_curve(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows or rows[0].get("val_acc", "") == "":
        raise SystemExit(f"{path}: no validation accuracy (train with --val-split N)")
    minutes = np.cumsum([float(r["epoch_time_s"]) for r in rows]) / 60
    return minutes, np.array([100 * float(r["val_acc"]) for r in rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="pairs: metrics.csv label")
    ap.add_argument("--out", default="docs/img/fast-recipe-curves.png")
    ap.add_argument("--title", default="CIFAR-10 on a 2-core CPU: validation accuracy against training time")
    args = ap.parse_args()
    if len(args.runs) % 2:
        raise SystemExit("give pairs of metrics.csv and label")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for path, label in zip(args.runs[::2], args.runs[1::2]):
        minutes, acc = read_curve(path)
        ax.plot(minutes, acc, marker="o", label=f"{label}: {acc[-1]:.1f}% after {minutes[-1]:.1f} min")
    ax.axhline(85, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("training time (minutes, validation not counted)")
    ax.set_ylabel("validation accuracy (%), 5,000 held-out images")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
