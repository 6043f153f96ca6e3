"""Image-to-image training on CIFAR-10: denoising, colourisation, reconstruction (``minicnn train-image2image``).

The network (``conv_autoencoder`` or ``unet_small``) gets a corrupted
image and learns to output the original; the loss is the mean squared
error over the pixels::

    x        = a batch of CIFAR-10 images, pixels in [0, 1]       (the target)
    x_in     = corrupt(x)    denoise:     clip(x + sigma * noise, 0, 1),  noise ~ N(0, 1)
                             colorize:    0.299 R + 0.587 G + 0.114 B  (one channel, ITU-R BT.601)
                             reconstruct: x itself (the autoencoder must squeeze it through its bottleneck)
    loss     = mean((model(x_in) - x)^2)

The test set is scored by the mean squared error and the PSNR,
10 log10(1 / MSE) in dB for pixels in [0, 1] (the mean over images of
each image's PSNR), next to the same scores of the corrupted input itself
(the baseline a network has to beat; for colourisation the grey image in
all three channels). A run writes to ``--out``: ``metrics.csv``,
``curves.png``, ``grid.png`` (input, output and target of a few test
images spread over the test set, redrawn after every epoch), ``test.json`` and ``last.npz`` (the
checkpoint: ``minicnn.save``, atomic, no pickle). Ctrl-C or SIGTERM
finishes the step, saves ``last.npz`` and stops; ``--resume`` continues
exactly where it stopped.

Python::

    from minicnn.train.image2image import Image2ImageConfig, train_image2image
    result = train_image2image(Image2ImageConfig(task="denoise", model="unet_small", epochs=2, out="runs/dn"))
    model, cfg = load_image2image("runs/dn/last.npz")
"""
import json
import math
import os
from dataclasses import dataclass, fields

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..backend import get_array_module, to_device
from ..checkpoint import read_checkpoint
from ..data import DataLoader, Subset
from ..errors import TrainingError
from ..models import IMAGE2IMAGE_MODELS
from ..nn import init
from ..optim import Adam
from .datasets import load_datasets
from .loop import fit
from .reports import epoch_axis, pyplot, save_figure
from .run import Run, RunConfig, format_duration

__all__ = ["TASKS", "Image2ImageConfig", "grayscale", "corrupt", "input_channels", "psnr", "evaluate_image2image",
           "train_image2image", "load_image2image", "build_image2image_model",
           "plot_image_rows", "FORMAT"]

TASKS = ("denoise", "colorize", "reconstruct")
FORMAT = "minicnn-image2image-checkpoint"
LUMA = (0.299, 0.587, 0.114)          # ITU-R BT.601 weights of R, G, B
METRICS_FIELDS = ["epoch", "train_loss", "test_mse", "test_psnr", "input_mse", "input_psnr", "epoch_time_s",
                  "images_per_s"]
# What must match between a run and the checkpoint it resumes.
RUN_DEFINING = ("task", "model", "width", "noise_std", "batch_size", "lr", "subset", "seed")


@dataclass
class Image2ImageConfig(RunConfig):
    task: str = "denoise"             # denoise | colorize | reconstruct
    model: str = "unet_small"         # conv_autoencoder | unet_small
    lr: float = 1e-3                  # Adam
    noise_std: float = 0.1            # sigma of the denoising task's noise, pixels in [0, 1]
    width: int = None                 # the model's base width (default: the model's own)
    subset: int = None                # train on only N images
    test_subset: int = None           # test on only N images
    grid_images: int = 8              # test images shown in grid.png
    out: str = "runs/image2image"


