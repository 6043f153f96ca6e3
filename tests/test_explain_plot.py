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


def test_grad_cam_panels_name_their_layer_and_target_titles_say_target(setup, tmp_path):
    model, x = setup
    r = explain.grad_cam(model, x[:1], 0, "3")
    fig = plot.method_figure(x[0], "grad_cam", r[0], "t", layer="3")
    assert fig.axes[1].get_title() == "Grad-CAM at layer 3"
    fig = plot.overview(x[0], {"grad_cam": r[0], "saliency": explain.saliency(model, x[:1])[0]}, "t", layer="3")
    assert [a.get_title() for a in fig.axes[:2]] == ["t", "Grad-CAM at layer 3"]
    from minicnn.cli.explain import _title

    classes = ["cat", "dog", "frog"]
    probs = np.array([0.61, 0.29, 0.10])
    assert _title(classes, 0, probs, 1, 0) == "true cat\ntarget dog: p = 0.29\n(predicted cat: p = 0.61)"
    assert _title(classes, 0, probs, None, None) == "predicted cat: p = 0.61"
    assert _title(classes, 0, probs, 0, None) == "target cat: p = 0.61"
    import matplotlib.pyplot as plt
    plt.close("all")


def test_plotting_is_the_one_place_figures_are_set_up_and_saved(tmp_path):
    """minicnn.plotting: images in any layout, a grid with the spare panels hidden, saving into new folders."""
    import matplotlib.pyplot as plt

    from minicnn import Tensor, plotting

    chw = np.random.default_rng(0).random((3, 4, 5))
    np.testing.assert_array_equal(plotting.as_hwc(chw), chw.transpose(1, 2, 0))
    np.testing.assert_array_equal(plotting.as_hwc(Tensor(chw[None])), chw.transpose(1, 2, 0))   # a batch of one
    np.testing.assert_array_equal(plotting.as_hwc(chw.transpose(1, 2, 0)), chw.transpose(1, 2, 0))
    assert plotting.as_hwc(chw[:1]).shape == (4, 5)                                       # one channel: grey
    np.testing.assert_array_equal(plotting.as_hwc(2 * chw - 1, lo=-1, hi=1), chw.transpose(1, 2, 0))
    assert plotting.scored(["cat", "dog"], 1, 0.873) == "dog 87%" and plotting.class_name(None, 3) == "class 3"
    open_before = plt.get_fignums()
    fig, axes = plotting.grid(5, 3)
    assert len(axes) == 5 and len(fig.axes) == 6 and not fig.axes[5].axison
    for ax in axes:
        plotting.show_image(ax, chw, "an image", "its label")
    path = tmp_path / "new" / "folder" / "grid.png"
    assert plotting.save(fig, path) is fig and path.stat().st_size > 1000
    assert plt.get_fignums() == open_before                                               # saved: closed
