"""Check 1, the data: "you forgot to normalise your data", "you forgot to check your results".

Measures, on the batches read from the training loader:

- the per-channel mean and standard deviation of the images *as the model
  sees them* (after the model's own first ``nn.Normalize`` layer, if it has
  one, as models from ``minicnn.load_model`` do). A network trains best on
  inputs centred at 0 with unit spread; raw 0-255 pixels give activations
  and gradients hundreds of times too large.
- labels: integers in [0, number of classes).
- NaN or infinite pixels (they poison every weight at the first step) and
  constant images (an all-black frame carries no information).
- class balance (from the dataset's labels when the loader exposes them).
- train/test overlap: exact duplicates, by hashing the bytes of a sample of
  images of each split. A test image also in the training set inflates the
  test accuracy.
"""
import hashlib

import numpy as np

from ..backend import to_device
from .report import FAIL, OK, WARN, CheckResult

__all__ = ["check_data"]

TITLE = "Data: normalised inputs, sane labels, no NaN or constant images, no train/test overlap"


def _as_seen(ctx):
    """The sampled images after the model's own Normalize layer (if it starts with one), float64."""
    x = ctx.images.astype(np.float64)
    norm = ctx.first_layer_normalize()
    if norm is not None and x.ndim >= 2 and x.shape[1] == norm.mean.shape[0]:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = (x - norm.mean.numpy().reshape(shape)) / norm.std.numpy().reshape(shape)
    return x


def _dataset_labels(loader):
    ds = getattr(loader, "dataset", None)
    labels = getattr(ds, "labels", None) if ds is not None else None
    try:
        return None if labels is None else np.asarray(labels).reshape(-1)
    except Exception:
        return None


def _hashes(images):
    return {hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images}


def _sample_images(loader, n, seed):
    """Up to ``n`` raw images of ``loader``'s dataset (uint8 when it is a minicnn dataset), else from its batches."""
    from ..data import gather

    ds = getattr(loader, "dataset", None)
    if ds is not None and hasattr(ds, "__len__") and len(ds) > 0:
        idx = np.random.default_rng(seed).permutation(len(ds))[:n]
        return to_device(gather(ds, np.sort(idx))[0], "cpu"), "dataset images"
    images, kept = [], 0
    for batch in loader:
        x = batch[0]
        x = to_device(getattr(x, "data", x), "cpu")   # statistics on the host, whatever the device
        images.append(x)
        kept += len(x)
        if kept >= n:
            break
    return (np.concatenate(images)[:n] if images else np.zeros((0,))), "loader batches"


def _overlap(ctx):
    """(number of sampled test images found in the sampled training images, sizes, source) or None."""
    if ctx.test_loader is None:
        return None
    n = ctx.settings.duplicate_sample
    train, source = _sample_images(ctx.train_loader, n, ctx.settings.seed)
    test, _ = _sample_images(ctx.test_loader, n, ctx.settings.seed + 1)
    if source != "dataset images":           # augmented float batches: compare what the loader gives
        train = ctx.images
    seen = _hashes(train)
    dup = sum(1 for h in _hashes(test) if h in seen)
    return dup, len(train), len(test), source


def check_data(ctx):
    """Checklist item 1: data normalised, labels in range, no NaN/constant images, balance, overlap."""
    x = _as_seen(ctx)
    axes = (0,) + tuple(range(2, x.ndim))
    finite = np.isfinite(x)
    n_bad = int(x.shape[0] - finite.reshape(x.shape[0], -1).all(axis=1).sum())
    xf = np.where(finite, x, 0.0)
    mean, std = xf.mean(axis=axes), xf.std(axis=axes)
    flat = xf.reshape(x.shape[0], -1)
    constant = int((flat.max(axis=1) == flat.min(axis=1)).sum())

    labels = ctx.labels
    k = ctx.num_classes
    int_labels = labels.dtype.kind in "iu" or (labels.size and np.all(labels == np.round(labels)))
    out_of_range = int(((labels < 0) | (labels >= k)).sum()) if labels.size else 0

    all_labels = _dataset_labels(ctx.train_loader)
    label_source = "the dataset" if all_labels is not None else "the sampled batches"
    counts_of = all_labels if all_labels is not None else labels
    counts = np.bincount(np.clip(counts_of.astype(np.int64), 0, k - 1), minlength=k) if counts_of.size else np.zeros(k)
    enough = counts_of.size >= 20 * k          # fewer labels than that: sampling noise, not imbalance
    imbalance = (float(counts.max() / max(counts.min(), 1)) if counts.size else 1.0)

    overlap = _overlap(ctx)

    worst_mean = float(np.max(np.abs(mean)))
    worst_log_std = float(np.max(np.abs(np.log(np.maximum(std, 1e-12)))))
    details = {"channel_mean": mean, "channel_std": std, "samples": int(x.shape[0]),
               "non_finite_images": n_bad, "constant_images": constant, "labels_out_of_range": out_of_range,
               "class_counts": counts, "class_counts_from": label_source, "num_classes": k,
               "seen_after_model_normalize": ctx.first_layer_normalize() is not None}
    fmt = ", ".join
    measured = (f"channel mean [{fmt(f'{m:.3g}' for m in mean)}], std [{fmt(f'{s:.3g}' for s in std)}] "
                f"over {x.shape[0]} images")
    problems, advice, status = [], [], OK

    def flag(level, problem, fix):
        nonlocal status
        if level == FAIL or status == OK:
            status = level
        problems.append(problem)
        advice.append(fix)

    if n_bad:
        flag(FAIL, f"{n_bad} image(s) contain NaN or infinite values", "find and drop the broken files; "
             "one NaN pixel makes every weight NaN after one step")
    if worst_mean > 5 or np.max(std) > 5:
        flag(FAIL, "the inputs are not normalised (they look like raw 0-255 pixels)",
             "divide by 255 and standardise each channel: x = (x - mean) / std with the training set's "
             "per-channel statistics (minicnn.data.channel_stats, transforms.Normalize)")
    elif worst_mean > 0.5 or worst_log_std > np.log(3):
        flag(WARN, "the inputs are far from mean 0 / std 1 per channel",
             "standardise each channel with the training set's mean and std")
    if not int_labels or out_of_range:
        flag(FAIL, f"{out_of_range} label(s) outside [0, {k}) or non-integer labels",
             f"labels must be class indices 0 .. {k - 1}, matching the model's {k} outputs")
    if constant:
        flag(WARN, f"{constant} constant image(s) (every pixel the same)", "check the decoding and the crops")
    if enough and (counts.min() == 0 or imbalance > 3):
        flag(WARN, f"classes are unbalanced (largest/smallest = {imbalance:.1f}, from {label_source})",
             "resample or weight the loss, and report per-class accuracy")
    if overlap is not None:
        dup, n_train, n_test, source = overlap
        details.update(duplicates=dup, duplicate_sample=(n_train, n_test), duplicate_source=source)
        measured += f"; {dup} of {n_test} test images also in {n_train} training images"
        if dup:
            flag(WARN, f"{dup} sampled test image(s) also appear in the training set",
                 "remove exact duplicates from the test set, or the test accuracy is inflated")
    measured += f"; labels {0 if not labels.size else int(labels.min())}..{0 if not labels.size else int(labels.max())} for {k} classes"
    meaning = ("; ".join(problems) if problems else
               "inputs are standardised, labels are valid class indices, no NaN or constant images")
    return CheckResult("data", TITLE, status, worst_mean, measured, meaning, "; ".join(advice), details)
