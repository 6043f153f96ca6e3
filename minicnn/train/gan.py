"""Generative adversarial networks: the DCGAN training loop (``minicnn gan``).

Goodfellow et al., "Generative Adversarial Nets", NIPS 2014; Radford, Metz &
Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks" (DCGAN), ICLR 2016.

A generator G turns noise z ~ N(0, I) into an image; a discriminator D
gives each image a logit, sigmoid(D(x)) = its probability of being real.
They are trained in turns, one step each per batch (``gan_step``)::

    fake = G(z)
    D step:  L_D = BCE(D(x_real), 1) + BCE(D(fake), 0)    (fake detached: no gradient into G)
    G step:  L_G = BCE(D(fake), 1)                          (D's new weights; only G is updated)

with BCE(l, y) = -(y log sigmoid(l) + (1 - y) log(1 - sigmoid(l))), the
binary cross-entropy of a logit l. The G step is the "non-saturating"
loss of Goodfellow et al. (maximise log D(G(z)) rather than minimise
log(1 - D(G(z))), whose gradient vanishes while D easily spots fakes).
DCGAN's recipe: Adam with lr 2e-4 and beta1 = 0.5 for both, batch 128,
weights from N(0, 0.02), images scaled to [-1, 1].

A run (``train_gan``) writes to ``--out``: ``samples_epochNNN.png`` (the
images of one fixed noise batch after each epoch, so the epochs can be
compared), ``metrics.csv`` (per epoch: both losses and the mean D(x) on
real and on fake images), ``losses.png``, ``interpolation.png`` (images
along the line between noise vectors) and ``last.npz`` (G, D, both
optimizers, the fixed noise; written by the ``Run``, atomic, no pickle).
Ctrl-C / SIGTERM saves it; ``--resume`` continues exactly.
"""
import json
import math
import os
from dataclasses import dataclass, fields

import numpy as np

from ..autograd import Function, Tensor, no_grad
from ..backend import get_array_module, to_device
from ..checkpoint import read_checkpoint
from ..data import DataLoader, Subset
from ..errors import TrainingError
from ..models import dcgan_discriminator, dcgan_generator
from ..nn import init
from ..optim import Adam
from .datasets import load_datasets
from .reports import pyplot, save_figure
from .run import Run, RunConfig, format_duration

__all__ = ["GANConfig", "BCEWithLogits", "bce_with_logits", "discriminator_loss", "generator_loss", "gan_step", "interpolate",
           "sample", "train_gan", "load_generator", "plot_samples", "plot_interpolation", "plot_losses", "FORMAT"]

FORMAT = "minicnn-gan-checkpoint"
METRICS_FIELDS = ["epoch", "loss_d", "loss_g", "d_real", "d_fake", "epoch_time_s", "images_per_s"]
RUN_DEFINING = ("nz", "width", "batch_size", "lr", "beta1", "classes", "subset", "seed")


@dataclass
class GANConfig(RunConfig):
    lr: float = 2e-4                  # Adam, both networks (DCGAN)
    beta1: float = 0.5                # Adam's beta1 (DCGAN: 0.5 instead of 0.9 steadies training)
    nz: int = 100                     # size of the noise vector
    width: int = 32                   # g = d: channels of the generator's last / discriminator's first layer
    classes: str = None               # train on these classes only (comma-separated names), e.g. "horse"
    subset: int = None                # train on only N images
    samples: int = 64                 # images in each sample grid
    out: str = "runs/dcgan"