# ------------------------------------------------------------------ the task
def grayscale(images):
    """(N, 3, H, W) -> (N, 1, H, W): Y = 0.299 R + 0.587 G + 0.114 B (raw arrays)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"grayscale: expected RGB images (N, 3, H, W), got shape {tuple(images.shape)}")
    r, g, b = LUMA
    return (r * images[:, 0:1] + g * images[:, 1:2] + b * images[:, 2:3]).astype(images.dtype)


def corrupt(images, task, rng, noise_std=0.1):
    """The network's input for ``task`` from clean images in [0, 1] (a raw array, same device).

    ``rng`` (a ``numpy.random.Generator``) draws the denoising noise.
    """
    if task == "denoise":
        xp = get_array_module(images)
        noise = xp.asarray(rng.standard_normal(images.shape), dtype=images.dtype)
        return xp.clip(images + images.dtype.type(noise_std) * noise, 0.0, 1.0)
    if task == "colorize":
        return grayscale(images)
    if task == "reconstruct":
        return images
    raise ValueError(f"corrupt: task must be one of {', '.join(TASKS)}, got {task!r}")


def input_channels(task, channels=3):
    """Channels of the network's input: 1 for colourisation (grey in, colour out), else the image's."""
    return 1 if task == "colorize" else channels


def psnr(mse, peak=1.0):
    """Peak signal-to-noise ratio in dB: 10 log10(peak^2 / mse) (inf for mse = 0)."""
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(peak ** 2 / mse)


def _as_input_baseline(x_in, channels):
    """The corrupted input as an image of the target's channels (grey repeated for colourisation)."""
    if x_in.shape[1] == channels:
        return x_in
    return get_array_module(x_in).repeat(x_in, channels, axis=1)


def build_image2image_model(name, task, channels=3, width=None):
    """The network ``name`` of ``IMAGE2IMAGE_MODELS`` for ``task``: input_channels(task) in, ``channels`` out."""
    if name not in IMAGE2IMAGE_MODELS:
        raise TrainingError(f"--model {name!r}: unknown image-to-image model; choose one of: "
                            f"{', '.join(IMAGE2IMAGE_MODELS)}")
    kwargs = {} if width is None else {"width": int(width)}
    return IMAGE2IMAGE_MODELS[name](input_channels(task, channels), channels, **kwargs)


def evaluate_image2image(model, loader, task, noise_std=0.1, seed=0):
    """Scores on ``loader``'s images: ``{mse, psnr, input_mse, input_psnr, images}``.

    ``mse``: mean squared error over every pixel of every image; ``psnr``: the
    mean over images of each image's PSNR. ``input_*``: the same scores of
    the corrupted input (None for ``reconstruct``, where it is the target).
    Noise is drawn from ``(seed, batch index)``: the same for every call.
    The model runs in eval mode; its mode is restored.
    """
    was_training = model.training
    model.eval()
    sq, sq_in, ps, ps_in, n, pixels = 0.0, 0.0, 0.0, 0.0, 0, 0
    try:
        with no_grad():
            for k, (x, _) in enumerate(loader):
                x = x.data
                x_in = corrupt(x, task, np.random.default_rng([seed, 99, k]), noise_std)
                y = model(Tensor(x_in)).data
                per_image = ((y - x) ** 2).reshape(len(x), -1).mean(axis=1)
                base = ((_as_input_baseline(x_in, x.shape[1]) - x) ** 2).reshape(len(x), -1).mean(axis=1)
                per_image, base = (np.asarray(to_device(a, "cpu"), dtype=np.float64) for a in (per_image, base))
                sq += per_image.sum()
                sq_in += base.sum()
                ps += np.minimum(psnr(per_image), 100.0).sum()        # a perfect image counts as 100 dB
                ps_in += np.minimum(psnr(base), 100.0).sum()
                n += len(per_image)
                pixels += per_image.size
    finally:
        model.train(was_training)
    out = {"mse": sq / n, "psnr": ps / n, "images": n, "input_mse": sq_in / n, "input_psnr": ps_in / n}
    if task == "reconstruct":
        out["input_mse"] = out["input_psnr"] = None
    return out


# ------------------------------------------------------------------ figures
def _to_hwc(images):
    """(N, C, H, W) raw array in [0, 1] -> NumPy (N, H, W, 3) for imshow (grey repeated)."""
    a = np.asarray(to_device(images, "cpu"), dtype=np.float64)
    a = np.clip(a, 0.0, 1.0).transpose(0, 2, 3, 1)
    return np.repeat(a, 3, axis=3) if a.shape[3] == 1 else a


