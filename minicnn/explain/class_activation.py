"""Class activation maps: where in the image a layer's features speak for a class.

CAM (Zhou et al., "Learning Deep Features for Discriminative Localization",
CVPR 2016) for a network that ends in global average pooling and one linear
layer: with f_k(x, y) the feature maps of the last convolutional layer and
w_k^c the linear weights of class c,

    s_c = sum_k w_k^c (1/Z) sum_xy f_k(x, y) + b_c,     CAM_c(x, y) = sum_k w_k^c f_k(x, y)

Grad-CAM (Selvaraju et al., ICCV 2017) replaces w_k^c by the gradient of the
score averaged over the map, which needs no particular architecture:

    alpha_k^c = (1/Z) sum_xy d s_c / d A_k(x, y),       Grad-CAM_c(x, y) = ReLU(sum_k alpha_k^c A_k(x, y))

For a GAP -> linear network alpha_k^c = w_k^c / Z, so Grad-CAM = CAM / Z.

Raw and normalised maps are kept apart: both functions return the **raw**
map sum_k weight_k A_k (N, h, w) in logit units, positive where the layer's
features raise the score and negative where they lower it (no ReLU). With
``normalize=True`` they return the picture instead: ReLU (the paper's step:
only evidence *for* the class), divided by each map's maximum, in [0, 1].
A map that is negative (or zero) everywhere has no evidence for the class at
this layer; its normalised map is all zeros (never NaN), and its raw map
still shows where the evidence against lies. ``upsample=True`` resizes
either to the input's (H, W) bilinearly (before normalising).
"""
from ..autograd import Tensor, no_grad
from ..backend import get_array_module
from ..nn import Conv2d, Linear
from ..analysis import analysis_mode, as_images, capture, find_layer, on_device_of
from ._common import normalize_map, resolve_targets, upsample as _upsample

__all__ = ["cam", "grad_cam", "default_cam_layer"]


def _finish(maps, data, upsample, normalize):
    if upsample:
        maps = _upsample(maps, data.shape[2:])
    return normalize_map(maps) if normalize else maps


def default_cam_layer(model, x):
    """The name of the layer CAM/Grad-CAM use by default: the last map at the last convolution's resolution.

    That is the last module whose (N, C, h, w) output has the spatial size
    of the last ``Conv2d``'s output (its ReLU in simple_cnn, the last
    residual stage in a ResNet, which feeds global average pooling).
    """
    data = as_images(x, model)
    order = []
    named = [(n, m) for n, m in model.named_modules() if n]
    with analysis_mode(model), no_grad():
        hooks = []
        try:
            for name, m in named:
                hooks.append(m.register_forward_hook(
                    lambda mod, i, out, name=name: order.append((name, mod, out))))
            model(Tensor(data[:1]))
        finally:
            for h in hooks:
                h.remove()
    convs = [k for k, (_, mod, out) in enumerate(order) if isinstance(mod, Conv2d)]
    if not convs:
        raise ValueError("no Conv2d ran in the model; pass layer= explicitly")
    hw = tuple(order[convs[-1]][2].shape[2:])
    same = [name for name, _, out in order[convs[-1]:]
            if isinstance(out, Tensor) and out.ndim == 4 and tuple(out.shape[2:]) == hw]
    return same[-1]


def _layer_name(model, x, layer):
    return default_cam_layer(model, x) if layer is None else find_layer(model, layer)[0]


