"""Images from a CNN's gradients: class models, inversion, DeepDream, style transfer.

All four are gradient descent on the pixels of an image through a fixed
network. Conventions (shared with ``minicnn.explain`` and ``minicnn.attacks``):

- ``model`` takes pixels in [0, 1] and returns logits (``minicnn.load_model``).
  It is never changed: parameters, their ``.grad``, buffers, train/eval
  mode, ``requires_grad`` flags and hooks are as before, also when a method
  raises (``minicnn.analysis.analysis_mode``).
- Layers are named as ``model.named_modules()`` names them ('' is the model
  itself, i.e. the logits), or passed as the module.
- Pixels stay in [0, 1]: the image is optimised directly in pixel space and
  clipped to [0, 1] after every step (projected Adam), or kept in the box by
  L-BFGS-B's bounds. (No sigmoid parametrisation: the gradient the student
  sees is the network's gradient with respect to the pixels.)
- Every method returns ``(image, history)``: the image, shape (N, C, H, W),
  values in [0, 1], an array on the input's device (the model's for
  ``class_model``), and a ``History``: the objective it minimised at each
  step (e.g. -logit + l2 * ||x - 0.5||^2), with its terms and a few results
  in ``history.info``.
- Random choices (starting noise, jitter) come from ``seed``: the same seed
  gives the same image.
"""
import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..backend import to_device
from ..nn import Module
from . import objectives as obj
from .losses import gram_matrix
from ..analysis import analysis_mode, as_images, find_layer, model_device_dtype, on_device_of
from .core import (History, check_positive, clip_small_pixels, gaussian_blur, input_channels, layer_features,
                   optimize_image, resize)

__all__ = ["class_model", "invert", "deep_dream", "style_transfer"]


def _size_pair(size, name="size"):
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"{name} must be an int or a pair (H, W) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _class_index(model, target):
    classes = list(getattr(model, "classes", []) or [])
    if isinstance(target, str):
        if target not in classes:
            raise ValueError(f"target {target!r} is not a class of the model; classes: {classes}")
        return classes.index(target)
    if isinstance(target, np.ndarray) and target.ndim == 0:
        target = target.item()
    if not isinstance(target, (int, np.integer)) or isinstance(target, bool):
        raise TypeError(f"target must be a class index or name, got {target!r}")
    return int(target)


def _child_seed(rng):
    """A seed for a later random stream (the jitter), drawn from the method's generator."""
    return int(rng.integers(2 ** 31))


def _noise(rng, shape, scale, xp_device, dtype):
    """0.5 + scale * N(0, 1), clipped to [0, 1], drawn on the CPU (same image on every device)."""
    x = np.clip(0.5 + scale * rng.standard_normal(shape), 0.0, 1.0).astype(dtype)
    return to_device(x, xp_device)


