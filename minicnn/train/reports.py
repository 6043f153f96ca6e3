"""What a run reports: metrics.csv, the learning curves, the confusion matrix as text and as a plot.

Files are written atomically (a temporary name, then a rename), so a run
stopped at any moment leaves either the previous version or the new one.
"""
import csv
import os

import numpy as np

__all__ = ["METRICS_FIELDS", "write_rows", "write_metrics", "format_report", "plot_curves", "plot_confusion"]

METRICS_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s",
                  "images_per_s"]


def write_rows(path, rows, fieldnames):
    """``rows`` (dicts) as a CSV file with ``fieldnames`` as header, written atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow(row)
    os.replace(tmp, path)


def write_metrics(path, history):
    """One CSV row per epoch of ``history`` (a list of dicts with ``METRICS_FIELDS``)."""
    write_rows(path, history, METRICS_FIELDS)


def format_report(accuracy, confusion, classes):
    """Test accuracy, per-class accuracy and the confusion matrix as text."""
    lines = [f"test accuracy: {100 * accuracy:.2f}% ({np.trace(confusion)}/{confusion.sum()})",
             "per-class accuracy:"]
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    width = max(len(c) for c in classes)
    for name, acc in zip(classes, per_class):
        lines.append(f"  {name:<{width}}  {100 * acc:6.2f}%")
    lines.append("confusion matrix (rows: true, columns: predicted):")
    short = [c[:5] for c in classes]
    lines.append(" " * (width + 2) + " ".join(f"{s:>5}" for s in short))
    for name, row in zip(classes, confusion):
        lines.append(f"  {name:<{width}}" + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)


def plot_curves(history, path):
    """Loss and accuracy per epoch, training and validation, side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], marker=".", label="train")
    ax2.plot(epochs, [100 * h["train_acc"] for h in history], marker=".", label="train")
    if history and history[0].get("val_loss") not in (None, ""):
        ax1.plot(epochs, [h["val_loss"] for h in history], marker=".", label="validation")
        ax2.plot(epochs, [100 * h["val_acc"] for h in history], marker=".", label="validation")
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))     # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)


def plot_confusion(confusion, classes, path):
    """The test confusion matrix, counts in the cells, true classes down, predictions across."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    acc = np.trace(confusion) / max(confusion.sum(), 1)
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix (test accuracy {100 * acc:.2f}%)")
    thresh = confusion.max() / 2 if confusion.size else 0
    for i in range(confusion.shape[0]):
        for j in range(confusion.shape[1]):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > thresh else "black")
    fig.colorbar(im, ax=ax, label="images")
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)


def _atomic_savefig(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
