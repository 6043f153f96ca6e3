"""The analysis assignments from the lectures: a saliency map, FGSM, Grad-CAM.

The student works with minicnn itself (Tensors, autograd, forward hooks) on
small fixed models (``models.build_model``). Expected answers are the
package's own implementations (``minicnn.explain``, ``minicnn.attacks``)
and, on models where one exists, the closed form: a linear model's saliency
is |w_target| and its FGSM step the sign of w^T (p - onehot); a network that
ends in global average pooling and a linear layer has the class activation
map as its Grad-CAM.
"""
import numpy as np

from .. import attacks, explain
from .. import functional as F
from ..autograd import Tensor
from .core import Case, about, call, close, matches
from .models import CAM_LAYERS, INPUT_SHAPES, build_model

SEED = 4242

SALIENCY_SKELETON = '''"""Homework: a saliency map (Simonyan et al. 2014).   minicnn homework check saliency

saliency(model, x, target): model is a minicnn Module in eval mode mapping
images x (N, C, H, W) (a NumPy array) to logits (N, K); target (N,) ints.
Return an (N, H, W) NumPy array:

    S[n, h, w] = max over channels c of | d logit[n, target[n]] / d x[n, c, h, w] |

With minicnn: xt = Tensor(x, requires_grad=True); logits = model(xt);
pick each row's target logit, backward, and read xt.grad. (Images do not
interact in eval mode, so one backward pass of their sum gives them all.)
"""
import numpy as np
from minicnn import Tensor


def saliency(model, x, target):
    # TODO
    raise NotImplementedError("saliency")


if __name__ == "__main__":
    from minicnn.homework.models import build_model
    model = build_model("conv", 0)
    print(saliency(model, np.random.default_rng(0).random((2, 3, 8, 8)), np.array([0, 1])).shape)   # (2, 8, 8)
'''

FGSM_SKELETON = '''"""Homework: the fast gradient sign method (Goodfellow et al. 2015).   minicnn homework check fgsm

fgsm(model, x, labels, eps): one step up the cross-entropy loss of the true
labels, in the sign of its gradient, kept inside the pixel range [0, 1]:

    x_adv = clip(x + eps * sign(d CE(model(x), labels) / d x), 0, 1)

x (N, C, H, W) NumPy array in [0, 1]; labels (N,) ints. Return x_adv, a
NumPy array of x's shape. (minicnn.functional.cross_entropy computes the loss.)
"""
import numpy as np
from minicnn import Tensor
import minicnn.functional as F


def fgsm(model, x, labels, eps):
    # TODO
    raise NotImplementedError("fgsm")


if __name__ == "__main__":
    from minicnn.homework.models import build_model
    model = build_model("conv", 0)
    x = np.random.default_rng(0).random((2, 3, 8, 8))
    print(np.abs(fgsm(model, x, np.array([0, 1]), 0.1) - x).max())     # 0.1
'''

GRADCAM_SKELETON = '''"""Homework: Grad-CAM (Selvaraju et al. 2017).   minicnn homework check gradcam

grad_cam(model, x, target, layer): layer names a module of the model (as in
dict(model.named_modules())) whose output A (N, K, h, w) is a feature map.

    alpha[n, k] = mean over (i, j) of d logit[n, target[n]] / d A[n, k, i, j]
    map[n]      = ReLU( sum_k alpha[n, k] * A[n, k] )          shape (h, w)

Return the (N, h, w) NumPy array. Get A and its gradient with a forward
hook: module.register_forward_hook(hook) calls hook(module, inputs, output)
after the module runs; a hook that returns a Tensor replaces the output
(return Tensor(output.data, requires_grad=True) to make it a leaf whose
.grad backward fills); remove the hook afterwards (handle.remove()).
"""
import numpy as np
from minicnn import Tensor


def grad_cam(model, x, target, layer):
    # TODO
    raise NotImplementedError("grad_cam")


if __name__ == "__main__":
    from minicnn.homework.models import build_model
    model = build_model("conv", 0)
    print(grad_cam(model, np.random.default_rng(0).random((2, 3, 8, 8)), np.array([0, 1]), "3").shape)  # (2, 8, 8)
'''


def _images(rng, kind, n):
    return rng.random((n,) + INPUT_SHAPES[kind])


def _w(kind, seed):
    return build_model(kind, seed)[1].weight.data


