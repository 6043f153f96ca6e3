"""What a run reports: metrics.csv, the learning curves, the confusion matrix as text and as a plot.

Files are written atomically (a temporary name, then a rename), so a run
stopped at any moment leaves either the previous version or the new one.
"""
import csv
import os

import numpy as np

__all__ = ["METRICS_FIELDS", "write_rows", "write_metrics", "format_report", "plot_curves", "curves_figure", "plot_confusion",
           "pyplot", "save_figure", "epoch_axis"]

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
    """Loss and accuracy per epoch, training and validation, side by side (``curves_figure``), saved as PNG."""
    save_figure(curves_figure(history), path)


def curves_figure(history):
    """The figure of ``plot_curves``, readable from the first epoch on: a dot at every epoch, the last
    values written beside them, whole-number epoch ticks, the loss from 0, the accuracy within 0-100%."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()

    epochs = [h["epoch"] for h in history]
    with_val = bool(history) and history[0].get("val_loss") not in (None, "")
    curves = {"loss": [("train", [h["train_loss"] for h in history])],
              "acc": [("train", [100 * h["train_acc"] for h in history])]}
    if with_val:
        curves["loss"].append(("validation", [h["val_loss"] for h in history]))
        curves["acc"].append(("validation", [100 * h["val_acc"] for h in history]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, fmt in ((ax1, "loss", "{:.3f}"), (ax2, "acc", "{:.1f}%")):
        for label, values in curves[key]:
            line, = ax.plot(epochs, values, marker="o", label=label)
            if values:
                ax.annotate(fmt.format(values[-1]), (epochs[-1], values[-1]), xytext=(6, 0),
                            textcoords="offset points", va="center", fontsize=8, color=line.get_color())
        epoch_axis(ax, epochs, room=0.15)      # (room for the labels)
    every = [v for _, values in curves["loss"] for v in values]
    ax1.set_ylim(0, 1.15 * max(every, default=1.0))
    every = [v for _, values in curves["acc"] for v in values]
    ax2.set_ylim(max(0.0, min(every, default=0.0) - 10), min(101.0, max(every, default=100.0) + 10))
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax1.legend()
    ax2.legend()
    return fig


def plot_confusion(confusion, classes, path):
    """The test confusion matrix, counts in the cells, true classes down, predictions across."""
    plt = pyplot()

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
    save_figure(fig, path)


def epoch_axis(ax, epochs, room=0.0):
    """An x axis of epochs that reads well from the first epoch on: whole-number ticks, from 0.5 to the
    last epoch + 0.5 (plus ``room`` times the epochs, for labels), a light grid."""
    from matplotlib.ticker import MaxNLocator

    last = max(epochs, default=1)
    ax.set_xlim(0.5, last + 0.5 + room * last)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: figures are written to files, never shown."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path):
    """Lay ``fig`` out, write it to ``path`` as PNG atomically (a temporary name, then a rename), close it."""
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    pyplot().close(fig)
