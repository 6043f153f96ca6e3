"""Pixel attributions: which input pixels move a class score.

All functions take a model (pixels in [0, 1] in, logits out, as
``minicnn.load_model`` gives), images ``x`` (N, C, H, W) as a NumPy/CuPy
array or Tensor, and ``target``: a class index, a sequence of N indices, or
None for each image's predicted class. Scores are logits (the gradient of a
saturated softmax vanishes), except occlusion's default, the probability.
Results are arrays on ``x``'s device; the model is not changed.

Gradient methods (one forward and one backward pass each; the backward pass
is the ordinary autograd, max pooling routing through its stored argmax):

    gradient          d s_c / d x                          (the rule at each ReLU:  g * [x > 0])
    saliency          max over channels of |d s_c / d x|   Simonyan, Vedaldi & Zisserman 2014
    deconvnet         the backward pass with ReLU rule     g * [g > 0]   (Zeiler & Fergus 2014)
    guided_backprop   the backward pass with ReLU rule     g * [x > 0] * [g > 0]  (Springenberg et al. 2015)
    smoothgrad        mean gradient over noisy copies of x (Smilkov et al. 2017)
    integrated_gradients  (x - x') * average gradient on the straight path from
                      a baseline x' to x (Sundararajan, Taly & Yan 2017)

and one perturbation method:

    occlusion         the drop of the score when a window is greyed out (Zeiler & Fergus 2014)
"""
import numpy as np

from ..autograd import Tensor, no_grad
from ..backend import device_of, get_array_module, to_device
from ..functional import relu_backward_rule, softmax
from ..analysis import analysis_mode, as_images, on_device_of
from ._common import resolve_targets

__all__ = ["gradient", "saliency", "deconvnet", "guided_backprop", "smoothgrad", "integrated_gradients",
           "completeness_gap", "occlusion", "saliency_map"]

_BATCH = 128      # images per forward pass when a method evaluates many copies of x


def _one_hot(logits, targets):
    """The upstream gradient that selects logit ``targets[n]`` of each row n."""
    xp = get_array_module(logits)
    seed = xp.zeros_like(logits)
    seed[xp.arange(logits.shape[0]), targets] = 1
    return seed


def _input_gradient(model, data, target, rule="gradient"):
    """(d s_target / d x, logits, targets) for one batch; the caller holds ``analysis_mode``.

    Images do not interact in eval mode, so one backward pass of the one-hot
    seed gives every image's gradient at once.
    """
    xt = Tensor(data, requires_grad=True)
    with relu_backward_rule(rule):
        logits = model(xt)
        targets = resolve_targets(logits.data, target)
        logits.backward(_one_hot(logits.data, targets))
    grad = xt.grad if xt.grad is not None else get_array_module(data).zeros_like(data)
    return grad, logits.data, targets


def _backward_map(model, x, target, rule):
    data = as_images(x, model)
    with analysis_mode(model):
        return on_device_of(x, _input_gradient(model, data, target, rule)[0])


def gradient(model, x, target=None):
    """d logit_target / d x, shaped like x: how the class score changes per input pixel and channel."""
    return _backward_map(model, x, target, "gradient")


def saliency_map(grad):
    """(N, H, W) map of an attribution shaped like x: the largest |value| over the channels."""
    return get_array_module(grad).abs(grad).max(axis=1)


def saliency(model, x, target=None):
    """Simonyan et al.'s saliency map, (N, H, W): max over channels of |d logit_target / d x|."""
    return saliency_map(gradient(model, x, target))


def deconvnet(model, x, target=None):
    """Zeiler & Fergus's deconvnet reconstruction, shaped like x.

    The backward pass of the logit with one change: each ReLU passes the
    backward signal where it is positive (g * [g > 0]), whatever its forward
    input was. Convolutions apply their transposed filters and max pooling
    unpools through its stored switches (the argmax), exactly as in the paper.
    """
    return _backward_map(model, x, target, "deconvnet")


def guided_backprop(model, x, target=None):
    """Springenberg et al.'s guided backpropagation, shaped like x.

    The backward pass of the logit where each ReLU passes only positive
    gradients through positive activations: g * [x > 0] * [g > 0]. The maps
    look crisp, but they change little when the top layers' weights are
    randomised (Adebayo et al. 2018): they show edges more than the class.
    """
    return _backward_map(model, x, target, "guided")


def _predicted_or_given(model, data, target):
    """Targets (N,) resolved on the clean images (one no-grad forward pass when target is None)."""
    if target is None:
        with no_grad():
            logits = model(Tensor(data)).data
    else:
        xp = get_array_module(data)
        with no_grad():      # only the number of classes is needed: one image's logits
            logits = model(Tensor(data[:1])).data
        logits = xp.broadcast_to(logits, (data.shape[0], logits.shape[1]))
    return resolve_targets(logits, target)


