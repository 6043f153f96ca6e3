"""minicnn.explain.plot: every figure is drawn, saved and non-trivial; nothing is left open."""
import numpy as np
import pytest
from PIL import Image

from minicnn import explain, nn
from minicnn.explain import plot
from minicnn.models import get_model


def _check_png(path, min_side=150):
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert min(a.shape[:2]) >= min_side and a.std() > 10, path


@pytest.fixture(scope="module")
def setup():
    nn.init.manual_seed(0)
    model = get_model("lenet5").eval()
    x = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    return model, x


def test_figures_are_written_and_closed(setup, tmp_path):
    import matplotlib.pyplot as plt

    model, x = setup
    open_before = plt.get_fignums()
    results, skipped = explain.explain_all(model, x, None, samples=2, steps=4)
    assert "cam" in skipped and "grad_cam" in results      # LeNet-5 ends in fully connected layers
    plot.overview(x[0], {m: r[0] for m, r in results.items()}, "title", tmp_path / "overview.png")
    drawn = ["deconvnet", "integrated_gradients", "grad_cam"]     # (the CLI test draws every method)
    for m in drawn:
        plot.method_figure(x[1], m, results[m][1], f"{m}", tmp_path / f"{m}.png")
    plot.filter_grid(model, path=tmp_path / "filters.png")
    plot.feature_maps(explain.activations(model, x, "1")[0], "relu 1", x[0], tmp_path / "maps.png")
    top = explain.top_activating(model, x, "3", 2, k=2)
    plot.top_patches(top, "conv 2, channel 2", tmp_path / "top.png", labels=[0, 1], classes=["a", "b"])
    erf = explain.effective_receptive_field(model, "3", samples=2)
    plot.receptive_field_map(erf, (explain.receptive_field(model, "3"), (4, 4)), path=tmp_path / "erf.png")
    plot.overlay(x[0], explain.occlusion(model, x[:1], 0, window=4, stride=4)[0], "occlusion",
                 tmp_path / "overlay.png", cmap="RdBu_r", symmetric=True, label="drop")
    for name in ["overview", "filters", "maps", "top", "erf", "overlay"] + drawn:
        _check_png(tmp_path / f"{name}.png")
    assert plt.get_fignums() == open_before


def test_cam_panel_says_when_there_is_no_positive_evidence(setup, tmp_path):
    import matplotlib.pyplot as plt

    model, x = setup
    fig, ax = plt.subplots()
    plot.method_panel(ax, x[0], "grad_cam", -np.ones((32, 32)))
    assert "no positive evidence" in ax.get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="unknown method"):
        plot.method_figure(x[0], "magic", np.zeros((32, 32)))
    plt.close("all")