# ------------------------------------------------------------- class models
def class_model(model, target, size=(32, 32), steps=200, lr=0.05, l2=3e-3, blur_every=4, blur_sigma=0.5,
                jitter=2, clip_small=0.0, init_std=0.05, channels=None, seed=0, progress=False):
    """The image that the network scores highest for class ``target`` (a class model).

    Simonyan, Vedaldi & Zisserman ("Deep inside convolutional networks",
    ICLR 2014 workshop) solve  argmax_x S_c(x) - l2 * ||x - 0.5||^2  by
    gradient ascent, S_c the class's logit (not its probability, which can
    also rise by lowering the other classes). Yosinski et al.
    ("Understanding neural networks through deep visualization", ICML 2015
    workshop) add regularisers applied between steps, which keep the image
    closer to natural ones:

    - L2 decay: the ``l2`` term pulls pixels towards grey 0.5 (the centre
      of the pixel range, which the Normalize layer maps near 0);
    - Gaussian blur of std ``blur_sigma`` pixels every ``blur_every`` steps
      (0: never), which damps high frequencies;
    - jitter: each step sees the image shifted by up to ``jitter`` pixels;
    - clipping small values: after each blur, the ``clip_small`` fraction of
      pixels with the smallest |x - 0.5| are set to grey.

    Minimised objective (recorded in the history):
    -mean_n S_{c_n}(x_n) + l2 * mean_n ||x_n - 0.5||^2, by Adam on pixels
    clipped to [0, 1].

    Args:
        model: pixels in [0, 1] -> logits.
        target: class index or name (``model.classes``), or a list of them:
            one image per target, made in one batch.
        size: (H, W) of the image (the model's input size for a network
            with a linear head).
        channels: image channels (default: from the model's first layer).
        init_std: the start is grey 0.5 plus noise of this std (from seed).

    Returns:
        (image (N, C, H, W) on the model's device, history).
        ``history.info``: ``target`` and ``class`` (index and name),
        ``logit`` and ``probability`` of the target for the final image,
        ``grey_logit`` for a plain grey image (floats for one target, lists
        for several).
    """
    single = np.ndim(target) == 0                          # one int, name or 0-d array
    targets = [_class_index(model, t) for t in ([target] if single else list(target))]
    if not targets:
        raise ValueError("target: give at least one class")
    h, w = _size_pair(size)
    check_positive(steps, "steps", integer=True)
    check_positive(lr, "lr")
    check_positive(l2, "l2", allow_zero=True)
    check_positive(blur_every, "blur_every", integer=True, allow_zero=True)
    check_positive(blur_sigma, "blur_sigma", allow_zero=True)
    check_positive(jitter, "jitter", integer=True, allow_zero=True)
    check_positive(init_std, "init_std", allow_zero=True)
    if not 0 <= clip_small < 1:
        raise ValueError(f"clip_small must be a fraction in [0, 1), got {clip_small!r}")
    device, dtype = model_device_dtype(model)
    c = input_channels(model) if channels is None else check_positive(channels, "channels", integer=True)
    rng = np.random.default_rng(seed)
    x0 = _noise(rng, (len(targets), c, h, w), init_std, device, dtype)

    objective = -obj.logit(targets) + l2 * obj.l2(0.5)

    def regularise(x, step):
        if blur_every and (step + 1) % blur_every == 0:
            if blur_sigma > 0:
                x[...] = gaussian_blur(x, blur_sigma)
            clip_small_pixels(x, clip_small)

    with analysis_mode(model):
        with no_grad():
            grey = model(Tensor(to_device(np.full((1, c, h, w), 0.5, dtype=dtype), device)))
            n_classes = grey.shape[1]
        bad = [t for t in targets if not 0 <= t < n_classes]
        if bad:
            raise ValueError(f"target {bad[0]} is out of range for a model with {n_classes} classes")
        x, history = optimize_image(model, objective, x0, steps, lr=lr, jitter=jitter, seed=_child_seed(rng),
                                    after_step=regularise, progress=progress, desc="class model")
        with no_grad():
            logits = model(Tensor(x))
            probs = F.softmax(logits, axis=1)
    idx = (np.arange(len(targets)), np.array(targets))
    logit_v = to_device(logits.data, "cpu")[idx].astype(float).tolist()
    prob_v = to_device(probs.data, "cpu")[idx].astype(float).tolist()
    grey_v = [float(to_device(grey.data, "cpu")[0, t]) for t in targets]
    classes = list(getattr(model, "classes", []) or [])
    names = [classes[t] if t < len(classes) else str(t) for t in targets]
    pick = (lambda v: v[0]) if single else (lambda v: v)
    history.info.update(target=pick(targets), **{"class": pick(names)}, logit=pick(logit_v),
                        probability=pick(prob_v), grey_logit=pick(grey_v))
    return x, history


# ----------------------------------------------------------------- inversion
def invert(model, x, layer, steps=200, lr=0.05, tv=0.01, beta=2.0, init="noise", optimizer="adam",
           jitter=0, seed=0, progress=False):
    """Reconstruct images from their features at ``layer`` (Mahendran & Vedaldi, CVPR 2015).

    Solves  argmin_x'  ||Phi(x') - Phi_0||^2 / ||Phi_0||^2 + tv * TV_beta(x')
    with Phi_0 = Phi(x) the features of the given images at ``layer`` and
    TV_beta the total-variation prior (``total_variation``): among the
    images the layer cannot tell apart, the prior picks a smooth one. From
    an early layer the reconstruction is nearly exact; from deeper layers
    (and the logits, ``layer=''``) only what the network kept survives: the
    layout blurs, colours and the class's parts remain.

    Args:
        x: images (N, C, H, W) or (C, H, W) in [0, 1], array or Tensor.
        layer: a name from ``model.named_modules()`` or the module.
        tv, beta: weight and exponent of the TV prior (0: no prior). The
            default 0.01 barely touches an image the layer pins down (early
            layers invert nearly exactly, even for noise images); from deep
            layers and the logits use a stronger prior (1 to 10 for natural
            images: the docs use 2) or the result is high-frequency noise.
        init: ``'noise'`` (grey 0.5 plus noise of std 0.1, from ``seed``) or ``'grey'``.
        optimizer: ``'adam'`` (lr, jitter apply) or ``'lbfgs'``.

    Returns:
        (image, history), image on x's device; ``history.info``:
        ``relative_error`` ||Phi(x') - Phi_0||^2 / ||Phi_0||^2 of the result,
        ``layer`` (its name).
    """
    check_positive(steps, "steps", integer=True)
    check_positive(lr, "lr")
    check_positive(tv, "tv", allow_zero=True)
    check_positive(jitter, "jitter", integer=True, allow_zero=True)
    if init not in ("noise", "grey"):
        raise ValueError(f"init must be 'noise' or 'grey', got {init!r}")
    device, dtype = model_device_dtype(model)
    images = as_images(x, model).astype(dtype)             # a copy of its own, in the model's dtype
    name, _ = find_layer(model, layer)
    rng = np.random.default_rng(seed)
    x0 = _noise(rng, images.shape, 0.1 if init == "noise" else 0.0, device, dtype)
    with analysis_mode(model):
        with no_grad():
            phi0 = layer_features(model, Tensor(images), [name])[name].detach()
        match = obj.feature_match(name, phi0, relative=True, name="relative_error")
        objective = match + tv * obj.tv(beta) if tv else match
        out, history = optimize_image(model, objective, x0, steps, lr=lr, optimizer=optimizer, jitter=jitter,
                                      seed=_child_seed(rng), progress=progress, desc=f"invert {name or 'logits'}")
        with no_grad():
            _, terms = match.evaluate(model, Tensor(out))
    history.info.update(relative_error=terms["relative_error"], layer=name)
    return on_device_of(x, out), history