def _many_gradients(model, batches, targets):
    """Sum of d s_target / d x over the copies that ``batches`` yields, each (m, N, C, H, W)."""
    total = None
    for copies in batches:
        m, n = copies.shape[:2]
        grad, _, _ = _input_gradient(model, copies.reshape((m * n,) + copies.shape[2:]),
                                     get_array_module(copies).tile(targets, m))
        grad = grad.reshape(copies.shape).sum(axis=0)
        total = grad if total is None else total + grad
    return total


def _chunks(count, n):
    """Sizes of the copy-chunks for ``count`` copies of a batch of n images, about _BATCH images each."""
    per = max(1, _BATCH // n)
    return [min(per, count - s) for s in range(0, count, per)]


def smoothgrad(model, x, target=None, samples=25, noise=0.15, seed=0):
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of x, shaped like x.

    (1/n) sum_i d s_c / d x evaluated at x + e_i, e_i ~ N(0, sigma^2) with
    sigma = ``noise`` * (max(x) - min(x)) per image (the paper's noise
    level; 1 stands for the range of a constant image), n = ``samples``.
    The target is chosen on the clean image. ``saliency_map(result)`` gives
    the usual (N, H, W) picture. Noise is drawn on the CPU from
    ``numpy.random.default_rng(seed)``, so results agree across devices.
    """
    if not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"smoothgrad: samples must be a positive int, got {samples!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)) or not noise >= 0:
        raise ValueError(f"smoothgrad: noise must be a number >= 0 (a fraction of the image's range), got {noise!r}")
    data = as_images(x, model)
    xp = get_array_module(data)
    n = data.shape[0]
    flat = data.reshape(n, -1)
    spread = flat.max(axis=1) - flat.min(axis=1)
    sigma = (noise * xp.where(spread > 0, spread, 1)).reshape((1, n) + (1,) * (data.ndim - 1))
    rng = np.random.default_rng(seed)

    def noisy():
        for m in _chunks(int(samples), n):
            e = to_device(rng.standard_normal((m,) + data.shape).astype(data.dtype), device_of(data))
            yield data[None] + sigma.astype(data.dtype) * e

    with analysis_mode(model):
        targets = _predicted_or_given(model, data, target)
        total = _many_gradients(model, noisy(), targets)
    return on_device_of(x, total / samples)


def _baseline_like(baseline, data, who):
    xp = get_array_module(data)
    if baseline is None:
        return xp.zeros_like(data)
    b = baseline.data if isinstance(baseline, Tensor) else baseline
    b = to_device(b, device_of(data)).astype(data.dtype, copy=False)
    try:
        return xp.broadcast_to(b, data.shape)
    except ValueError:
        raise ValueError(f"{who}: baseline of shape {tuple(b.shape)} does not broadcast to the images' "
                         f"shape {tuple(data.shape)}; pass a number, a (C, 1, 1) colour, a (C, H, W) "
                         f"image or one per image") from None


def integrated_gradients(model, x, target=None, baseline=None, steps=50, return_gap=False):
    """Integrated gradients (Sundararajan et al. 2017), attributions shaped like x.

        IG(x) = (x - x') * (1/m) sum_{k=0}^{m-1} d s_c / d x at x' + a_k (x - x'),  a_k = (k + 1/2) / m

    a midpoint Riemann sum (m = ``steps``) of the path integral from the
    baseline x' (None: black, all zeros; or a number, a colour, an image) to
    x. Completeness: sum(IG) = s_c(x) - s_c(x') exactly in the limit; the
    difference ``sum(IG) - (s_c(x) - s_c(x'))`` is the completeness gap,
    which shrinks (as 1/m^2 on a smooth network) with more steps. With
    ``return_gap=True`` the result is ``(attributions, gap)``, gap of shape
    (N,); ``completeness_gap`` computes it for given attributions. For a
    linear model s = w.x + b and a zero baseline, IG = w * x exactly.
    """
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"integrated_gradients: steps must be a positive int, got {steps!r}")
    data = as_images(x, model)
    base = _baseline_like(baseline, data, "integrated_gradients")
    xp = get_array_module(data)
    n = data.shape[0]

    def path():
        done = 0
        for m in _chunks(int(steps), n):
            alphas = ((xp.arange(done, done + m, dtype=np.float64) + 0.5) / steps).astype(data.dtype)
            done += m
            yield base[None] + alphas.reshape((m,) + (1,) * data.ndim) * (data - base)[None]

    with analysis_mode(model):
        targets = _predicted_or_given(model, data, target)
        attributions = (data - base) * (_many_gradients(model, path(), targets) / steps)
        if not return_gap:
            return on_device_of(x, attributions)
        gap = _gap(model, data, base, attributions, targets)
    return on_device_of(x, attributions), on_device_of(x, gap)


def _gap(model, data, base, attributions, targets):
    xp = get_array_module(data)
    with no_grad():
        rows = xp.arange(data.shape[0])
        fx = model(Tensor(data)).data[rows, targets]
        fb = model(Tensor(xp.ascontiguousarray(base))).data[rows, targets]
    return attributions.reshape(data.shape[0], -1).sum(axis=1) - (fx - fb)


def completeness_gap(model, x, attributions, target=None, baseline=None):
    """sum(attributions) - (s_c(x) - s_c(baseline)) per image, (N,): 0 for perfect completeness.

    ``target`` and ``baseline`` must be those the attributions were made with
    (None: the predicted class on x; a black baseline).
    """
    data = as_images(x, model)
    base = _baseline_like(baseline, data, "completeness_gap")
    attributions = attributions.data if isinstance(attributions, Tensor) else attributions
    attributions = to_device(attributions, device_of(data))
    if tuple(attributions.shape) != tuple(data.shape):
        raise ValueError(f"completeness_gap: attributions have shape {tuple(attributions.shape)}, "
                         f"expected x's shape {tuple(data.shape)}")
    with analysis_mode(model):
        targets = _predicted_or_given(model, data, target)
        return on_device_of(x, _gap(model, data, base, attributions, targets))


def _pair(v, name):
    values = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(values) != 2 or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 1
                               for a in values):
        raise ValueError(f"occlusion: {name} must be a positive int or a pair of them, got {v!r}")
    return int(values[0]), int(values[1])


def occlusion(model, x, target=None, window=8, stride=4, baseline=0.5, score="probability"):
    """Occlusion sensitivity (Zeiler & Fergus 2014): (N, H, W) map of the score's drop.

    A ``window`` (int or (h, w)) square of every channel is replaced by
    ``baseline`` (0.5: mid grey; or a colour (C, 1, 1), an image (C, H, W),
    one per image) at positions 0, stride, 2*stride, ... that fit inside the
    image. Each window's drop, s_c(x) - s_c(x occluded), is spread over the
    pixels it covers, and each pixel gets the mean drop of the windows that
    cover it (0 for a pixel no window covers, at the right/bottom edge when
    the stride does not fit). ``score``: ``"probability"`` (softmax of the
    target, the default: as the lectures plot it) or ``"logit"``. Positive
    values: covering the pixel hurts the class. The target is chosen on the
    clean image. The occluded copies are evaluated in batches of about 128
    images, not one forward pass per window.
    """
    if score not in ("probability", "logit"):
        raise ValueError(f"occlusion: score must be 'probability' or 'logit', got {score!r}")
    data = as_images(x, model)
    xp = get_array_module(data)
    n, _, height, width = data.shape
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    if wh > height or ww > width:
        raise ValueError(f"occlusion: window {(wh, ww)} is larger than the images ({height}, {width})")
    fill = _baseline_like(baseline, data, "occlusion")
    corners = [(i, j) for i in range(0, height - wh + 1, sh) for j in range(0, width - ww + 1, sw)]

    def scores(batch, targets):
        logits = model(Tensor(batch)).data
        if score == "probability":
            logits = softmax(Tensor(logits), axis=1).data
        return logits[xp.arange(batch.shape[0]), targets]

    jobs = [(img, k) for img in range(n) for k in range(len(corners))]    # image-major: drops reshape to (n, P)
    drops = xp.zeros(len(jobs), dtype=data.dtype)
    with analysis_mode(model), no_grad():
        targets = _predicted_or_given(model, data, target)
        clean = scores(data, targets)
        for s in range(0, len(jobs), _BATCH):
            chunk = jobs[s:s + _BATCH]
            img_idx = xp.asarray(np.array([img for img, _ in chunk]))
            batch = data[img_idx]                       # fancy indexing copies: x itself is untouched
            for row, (img, k) in enumerate(chunk):
                i, j = corners[k]
                batch[row, :, i:i + wh, j:j + ww] = fill[img, :, i:i + wh, j:j + ww]
            drops[s:s + len(chunk)] = clean[img_idx] - scores(batch, targets[img_idx])
    drops = drops.reshape(n, len(corners))
    total = xp.zeros((n, height, width), dtype=data.dtype)
    count = xp.zeros((height, width), dtype=data.dtype)
    for k, (i, j) in enumerate(corners):
        total[:, i:i + wh, j:j + ww] += drops[:, k, None, None]
        count[i:i + wh, j:j + ww] += 1
    return on_device_of(x, xp.where(count > 0, total / xp.maximum(count, 1), 0).astype(data.dtype, copy=False))
