"""A headless Chromium driven by Selenium, for the tests of the web pages (report, explore).

``browser()`` starts Debian's ``chromium`` through ``chromedriver`` (paths from
``MINICNN_CHROMIUM`` / ``MINICNN_CHROMEDRIVER``, else ``/usr/bin``, else the
PATH), headless, with an empty profile and no network of its own, and
collects the console through the ``goog:loggingPrefs`` browser log; it skips
the test with a reason when Selenium or the browser is missing.
``console_errors(driver)`` returns the SEVERE console entries since the last call.
"""
import os
import shutil

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")


def _find(env, name):
    for path in (os.environ.get(env), f"/usr/bin/{name}", shutil.which(name)):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def browser(tmp_path):
    """A started selenium Chrome driver (the caller quits it), or a pytest skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install "
                                                                  "'minicnn[web]')")
    chromium = _find("MINICNN_CHROMIUM", "chromium")
    driver_path = _find("MINICNN_CHROMEDRIVER", "chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(or set MINICNN_CHROMIUM and MINICNN_CHROMEDRIVER)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in FLAGS:
        opts.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_path))
    except Exception as e:          # a browser that cannot start on this machine: skip, saying why
        pytest.skip(f"chromium did not start: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def console_errors(driver):
    """The console entries of level SEVERE (errors, failed loads) since the last call."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
