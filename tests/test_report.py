"""``minicnn report RUN_DIR``: the run folder read back, the page written, opened in a real headless browser.

The run is the session's ``trained_checkpoint`` (simple_cnn, a few epochs on
the tiny generated tree), so the report takes seconds; the samples are kept
small (--sample, --attack-images).
"""
import base64
import html
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from minicnn.report import SECTIONS, RunError, image_from_bytes, read_run, train_command
from minicnn.report.images import ImageError, ImageTooLarge, png_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def minicnn(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "minicnn", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


class Page(HTMLParser):
    """The ids of the sections, the ``src`` of every image, and every href of a parsed page."""

    def __init__(self, text):
        super().__init__()
        self.sections, self.images, self.links = [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.images.append(a.get("src", ""))
        if "href" in a:
            self.links.append(a["href"])


@pytest.fixture(scope="module")
def run_dir(trained_checkpoint, tmp_path_factory):
    """A copy of the session's tiny run folder (tests may add files to it)."""
    copy = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(os.path.dirname(trained_checkpoint), copy)
    return str(copy)


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory):
    """(the finished command, the path of the HTML page) of ``minicnn report`` on the tiny run."""
    out = str(tmp_path_factory.mktemp("report_out") / "page" / "report.html")
    done = minicnn("report", run_dir, "--out", out, "--sample", "40", "--attack-images", "8", "--images", "6")
    assert done.returncode == 0, done.stderr
    return done, out


def test_report_writes_every_section_with_embedded_pngs(report):
    done, out = report
    for k, (title, _) in enumerate(SECTIONS.values(), 1):     # progress: one line per section, in order
        assert f"report: {k}/{len(SECTIONS)} {title.lower()}" in done.stdout
    assert f"report: {out}" in done.stdout
    text = open(out, encoding="utf-8").read()
    page = Page(text)
    assert page.sections == list(SECTIONS)
    assert len(page.images) == 1 + 1 + 1 + 3 * 6 + 1         # curves, confusion, filters, 6 cases x 3, robustness
    for src in page.images:                                    # self-contained: every image is an embedded PNG
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1])
        from PIL import Image
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and min(im.size) > 0
    assert all(link.startswith("#") for link in page.links)   # nothing outside the page
    assert "http://" not in text and "https://" not in text
    for _, idea in SECTIONS.values():             # each section opens with its lecture idea
        assert html.escape(idea) in text


def test_report_content_matches_the_run(report, run_dir):
    _, out = report
    text = open(out, encoding="utf-8").read()
    test = json.load(open(os.path.join(run_dir, "test.json")))
    assert f"Test accuracy <b>{100 * test['test_accuracy']:.2f}%</b>" in text
    for name in test["classes"]:
        assert name in text
    assert "simple_cnn" in text and "Grad-CAM" in text and "FGSM accuracy" in text and "PGD accuracy" in text
    assert "minicnn doctor was not run" in text


def test_train_command_repeats_the_run(run_dir):
    """The command on the page parses with minicnn train's own parser back to the run's settings."""
    from minicnn.cli import build_parser

    run = read_run(run_dir)
    words = shlex.split(train_command(run.config))
    args = build_parser().parse_args(words[1:])
    for key in ("model", "epochs", "batch_size", "lr", "weight_decay", "schedule", "val_split", "seed", "data",
                "augment", "nesterov", "recipe", "tta"):
        assert getattr(args, key) == run.config[key], key


def test_read_run_refuses_folders_that_are_not_runs(tmp_path):
    with pytest.raises(RunError, match="no such folder"):
        read_run(tmp_path / "absent")
    with pytest.raises(RunError, match="last.npz or best.npz"):
        read_run(tmp_path)


def test_report_shows_the_doctors_report(run_dir, tmp_path):
    from minicnn.report import build_report

    doctor = {"ok": False, "checks": [
        {"name": "loss_at_init", "status": "OK", "measured": "loss 2.30 = ln(10)", "advice": ""},
        {"name": "overfit", "status": "FAIL", "measured": "loss 1.9 after 200 steps", "advice": "lower the lr"}]}
    os.makedirs(os.path.join(run_dir, "doctor"), exist_ok=True)
    with open(os.path.join(run_dir, "doctor", "report.json"), "w") as f:
        json.dump(doctor, f)
    try:
        text = build_report(run_dir, sample=20, attack_images=4, images=2)
    finally:
        shutil.rmtree(os.path.join(run_dir, "doctor"))
    assert "2 checks, some checks FAILED" in text
    assert 'class="status FAIL"' in text and "lower the lr" in text and "loss 2.30 = ln(10)" in text


