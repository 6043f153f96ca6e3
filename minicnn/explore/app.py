"""``Explorer``: what the explore page asks of a trained model, one method per panel, inputs checked.

Every method takes plain values (strings and numbers from a URL), checks
them, runs ``minicnn.explain`` or ``minicnn.attacks`` on one image and
returns a dict ready for JSON, with images as base64 PNG ``data:`` URIs at
the model's resolution (the page enlarges them, pixels kept square).
A bad value raises ``BadRequest`` with the HTTP status and a message
naming the parameter, the value and what is allowed.

The model is shared by all requests; the analyses put it in analysis mode
(hooks, flags), so one lock runs them one at a time.
"""
import threading
from collections import OrderedDict

import numpy as np

from ..report.images import RESIZE_RULE, ImageError, ImageTooLarge, data_uri, heatmap, image_from_bytes, overlay, \
    png_bytes, signed_map

__all__ = ["Explorer", "BadRequest", "METHODS", "ATTACKS", "EPS_MAX", "EPS_STEP"]

METHODS = ("saliency", "guided_backprop", "grad_cam", "occlusion")
ATTACKS = ("fgsm", "pgd")
EPS_MAX = 32 / 255          # the largest L-inf budget accepted (the slider goes to 16/255)
EPS_STEP = 1 / 255
MAX_CHANNELS = 256          # channels of one layer sent to the page