def plot_image_rows(rows, labels, path, title):
    """Rows of images (each a (N, C, H, W) array in [0, 1]) with a label per row, saved atomically as PNG."""
    plt = pyplot()

    rows = [_to_hwc(r) for r in rows]
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n + 1.2, 1.3 * len(rows) + 0.5), squeeze=False)
    for i, (row, label) in enumerate(zip(rows, labels)):
        for j in range(n):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def _plot_curves(history, path, task):
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    a1.plot(epochs, [h["test_mse"] for h in history], marker="o", label="test")
    a1.set(ylabel="mean squared error", title=f"{task}: reconstruction error",
           ylim=(0, 1.15 * max([h["train_loss"] for h in history] + [h["test_mse"] for h in history], default=1)))
    a2.plot(epochs, [h["test_psnr"] for h in history], marker="o", label="network output")
    if history and history[0].get("input_psnr") not in (None, ""):
        a2.plot(epochs, [h["input_psnr"] for h in history], ls="--", marker="x", label="corrupted input (baseline)")
    a2.set(ylabel="PSNR (dB)", title="test PSNR (higher is better)")
    for ax in (a1, a2):
        epoch_axis(ax, epochs)
        ax.legend()
    save_figure(fig, path)


# ------------------------------------------------------------------ training
def _check(cfg):
    if cfg.task not in TASKS:
        raise TrainingError(f"--task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    if cfg.model not in IMAGE2IMAGE_MODELS:
        raise TrainingError(f"--model {cfg.model!r}: unknown image-to-image model; choose one of: "
                            f"{', '.join(IMAGE2IMAGE_MODELS)}")
    for name in ("epochs", "batch_size", "lr", "grid_images"):
        if not getattr(cfg, name) > 0:
            raise TrainingError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    for name in ("width", "subset", "test_subset"):
        v = getattr(cfg, name)
        if v is not None and not v > 0:
            raise TrainingError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if not cfg.noise_std >= 0:
        raise TrainingError(f"--noise-std must be >= 0, got {cfg.noise_std}")
    if cfg.seed < 0:
        raise TrainingError(f"--seed must be >= 0, got {cfg.seed}")


def _subset(dataset, n, seed):
    if n is None or n >= len(dataset):
        return dataset
    return Subset(dataset, np.sort(np.random.default_rng(seed).permutation(len(dataset))[:n]))


def load_image2image(path, device="cpu"):
    """``(model, config)`` from a checkpoint of ``train_image2image``; the model in eval mode on ``device``."""
    ckpt = read_checkpoint(path, FORMAT, "an image-to-image checkpoint")
    cfg = Image2ImageConfig(**{k: v for k, v in json.loads(ckpt["config"]).items()
                               if k in {f.name for f in fields(Image2ImageConfig)}})
    model = build_image2image_model(cfg.model, cfg.task, int(ckpt["channels"]), cfg.width)
    model.load_state_dict(ckpt["model"])
    model.to(device)
    model.eval()
    return model, cfg


def train_image2image(cfg, log=print):
    """Train and test one image-to-image run (see the module docstring); returns the test scores (a dict).

    Each epoch is ``fit`` (the classifier's loop) on (corrupted, clean)
    pairs with the mean squared error, inside a ``Run`` (the folder,
    Ctrl-C/SIGTERM, last.npz, exact resuming, metrics.csv). Returns None
    when stopped by Ctrl-C / SIGTERM (``last.npz`` is saved).
    """
    _check(cfg)
    run = Run(cfg, FORMAT, "an image-to-image checkpoint", RUN_DEFINING, METRICS_FIELDS, log=log)
    train_set, test_set, desc = load_datasets(cfg.data, progress=cfg.progress)
    channels = int(train_set[0][0].shape[0])
    if cfg.task == "colorize" and channels != 3:
        raise TrainingError(f"--task colorize needs RGB images, the data has {channels} channel(s)")
    train_set = _subset(train_set, cfg.subset, cfg.seed)
    test_set = _subset(test_set, cfg.test_subset, cfg.seed + 1)
    init.manual_seed(cfg.seed)
    model = build_image2image_model(cfg.model, cfg.task, channels, cfg.width).to(cfg.device)
    optimizer = Adam(model.parameters(), lr=cfg.lr)
    loader = DataLoader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, device=cfg.device)
    test_loader = DataLoader(test_set, cfg.batch_size, device=cfg.device)
    spread = np.unique(np.linspace(0, len(test_set) - 1, min(cfg.grid_images, len(test_set))).astype(int))
    grid_x = next(iter(DataLoader(Subset(test_set, spread), len(spread), device=cfg.device, prefetch=False)))[0].data
    run.track(channels=channels, model=model, optimizer=optimizer)
    log(f"{cfg.task} with {cfg.model} ({model.num_parameters():,} parameters): {len(train_set):,} training and "
        f"{len(test_set):,} test images from {desc}; {cfg.epochs} epochs of {len(loader)} steps on {cfg.device}")

    def pairs(epoch):
        """(corrupted input, clean target) batches; the noise of step k of epoch e is seeded by (seed, e, k)."""
        for x, _ in run.batches(loader, show=lambda p: {"loss": f"{p['loss_sum'] / p['seen']:.4f}"}):
            x_in = corrupt(x.data, cfg.task, np.random.default_rng([cfg.seed, epoch, run.step]), cfg.noise_std)
            yield Tensor(x_in), x

    def after_step(output, target, loss):
        value = float(loss.item())
        if not math.isfinite(value):
            raise TrainingError(f"the loss became {value} at epoch {run.epoch + 1}, step {run.step + 1}; "
                                f"try a smaller --lr")
        run.add(loss_sum=value * len(target), seen=len(target))

    with run:
        for epoch in run.epochs():
            batches = pairs(epoch)
            try:
                fit(model, batches, optimizer, F.mse_loss, epochs=1, on_step=after_step)
            finally:
                batches.close()
            elapsed = run.partial["elapsed"]
            scores = evaluate_image2image(model, test_loader, cfg.task, cfg.noise_std, cfg.seed)
            row = {"epoch": epoch + 1, "train_loss": run.partial["loss_sum"] / max(run.partial["seen"], 1),
                   "test_mse": scores["mse"], "test_psnr": scores["psnr"],
                   "input_mse": scores["input_mse"] if scores["input_mse"] is not None else "",
                   "input_psnr": scores["input_psnr"] if scores["input_psnr"] is not None else "",
                   "epoch_time_s": round(elapsed, 2),
                   "images_per_s": round(run.partial["seen"] / max(elapsed, 1e-9), 1)}
            line = (f"epoch {epoch + 1:3d}/{cfg.epochs}  train mse {row['train_loss']:.5f}  test mse "
                    f"{scores['mse']:.5f}  PSNR {scores['psnr']:.2f} dB")
            if scores["input_psnr"] is not None:
                line += f" (input {scores['input_psnr']:.2f} dB)"
            run.end_epoch(row, line + f"  {format_duration(elapsed)}")
            _plot_curves(run.history, os.path.join(cfg.out, "curves.png"), cfg.task)
            _write_grid(model, grid_x, cfg, os.path.join(cfg.out, "grid.png"), epoch + 1, scores)
    if run.interrupted:
        return None
    scores = evaluate_image2image(model, test_loader, cfg.task, cfg.noise_std, cfg.seed)
    if not run.history:
        _write_grid(model, grid_x, cfg, os.path.join(cfg.out, "grid.png"), run.epoch, scores)
    result = {"task": cfg.task, "model": cfg.model, "epochs": run.epoch, "test_mse": scores["mse"],
              "test_psnr": scores["psnr"], "input_mse": scores["input_mse"], "input_psnr": scores["input_psnr"],
              "test_images": scores["images"]}
    tmp = os.path.join(cfg.out, "test.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, os.path.join(cfg.out, "test.json"))
    base = f" (the corrupted input: {scores['input_psnr']:.2f} dB)" if scores["input_psnr"] is not None else ""
    log(f"test: mse {scores['mse']:.5f}, PSNR {scores['psnr']:.2f} dB{base} on {scores['images']:,} images; "
        f"wrote {cfg.out}/grid.png, curves.png, metrics.csv, test.json, last.npz")
    return result


def _write_grid(model, x, cfg, path, epoch, scores):
    """Input, output and target of the first test images, after ``epoch`` epochs."""
    was_training = model.training
    model.eval()
    try:
        x_in = corrupt(x, cfg.task, np.random.default_rng([cfg.seed, 99, 0]), cfg.noise_std)
        with no_grad():
            y = model(Tensor(x_in)).data
    finally:
        model.train(was_training)
    what = {"denoise": f"noisy (sigma {cfg.noise_std:g})", "colorize": "grey", "reconstruct": "input"}[cfg.task]
    plot_image_rows([x_in, y, x], [what, "output", "original"], path,
                    f"{cfg.task} with {cfg.model}, after {epoch} epoch(s): test PSNR {scores['psnr']:.2f} dB")
