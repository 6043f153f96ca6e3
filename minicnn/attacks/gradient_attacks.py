"""Gradient attacks: the fast gradient sign method and projected gradient descent.

Both move the image x in the direction that raises the loss J(x, y) of the
true class y (or lowers the loss of a target class), inside a ball of
radius eps around x and inside the pixel box ``bounds``:

FGSM (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial
Examples", ICLR 2015): one step of size eps along the sign of the gradient,

    x_adv = clip_bounds( x + eps * sign(grad_x J(x, y)) ).

To first order J rises by eps * ||grad_x J||_1: the largest rise any
perturbation with ||d||_inf <= eps can buy from a linear model.

PGD (Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning
Models Resistant to Adversarial Attacks", ICLR 2018): start at a random
point of the ball, take ``steps`` steps of size alpha, and after each step
project back onto the ball and the box,

    x_{t+1} = Proj( x_t + alpha * s_t ),
    s_t = sign(g_t)          for the L-inf ball,
    s_t = g_t / ||g_t||_2    for the L2 ball,     g_t = grad_x J(x_t, y).

The projection onto the L-inf ball clips each coordinate to [x - eps,
x + eps]; onto the L2 ball it rescales d = x_t - x to length eps when it
is longer. With ``random_start=False`` PGD is the iterative FGSM of
Kurakin et al. Targeted attacks descend the loss of the target class
instead of ascending the loss of the true class.

The model is run in eval mode with its parameters frozen and is left as it
was found (see ``minicnn.analysis.analysis_mode``).
"""
import numpy as np

from ..backend import device_of, get_array_module, to_device
from ..analysis import analysis_mode, as_images, bounds_of
from ._common import eps_of, loss_gradient, norm_of, per_image_norms, project

__all__ = ["fgsm", "pgd", "adversarial_examples"]


def _signed_gradient(model, x, y, targeted, name):
    """The ascent direction of the attack's objective: +grad J(x, y), or -grad J(x, target)."""
    grad, _, labels = loss_gradient(model, x, y, name)
    if grad is None:                       # the output does not depend on x
        grad = x * 0
    return (-grad if targeted else grad), labels


def fgsm(model, x, y, eps, targeted=False, bounds=(0, 1)):
    """The fast gradient sign method: ``x + eps * sign(grad_x loss(model(x), y))``, clipped to ``bounds``.

    Args:
        model: maps images in ``bounds`` to logits (N, classes), e.g. from ``minicnn.load_model``.
        x: images (N, C, H, W) (any shape (N, ...)): array or Tensor, inside ``bounds``.
        y: true classes (N,) (or one int for all); the target classes when ``targeted``.
        eps: L-inf budget in pixel units (8/255 is the usual one for CIFAR-10), >= 0 and at most
            the pixel range (eps 8 for [0, 1] pixels is refused: 8/255 is meant).
        targeted: step *down* the loss of class y (towards it) instead of up the loss of y.
        bounds: (lower, upper) pixel bounds, numbers or arrays broadcastable to one image.

    Returns:
        x_adv, an array like x (same shape, dtype and device) with
        ``|x_adv - x| <= eps`` everywhere and ``lower <= x_adv <= upper``.
    """
    x = as_images(x, bounds=bounds, spatial=False)
    lo, hi = bounds_of(bounds, x)
    eps = eps_of(eps, norm="inf", lo=lo, hi=hi)
    with analysis_mode(model):
        direction, _ = _signed_gradient(model, x, y, targeted, "y")
    return project(x, x + x.dtype.type(eps) * _sign(direction), eps, "inf", lo, hi)


def _sign(a):
    return get_array_module(a).sign(a).astype(a.dtype, copy=False)


def _l2_unit(g):
    """g / ||g||_2 per image (zero where g is zero)."""
    xp = get_array_module(g)
    norms = per_image_norms(g, 2).astype(g.dtype)
    return g / xp.maximum(norms, np.finfo(g.dtype).tiny).reshape((-1,) + (1,) * (g.ndim - 1))