class BadRequest(Exception):
    """A request the page cannot answer: ``status`` (400, 404, 413, 415...) and a message for the user."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _top(probs, classes, k=5):
    order = np.argsort(-probs)[:k]
    return [{"index": int(i), "class": classes[i], "p": float(probs[i])} for i in order]


class Explorer:
    """A trained model (``minicnn.load_model``) and the images the page can pick from.

    Args:
        model: pixels in [0, 1] -> logits, with ``model.classes``.
        test_set: a dataset (``images`` uint8 (N, C, H, W), ``labels``, ``get_batch``) or None (uploads only).
        gallery: how many test images the page offers (spread over the classes).
        max_uploads: uploaded images kept in memory (the oldest is forgotten first).
        name: the model's name, shown on the page.
    """

    def __init__(self, model, test_set=None, gallery=40, max_uploads=32, name=None, seed=0):
        from ..explain import activations, default_cam_layer

        self.model = model
        self.classes = list(model.classes)
        self.name = name or type(getattr(model, "net", model)).__name__
        self.shape = tuple(test_set.images.shape[1:]) if test_set is not None else (3, 32, 32)
        self.lock = threading.Lock()
        self.images = OrderedDict()          # id -> (image (C, H, W) float32, true label or None, caption)
        self.max_uploads = max_uploads
        self._uploads = 0
        probe = np.zeros((1,) + self.shape, dtype=np.float32)
        names = [n for n, _ in model.named_modules() if n and n != "normalize"]
        try:
            outs = activations(model, probe, names)
        except ValueError:          # a module that never runs (unused): keep the layers that do
            outs = {}
            for n in names:
                try:
                    outs[n] = activations(model, probe, n)
                except ValueError:
                    pass
        modules = dict(model.named_modules())
        self.layers = OrderedDict((n, {"name": n, "type": type(modules[n]).__name__, "shape": list(a.shape[1:])})
                                  for n, a in outs.items() if getattr(a, "ndim", 0) == 4)
        self.cam_layer = default_cam_layer(model, probe)
        if test_set is not None:
            self._add_gallery(test_set, gallery, seed)

    def _add_gallery(self, test_set, count, seed):
        labels = np.asarray(test_set.labels)
        order = np.random.default_rng(seed).permutation(len(labels))
        per_class = max(1, -(-count // len(self.classes)))
        chosen = []
        for k in range(len(self.classes)):
            chosen += [int(i) for i in order[labels[order] == k][:per_class]]
        chosen = sorted(chosen, key=lambda i: (int(labels[i]), i))[:count]
        images, lab = test_set.get_batch(np.asarray(chosen, dtype=np.int64))
        for i, img, y in zip(chosen, images, lab):
            self.images[f"t{i}"] = (img.astype(np.float32) / 255, int(y), f"test image {i}")

    # ---------------------------------------------------------------- checking what the page sends
    def image(self, image_id):
        item = self.images.get(image_id)        # one lookup: an upload may be forgotten meanwhile
        if item is None:
            raise BadRequest(404, f"image {image_id!r}: no such image (pick one from the gallery or upload one)")
        return item

    def layer(self, name):
        if name not in self.layers:
            raise BadRequest(400, f"layer {name!r}: unknown; layers with a spatial map: {', '.join(self.layers)}")
        return name

    def target(self, value, x):
        """The class index of ``value`` (an index or a name; '' or None: the predicted class)."""
        if value in (None, "", "predicted"):
            return int(self._probs(x).argmax())
        if value in self.classes:
            return self.classes.index(value)
        try:
            k = int(value)
        except (TypeError, ValueError):
            raise BadRequest(400, f"class {value!r}: unknown; give an index 0 to {len(self.classes) - 1} or one "
                                  f"of {', '.join(self.classes)}") from None
        if not 0 <= k < len(self.classes):
            raise BadRequest(400, f"class {k}: out of range; the classes are 0 to {len(self.classes) - 1}")
        return k

    @staticmethod
    def eps(value):
        try:
            eps = float(value)
        except (TypeError, ValueError):
            raise BadRequest(400, f"eps {value!r}: not a number; give a number from 0 to {EPS_MAX:.4f} "
                                  f"({round(EPS_MAX * 255)}/255)") from None
        if not 0 <= eps <= EPS_MAX:
            raise BadRequest(400, f"eps {value}: out of range; it must lie in [0, {EPS_MAX:.4f}] "
                                  f"(0 to {round(EPS_MAX * 255)}/255 of the pixel range)")
        return eps

    @staticmethod
    def choice(name, value, allowed):
        if value not in allowed:
            raise BadRequest(400, f"{name} {value!r}: unknown; choose one of {', '.join(allowed)}")
        return value

    # ---------------------------------------------------------------- the panels
    def _probs(self, x):
        from ..explain import predict

        return predict(self.model, x[None])[2][0]

    def info(self):
        """What the page needs first: the model, its classes and layers, the gallery, the limits."""
        return {"model": self.name, "classes": self.classes, "shape": list(self.shape),
                "layers": list(self.layers.values()), "cam_layer": self.cam_layer, "methods": list(METHODS),
                "attacks": list(ATTACKS), "eps_max": EPS_MAX, "eps_step": EPS_STEP,
                "resize_rule": RESIZE_RULE.format(size=self.shape[-1]),
                "gallery": [{"id": k, "label": self.classes[y] if y is not None else None, "caption": c,
                             "png": data_uri(png_bytes(img))} for k, (img, y, c) in list(self.images.items())]}

    def predict(self, image_id):
        """The image as the model sees it and its top-5 classes."""
        x, label, caption = self.image(image_id)
        with self.lock:
            probs = self._probs(x)
        return {"image": image_id, "png": data_uri(png_bytes(x)), "caption": caption,
                "label": None if label is None else self.classes[label], "top5": _top(probs, self.classes)}

    def activations(self, image_id, layer):
        """Every channel (up to ``MAX_CHANNELS``) of ``layer``'s output, on one grey scale for the whole layer."""
        from ..explain import activations

        x, _, _ = self.image(image_id)
        layer = self.layer(layer)
        with self.lock:
            a = np.asarray(activations(self.model, x[None], layer), dtype=np.float64)[0]
        lo, hi = float(a.min()), float(a.max())
        unit = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        shown = unit[:MAX_CHANNELS]
        return {"image": image_id, "layer": layer, "shape": list(a.shape), "min": lo, "max": hi,
                "channels": [{"png": data_uri(png_bytes(c)), "min": float(a[i].min()), "max": float(a[i].max())}
                             for i, c in enumerate(shown)], "shown": len(shown)}

    def explain(self, image_id, method, target=None, layer=None):
        """Saliency, guided backprop, Grad-CAM (at ``layer``) or occlusion for class ``target``."""
        from ..explain import grad_cam, guided_backprop, occlusion, saliency

        x, _, _ = self.image(image_id)
        method = self.choice("method", method, METHODS)
        layer = self.layer(layer) if layer not in (None, "") else self.cam_layer
        side = min(x.shape[1:])
        with self.lock:
            k = self.target(target, x)
            batch = x[None]
            if method == "saliency":
                m = saliency(self.model, batch, k)[0]
            elif method == "guided_backprop":
                g = np.asarray(guided_backprop(self.model, batch, k)[0])
            elif method == "grad_cam":
                m = grad_cam(self.model, batch, k, layer=layer, upsample=True, normalize=True)[0]
            else:
                m = occlusion(self.model, batch, k, window=max(1, side // 4), stride=max(1, side // 8))[0]
        if method == "guided_backprop":
            picture, _ = signed_map(g)
            m = np.abs(g).max(axis=0)
        else:
            m = np.asarray(m, dtype=np.float64)
            picture = heatmap(m)
        return {"image": image_id, "method": method, "class": self.classes[k], "index": k,
                "layer": layer if method == "grad_cam" else None, "map": data_uri(png_bytes(picture)),
                "overlay": data_uri(png_bytes(overlay(x, m))), "min": float(m.min()), "max": float(m.max())}

    def attack(self, image_id, method, eps):
        """FGSM or PGD (10 steps) against the model's own prediction, within ``eps`` (L-inf, pixel units)."""
        from ..attacks import fgsm, pgd

        x, _, _ = self.image(image_id)
        method = self.choice("method", method, ATTACKS)
        eps = self.eps(eps)
        with self.lock:
            before = self._probs(x)
            y = np.asarray([int(before.argmax())])
            fn = fgsm if method == "fgsm" else pgd
            adv = np.asarray(fn(self.model, x[None], y, eps))[0]
            after = self._probs(adv)
        d = adv.astype(np.float64) - x
        picture, biggest = signed_map(d)
        return {"image": image_id, "method": method, "eps": eps, "eps_255": eps * 255,
                "adversarial": data_uri(png_bytes(adv)), "perturbation": data_uri(png_bytes(picture)),
                "linf": biggest, "magnified": (0.5 / biggest) if biggest > 0 else None,
                "before": _top(before, self.classes, 1)[0], "top5": _top(after, self.classes),
                "fooled": int(after.argmax()) != int(y[0])}

    def upload(self, data):
        """Add an uploaded PNG/JPEG (bytes) to the images; returns its id and prediction."""
        try:
            x, (w, h) = image_from_bytes(data, size=self.shape[-1])
        except ImageError as e:
            raise BadRequest(413 if isinstance(e, ImageTooLarge) else 415, f"upload: {e}") from None
        if self.shape[0] == 1:
            x = x.mean(axis=0, keepdims=True)
        with self.lock:
            self._uploads += 1
            image_id = f"u{self._uploads}"
            self.images[image_id] = (x, None, f"upload {self._uploads} ({w}x{h})")
            uploads = [k for k in self.images if k.startswith("u")]
            for old in uploads[:max(0, len(uploads) - self.max_uploads)]:
                del self.images[old]
        result = self.predict(image_id)
        result["original"] = [w, h]
        return result
