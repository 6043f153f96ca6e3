"""Objectives that compose, in the spirit of Lucid: what the synthesis methods minimise.

An ``Objective`` is a scalar function of the image x and the model's
features at some layers. Terms add and scale::

    obj = -logit(3) + 0.01 * l2()                    # a class model (Simonyan et al.)
    obj = -channel("net.6", 5) + 0.5 * tv()          # one channel of a layer, smooth
    obj = feature_match("net.4", phi0, relative=True) + 2.0 * tv()   # an inversion

``obj.evaluate(model, x)`` runs the model once (stopping after the last
layer any term needs) and returns the Tensor to minimise and a dict of
each named term's (unweighted) value, which ``History.terms`` records.
Terms built from the "maximise this" side (``logit``, ``channel``,
``layer_power``) are negated to be minimised, as above.
"""
from ..autograd import Tensor
from ..analysis import find_layer
from .core import layer_features
from .losses import content_loss, style_loss, total_variation

__all__ = ["Objective", "logit", "channel", "layer_power", "feature_match", "style", "tv", "l2"]


class Objective:
    """A weighted sum of terms, each ``fn(x, features) -> scalar Tensor`` with a name and its layers.

    ``layers`` lists the layer names a term reads from ``features``
    (a dict name -> Tensor); '' is the model's output (the logits).
    """

    def __init__(self, name, fn, layers=()):
        self.terms = [(1.0, name, fn, tuple(layers))]

    @classmethod
    def _of(cls, terms):
        obj = cls.__new__(cls)
        obj.terms = list(terms)
        return obj

    @property
    def layers(self):
        return sorted({layer for _, _, _, layers in self.terms for layer in layers})

    def __add__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective._of(self.terms + other.terms)

    def __mul__(self, k):
        if not isinstance(k, (int, float)) or isinstance(k, bool):
            return NotImplemented
        return Objective._of([(w * k, n, f, ls) for w, n, f, ls in self.terms])

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def evaluate(self, model, x):
        """(total, {name: value}): the weighted sum to minimise (a Tensor) and each term's value."""
        names = self.layers
        if names:
            names = [find_layer(model, n)[0] for n in names]
            feats = layer_features(model, x, names)
        else:
            feats = {}
        total, values = None, {}
        for w, name, fn, _ in self.terms:
            t = fn(x, feats)
            values[name] = values.get(name, 0.0) + t.item()
            if w == 0:
                continue
            total = t * w if total is None else total + t * w
        if total is None:
            total = (x * 0.0).sum()
        return total, values

    def __repr__(self):
        return " + ".join(f"{w:g}*{n}" for w, n, _, _ in self.terms)


def logit(target, layer=""):
    """The logit of class ``target`` (int, or one per image), averaged over the batch. Maximise it: ``-logit(c)``."""
    def fn(x, feats):
        out = feats[layer]
        n = out.shape[0]
        idx = [target] * n if isinstance(target, int) else list(target)
        if len(idx) != n:
            raise ValueError(f"logit: {len(idx)} targets for a batch of {n} images")
        return out[list(range(n)), idx].mean()
    return Objective("logit", fn, [layer])


def channel(layer, index):
    """Mean activation of channel ``index`` of ``layer`` (over batch and positions). Maximise: ``-channel(...)``."""
    def fn(x, feats):
        return feats[layer][:, index].mean()
    return Objective(f"channel[{index}]", fn, [layer])


def layer_power(layer):
    """Mean of the squared activations of ``layer``: DeepDream's "more of whatever it sees" (maximise)."""
    def fn(x, feats):
        a = feats[layer]
        return (a * a).mean()
    return Objective("power", fn, [layer])


def feature_match(layer, target_features, relative=False, name="features"):
    """``content_loss`` of the features at ``layer`` and ``target_features`` (/ mean(target^2) if relative)."""
    scale = 1.0
    if relative:
        t = target_features.data if isinstance(target_features, Tensor) else target_features
        scale = float((t * t).mean())
        if scale == 0:
            raise ValueError(f"feature_match: relative=True needs non-zero target features at layer {layer!r}")

    def fn(x, feats):
        loss = content_loss(feats[layer], target_features)
        return loss / scale if relative else loss
    return Objective(name, fn, [layer])


def style(layers, target_grams, layer_weights=None):
    """Sum over ``layers`` of w_l * style_loss(features_l, target_grams[l]) (w_l = 1 / len(layers) by default)."""
    layers = list(layers)
    weights = layer_weights or [1.0 / len(layers)] * len(layers)
    if len(weights) != len(layers):
        raise ValueError(f"style: {len(weights)} layer weights for {len(layers)} style layers")

    def fn(x, feats):
        total = None
        for layer, w in zip(layers, weights):
            t = style_loss(feats[layer], target_grams[layer]) * float(w)
            total = t if total is None else total + t
        return total
    return Objective("style", fn, layers)


def tv(beta=2.0):
    """``total_variation(x, beta)`` of the image itself (no layer)."""
    return Objective("tv", lambda x, feats: total_variation(x, beta))


def l2(center=0.5):
    """||x - center||^2 per image, averaged over the batch: Simonyan et al.'s L2 penalty (grey is 0)."""
    def fn(x, feats):
        d = x - center
        return (d * d).sum() / float(x.shape[0])
    return Objective("l2", fn)