@pytest.mark.slow
def test_train_report_writes_the_page_at_the_end(tiny_tree, tmp_path):
    out = tmp_path / "run"
    done = minicnn("train", "--model", "simple_cnn", "--data", tiny_tree, "--epochs", "1", "--batch-size", "50",
                   "--val-split", "0", "--out", str(out), "--no-progress", "--report")
    assert done.returncode == 0, done.stderr
    assert f"report: {out / 'report.html'}" in done.stdout
    assert Page((out / "report.html").read_text(encoding="utf-8")).sections == list(SECTIONS)


def test_report_without_test_images_still_has_every_section(run_dir, tmp_path):
    from minicnn.report import build_report

    text = build_report(run_dir, data=str(tmp_path / "no-data"))
    assert Page(text).sections == list(SECTIONS)
    assert "test images not found" in text and text.count("No test images found (pass --data)") == 2
    assert "Test accuracy <b>" in text                       # from test.json, written by the run


def test_report_cli_errors_are_one_line(tmp_path, run_dir):
    for args, words in ((["report", str(tmp_path / "absent")], "no such folder"),
                        (["report", str(tmp_path)], "last.npz or best.npz"),
                        (["report", run_dir, "--out", str(tmp_path)], "is a folder")):
        done = minicnn(*args, timeout=60)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_report_and_explore_have_help_with_examples():
    for verb in ("report", "explore"):
        done = minicnn(verb, "--help", timeout=60)
        assert done.returncode == 0 and "examples:" in done.stdout and "(default:" in done.stdout


def test_image_from_bytes_centre_crops_then_resizes():
    from PIL import Image

    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, :20] = (0, 0, 255)
    wide[:, 20:40] = (255, 0, 0)                 # the centre square is red
    wide[:, 40:] = (0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, "PNG")
    x, size = image_from_bytes(buf.getvalue(), size=32)
    assert size == (60, 20) and x.shape == (3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x[0], 1, atol=0.02) and np.allclose(x[1:], 0, atol=0.02)
    rgba = np.zeros((10, 10, 4), np.uint8)      # fully transparent: white
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    assert np.allclose(image_from_bytes(buf.getvalue(), size=8)[0], 1)


def test_image_from_bytes_refuses_what_is_not_a_usable_image():
    from PIL import Image

    with pytest.raises(ImageError, match="not an image"):
        image_from_bytes(b"hello, not an image")
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "GIF")
    with pytest.raises(ImageError, match="GIF"):
        image_from_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.new("1", (300, 200)).save(buf, "PNG")
    with pytest.raises(ImageTooLarge, match="300x200"):
        image_from_bytes(buf.getvalue(), max_pixels=300 * 200 - 1)


def test_png_bytes_enlarges_with_square_pixels():
    from PIL import Image

    a = np.array([[0.0, 1.0], [1.0, 0.0]])
    with Image.open(io.BytesIO(png_bytes(a, scale=3))) as im:
        got = np.asarray(im)
    assert got.shape == (6, 6) and got[0, 0] == 0 and got[0, 5] == 255 and got[2, 2] == 0 and got[3, 0] == 255


def test_report_in_a_real_browser(report, tmp_path):
    """The page opens in headless Chromium: no console error, every image loaded, every section there."""
    from _browser import browser, console_errors

    _, out = report
    driver = browser(tmp_path)
    try:
        driver.get("file://" + os.path.abspath(out))
        assert driver.execute_script("return document.readyState") == "complete"
        assert console_errors(driver) == []
        sizes = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
        assert len(sizes) >= 20 and all(done and width > 0 for done, width, _ in sizes), sizes
        for key, (title, _) in SECTIONS.items():
            heading = driver.execute_script(f"return document.querySelector('#{key} h2').textContent")
            assert heading == title
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(height, 8000))
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