def cam(model, x, target=None, layer=None, upsample=False, normalize=False):
    """Class activation map (Zhou et al. 2016), (N, h, w) at ``layer``'s resolution.

    For networks whose ``layer`` output feeds global average pooling and then
    the final linear layer directly (the ResNets: ``layer='blocks'`` or
    ``'net.blocks'`` after ``load_model``); raises ValueError otherwise (use
    ``grad_cam``). ``layer`` None picks ``default_cam_layer``. Returns the raw
    map sum_k w_k^c f_k(x, y) (no bias), or with ``normalize=True`` the
    [0, 1] picture (see the module docstring, also for all-negative maps).
    """
    data = as_images(x, model)
    name = _layer_name(model, x, layer)
    _, module = find_layer(model, name)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, Linear)}
    with analysis_mode(model), no_grad(), capture({name: module}) as feats, capture(linears) as outs:
        logits = model(Tensor(data))
    if name not in feats:
        raise ValueError(f"cam: layer {name!r} did not run in the forward pass")
    final = [n for n, out in outs.items() if out is logits]
    if not final:
        raise ValueError("cam: the model's logits are not the output of an nn.Linear layer; CAM needs "
                         "global average pooling followed by one linear layer; use grad_cam")
    fc = linears[final[0]]
    a = feats[name].data
    if a.ndim != 4 or a.shape[1] != fc.in_features:
        raise ValueError(f"cam: layer {name!r} gives shape {tuple(a.shape)}, but the final linear layer "
                         f"{final[0]!r} takes {fc.in_features} features; pick the layer whose (N, "
                         f"{fc.in_features}, h, w) output is globally average-pooled, or use grad_cam")
    xp = get_array_module(a)
    w = fc.weight.data
    pooled = a.mean(axis=(2, 3)) @ w.T + (fc.bias.data if fc.bias is not None else 0)
    scale = float(xp.abs(logits.data).max()) + 1
    if float(xp.abs(pooled - logits.data).max()) > 1e-3 * scale:
        raise ValueError(f"cam: the logits are not global-average-pooled {name!r} features times the "
                         f"final linear layer {final[0]!r} (the network does more in between, e.g. "
                         f"Flatten of a spatial map); CAM does not apply, use grad_cam")
    targets = resolve_targets(logits.data, target)
    maps = xp.einsum("nk,nkhw->nhw", w[targets], a)
    return on_device_of(x, _finish(maps, data, upsample, normalize))


def grad_cam(model, x, target=None, layer=None, upsample=False, normalize=False):
    """Grad-CAM (Selvaraju et al. 2017), (N, h, w) at ``layer``'s resolution, for any layer with a spatial map.

    alpha_k = mean over (x, y) of d logit_target / d A_k(x, y); the raw map is
    sum_k alpha_k A_k (negative where the features argue against the class);
    ``normalize=True`` gives ReLU of it scaled to [0, 1] per image (the
    paper's picture; all zeros when nothing is positive). ``upsample=True``
    resizes to the input's (H, W). ``layer`` None picks ``default_cam_layer``.
    The gradient starts at the layer (its output is made a leaf that
    requires a gradient, inside the forward hook), so the layers below it
    are not differentiated.
    """
    data = as_images(x, model)
    name = _layer_name(model, x, layer)
    _, module = find_layer(model, name)
    leaf = {}

    def make_leaf(mod, inputs, out):
        if not isinstance(out, Tensor) or out.ndim != 4:
            raise ValueError(f"grad_cam: layer {name!r} gives {type(out).__name__} of shape "
                             f"{tuple(getattr(out, 'shape', ()))}; a spatial (N, C, h, w) map is needed")
        leaf["a"] = Tensor(out.data, requires_grad=True)
        return leaf["a"]

    with analysis_mode(model):
        handle = module.register_forward_hook(make_leaf)
        try:
            logits = model(Tensor(data))
        finally:
            handle.remove()
        if "a" not in leaf:
            raise ValueError(f"grad_cam: layer {name!r} did not run in the forward pass")
        a = leaf["a"]
        xp = get_array_module(a.data)
        targets = resolve_targets(logits.data, target)
        seed = xp.zeros_like(logits.data)
        seed[xp.arange(seed.shape[0]), targets] = 1
        if logits.requires_grad:
            logits.backward(seed)
        grads = a.grad if a.grad is not None else xp.zeros_like(a.data)
    alpha = grads.mean(axis=(2, 3))
    maps = xp.einsum("nk,nkhw->nhw", alpha, a.data)
    return on_device_of(x, _finish(maps, data, upsample, normalize))

