"""The building blocks: losses and a regulariser, each a function of Tensors.

Each is written with minicnn's differentiable ops (slicing, arithmetic,
``matmul``, ``mean``), so autograd gives its gradient with respect to the
image or the features; the tests check every one with ``minicnn.gradcheck``
in float64.

- ``total_variation(x, beta)``: the prior that neighbouring pixels look alike.
- ``gram_matrix(features)``: G = F F^T / (C H W), which channels fire together.
- ``content_loss(features, target)``: mean squared difference of features.
- ``style_loss(features, target)``: squared difference of Gram matrices.
- ``feature_loss(model, layer, x, target)``: content loss at a layer of a model.
"""
from ..analysis import find_layer
from ..autograd import Tensor
from ..backend import as_array, to_device

__all__ = ["total_variation", "gram_matrix", "content_loss", "style_loss", "feature_loss"]


def _tensor(value, like):
    """``value`` as a Tensor on ``like``'s device (a Tensor stays as it is)."""
    if isinstance(value, Tensor):
        return value
    return Tensor(to_device(as_array(value), like.device))


def _check_4d(x, fn, name):
    if x.ndim != 4:
        raise ValueError(f"{fn}: {name} must have shape (N, C, H, W), got {tuple(x.shape)}")


def total_variation(x, beta=2.0, eps=1e-12):
    """Total variation of images x (N, C, H, W), a prior that neighbouring pixels look alike.

    Mahendran & Vedaldi's R_{V^beta} ("Understanding deep image
    representations by inverting them", CVPR 2015), averaged instead of
    summed so that its weight does not depend on the image size:

        d_h[n,c,i,j] = x[n,c,i+1,j] - x[n,c,i,j]       d_w[n,c,i,j] = x[n,c,i,j+1] - x[n,c,i,j]
        TV(x) = mean over n, c and i < H-1, j < W-1 of  (d_h^2 + d_w^2)^(beta/2)

    beta = 2 (the default) is the squared-gradient prior: smooth images.
    beta = 1 is the classic total variation, which allows sharp edges. For
    beta < 2 the power s^(beta/2) of s = d_h^2 + d_w^2 has an infinite slope
    at s = 0 (where the image is flat); where s <= eps it is replaced by the
    line s * eps^(beta/2 - 1), which meets it at s = eps, so the gradient
    stays finite and the value is exact wherever s > eps. A constant image
    has TV 0. Returns a scalar Tensor; differentiable in x.
    """
    x = x if isinstance(x, Tensor) else Tensor(as_array(x))
    _check_4d(x, "total_variation", "x")
    if x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"total_variation: x must be at least 2x2 pixels, got {tuple(x.shape)}")
    if not beta > 0:
        raise ValueError(f"total_variation: beta must be > 0, got {beta!r}")
    corner = x[:, :, :-1, :-1]
    d_h = x[:, :, 1:, :-1] - corner
    d_w = x[:, :, :-1, 1:] - corner
    s = d_h * d_h + d_w * d_w
    if beta == 2:
        return s.mean()
    if beta > 2:
        return (s ** (beta / 2)).mean()
    flat = (s.data <= eps).astype(s.data.dtype)           # a constant mask: 1 where s <= eps
    power = (s + Tensor(flat)) ** (beta / 2) * Tensor(1 - flat)  # s^(beta/2) where s > eps (+1: finite elsewhere)
    line = s * Tensor(flat * eps ** (beta / 2 - 1))        # s * eps^(beta/2 - 1) where s <= eps
    return (power + line).mean()


def gram_matrix(features):
    """Gram matrices of feature maps: which channels are active together.

    For features F of shape (N, C, H, W), seen as N matrices of C rows of
    H*W values, the Gram matrix of image n is

        G[n] = F[n] F[n]^T / (C H W),     G[n, i, j] = sum_p F[n,i,p] F[n,j,p] / (C H W)

    shape (N, C, C), normalised by C H W (the number of entries of F[n]) so
    that its scale does not depend on the layer's size or the image's size.
    Each G[n] is symmetric positive semi-definite. (Gatys et al. write
    G = V^T V for V of shape (H W, C): the same matrix before normalising.)
    An unbatched (C, H, W) input gives one (C, C) matrix.
    """
    f = features if isinstance(features, Tensor) else Tensor(as_array(features))
    if f.ndim == 3:
        return gram_matrix(f.reshape((1,) + tuple(f.shape)))[0]
    _check_4d(f, "gram_matrix", "features")
    n, c, h, w = f.shape
    v = f.reshape(n, c, h * w)
    return (v @ v.transpose(0, 2, 1)) / float(c * h * w)


