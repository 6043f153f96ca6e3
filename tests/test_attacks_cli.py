"""``minicnn attack`` (through subprocess) and the figures of minicnn.attacks.plot."""
import json
import os
import subprocess
import sys

import pytest

from minicnn.attacks import evaluate, fgsm, fooling_image, universal_perturbation
from test_attacks import _batch, small_convnet


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
    assert "held-out" in r.stdout
    png_ok(tmp_path / "u" / "universal.png")
    uni = json.loads((tmp_path / "u" / "report.json").read_text())["universal"]
    assert uni["held_out_fooling_rate"] is not None
    r = run_cli("--checkpoint", trained_checkpoint, "--method", "fooling", "--steps", "20", "--out",
                str(tmp_path / "f"))
    assert r.returncode == 0, r.stderr
    png_ok(tmp_path / "f" / "fooling.png")
    assert len(json.loads((tmp_path / "f" / "report.json").read_text())["fooling"]) == 10


@pytest.mark.parametrize("args, message", [
    (["--eps", "-1"], "must be a number >= 0"),
    (["--eps", "8/0"], "must be a number"),
    (["--method", "cw"], "invalid choice"),
    (["--n", "0"], "must be a positive integer"),
])
def test_cli_bad_arguments_give_one_line(args, message, tmp_path):
    r = run_cli("--checkpoint", str(tmp_path / "x.npz"), *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


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
