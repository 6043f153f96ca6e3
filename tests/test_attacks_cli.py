"""``minicnn attack`` (through subprocess) and the figures of minicnn.attacks.plot."""
import json
import os
import subprocess
import sys

import pytest

from minicnn.attacks import evaluate, fgsm, fooling_image, pgd, universal_perturbation
from test_attacks import _batch, small_convnet

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def run_cli(*args, timeout=240):
    env = dict(os.environ, MINICNN_DEBUG="")
    return subprocess.run([sys.executable, "-m", "minicnn", "attack", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def png_ok(path):
    from PIL import Image

    assert os.path.getsize(path) > 2000
    with Image.open(path) as im:
        assert im.size[0] > 200 and im.size[1] > 150


def test_cli_fgsm_prints_the_table_and_writes_figures(trained_checkpoint, tiny_tree, tmp_path):
    out = tmp_path / "fgsm"
    r = run_cli("--checkpoint", trained_checkpoint, "--data", tiny_tree, "--method", "fgsm",
                "--eps", "2/255", "8/255", "--n", "12", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "clean accuracy" in r.stdout and "(8/255)" in r.stdout and "(2/255)" in r.stdout
    for name in ("examples.png", "robust_accuracy.png"):
        png_ok(out / name)
    rep = json.loads((out / "report.json").read_text())["report"]
    assert rep["n"] == 12 and [row["eps"] for row in rep["rows"]] == pytest.approx([2 / 255, 8 / 255])
    assert rep["rows"][1]["linf_max"] <= 8 / 255 + 1e-7


def test_cli_universal_and_fooling(trained_checkpoint, tiny_tree, tmp_path):
    r = run_cli("--checkpoint", trained_checkpoint, "--data", tiny_tree, "--method", "universal",
                "--eps", "16/255", "--n", "8", "--max-passes", "1", "--out", str(tmp_path / "u"))
    assert r.returncode == 0, r.stderr
    assert "attack universal perturbation (L-inf, eps 0.0627 (16/255)) on 4 held-out images:" in r.stdout
    row = r.stdout.split("time\n", 1)[1].splitlines()[0]
    assert row.split()[:2] == ["0.0627", "(16/255)"]                 # the eps column says the budget
    png_ok(tmp_path / "u" / "universal.png")
    report = json.loads((tmp_path / "u" / "report.json").read_text())
    assert report["universal"]["held_out_fooling_rate"] is not None
    assert [u["role"] for u in report["images"]] == ["fit"] * 4 + ["held out"] * 4
    assert len(report["examples"]) == 4
    r = run_cli("--checkpoint", trained_checkpoint, "--method", "fooling", "--steps", "20", "--out",
                str(tmp_path / "f"))
    assert r.returncode == 0, r.stderr
    png_ok(tmp_path / "f" / "fooling.png")
    assert len(json.loads((tmp_path / "f" / "report.json").read_text())["fooling"]) == 10


@pytest.mark.parametrize("args, message", [
    (["--eps", "-1"], "must be a number >= 0"),
    (["--eps", "-8/255"], "argument --eps: must be a number >= 0 (like 8/255), got -8/255"),
    (["--eps", "8/255", "-8/255"], "got -8/255"),
    (["--eps", "8"], "--eps 8: pixels are in [0, 1], so an L-inf budget of 8 allows any image; eps is in pixel "
                     "units: did you mean --eps 8/255 (= 0.0314)?"),
    (["--method", "fgsm", "--eps", "4/255", "2"], "did you mean --eps 2/255"),
    (["--method", "universal", "--eps", "10"], "did you mean --eps 10/255"),
    (["--eps", "8/0"], "must be a number"),
    (["--method", "cw"], "invalid choice"),
    (["--n", "0"], "must be a positive integer"),
])
def test_cli_bad_arguments_give_one_line(args, message, tmp_path):
    r = run_cli("--checkpoint", str(tmp_path / "x.npz"), "--out", str(tmp_path / "out"), *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]                          # after argparse's usage, if any: one line
    assert last.startswith("minicnn attack: error:") and message in last


def test_cli_l2_budget_above_one_is_a_real_budget(trained_checkpoint, tiny_tree, tmp_path):
    r = run_cli("--checkpoint", trained_checkpoint, "--data", tiny_tree, "--method", "pgd", "--norm", "2",
                "--eps", "1.5", "--steps", "2", "--n", "4", "--examples", "0", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr


def test_eps_above_the_pixel_range_is_refused_in_the_api_too():
    model = small_convnet()
    x, y = _batch()
    for attack in (lambda e: fgsm(model, x, y, e), lambda e: pgd(model, x, y, e, steps=1),
                   lambda e: universal_perturbation(model, x, e, max_passes=1)):
        with pytest.raises(ValueError, match=r"^eps: 8 is more than the whole pixel range \(1\).*pass eps=8/255"):
            attack(8)
    assert pgd(model, x, y, 1.5, steps=1, norm=2).shape == x.shape        # an L2 budget: fine
    with pytest.raises(ValueError, match=r"more than the whole pixel range \(2\)"):
        fgsm(model, x * 2, y, 3, bounds=(0, 2))
    assert fgsm(model, x * 2, y, 1.5, bounds=(0, 2)).max() <= 2


def test_cli_picks_images_across_classes_and_records_them(trained_checkpoint, tiny_tree, tmp_path):
    """The test folder is sorted by class: the default choice still spreads over the classes, the figure
    shows successes first, and report.json says which images were used."""
    r = run_cli("--checkpoint", trained_checkpoint, "--data", tiny_tree, "--method", "pgd", "--eps", "16/255",
                "--steps", "3", "--n", "20", "--examples", "6", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    used = report["images"]
    assert len(used) == 20 and len({u["index"] for u in used}) == 20
    assert len({u["class"] for u in used[:10]}) == 10                 # the first ten: ten classes
    # the index and the class are the test set's (4 images per class, sorted by class)
    assert all(CLASSES[u["index"] // 4] == u["class"] for u in used)
    shown = report["examples"]
    assert len(shown) == 6 and {u["index"] for u in shown} <= {u["index"] for u in used}
    fooled = [u["fooled"] for u in shown]
    assert fooled == sorted(fooled, reverse=True) and any(fooled)     # successes first
    wins = [u["class"] for u in shown if u["fooled"]]
    assert len(set(wins[:3])) == min(3, len(wins))                    # ...one class after another
    png_ok(tmp_path / "a" / "examples.png")

    r = run_cli("--checkpoint", trained_checkpoint, "--data", tiny_tree, "--method", "fgsm", "--index", "0", "13",
                "5", "--examples", "2", "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [(u["index"], u["class"]) for u in report["images"]] == [(0, "airplane"), (13, "cat"), (5, "automobile")]
    assert [u["index"] for u in report["examples"]] == [0, 13]        # the user's images, the user's order
    r = run_cli("--checkpoint", trained_checkpoint, "--data", tiny_tree, "--index", "40", "--out", str(tmp_path))
    assert r.returncode == 2 and "--index 40: the test set has 40 images (0 to 39)" in r.stderr


def test_cli_missing_checkpoint_is_a_message(tmp_path):
    r = run_cli("--checkpoint", str(tmp_path / "missing.npz"), "--method", "fooling", "--out", str(tmp_path))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_cli_help_shows_defaults_and_examples():
    r = run_cli("--help")
    assert r.returncode == 0 and "8/255" in r.stdout and "examples:" in r.stdout and "default" in r.stdout


def test_plots_draw_every_figure(tmp_path):
    from minicnn.attacks import plot

    model = small_convnet()
    x, y = _batch(n=6)
    x_adv = fgsm(model, x, y, 0.05)
    plot.examples(model, x[:3], x_adv[:3], classes=list("abcd"), labels=y[:3], path=tmp_path / "ex.png")
    reps = [evaluate(model, "fgsm", x, y, epsilons=[0, 0.02, 0.05]),
            evaluate(model, "pgd", x, y, epsilons=[0, 0.02, 0.05])]
    plot.robust_accuracy(reps, path=tmp_path / "ra.png")
    res = universal_perturbation(model, x, 0.05, max_passes=1, held_out=x)
    plot.universal(res, model, x, path=tmp_path / "u.png")
    imgs, ps = fooling_image(model, [0, 1, 2], shape=(3, 8, 8), steps=20)
    plot.fooling_images(imgs, ps, [0, 1, 2], list("abcd"), path=tmp_path / "f.png")
    for name in ("ex.png", "ra.png", "u.png", "f.png"):
        assert (tmp_path / name).stat().st_size > 2000
    one = small_convnet(channels=1)                  # one channel draws in gray
    x1, y1 = _batch(channels=1, n=2)
    fig = plot.examples(one, x1, fgsm(one, x1, y1, 0.05))
    assert len(fig.axes) == 6


def test_examples_figure_explains_the_scale_and_circles_a_one_pixel_change():
    from minicnn.attacks import plot

    model = small_convnet()
    x, _ = _batch(n=2)
    x_adv = x.copy()
    x_adv[0, :, 3, 5] = 1 - x_adv[0, :, 3, 5]                 # one pixel changed in image 0
    x_adv[1] = (x_adv[1] + 0.02).clip(0, 1)                    # every pixel a little in image 1
    fig = plot.examples(model, x, x_adv)
    middle = fig.axes[1]
    assert middle.get_title().startswith("perturbation d: 0.5 + ") and "grey = unchanged" in middle.get_title()
    assert "1 px changed" in middle.get_xlabel()
    rings = [p for p in middle.patches if type(p).__name__ == "Circle"]
    assert len(rings) == 1 and rings[0].center == (5, 3)       # (column, row) of the changed pixel
    assert len(fig.axes[2].patches) == 1 and not fig.axes[4].patches   # the adversarial too; none for image 1
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_universal_figure_has_no_empty_panel():
    from minicnn.attacks import plot

    model = small_convnet()
    x, _ = _batch(n=6)
    res = universal_perturbation(model, x[:3], 8 / 255, max_passes=1)
    for k in (4, 3, 1):
        fig = plot.universal(res, model, x[3:3 + k] if k < 4 else x[:4])
        assert len(fig.axes) == 2 + k + 1                      # v, |v|, its colour bar, k images: nothing empty
        assert all(ax.images for ax in fig.axes if ax.get_label() != "<colorbar>")
        assert "eps 0.0314 (8/255), L-inf" in fig.axes[0].get_title()
        import matplotlib.pyplot as plt
        plt.close(fig)