# ------------------------------------------------------------------ losses and one step
class BCEWithLogits(Function):
    """Mean binary cross-entropy of logits against labels, as one op.

    Forward, for logits l (any shape, N elements) and labels y (same shape):

        BCE = (1/N) sum_i [ max(l_i, 0) - l_i y_i + log(1 + exp(-|l_i|)) ]

    which equals -(1/N) sum_i [ y_i log s_i + (1 - y_i) log(1 - s_i) ],
    s = sigmoid(l), without overflow for any l. Backward (smooth
    everywhere, also at l = 0 where max and |.| have kinks that cancel):

        dBCE/dl_i = (sigmoid(l_i) - y_i) / N

    The labels get no gradient.
    """

    def forward(self, logits, labels):
        xp = get_array_module(logits)
        self.logits, self.labels = logits, labels
        per = xp.maximum(logits, 0) - logits * labels + xp.log1p(xp.exp(-xp.abs(logits)))
        return xp.asarray(per.mean(), dtype=logits.dtype)

    def backward(self, grad):
        xp = get_array_module(self.logits)
        s = 1.0 / (1.0 + xp.exp(-self.logits))
        return (grad * (s - self.labels) / self.logits.size).astype(self.logits.dtype), None


def bce_with_logits(logits, target):
    """Mean binary cross-entropy of logits l against a label y in {0, 1} (a number, or one per logit).

    BCE(l, y) = -(y log s + (1 - y) log(1 - s)), s = sigmoid(l); see
    ``BCEWithLogits`` for the overflow-free form and the gradient
    (sigmoid(l) - y) / N.
    """
    if not isinstance(logits, Tensor):
        logits = Tensor(logits)
    y = target.data if isinstance(target, Tensor) else target
    y = logits.xp.broadcast_to(logits.xp.asarray(y, dtype=logits.dtype), logits.shape)
    return BCEWithLogits.apply(logits, y)


def discriminator_loss(D, real, fake):
    """L_D = BCE(D(real), 1) + BCE(D(fake), 0); ``fake`` should be detached (the D step leaves G alone)."""
    return bce_with_logits(D(real), 1.0) + bce_with_logits(D(fake), 0.0)


def generator_loss(D, fake):
    """L_G = BCE(D(fake), 1): the non-saturating generator loss, -mean log sigmoid(D(G(z)))."""
    return bce_with_logits(D(fake), 1.0)


def gan_step(G, D, opt_G, opt_D, real, z):
    """One alternating update: a D step on (real, G(z)), then a G step through the updated D.

    ``real``: a batch of images (Tensor or array, in G's output range);
    ``z``: noise (N, nz). Returns floats: ``loss_d``, ``loss_g``, and
    ``d_real`` / ``d_fake``, the mean sigmoid(D(.)) on the real and the
    fake images before the D step (0.5 each at the balance point).
    """
    real = real if isinstance(real, Tensor) else Tensor(real)
    z = z if isinstance(z, Tensor) else Tensor(z)
    fake = G(z)
    # D step: only D's optimizer steps; fake.detach() keeps G out of this graph.
    logit_real, logit_fake = D(real), D(fake.detach())
    loss_d = bce_with_logits(logit_real, 1.0) + bce_with_logits(logit_fake, 0.0)
    opt_D.zero_grad()
    loss_d.backward()
    opt_D.step()
    # G step: gradients flow through D (its parameters' grads are cleared at its next step).
    loss_g = generator_loss(D, fake)
    opt_G.zero_grad()
    loss_g.backward()
    opt_G.step()
    xp = logit_real.xp
    sig = lambda l: float(xp.mean(1.0 / (1.0 + xp.exp(-l.data.astype(xp.float64)))))   # noqa: E731
    return {"loss_d": float(loss_d.item()), "loss_g": float(loss_g.item()),
            "d_real": sig(logit_real), "d_fake": sig(logit_fake)}


def sample(G, z, batch_stats=True):
    """Images G(z), pixels mapped from [-1, 1] to [0, 1]; G is left exactly as it was.

    ``batch_stats=True`` normalises with the statistics of this batch of z
    (training-mode batchnorm, as DCGAN implementations sample): the running
    averages lag behind a generator that changes at every step. The running
    statistics are put back afterwards, and G's mode restored.
    ``batch_stats=False`` uses the running statistics (eval mode).
    """
    was_training = G.training
    saved = [(b, b.data.copy()) for _, b in G.named_buffers()]
    G.train(bool(batch_stats))
    try:
        with no_grad():
            y = G(z if isinstance(z, Tensor) else Tensor(z)).data
    finally:
        for b, data in saved:
            b.data = data
        G.train(was_training)
    return (y + 1.0) / 2.0