def content_loss(features, target_features):
    """Mean squared difference of two feature maps: mean((F - P)^2).

    ``features`` F (a Tensor, e.g. the synthesised image's activations) and
    ``target_features`` P (the content image's, a Tensor or array of the
    same shape, or of batch size 1 to compare every image with one target).
    Gatys et al. use (1/2) sum (F - P)^2; the mean keeps the weight
    independent of the layer's size. 0 when F = P. dL/dF = 2 (F - P) / F.size.
    """
    f = features if isinstance(features, Tensor) else Tensor(as_array(features))
    p = _tensor(target_features, f)
    if tuple(p.shape) != tuple(f.shape) and not (p.ndim == f.ndim and p.shape[0] == 1
                                                and tuple(p.shape[1:]) == tuple(f.shape[1:])):
        raise ValueError(f"content_loss: target_features has shape {tuple(p.shape)}, expected "
                         f"{tuple(f.shape)} (the features' shape, or with batch size 1)")
    d = f - p
    return (d * d).mean()


def style_loss(features, target):
    """Gatys et al.'s style loss: how far the Gram matrix of ``features`` is from the target's.

    ``features``: (N, C, H, W) activations of the image being made.
    ``target``: the style's Gram matrix, (C, C) or (N or 1, C, C) (from
    ``gram_matrix``), or the style image's features (ndim 4: any H, W; their
    Gram matrix is taken). With G = gram_matrix(features) and A the target,

        E = (1/4) sum_{i,j} (G[n,i,j] - A[n,i,j])^2,   averaged over the batch n,

    which is exactly Gatys et al.'s E_l = 1/(4 N_l^2 M_l^2) sum (G^u - A^u)^2
    for their unnormalised Gram matrices G^u = F F^T (N_l = C channels,
    M_l = H W positions), since G = G^u / (N_l M_l). 0 when the Gram
    matrices agree (in particular for identical features). Scalar Tensor.
    """
    f = features if isinstance(features, Tensor) else Tensor(as_array(features))
    _check_4d(f, "style_loss", "features")
    g = gram_matrix(f)
    a = _tensor(target, f)
    if a.ndim == 4:
        a = gram_matrix(a)
    elif a.ndim == 2:
        a = a.reshape((1,) + tuple(a.shape))
    c = f.shape[1]
    if a.ndim != 3 or tuple(a.shape[1:]) != (c, c) or a.shape[0] not in (1, f.shape[0]):
        raise ValueError(f"style_loss: target must be a Gram matrix of shape ({c}, {c}) or (N, {c}, {c}), "
                         f"or features of shape (N, {c}, H, W); got shape {tuple(_tensor(target, f).shape)}")
    d = g - a
    return (d * d).sum() * (0.25 / f.shape[0])


def feature_loss(model, layer, x, target_features, relative=False):
    """Content loss at one layer of a model: mean((Phi(x) - Phi_0)^2).

    ``Phi(x)`` is the output of ``layer`` (a name from
    ``model.named_modules()``, '' for the logits, or the module) for images
    x (a Tensor, usually requiring grad); ``target_features`` Phi_0 is a
    Tensor or array of that shape. With ``relative=True`` the result is
    divided by mean(Phi_0^2): Mahendran & Vedaldi's normalised error
    ||Phi(x) - Phi_0||^2 / ||Phi_0||^2, 0 for a perfect reconstruction and 1
    for Phi(x) = 0.

    The model runs in eval mode (the caller's mode is restored); the forward
    pass stops at ``layer``. Its parameters stay in the graph as in any
    forward pass, so a backward also fills their ``.grad`` if they require
    grad: the synthesis methods freeze them (``minicnn.analysis.analysis_mode``) first.
    """
    from .core import layer_features

    name, _ = find_layer(model, layer)
    x = x if isinstance(x, Tensor) else Tensor(as_array(x))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        phi = layer_features(model, x, [name])[name]
    finally:
        for m, mode in modes:
            m.training = mode
    loss = content_loss(phi, target_features)
    if relative:
        p = _tensor(target_features, phi).data
        scale = float((p * p).mean())
        if scale == 0:
            raise ValueError("feature_loss: relative=True needs non-zero target features")
        loss = loss / scale
    return loss
