"""The one-pixel attack: differential evolution over (row, col, value of each channel).

Su, Vargas & Sakurai, "One pixel attack for fooling deep neural networks",
IEEE Trans. Evolutionary Computation 2019. A candidate is ``pixels`` tuples
(row, col, v_1, ..., v_C); applying it overwrites those pixel positions of
the image. Su et al. search with differential evolution (DE/rand/1, no
crossover), which needs no gradient, only the model's probabilities:

    population: P candidates, rows/cols uniform, values ~ N(mid, half-range)
    each generation, for every candidate i:
        trial_i = a + F (b - c)          a, b, c: three other random candidates, F = 0.5
    evaluate all P trials as one batch;
    trial_i replaces candidate i when its fitness is at least as good.

The fitness is the probability of the true class (untargeted: minimised)
or of the target class (targeted: maximised). The search stops as soon as
one candidate fools the model.

Why a hand-written DE rather than SciPy's ``differential_evolution(
vectorized=True)``: this *is* the lesson (the loop above, in a dozen
lines); Su et al.'s variant has no crossover, while SciPy always mixes in
a binomial crossover; SciPy's run ends with an L-BFGS-B "polish" that is
wasted on a function that is piecewise constant in the integer pixel
coordinates; and stopping at the first success needs a callback there but
is one line here. Genes are kept in [0, 1) and mapped to rows, columns and
values inside ``bounds`` only when a candidate is applied, so any image
size, channel count and per-channel bounds work.
"""
import numpy as np

from ..backend import get_array_module, to_device
from ..analysis import analysis_mode, as_images, bounds_of
from ._common import labels_of, logits_of, num_classes_of

__all__ = ["one_pixel", "apply_pixels"]


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def apply_pixels(image, genes, lo, hi):
    """The images (P, C, H, W) made by writing each candidate's pixels into ``image`` (C, H, W).

    genes: (P, pixels, 2 + C) in [0, 1]: row = floor(g0 H), col = floor(g1 W),
    channel values lo + g (hi - lo) at that position.
    """
    xp = get_array_module(image)
    c, h, w = image.shape
    p, k, _ = genes.shape
    out = xp.broadcast_to(image, (p, c, h, w)).copy()
    g = xp.asarray(genes.astype(image.dtype))
    lo = xp.broadcast_to(lo, image.shape)
    hi = xp.broadcast_to(hi, image.shape)
    batch = xp.arange(p)
    for j in range(k):
        rows = xp.minimum((g[:, j, 0] * h).astype(np.int64), h - 1)
        cols = xp.minimum((g[:, j, 1] * w).astype(np.int64), w - 1)
        lo_px, hi_px = lo[:, rows, cols].T, hi[:, rows, cols].T      # (P, C)
        out[batch, :, rows, cols] = lo_px + g[:, j, 2:] * (hi_px - lo_px)
    return out


def _evolve(model, image, label, lo, hi, pixels, population, generations, targeted, rng, mutation):
    """One image's DE run: (the best candidate's image, whether it fooled the model, generations used)."""
    c = image.shape[0]

    def fitness(genes):
        logits = np.asarray(to_device(logits_of(model, apply_pixels(image, genes, lo, hi)), "cpu"),
                            dtype=np.float64)
        p = _softmax(logits)[:, label]
        pred = logits.argmax(axis=1)
        fooled = pred == label if targeted else pred != label
        return (-p if targeted else p), fooled          # lower is better

    genes = np.empty((population, pixels, 2 + c))
    genes[:, :, :2] = rng.uniform(0, 1, (population, pixels, 2))
    genes[:, :, 2:] = np.clip(rng.normal(0.5, 0.5, (population, pixels, c)), 0, 1)
    score, fooled = fitness(genes)
    gen = 0
    while not fooled.any() and gen < generations:
        gen += 1
        keys = rng.random((population, population))
        keys[np.arange(population), np.arange(population)] = np.inf       # never pick yourself
        a, b, d = np.argpartition(keys, 3, axis=1)[:, :3].T                # three distinct others
        trial = np.clip(genes[a] + mutation * (genes[b] - genes[d]), 0, 1 - 1e-9)
        trial_score, trial_fooled = fitness(trial)
        better = trial_score <= score
        genes[better], score[better], fooled[better] = trial[better], trial_score[better], trial_fooled[better]
    best = int(np.flatnonzero(fooled)[0]) if fooled.any() else int(score.argmin())
    return apply_pixels(image, genes[best:best + 1], lo, hi)[0], bool(fooled.any()), gen


def one_pixel(model, x, y, pixels=1, population=400, generations=100, targeted=False, seed=0,
              bounds=(0, 1), mutation=0.5, return_info=False):
    """Su et al.'s one-pixel (or few-pixel) attack on each image of x (N, C, H, W).

    Args:
        model: images in ``bounds`` -> logits.
        x: images (N, C, H, W), any C, H, W; array or Tensor inside ``bounds``.
        y: true classes (N,) (or one int); the target classes when ``targeted``.
        pixels: how many pixel positions a candidate may change (all channels of each).
        population, generations: DE's population size and most generations
            (Su et al.: 400 and 100). Each generation is one batch of
            ``population`` images through the model.
        seed: seeds the DE: the same seed gives the same result.
        mutation: DE's scale F.
        return_info: also return a dict with ``success`` (N,) bool and
            ``generations`` (N,) int.

    Returns:
        x_adv like x, differing from x in at most ``pixels`` positions per
        image (the best candidate found, whether or not it fooled the model).
    """
    x = as_images(x, bounds=bounds, spatial=False)
    if x.ndim != 4:
        raise ValueError(f"x: one_pixel needs images of shape (N, C, H, W), got {tuple(x.shape)}")
    for name, v, least in (("pixels", pixels, 1), ("population", population, 4), ("generations", generations, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < least:
            raise ValueError(f"{name}: expected an integer >= {least}, got {v!r}")
    lo, hi = bounds_of(bounds, x)
    xp = get_array_module(x)
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    out = x.copy()
    success = np.zeros(n, dtype=bool)
    used = np.zeros(n, dtype=np.int64)
    with analysis_mode(model):
        labels = labels_of(y, n, num_classes_of(logits_of(model, x[:1])), "y")
        lo_i = xp.broadcast_to(lo, x.shape[1:])
        hi_i = xp.broadcast_to(hi, x.shape[1:])
        for i in range(n):
            out[i], success[i], used[i] = _evolve(model, x[i], int(labels[i]), lo_i, hi_i, int(pixels),
                                                  int(population), int(generations), targeted, rng, mutation)
    if return_info:
        return out, {"success": success, "generations": used}
    return out
