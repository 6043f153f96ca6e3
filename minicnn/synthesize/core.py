"""What every synthesis method shares beyond ``minicnn.analysis``: features, image helpers, the loop.

``minicnn.analysis`` holds what every analysis shares: layers named as
``model.named_modules()`` names them ('' is the whole model, i.e. the
logits) or the module itself (``find_layer``); the guard that runs the model
in eval mode with every parameter's ``requires_grad`` off (so backward
computes the image's gradient only) and puts back the caller's modes, flags
and ``.grad`` afterwards, also when the body raises (``analysis_mode``); the
image check (``as_images``).

- ``layer_features(model, x, layers)``: the outputs of the named layers for
  input ``x``, taken by forward hooks; the forward pass stops as soon as the
  last of them is computed, so a layer before the flatten/linear head works
  on images of any size.
- ``gaussian_blur``, ``resize`` and ``roll``: small image operations on raw
  arrays (NumPy or CuPy), used as regularisers and for the octaves of DeepDream.
- ``optimize_image``: the gradient-descent loop on pixels (Adam with
  clipping to [0, 1], or SciPy's L-BFGS-B with the box [0, 1]), which
  records the objective it minimises in a ``History``.
"""
import math
import numpy as np

from ..analysis import find_layer
from ..autograd import Tensor, no_grad
from ..backend import device_of, get_array_module, to_device

__all__ = ["History", "relu_layers", "layer_features", "gaussian_blur", "resize", "roll", "optimize_image"]


class History(list):
    """The objective minimised at each step (a list of floats), plus details.

    ``history[k]`` is the objective at step k, computed on the image whose
    gradient that step used; ``history.terms`` maps the name of each term of
    a composite objective (``'logit'``, ``'tv'``, ...) to its per-step values
    (unweighted); ``history.info`` holds method-specific results (the target
    class's logit and probability, the final relative error, ...).
    """

    def __init__(self, values=()):
        super().__init__(values)
        self.terms = {}
        self.info = {}

    def record(self, total, terms=None):
        self.append(float(total))
        for name, value in (terms or {}).items():
            self.terms.setdefault(name, []).append(float(value))

    def __repr__(self):
        head = ", ".join(f"{v:.4g}" for v in self[:3])
        tail = f", ..., {self[-1]:.4g}" if len(self) > 3 else ""
        return f"History([{head}{tail}], {len(self)} steps, terms={list(self.terms)}, info={self.info})"


# ------------------------------------------------------------------ layers
def relu_layers(model):
    """Names of the model's ReLU modules in registration order (for a Sequential: the forward order).

    The natural feature layers for inversion, DeepDream and style transfer;
    a model whose ReLUs are functional (the ResNets) falls back to its Conv2d
    and BatchNorm2d layers.
    """
    names = [n for n, m in model.named_modules() if type(m).__name__ in ("ReLU", "LeakyReLU")]
    if not names:
        names = [n for n, m in model.named_modules() if type(m).__name__ in ("Conv2d", "BatchNorm2d")]
    return names


class _StopForward(Exception):
    """Raised by a capture hook once every requested layer has been computed."""


def layer_features(model, x, layers):
    """``{name: output Tensor}`` of each layer in ``layers`` for input ``x``.

    Forward hooks record the output of each layer's first call; the pass
    stops right after the last requested layer, so the network's head is
    never run for a feature layer (and need not accept x's size). The hooks
    are removed before this returns, also on an error. The caller decides the
    mode and grad settings (see ``minicnn.analysis.analysis_mode``).
    """
    wanted = {}                           # id(module) -> (module, [names])
    for layer in layers:
        name, module = find_layer(model, layer)
        wanted.setdefault(id(module), (module, []))[1].append(name)
    captured = {}

    def make_hook(names):
        def hook(module, inputs, output):
            if names[0] in captured:       # a module called twice: keep its first output
                return None
            for n in names:
                captured[n] = output
            if len(captured) == sum(len(ns) for _, ns in wanted.values()):
                raise _StopForward
            return None
        return hook

    handles = []
    try:
        for module, names in wanted.values():
            handles.append(module.register_forward_hook(make_hook(names)))
        try:
            model(x)
        except _StopForward:
            pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for _, ns in wanted.values() for n in ns if n not in captured]
    if missing:
        raise ValueError(f"layer(s) {missing} were not called in the model's forward pass")
    return captured


def input_channels(model):
    """Number of image channels the model takes: from its first Normalize or Conv2d (3 if neither)."""
    for m in model.modules():
        if hasattr(m, "in_channels"):
            return int(m.in_channels)
        if type(m).__name__ == "Normalize":
            return int(m.mean.shape[0])
    return 3