# ------------------------------------------------------------------ DeepDream
def deep_dream(model, x, layer, steps=10, octaves=3, octave_scale=1.4, lr=0.005, jitter=2, channel=None,
               seed=0, progress=False):
    """DeepDream (Mordvintsev, Olah & Tyka, 2015): boost whatever ``layer`` already sees in ``x``.

    Maximises the mean squared activation of ``layer`` (or the mean of one
    ``channel``): each step x <- x + lr * g / mean|g| with g the gradient of
    that objective (the original notebook's normalised step), pixels
    clipped to [0, 1], the image jittered by up to ``jitter`` pixels.

    Octaves: the image is processed from coarse to fine, at sizes
    (H, W) / octave_scale^k for k = octaves-1, ..., 0. At each octave the
    detail added so far (dream - base image at that size) is upsampled and
    added to the base image at the new size, then ``steps`` more steps run,
    so large patterns form at coarse scales and are refined at fine ones.
    Works on images of any size for a layer before the network's head.

    Minimised objective (recorded per step, over all octaves):
    -mean(a^2) (or -mean of the channel), a the layer's activations.

    Returns:
        (image, history), image of x's size on x's device; ``history.info``:
        ``octave_sizes`` and ``octave_start`` (the history index at which each octave begins).
    """
    check_positive(steps, "steps", integer=True)
    check_positive(octaves, "octaves", integer=True)
    check_positive(lr, "lr")
    check_positive(jitter, "jitter", integer=True, allow_zero=True)
    if not (isinstance(octave_scale, (int, float)) and octave_scale >= 1):
        raise ValueError(f"octave_scale must be a number >= 1, got {octave_scale!r}")
    device, dtype = model_device_dtype(model)
    images = as_images(x, model).astype(dtype)             # a copy of its own, in the model's dtype
    name, _ = find_layer(model, layer)
    objective = -(obj.layer_power(name) if channel is None else obj.channel(name, int(channel)))
    h, w = images.shape[2:]
    sizes = [(max(1, int(round(h / octave_scale ** k))), max(1, int(round(w / octave_scale ** k))))
             for k in reversed(range(octaves))]
    history = History()
    starts = []
    rng = np.random.default_rng(seed)
    with analysis_mode(model):
        detail = None
        for k, size in enumerate(sizes):
            base = resize(images, size)
            detail = base * 0 if detail is None else resize(detail, size)
            start = base + detail
            start = start.clip(0.0, 1.0)
            starts.append(len(history))
            dream, history = optimize_image(model, objective, start, steps, lr=lr, optimizer="normalized",
                                            jitter=jitter, seed=_child_seed(rng), progress=progress,
                                            desc=f"dream octave {k + 1}/{len(sizes)}", history=history)
            detail = dream - base
    history.info.update(octave_sizes=sizes, octave_start=starts, layer=name)
    return on_device_of(x, dream), history


# ------------------------------------------------------------ style transfer
def _fit_size(shape_hw, size):
    """Output size: the content's (None), its longer side scaled to ``size`` (int), or ``size`` (H, W)."""
    h, w = shape_hw
    if size is None:
        return h, w
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        check_positive(size, "size", integer=True)
        s = size / max(h, w)
        return max(1, int(round(h * s))), max(1, int(round(w * s)))
    return _size_pair(size)