def interpolate(G, z0, z1, steps=8, batch_stats=True):
    """Images along the straight line from noise ``z0`` to ``z1`` (each (nz,) or (1, nz)): (steps, C, H, W) in [0, 1].

    z(t) = (1 - t) z0 + t z1 for t = 0, 1/(steps-1), ..., 1. Smooth changes
    from one image to the next mean G has learnt a smooth map, not a lookup
    table of training images (Radford et al., section 6.1). ``batch_stats``:
    as in ``sample`` (the ``steps`` images form the batch).
    """
    if steps < 2:
        raise ValueError(f"interpolate: steps must be >= 2, got {steps}")
    z0, z1 = (np.asarray(to_device(getattr(z, "data", z), "cpu"), dtype=np.float64).reshape(-1) for z in (z0, z1))
    if z0.shape != z1.shape:
        raise ValueError(f"interpolate: z0 and z1 differ in shape: {z0.shape} vs {z1.shape}")
    t = np.linspace(0.0, 1.0, steps)[:, None]
    zs = (1 - t) * z0 + t * z1
    p = next(iter(G.parameters()))
    return sample(G, Tensor(p.xp.asarray(zs, dtype=p.dtype)), batch_stats)


# ------------------------------------------------------------------ figures
def _mosaic(images, cols):
    """(N, C, H, W) in [0, 1] -> one (rows*H + gaps, cols*W + gaps, 3) NumPy image, 1-pixel white gaps."""
    a = np.clip(np.asarray(to_device(images, "cpu"), dtype=np.float64), 0, 1).transpose(0, 2, 3, 1)
    if a.shape[3] == 1:
        a = np.repeat(a, 3, axis=3)
    n, h, w, _ = a.shape
    rows = -(-n // cols)
    out = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1, 3))
    for k in range(n):
        i, j = divmod(k, cols)
        out[i * (h + 1):i * (h + 1) + h, j * (w + 1):j * (w + 1) + w] = a[k]
    return out