def check_positive(value, name, integer=False, allow_zero=False):
    """Raise ValueError unless ``value`` is a number > 0 (>= 0 with ``allow_zero``), an int if ``integer``."""
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if ok and not integer:
        ok = math.isfinite(value)
    if not ok:
        what = ("an integer" if integer else "a number") + (" >= 0" if allow_zero else " > 0")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


# ------------------------------------------------------------ image helpers
def gaussian_kernel1d(sigma):
    """Normalised 1-D Gaussian exp(-t^2 / (2 sigma^2)) on t = -r..r, r = ceil(3 sigma) (NumPy)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-t * t / (2 * sigma * sigma))
    return k / k.sum()


def gaussian_blur(images, sigma):
    """Blur (N, C, H, W) images with a Gaussian of std ``sigma`` pixels (raw arrays, no gradient).

    Separable: a 1-D kernel along H, then along W, each as a sum of shifted
    copies ``sum_t k[t] * x[i + t]`` over the edge-reflected image. Returns a
    new array; sigma <= 0 returns a copy.
    """
    xp = get_array_module(images)
    if sigma <= 0:
        return images.copy()
    k = gaussian_kernel1d(sigma)
    r = len(k) // 2
    out = images
    for axis in (2, 3):
        n = out.shape[axis]
        pad = [(0, 0)] * 4
        pad[axis] = (min(r, n - 1), min(r, n - 1))
        padded = xp.pad(out, pad, mode="reflect") if n > 1 else out
        if n > 1 and r > n - 1:   # a kernel wider than the image: extend the reflection by edge values
            extra = [(0, 0)] * 4
            extra[axis] = (r - (n - 1), r - (n - 1))
            padded = xp.pad(padded, extra, mode="edge")
        elif n == 1:
            extra = [(0, 0)] * 4
            extra[axis] = (r, r)
            padded = xp.pad(out, extra, mode="edge")
        acc = xp.zeros_like(out)
        for t in range(len(k)):
            sl = [slice(None)] * 4
            sl[axis] = slice(t, t + n)
            acc += float(k[t]) * padded[tuple(sl)]
        out = acc
    return out


def _resize_axis(a, axis, new):
    """Linear interpolation of ``a`` along ``axis`` to ``new`` samples, pixel centres aligned (half-pixel)."""
    xp = get_array_module(a)
    old = a.shape[axis]
    if old == new:
        return a
    src = (np.arange(new, dtype=np.float64) + 0.5) * (old / new) - 0.5
    src = np.clip(src, 0, old - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, old - 1)
    w = (src - i0).astype(a.dtype)
    shape = [1] * a.ndim
    shape[axis] = new
    w = xp.asarray(w.reshape(shape))
    lo = xp.take(a, xp.asarray(i0), axis=axis)
    hi = xp.take(a, xp.asarray(i1), axis=axis)
    return lo * (1 - w) + hi * w


def resize(images, size):
    """Bilinear resize of (N, C, H, W) raw arrays to ``size`` = (H', W') (half-pixel centres, no antialiasing)."""
    h, w = size
    return _resize_axis(_resize_axis(images, 2, int(h)), 3, int(w))


def roll(images, shift):
    """Shift (N, C, H, W) images by ``shift`` = (dy, dx) pixels with wrap-around (jitter)."""
    xp = get_array_module(images)
    return xp.roll(images, shift, axis=(2, 3))


def clip_small_pixels(images, fraction):
    """Set the ``fraction`` of pixels with the smallest norm |x - 0.5| (over channels) to grey 0.5, in place.

    Yosinski et al.'s "clipping pixels with small norm": keeps only the
    parts of the image that matter most (per image of the batch).
    """
    xp = get_array_module(images)
    if fraction <= 0:
        return images
    norm = xp.sqrt(((images - 0.5) ** 2).sum(axis=1))            # (N, H, W)
    flat = norm.reshape(norm.shape[0], -1)
    thresh = xp.quantile(flat, fraction, axis=1).reshape(-1, 1, 1)
    mask = (norm < thresh)[:, None]
    images[...] = xp.where(mask, images.dtype.type(0.5), images)
    return images


# ------------------------------------------------------------------- the loop
def _progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="step", leave=False)


def optimize_image(model, objective, x0, steps, lr=0.05, optimizer="adam", jitter=0, seed=0,
                   after_step=None, progress=False, desc="synthesize", history=None):
    """Minimise ``objective`` over the pixels of ``x0`` through the (frozen) ``model``.

    Args:
        model: the network; the caller wraps the call in ``analysis_mode(model)``.
        objective: an ``Objective`` (see ``minicnn.synthesize.objectives``):
            ``objective.evaluate(model, x)`` returns the scalar Tensor to
            minimise and a dict of its terms' values.
        x0: raw array (N, C, H, W) in [0, 1] on the model's device: the start.
        steps: number of steps (Adam) or maximum iterations (L-BFGS).
        lr: Adam's learning rate (pixels are in [0, 1]).
        optimizer: ``'adam'`` (projected: pixels clipped to [0, 1] after
            every step), ``'normalized'`` (gradient descent with the step
            scaled by 1 / mean|g|, the original DeepDream update, also
            clipped) or ``'lbfgs'`` (SciPy's L-BFGS-B with the box
            [0, 1] as bounds; no jitter, no ``after_step``).
        jitter: each step evaluates the objective on the image shifted by a
            random (dy, dx) in [-jitter, jitter]^2 (wrapping around), and
            shifts the gradient back (Adam only).
        seed: seeds the jitter draws.
        after_step: ``f(x, step)`` called on the raw array after each Adam
            step, in place (blur, clipping small pixels).
        history: a ``History`` to append to (DeepDream's octaves share one).

    Returns:
        (x, history): the final raw array (a new array) and the ``History``.
    """
    history = History() if history is None else history
    if optimizer == "lbfgs":
        if jitter:
            raise ValueError("optimizer='lbfgs' needs a fixed objective: use jitter=0 (or optimizer='adam')")
        return _optimize_lbfgs(model, objective, x0, steps, progress, desc, history)
    if optimizer not in ("adam", "normalized"):
        raise ValueError(f"optimizer must be 'adam', 'normalized' or 'lbfgs', got {optimizer!r}")
    from ..optim import Adam

    xp = get_array_module(x0)
    rng = np.random.default_rng(seed)
    img = Tensor(x0.copy(), requires_grad=True)
    opt = Adam([img], lr=lr) if optimizer == "adam" else None
    bar = _progress(steps, desc, progress)
    try:
        for step in range(steps):
            shift = tuple(int(s) for s in rng.integers(-jitter, jitter + 1, size=2)) if jitter else (0, 0)
            xj = Tensor(roll(img.data, shift), requires_grad=True)
            loss, terms = objective.evaluate(model, xj)
            history.record(loss.item(), terms)
            loss.backward()
            img.grad = roll(xj.grad, (-shift[0], -shift[1]))
            if opt is not None:
                opt.step()
            else:   # the original DeepDream step: x -= lr * g / mean|g|
                img.data -= (lr / (float(xp.abs(img.grad).mean()) + 1e-12)) * img.grad
            xp.clip(img.data, 0.0, 1.0, out=img.data)
            if after_step is not None:
                after_step(img.data, step)
            if bar is not None:
                bar.set_postfix(objective=f"{history[-1]:.4g}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return img.data, history


def _optimize_lbfgs(model, objective, x0, steps, progress, desc, history):
    """L-BFGS-B on the flattened pixels (float64 for SciPy), bounds [0, 1]; one history entry per iteration."""
    from scipy.optimize import Bounds, minimize

    device, dtype, shape = device_of(x0), x0.dtype, x0.shape
    last = {}

    def fun(flat):
        x = Tensor(to_device(flat.reshape(shape).astype(dtype), device), requires_grad=True)
        loss, terms = objective.evaluate(model, x)
        loss.backward()
        last.update(x=flat.copy(), f=loss.item(), terms=terms)
        return loss.item(), to_device(x.grad, "cpu").astype(np.float64).ravel()

    bar = _progress(steps, desc, progress)

    def callback(intermediate_result):
        history.record(intermediate_result.fun, last["terms"] if np.array_equal(
            last["x"], intermediate_result.x) else _terms_at(intermediate_result.x))
        if bar is not None:
            bar.set_postfix(objective=f"{history[-1]:.4g}")
            bar.update(1)

    def _terms_at(flat):
        with no_grad():
            x = Tensor(to_device(flat.reshape(shape).astype(dtype), device))
            return objective.evaluate(model, x)[1]

    start = to_device(x0, "cpu").astype(np.float64).ravel()
    f0, _ = fun(start)
    history.record(f0, last["terms"])        # the objective at the start, as the Adam loop records it
    try:
        box = Bounds(np.zeros(start.size), np.ones(start.size))
        res = minimize(fun, start, jac=True, method="L-BFGS-B", bounds=box,
                       callback=callback, options=dict(maxiter=max(steps - 1, 1), maxfun=steps * 3))
    finally:
        if bar is not None:
            bar.close()
    x = to_device(np.clip(res.x, 0, 1).reshape(shape).astype(dtype), device)
    return x, history