def style_transfer(model, content, style, content_layer, style_layers, content_weight=1.0, style_weight=1e3,
                   tv_weight=10.0, steps=100, size=None, init="content", optimizer="adam", lr=0.02,
                   style_layer_weights=None, style_size=None, seed=0, progress=False):
    """Gatys, Ecker & Bethge's neural style transfer ("Image style transfer using CNNs", CVPR 2016).

    Minimises over the image x

        content_weight * content_loss(Phi_c(x), Phi_c(content))
      + style_weight   * sum_l w_l style_loss(Phi_l(x), G_l(style))
      + tv_weight      * total_variation(x)

    Phi_c the features at ``content_layer``, G_l the Gram matrices of the
    style image's features at each of ``style_layers`` (w_l =
    ``style_layer_weights``, default 1 / len(style_layers)). The content loss
    keeps the arrangement of the content image; the style loss matches which
    channels fire together, everywhere, which is texture without layout.

    Works on images larger than the network's training size: the forward
    pass stops at the deepest requested layer, before any flatten/linear
    head, and convolutions and pooling accept any H, W.

    Args:
        content: images (N, C, H, W) or (C, H, W) in [0, 1].
        style: one image (1, C, H', W') or (C, H', W') in [0, 1]; any size.
        content_layer, style_layers: names from ``model.named_modules()`` (or modules).
        size: output size: None (the content's), an int (the content's
            longer side becomes ``size``, aspect kept) or (H, W).
        style_size: the style image is resized so its longer side is this
            (default: the output's longer side), aspect kept, so that its
            texture appears at the same scale relative to the output.
        init: ``'content'`` (start from the content image) or ``'noise'``
            (uniform noise in [0, 1] from ``seed``, as Gatys et al.).
        optimizer: ``'adam'`` (``lr``) or ``'lbfgs'`` (SciPy's L-BFGS-B, bounds [0, 1]).

    Returns:
        (image, history), image on content's device; ``history.terms``
        holds the content, style and tv values per step.
    """
    check_positive(steps, "steps", integer=True)
    check_positive(lr, "lr")
    for v, n in ((content_weight, "content_weight"), (style_weight, "style_weight"), (tv_weight, "tv_weight")):
        check_positive(v, n, allow_zero=True)
    if init not in ("content", "noise"):
        raise ValueError(f"init must be 'content' or 'noise', got {init!r}")
    if isinstance(style_layers, (str, Module)) or not hasattr(style_layers, "__iter__"):   # one layer
        style_layers = [style_layers]
    style_layers = list(style_layers)
    if not style_layers:
        raise ValueError("style_layers: give at least one layer")
    device, dtype = model_device_dtype(model)
    content_img = as_images(content, model, name="content").astype(dtype)
    style_img = as_images(style, model, name="style").astype(dtype)
    if style_img.shape[1] != content_img.shape[1]:
        raise ValueError(f"style has {style_img.shape[1]} channels but content has {content_img.shape[1]}")
    out_hw = _fit_size(content_img.shape[2:], size)
    content_img = resize(content_img, out_hw)
    sh, sw = style_img.shape[2:]
    side = max(out_hw) if style_size is None else check_positive(style_size, "style_size", integer=True)
    scale = side / max(sh, sw)
    style_img = resize(style_img, (max(1, int(round(sh * scale))), max(1, int(round(sw * scale)))))
    c_name = find_layer(model, content_layer)[0]
    s_names = [find_layer(model, s)[0] for s in style_layers]

    rng = np.random.default_rng(seed)
    if init == "content":
        x0 = content_img.copy()
    else:
        x0 = to_device(rng.uniform(0, 1, content_img.shape).astype(dtype), device)
    with analysis_mode(model):
        with no_grad():
            target_content = layer_features(model, Tensor(content_img), [c_name])[c_name].detach()
            feats = layer_features(model, Tensor(style_img), s_names)
            grams = {n: gram_matrix(feats[n]).detach() for n in s_names}
        objective = (content_weight * obj.feature_match(c_name, target_content, name="content")
                     + style_weight * obj.style(s_names, grams, style_layer_weights)
                     + tv_weight * obj.tv())
        x, history = optimize_image(model, objective, x0, steps, lr=lr, optimizer=optimizer, seed=_child_seed(rng),
                                    progress=progress, desc="style transfer")
    history.info.update(size=out_hw, content_layer=c_name, style_layers=s_names)
    return on_device_of(content, x), history
