"""``minicnn explore``: the model side (Explorer), the server's answers to good and bad requests, many
requests at once, Ctrl-C/SIGTERM, and the page driven in a real headless browser.

Servers bind 127.0.0.1 on a free port (port 0) and are always shut down.
"""
import base64
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from minicnn.explore import EPS_MAX, Explorer, make_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_UPLOAD = 256 * 1024


def png_of(array, fmt="PNG"):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def explorer(trained_checkpoint, tiny_tree):
    import minicnn
    from minicnn.report import load_test_set

    test, _ = load_test_set(tiny_tree)
    return Explorer(minicnn.load_model(trained_checkpoint), test, gallery=20, max_uploads=3, name="simple_cnn")


@pytest.fixture(scope="module")
def server(explorer):
    """An ExploreServer on 127.0.0.1 (a free port) in a thread; shut down after the module's tests."""
    srv = make_server(explorer, "127.0.0.1", 0, workers=2, max_upload=MAX_UPLOAD)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def request(server, path, method="GET", body=None, headers=None, timeout=60):
    """(status, decoded JSON or bytes) of one request; the raw path is sent as is (no normalisation)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        kind = resp.getheader("Content-Type", "")
        return resp.status, (json.loads(data) if kind.startswith("application/json") else data)
    finally:
        conn.close()


def decode_png(uri):
    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        return np.asarray(im)


# ------------------------------------------------------------------------------------ the model side
def test_info_lists_the_model(server, explorer):
    status, info = request(server, "/api/info")
    assert status == 200
    assert info["classes"] == explorer.classes and info["model"] == "simple_cnn" and info["shape"] == [3, 32, 32]
    assert [l["name"] for l in info["layers"]][:2] == ["net.0", "net.1"] and info["cam_layer"] in explorer.layers
    assert len(info["gallery"]) == 20 and all(decode_png(g["png"]).shape == (32, 32, 3) for g in info["gallery"])
    assert {g["label"] for g in info["gallery"]} == set(explorer.classes)      # spread over the classes
    assert "centre-cropped to a square" in info["resize_rule"] and "32x32" in info["resize_rule"]


def test_panels_answer_with_pictures(server, explorer):
    image = next(iter(explorer.images))
    status, p = request(server, f"/api/predict?image={image}")
    assert status == 200 and len(p["top5"]) == 5
    probs = [t["p"] for t in p["top5"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    status, a = request(server, f"/api/activations?image={image}&layer=net.0")
    assert status == 200 and a["shape"][0] == len(a["channels"]) == a["shown"]
    assert decode_png(a["channels"][0]["png"]).shape == tuple(a["shape"][1:])
    for method in ("saliency", "guided_backprop", "grad_cam", "occlusion"):
        status, e = request(server, f"/api/explain?image={image}&method={method}&class=3")
        assert status == 200 and e["class"] == explorer.classes[3] and e["index"] == 3, e
        assert decode_png(e["map"]).shape == (32, 32, 3) and decode_png(e["overlay"]).shape == (32, 32, 3)
    status, e = request(server, f"/api/explain?image={image}&method=grad_cam&class={explorer.classes[1]}&layer=net.4")
    assert status == 200 and e["layer"] == "net.4" and e["index"] == 1
    for attack in ("fgsm", "pgd"):
        status, r = request(server, f"/api/attack?image={image}&method={attack}&eps={4 / 255}")
        assert status == 200 and r["linf"] <= 4 / 255 + 1e-6 and r["magnified"] == pytest.approx(0.5 / r["linf"])
        adv = decode_png(r["adversarial"]).astype(int)
        orig = decode_png(p["png"]).astype(int)
        assert np.abs(adv - orig).max() <= 5          # 4/255 plus rounding to 8 bits
    status, r = request(server, f"/api/attack?image={image}&method=fgsm&eps=0")
    assert status == 200 and r["magnified"] is None and not r["fooled"]


def test_upload_is_centre_cropped_and_can_be_explained(server, explorer):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (300, 451, 3), dtype=np.uint8)
    status, up = request(server, "/api/upload", "POST", png_of(photo, "JPEG"), {"Content-Type": "image/jpeg"})
    assert status == 200 and up["image"].startswith("u") and up["original"] == [451, 300]
    assert decode_png(up["png"]).shape == (32, 32, 3) and len(up["top5"]) == 5
    status, e = request(server, f"/api/explain?image={up['image']}&method=saliency")
    assert status == 200
    for _ in range(4):                                  # max_uploads=3: the oldest upload is forgotten
        request(server, "/api/upload", "POST", png_of(photo[:40, :40]), {"Content-Type": "image/png"})
    assert request(server, f"/api/predict?image={up['image']}")[0] == 404
    assert sum(k.startswith("u") for k in explorer.images) == 3


def test_explorer_takes_any_network_and_image_size():
    """8x8 images, 3 classes, a module that never runs: every panel still answers."""
    from minicnn import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.unused = nn.Conv2d(4, 4, 1)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(self.conv(x).relu().reshape(x.shape[0], -1))

    class Tiny:
        images = np.random.default_rng(0).integers(0, 255, (6, 3, 8, 8), dtype=np.uint8)
        labels = np.array([0, 1, 2, 0, 1, 2])

        def get_batch(self, idx):
            return self.images[idx], self.labels[idx]

    model = Net()
    model.classes = ["a", "b", "c"]
    ex = Explorer(model, Tiny(), gallery=3)
    assert list(ex.layers) == ["conv"] and ex.cam_layer == "conv" and len(ex.images) == 3
    image = next(iter(ex.images))
    for method in ("saliency", "guided_backprop", "grad_cam", "occlusion"):
        assert decode_png(ex.explain(image, method, "c")["map"]).shape == (8, 8, 3)
    assert ex.activations(image, "conv")["shape"] == [4, 8, 8]
    assert decode_png(ex.attack(image, "pgd", 0.02)["adversarial"]).shape == (8, 8, 3)
    up = ex.upload(png_of(np.zeros((30, 50, 3), np.uint8)))
    assert decode_png(up["png"]).shape == (8, 8, 3) and len(up["top5"]) == 3


# ------------------------------------------------------------------------------------ bad requests
BAD_GETS = [
    ("/static/../../setup.py", 403, "outside the served folder"),
    ("/static/%2e%2e/%2e%2e/setup.py", 403, "outside the served folder"),
    ("/static/..%2fapp.py", 403, "outside the served folder"),
    ("/static/.hidden", 403, "outside the served folder"),
    ("/static/nothing.js", 404, "no such file"),
    ("/nowhere", 404, "no such page"),
    ("/api/predict?image=t999999", 404, "no such image"),
    ("/api/predict", 400, "missing parameter 'image'"),
    ("/api/activations?image={img}&layer=net.99", 400, "layer 'net.99': unknown"),
    ("/api/explain?image={img}&method=grad_cam&layer=nope", 400, "layer 'nope': unknown"),
    ("/api/explain?image={img}&method=saliency&class=10", 400, "class 10: out of range"),
    ("/api/explain?image={img}&method=saliency&class=-1", 400, "class -1: out of range"),
    ("/api/explain?image={img}&method=saliency&class=zebra", 400, "class 'zebra': unknown"),
    ("/api/explain?image={img}&method=deepdream", 400, "method 'deepdream': unknown"),
    ("/api/attack?image={img}&method=fgsm&eps=0.5", 400, "eps 0.5: out of range"),
    ("/api/attack?image={img}&method=fgsm&eps=-0.01", 400, "out of range"),
    ("/api/attack?image={img}&method=fgsm&eps=nan", 400, "out of range"),
    ("/api/attack?image={img}&method=pgd&eps=lots", 400, "not a number"),
    ("/api/attack?image={img}&method=cw&eps=0.01", 400, "method 'cw': unknown"),
    ("/api/upload", 405, "POST"),
]


@pytest.mark.parametrize("path,status,words", BAD_GETS, ids=[p for p, _, _ in BAD_GETS])
def test_bad_requests_get_a_4xx_with_a_message(server, explorer, path, status, words):
    got, body = request(server, path.format(img=next(iter(explorer.images))))
    assert got == status and words in body["error"] and body["status"] == status
    assert "Traceback" not in body["error"]
    assert request(server, "/api/info")[0] == 200                  # still up


def test_bad_uploads_and_methods(server):
    status, body = request(server, "/api/upload", "POST", b"%PDF-1.4 not an image", {"Content-Type": "image/png"})
    assert status == 415 and "not an image" in body["error"]
    status, body = request(server, "/api/upload", "POST", png_of(np.zeros((4, 4, 3), np.uint8), "GIF"))
    assert status == 415 and "PNG or JPEG" in body["error"]
    from PIL import Image
    buf = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buf, "PNG")                   # 48 M pixels in a small file
    assert len(buf.getvalue()) < MAX_UPLOAD
    status, body = request(server, "/api/upload", "POST", buf.getvalue())
    assert status == 413 and "pixels" in body["error"]
    status, body = request(server, "/api/upload", "POST", b"")
    assert status == 415 and "empty" in body["error"]
    assert request(server, "/api/predict", "PUT", b"x")[0] == 405
    assert request(server, "/api/explain", "POST", b"x")[0] == 405


def test_an_upload_over_the_limit_is_refused_unread(server):
    """413 from the Content-Length alone: the body is never sent, let alone read."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.putrequest("POST", "/api/upload")
        conn.putheader("Content-Type", "image/png")
        conn.putheader("Content-Length", str(MAX_UPLOAD + 1))
        conn.endheaders()
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 413 and "over the limit" in body["error"]
    finally:
        conn.close()
    conn = http.client.HTTPConnection(host, port, timeout=30)     # no Content-Length: 411
    try:
        conn.putrequest("POST", "/api/upload")
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 411 and "Content-Length" in json.loads(resp.read())["error"]
    finally:
        conn.close()
    assert request(server, "/api/info")[0] == 200