def plot_samples(images, path, title):
    """A square-ish grid of generated images (N, C, H, W) in [0, 1], titled, saved as PNG."""
    plt = pyplot()

    cols = int(math.ceil(math.sqrt(len(images))))
    fig, ax = plt.subplots(figsize=(6, 6.4))
    ax.imshow(_mosaic(images, cols), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def plot_interpolation(rows, path, title):
    """Each row: the images of one interpolation (steps, C, H, W); z0 on the left, z1 on the right."""
    plt = pyplot()

    steps = len(rows[0])
    fig, ax = plt.subplots(figsize=(1.0 * steps + 0.5, 1.0 * len(rows) + 0.8))
    ax.imshow(_mosaic(np.concatenate([np.asarray(to_device(r, "cpu")) for r in rows]), steps),
              interpolation="nearest")
    ax.set_xticks([(k + 0.5) * (rows[0].shape[3] + 1) for k in range(steps)],
                  [f"{t:.2g}" for t in np.linspace(0, 1, steps)])
    ax.set_yticks([])
    ax.set_xlabel("t in z = (1 - t) z0 + t z1")
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def plot_losses(history, steps, path):
    """Per-step losses of D and G (thin) with per-epoch means (dots), and mean D(x) on real / fake images."""
    plt = pyplot()

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        s = np.asarray(steps, dtype=np.float64)          # columns: global step, loss_d, loss_g, d_real, d_fake
        a1.plot(s[:, 0], s[:, 1], lw=0.5, alpha=0.5, color="C0")
        a1.plot(s[:, 0], s[:, 2], lw=0.5, alpha=0.5, color="C1")
        a2.plot(s[:, 0], s[:, 3], lw=0.5, alpha=0.5, color="C2")
        a2.plot(s[:, 0], s[:, 4], lw=0.5, alpha=0.5, color="C3")
    ends = [h["end_step"] for h in history]
    a1.plot(ends, [h["loss_d"] for h in history], "o-", color="C0", label="discriminator L_D")
    a1.plot(ends, [h["loss_g"] for h in history], "o-", color="C1", label="generator L_G")
    a1.set(xlabel="step", ylabel="binary cross-entropy", title="losses (dots: epoch means)")
    a2.plot(ends, [h["d_real"] for h in history], "o-", color="C2", label="on real images")
    a2.plot(ends, [h["d_fake"] for h in history], "o-", color="C3", label="on generated images")
    a2.axhline(0.5, color="gray", ls=":", lw=1)
    a2.set(xlabel="step", ylabel="mean sigmoid(D(x))", title="the discriminator's belief 'real'", ylim=(0, 1))
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


# ------------------------------------------------------------------ training
def _check(cfg):
    for name in ("epochs", "batch_size", "lr", "nz", "width", "samples"):
        if not getattr(cfg, name) > 0:
            raise TrainingError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.beta1 < 1.0:
        raise TrainingError(f"--beta1 must be in [0, 1), got {cfg.beta1}")
    if cfg.subset is not None and not cfg.subset > 0:
        raise TrainingError(f"--subset must be positive, got {cfg.subset}")
    if cfg.seed < 0:
        raise TrainingError(f"--seed must be >= 0, got {cfg.seed}")


def _training_images(cfg):
    train, _, desc = load_datasets(cfg.data, progress=cfg.progress, splits=("train",))
    if tuple(train[0][0].shape[1:]) != (32, 32):
        raise TrainingError(f"DCGAN here makes 32x32 images; the data's images are {tuple(train[0][0].shape[1:])}")
    keep = np.arange(len(train))
    if cfg.classes:
        names = [c.strip() for c in cfg.classes.split(",") if c.strip()]
        unknown = [c for c in names if c not in list(train.classes)]
        if unknown:
            raise TrainingError(f"--classes: {', '.join(unknown)} not in the data's classes "
                                f"({', '.join(train.classes)})")
        labels = np.asarray([train[i][1] for i in range(len(train))]) if not hasattr(train, "labels") \
            else np.asarray(train.labels)
        keep = np.flatnonzero(np.isin(labels, [list(train.classes).index(c) for c in names]))
    if cfg.subset is not None and cfg.subset < len(keep):
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(keep)[:cfg.subset])
    data = train if len(keep) == len(train) else Subset(train, keep)
    return data, desc


def _to_tanh_range(images, rng=None):
    """Transform for the DataLoader: uint8 pixels -> float32 in [-1, 1] (the generator's tanh range)."""
    return images.astype("float32") * np.float32(2.0 / 255.0) - np.float32(1.0)


def load_generator(path, device="cpu"):
    """``(G, config)`` from a ``minicnn gan`` checkpoint; G in eval mode on ``device`` (outputs in [-1, 1])."""
    ckpt = read_checkpoint(path, FORMAT, "a GAN checkpoint")
    cfg = GANConfig(**{k: v for k, v in json.loads(ckpt["config"]).items()
                       if k in {f.name for f in fields(GANConfig)}})
    G = dcgan_generator(cfg.nz, cfg.width, int(ckpt["channels"]))
    G.load_state_dict(ckpt["generator"])
    G.to(device)
    G.eval()
    return G, cfg