def random_start_point(x, eps, norm, seed):
    """A uniformly random point of the eps-ball around x (drawn on the CPU, so any device gives the same).

    L-inf: d ~ U[-eps, eps] per coordinate. L2: a uniform direction
    (a normalised Gaussian) times a radius eps * u^(1/D), u ~ U[0, 1],
    D = the number of coordinates: uniform in the volume of the ball.
    """
    rng = np.random.default_rng(seed)
    n, dims = x.shape[0], int(np.prod(x.shape[1:]))
    if norm == "inf":
        d = rng.uniform(-eps, eps, size=x.shape)
    else:
        g = rng.standard_normal((n, dims))
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-300)
        r = eps * rng.uniform(0, 1, size=(n, 1)) ** (1.0 / dims)
        d = (g * r).reshape(x.shape)
    return to_device(d.astype(x.dtype), device_of(x))


def pgd(model, x, y, eps, alpha=None, steps=10, norm="inf", random_start=True, targeted=False,
        seed=0, bounds=(0, 1)):
    """Projected gradient descent (Madry et al.): ``steps`` projected steps of size ``alpha``.

    Args:
        model, x, y, targeted, bounds: as in ``fgsm``.
        eps: radius of the ball in the attack's norm (pixel units), >= 0.
        alpha: step size; default ``2.5 * eps / steps`` (so the walk can cross
            the ball and come back; Madry et al.'s rule of thumb).
        steps: number of gradient steps (>= 1); each costs one forward and
            one backward pass over the batch.
        norm: ``"inf"`` (sign steps, coordinate clipping) or ``2``
            (normalised-gradient steps, rescaling onto the ball).
        random_start: start at a uniformly random point of the ball (PGD);
            False starts at x (the iterative FGSM / basic iterative method).
        seed: seeds the random start: the same seed gives the same result.

    Returns:
        x_adv like x, with ``||x_adv - x|| <= eps`` in ``norm`` per image and inside ``bounds``.
        The last iterate is returned (as in Madry et al.).
    """
    x = as_images(x, bounds=bounds, spatial=False)
    norm = norm_of(norm)
    lo, hi = bounds_of(bounds, x)
    eps = eps_of(eps, norm=norm, lo=lo, hi=hi)
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps: expected an integer >= 1, got {steps!r}")
    alpha = 2.5 * eps / steps if alpha is None else eps_of(alpha, "alpha")
    with analysis_mode(model):
        x_adv = x.copy()
        if random_start and eps > 0:
            x_adv = project(x, x + random_start_point(x, eps, norm, seed), eps, norm, lo, hi)
        for _ in range(int(steps)):
            g, _ = _signed_gradient(model, x_adv, y, targeted, "y")
            step = _sign(g) if norm == "inf" else _l2_unit(g)
            x_adv = project(x, x_adv + x.dtype.type(alpha) * step, eps, norm, lo, hi)
    return x_adv


def adversarial_examples(model, x, y, method="fgsm", eps=8 / 255, steps=7, alpha=None, seed=0, bounds=(0, 1)):
    """Adversarial images for training on them (``minicnn train --adversarial fgsm|pgd``).

    ``method="fgsm"``: Goodfellow et al.'s one signed step of size eps.
    ``method="pgd"``: Madry et al.'s L-inf PGD, random start, ``steps``
    steps of size ``alpha`` (default 2.5 * eps / steps), seeded by ``seed``.

    The model is run in eval mode (batchnorm statistics untouched, dropout
    off) with frozen parameters, and its mode, ``requires_grad`` flags and
    ``.grad`` arrays are restored afterwards, so this can be called between
    a training step's ``zero_grad`` and its forward pass. Returns a raw array
    like x (same shape, dtype, device), inside ``bounds``, with
    ``|x_adv - x| <= eps``.
    """
    if method == "fgsm":
        return fgsm(model, x, y, eps, bounds=bounds)
    if method == "pgd":
        return pgd(model, x, y, eps, alpha=alpha, steps=steps, norm="inf", random_start=True,
                   seed=seed, bounds=bounds)
    raise ValueError(f"method: expected 'fgsm' or 'pgd', got {method!r}")