def test_many_requests_at_once_get_an_answer_or_503(server, explorer):
    image = next(iter(explorer.images))
    results = []

    def ask():
        try:
            results.append(request(server, f"/api/attack?image={image}&method=pgd&eps=0.02")[0])
        except OSError as e:             # a refused connection would be a dead server
            results.append(repr(e))

    explorer.lock.acquire()                   # the model is busy: the workers' slots fill up
    try:
        threads = [threading.Thread(target=ask) for _ in range(server.workers)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while server.active < server.workers and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.active == server.workers
        status, body = request(server, "/api/info")       # every slot taken: refused at once
        assert status == 503 and "busy" in body["error"]
        more = [threading.Thread(target=ask) for _ in range(16)]
        for t in more:
            t.start()
        for t in more:
            t.join(30)
    finally:
        explorer.lock.release()
    for t in threads:
        t.join(60)
    assert len(results) == server.workers + 16 and set(results) <= {200, 503}, results
    assert results.count(503) == 16 and request(server, "/api/info")[0] == 200


def test_pages_ship_with_the_package_and_forbid_other_origins(server):
    status, page = request(server, "/")
    assert status == 200 and b"/static/app.js" in page and b"/static/style.css" in page
    host, port = server.server_address[:2]
    with urllib.request.urlopen(f"http://{host}:{port}/static/app.js", timeout=30) as resp:
        csp = resp.headers["Content-Security-Policy"]
        script = resp.read()
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    for text in (page, script):
        assert not re.search(rb"(src|href)=\"(https?:)?//", text) and b"http://" not in text
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://{host}:{port}/api/explain?image=x&method=saliency", timeout=30)
    assert e.value.code == 404


# ------------------------------------------------------------------------------------ the command
def start_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "minicnn", "explore", *args, "--port", "0", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not match:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"minicnn explore did not start: {line}{out}{err}")
    return proc, match.group(0)


