"""The small fixed models the analysis assignments are graded on, built the same way in the grader and the sandbox.

``build_model(kind, seed)``: "conv" (3x8x8 images: two conv layers, max
pooling, a linear head), "linear" (2x4x4 images straight into a linear
layer: its saliency and FGSM have closed forms), "gap" (conv, ReLU, global
average pooling, linear: its Grad-CAM at the conv is the class activation
map, a closed form). Float64, eval mode, weights drawn from ``seed``.
"""
import numpy as np

from .. import nn

INPUT_SHAPES = {"conv": (3, 8, 8), "linear": (2, 4, 4), "gap": (3, 6, 6)}
CAM_LAYERS = {"conv": "3", "gap": "1"}     # the layer Grad-CAM is asked for (a ReLU's output)


def build_model(kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "conv":
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))
    elif kind == "linear":
        model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    elif kind == "gap":
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, 3))
    else:
        raise ValueError(f"build_model: kind must be conv, linear or gap, got {kind!r}")
    for p in model.parameters():
        p.data = rng.standard_normal(p.data.shape) * (0.5 if p.data.ndim > 1 else 0.1)
    return model.eval()