def saliency_cases():
    rng = np.random.default_rng(SEED)
    cases = []
    for kind, n, seed in (("conv", 4, 1), ("conv", 1, 2), ("linear", 3, 3)):
        x, t = _images(rng, kind, n), rng.integers(0, 3, n)
        model = build_model(kind, seed)
        expected = explain.saliency(model, x, t)
        if kind == "linear":          # the closed form: |w_target| per pixel, max over channels
            closed = np.abs(_w(kind, seed)[t].reshape((n,) + INPUT_SHAPES[kind])).max(axis=1)
            assert np.allclose(expected, closed)
        cases.append(Case(f"saliency, {kind} model, {n} image(s)", 1,
                          [call("saliency", {"model": [kind, seed]}, "$x", "$target", out=("S",))],
                          {"x": x, "target": t}, {"S": expected}, seed=SEED, args=dict(model=kind), diagnoses=[
                              ("the saliency map takes the absolute value of the gradient: max over channels of "
                               "|d logit / dx|", matches("S", lambda c, a=(kind, seed): _grad(a, c).max(axis=1))),
                              ("the channels are reduced by a sum or mean; the map takes their maximum",
                               about("S", lambda r, c, a=(kind, seed): any(close(r["S"], f(np.abs(_grad(a, c)), axis=1))
                                                                          for f in (np.sum, np.mean)))),
                              ("the gradient is of the loss or of a probability; the saliency map differentiates the "
                               "target's logit (the score before the softmax)",
                               about("S", lambda r, c, a=(kind, seed): close(r["S"],
                                                                             np.abs(_loss_grad(a, c)).max(1))))]))
    return cases


def _grad(a, c):
    return explain.gradient(build_model(*a), c.inputs["x"], c.inputs["target"])


def _loss_grad(a, c):
    """d CE(model(x), labels) / dx (summed over the batch), labels being the case's target or labels."""
    xt = Tensor(c.inputs["x"], requires_grad=True)
    labels = c.inputs["target"] if "target" in c.inputs else c.inputs["labels"]
    F.cross_entropy(build_model(*a)(xt), labels, reduction="sum").backward()
    return xt.grad


def fgsm_cases():
    rng = np.random.default_rng(SEED + 1)
    cases = []
    for kind, n, seed, eps in (("conv", 4, 1, 0.05), ("conv", 2, 4, 0.3), ("linear", 3, 3, 0.1)):
        x, y = _images(rng, kind, n), rng.integers(0, 3, n)
        model = build_model(kind, seed)
        expected = attacks.fgsm(model, x, y, eps)
        if kind == "linear":          # closed form: d CE / dx = W^T (p - onehot)
            z = x.reshape(n, -1) @ _w(kind, seed).T + model[1].bias.data
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(n), y] -= 1
            closed = np.clip(x + eps * np.sign((p @ _w(kind, seed)).reshape(x.shape)), 0, 1)
            assert np.allclose(expected, closed)
        cases.append(Case(f"fgsm eps {eps}, {kind} model, {n} image(s)", 1,
                          [call("fgsm", {"model": [kind, seed]}, "$x", "$labels", eps, out=("x_adv",))],
                          {"x": x, "labels": y}, {"x_adv": expected}, seed=SEED + 1, args=dict(eps=eps), diagnoses=[
                              ("x_adv is not clipped to the pixel range [0, 1]",
                               matches("x_adv", lambda c, e=eps, a=(kind, seed): c.inputs["x"] + e * np.sign(
                                   _loss_grad(a, c)))),
                              ("FGSM steps UP the loss of the true label: x + eps * sign(gradient)",
                               matches("x_adv", lambda c, e=eps, a=(kind, seed): np.clip(c.inputs["x"] - e * np.sign(
                                   _loss_grad(a, c)), 0, 1))),
                              ("FGSM steps by the SIGN of the gradient (every pixel moves by eps), not the gradient",
                               about("x_adv", lambda r, c, e=eps: not np.all(np.isclose(
                                   np.abs(r["x_adv"] - c.inputs["x"]), e) | np.isclose(r["x_adv"], 0)
                                   | np.isclose(r["x_adv"], 1) | np.isclose(r["x_adv"], c.inputs["x"]))))]))
    return cases


def gradcam_cases():
    rng = np.random.default_rng(SEED + 2)
    cases = []
    for kind, n, seed in (("conv", 3, 1), ("conv", 1, 5), ("gap", 3, 6)):
        x, t = _images(rng, kind, n), rng.integers(0, 3, n)
        model = build_model(kind, seed)
        layer = CAM_LAYERS[kind]
        raw = explain.grad_cam(model, x, t, layer=layer)
        if kind == "gap":     # closed form: the class activation map, sum_k w[t, k] A_k / (h*w)
            A = model[1](model[0](x)).data
            closed = np.einsum("nk,nkhw->nhw", model[4].weight.data[t], A) / (A.shape[2] * A.shape[3])
            assert np.allclose(raw, closed)
        cases.append(Case(f"grad_cam at layer {layer!r}, {kind} model, {n} image(s)", 1,
                          [call("grad_cam", {"model": [kind, seed]}, "$x", "$target", layer, out=("map",))],
                          {"x": x, "target": t}, {"map": np.maximum(raw, 0)}, seed=SEED + 2,
                          args=dict(layer=layer), diagnoses=[
                              ("Grad-CAM keeps only the positive part: apply ReLU to sum_k alpha_k A_k",
                               matches("map", lambda c, r=raw: r)),
                              ("alpha must be the MEAN of the gradient over the positions (i, j), not the sum",
                               about("map", lambda r, c, m=np.maximum(raw, 0): close(
                                   r["map"], m * m.shape[1] * m.shape[2]))),
                              ("the map weights the gradient, not the activations: sum_k alpha_k A_k",
                               about("map", lambda r, c: r["map"].shape == c.expected["map"].shape
                                     and not close(r["map"], c.expected["map"])))]))
    return cases