@pytest.mark.parametrize("sig,name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_cli_serves_and_stops_cleanly(trained_checkpoint, tiny_tree, sig, name):
    proc, url = start_cli("--checkpoint", trained_checkpoint, "--data", tiny_tree)
    try:
        with urllib.request.urlopen(url + "api/info", timeout=30) as resp:
            assert json.loads(resp.read())["model"] == "simple_cnn"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"stopped ({name})" in out and "Traceback" not in err


def test_binding_beyond_this_machine_is_warned_about():
    from minicnn.cli.explore import host_warning

    assert host_warning("127.0.0.1") is None and host_warning("localhost") is None and host_warning("::1") is None
    for host in ("0.0.0.0", "192.168.1.20", "::", "myhost.example"):
        assert "reachable from other machines" in host_warning(host)


def test_cli_errors_are_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for args, words in ((["--checkpoint", str(tmp_path / "none.npz")], "does not exist"),
                        (["--checkpoint", str(tmp_path / "x.npz"), "--port", "70000"], "--port 70000")):
        done = subprocess.run([sys.executable, "-m", "minicnn", "explore", *args], capture_output=True, text=True,
                              env=env, timeout=60)
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr


# ------------------------------------------------------------------------------------ in a browser
def test_explore_in_a_real_browser(trained_checkpoint, tiny_tree, tmp_path):
    """Open the page, pick an image, switch layer, method and class, move the eps slider, upload an image."""
    from _browser import browser, console_errors
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    proc, url = start_cli("--checkpoint", trained_checkpoint, "--data", tiny_tree, "--gallery", "12")
    driver = None
    try:
        driver = browser(tmp_path)
        wait = WebDriverWait(driver, 60)
        js = driver.execute_script

        def settled(element_id, key):
            """Wait until the panel showing ``element_id`` was drawn for ``key`` and nothing is pending."""
            wait.until(lambda d: js(f"return document.getElementById('{element_id}').dataset.key") == key
                       and js("return document.body.dataset.busy") == "0")
            assert console_errors(driver) == []
            shown = js("return Array.from(document.querySelectorAll('main img')).filter(i => i.src)"
                       ".map(i => i.complete && i.naturalWidth > 0)")
            assert shown and all(shown)

        driver.get(url)
        wait.until(lambda d: js("return document.body.dataset.ready") == "1")
        thumbs = driver.find_elements(By.CSS_SELECTOR, "#gallery img.thumb")
        assert len(thumbs) == 12
        first = thumbs[0].get_attribute("data-id")
        settled("top5", first)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#top5 li")) == 5
        assert "centre-cropped" in driver.find_element(By.ID, "resize-rule").text

        picked = thumbs[5].get_attribute("data-id")                                   # pick an image
        thumbs[5].click()
        settled("top5", picked)
        settled("adv-image", f"{picked}:fgsm:2")

        layer = Select(driver.find_element(By.ID, "layer"))                           # switch layer
        last = layer.options[-1].get_attribute("value")
        layer.select_by_value(last)
        settled("channels", f"{picked}:{last}")
        channels = driver.find_elements(By.CSS_SELECTOR, "#channels img.channel")
        assert len(channels) > 1
        channels[1].click()                                                           # enlarge a channel
        settled("channel-big", f"{picked}:{last}:1")
        assert "channel 1" in driver.find_element(By.ID, "channel-caption").text

        for method in ("guided_backprop", "grad_cam", "occlusion", "saliency"):       # switch method
            Select(driver.find_element(By.ID, "method")).select_by_value(method)
            settled("explain-map", f"{picked}:{method}:")
        Select(driver.find_element(By.ID, "class")).select_by_value("3")              # and class
        settled("explain-map", f"{picked}:saliency:3")
        assert "for class" in driver.find_element(By.ID, "explain-info").text

        slider = driver.find_element(By.ID, "eps")                                    # move the eps slider
        slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
        settled("adv-image", f"{picked}:fgsm:4")
        assert driver.find_element(By.ID, "eps-label").text == "4/255"
        assert "magnified x" in driver.find_element(By.ID, "perturbation-scale").text
        Select(driver.find_element(By.ID, "attack")).select_by_value("pgd")
        settled("adv-image", f"{picked}:pgd:4")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#adv-top5 li")) == 5

        photo = tmp_path / "photo.jpg"                                                # upload an image
        photo.write_bytes(png_of(np.random.default_rng(1).integers(0, 255, (120, 200, 3), dtype=np.uint8), "JPEG"))
        driver.find_element(By.ID, "upload").send_keys(str(photo))
        settled("top5", "u1")
        assert driver.find_elements(By.CSS_SELECTOR, "#gallery img[data-id='u1']")
        assert "200x120" in driver.find_element(By.ID, "status").text
        driver.set_window_size(1400, js("return document.body.scrollHeight") + 40)
        shot = tmp_path / "explore.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.slow
def test_a_built_wheel_ships_the_pages_assets(tmp_path):
    """A non-editable install finds the page, its script and style, and the report's style (package data)."""
    import shutil
    import zipfile

    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "runs", "build", "*.egg-info", "__pycache__",
                                                             ".venv", "*.npz", "*.png"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"pip could not build a wheel here: {done.stderr.strip().splitlines()[-1:]}")
    wheel = next((tmp_path / "dist").glob("minicnn-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    static = os.path.join(ROOT, "minicnn", "explore", "static")
    for name in os.listdir(static):
        assert f"minicnn/explore/static/{name}" in names
    assert "minicnn/report/assets/report.css" in names