def train_gan(cfg, log=print):
    """Train a DCGAN (see the module docstring); returns the last epoch's metrics row, or None if interrupted.

    One epoch is a loop of ``gan_step`` over the batches, inside a ``Run``
    (the folder, Ctrl-C/SIGTERM, last.npz, exact resuming, metrics.csv).
    """
    _check(cfg)
    run = Run(cfg, FORMAT, "a GAN checkpoint", RUN_DEFINING, METRICS_FIELDS, log=log)
    data, desc = _training_images(cfg)
    if len(data) < cfg.batch_size:
        raise TrainingError(f"--batch-size {cfg.batch_size} is larger than the {len(data)} training images")
    channels = int(data[0][0].shape[0])
    init.manual_seed(cfg.seed)
    G = dcgan_generator(cfg.nz, cfg.width, channels).to(cfg.device)
    D = dcgan_discriminator(cfg.width, channels).to(cfg.device)
    opt_G = Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_D = Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    loader = DataLoader(data, cfg.batch_size, shuffle=True, drop_last=True, transform=_to_tanh_range,
                        seed=cfg.seed, device=cfg.device)
    dtype, xp = G.net.up1.weight.dtype, G.net.up1.weight.xp
    fixed = (np.asarray(run.checkpoint["fixed_noise"]) if run.resumed
             else np.random.default_rng([cfg.seed, 7]).standard_normal((cfg.samples, cfg.nz)))
    steps = [list(r) for r in np.asarray(run.checkpoint["steps"]).tolist()] if run.resumed else []  # for losses.png
    run.track(channels=channels, generator=G, discriminator=D, opt_g=opt_G, opt_d=opt_D, fixed_noise=fixed,
              steps=lambda: np.asarray(steps, dtype=np.float64).reshape(-1, 5))
    fixed_z = Tensor(xp.asarray(fixed, dtype=dtype))
    log(f"DCGAN: G {G.num_parameters():,} and D {D.num_parameters():,} parameters, {len(data):,} training "
        f"images from {desc}; {cfg.epochs} epochs of {len(loader)} steps (batch {cfg.batch_size}) on {cfg.device}")

    def show(p):
        return {"loss_d": f"{p['loss_d'] / p['n']:.3f}", "loss_g": f"{p['loss_g'] / p['n']:.3f}"}

    with run:
        for epoch in run.epochs():
            G.train()
            D.train()
            for real, _ in run.batches(loader, show):
                z = np.random.default_rng([cfg.seed, epoch, run.step]).standard_normal((len(real), cfg.nz))
                out = gan_step(G, D, opt_G, opt_D, real, Tensor(xp.asarray(z, dtype=dtype)))
                if not (math.isfinite(out["loss_d"]) and math.isfinite(out["loss_g"])):
                    raise TrainingError(f"a loss became non-finite at epoch {epoch + 1}, step {run.step + 1} "
                                        f"({out}); try a smaller --lr")
                run.add(n=1, **out)
                steps.append([epoch * len(loader) + run.step + 1, out["loss_d"], out["loss_g"], out["d_real"],
                              out["d_fake"]])
            p, elapsed = run.partial, run.partial["elapsed"]
            row = {"epoch": epoch + 1, **{k: p[k] / p["n"] for k in ("loss_d", "loss_g", "d_real", "d_fake")},
                   "epoch_time_s": round(elapsed, 2), "images_per_s": round(p["n"] * cfg.batch_size / max(elapsed, 1e-9), 1),
                   "end_step": (epoch + 1) * len(loader)}
            run.end_epoch(row, f"epoch {epoch + 1:3d}/{cfg.epochs}  L_D {row['loss_d']:.3f}  L_G {row['loss_g']:.3f}  "
                               f"D(real) {row['d_real']:.2f}  D(fake) {row['d_fake']:.2f}  {format_duration(elapsed)}")
            plot_losses(run.history, steps, os.path.join(cfg.out, "losses.png"))
            plot_samples(sample(G, fixed_z), os.path.join(cfg.out, f"samples_epoch{epoch + 1:03d}.png"),
                         f"DCGAN samples after epoch {epoch + 1} (the same {cfg.samples} noise vectors every epoch)")
    if run.interrupted:
        return None
    rng = np.random.default_rng([cfg.seed, 11])
    rows = [interpolate(G, rng.standard_normal(cfg.nz), rng.standard_normal(cfg.nz), 10) for _ in range(6)]
    plot_interpolation(rows, os.path.join(cfg.out, "interpolation.png"),
                       f"DCGAN after {run.epoch} epochs: walking in z from z0 (left) to z1 (right), 6 pairs")
    log(f"wrote {cfg.out}/samples_epoch{run.epoch:03d}.png, interpolation.png, losses.png, metrics.csv, last.npz")
    return run.history[-1] if run.history else None
