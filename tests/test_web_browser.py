"""The migration page in a real browser: Debian's chromium, headless, driven by Selenium through Debian's
chromedriver, loads the page `stagectl run --http` serves for a migration half way (tests/support/webdemo.py)
and checks the progress bars, a failed user with its fix and the forecast against the JSON it serves.

The screenshot README.md shows is written to docs/migration-page.png when that file is missing or
STAGECTL_UPDATE_SCREENSHOT=1 is set, and to the test's temporary directory otherwise, so that `make test`
leaves the work tree as it was.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.support import webdemo

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "migration-page.png"
COMMIT_URL = "https://git.example/contoso/migration/commit/{sha}"
# The network is closed here: without these, chromium waits on lookups, updates and sign-in services.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The half-way migration with `stagectl run --http` on it: the page's URL."""
    workspace = webdemo.half_way(tmp_path_factory.mktemp("browser") / "ws", web={"commitUrl": COMMIT_URL})
    process = workspace.start("run", "--config", str(workspace.config_path), "--http", "127.0.0.1:0")
    try:
        url = _page_url(process)
        _wait_for_status(url)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    assert not missing, (
        f"{' and '.join(missing)} missing: `make browser` installs chromium and chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*HEADLESS_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_what_the_json_says(
    controller: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    url = controller
    data = _json(url + "api/status.json")
    browser.get(url)
    assert browser.title.startswith("Migration status")
    refresh = browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
    assert refresh.get_attribute("content") == str(data["refreshSeconds"])

    # Progress bars: the counts as data, and the bar drawn to scale.
    assert len(data["batches"]) == 2
    for batch in data["batches"]:
        bar = browser.find_element(By.CSS_SELECTOR, f'.bar[data-batch="{batch["name"]}"]')
        assert [int(_attribute(bar, f"data-{k}")) for k in ("synced", "failed", "total")] == [
            batch["synced"],
            batch["failed"],
            batch["total"],
        ]
        width = bar.size["width"]
        synced = bar.find_element(By.CLASS_NAME, "synced").size["width"]
        failed = bar.find_element(By.CLASS_NAME, "failed").size["width"]
        assert synced == pytest.approx(width * batch["synced"] / batch["total"], abs=1.5)
        assert failed == pytest.approx(width * batch["failed"] / batch["total"], abs=1.5)
    wave = next(b for b in data["batches"] if b["name"] == webdemo.WAVE)
    assert (wave["synced"], wave["failed"], wave["total"]) == (4, 1, 12)

    # The failed user, its error and its documented fix.
    [failure] = data["failures"]
    card = browser.find_element(By.CSS_SELECTOR, f'.failure[data-address="{webdemo.FAILED_MEMBER}"]')
    assert failure["catalogue"] is not None
    assert card.find_element(By.CLASS_NAME, "fix-text").text == failure["catalogue"]["fix"]
    assert "TooManyLargeItemsPermanentException" in card.text
    assert failure["catalogue"]["retry"] in card.text

    # The forecast: each batch's ETA and the earliest cutover with its gate.
    for batch in data["batches"]:
        eta = browser.find_element(By.CSS_SELECTOR, f'tr.batch[data-batch="{batch["name"]}"] td.eta')
        assert _attribute(eta, "data-eta") == (batch["eta"] or "")
        assert _attribute(eta, "data-state") == batch["forecast"]
    assert wave["eta"] is not None and _shown(wave["eta"]) in browser.find_element(By.ID, "batches").text
    cutover = browser.find_element(By.ID, "cutover-forecast")
    forecast = data["forecast"]
    assert (forecast["earliest"], forecast["gate"]) == ("2026-11-26T11:00:00Z", "ttl-lead")
    assert _attribute(cutover, "data-earliest") == forecast["earliest"]
    assert cutover.find_element(By.CLASS_NAME, "gate").text == forecast["gate"]
    assert cutover.find_element(By.CLASS_NAME, "earliest").text == _shown(forecast["earliest"])

    # The audit records link to their commits.
    first = browser.find_element(By.CSS_SELECTOR, "#audit tr.audit a")
    assert _attribute(first, "href") == COMMIT_URL.replace("{sha}", data["audit"][0]["revision"])

    _screenshot(browser, SCREENSHOT if _update_screenshot() else tmp_path / "migration-page.png")


def _screenshot(browser: webdriver.Chrome, path: Path) -> None:
    """The whole page, beyond the window (Chrome DevTools' captureScreenshot)."""
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1},
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _update_screenshot() -> bool:
    return os.environ.get("STAGECTL_UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists()


def _shown(iso: str) -> str:
    """A time as the page shows it."""
    return f"{iso[:10]} {iso[11:16]} UTC"


def _attribute(element: WebElement, name: str) -> str:
    value = element.get_attribute(name)
    assert value is not None, f"no {name} on {element.tag_name}"
    return value


def _page_url(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"the migration page at (http://127\.0\.0\.1:\d+/)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"stagectl run ended without serving the page (exit {process.wait()})")


def _wait_for_status(url: str) -> None:
    """The page answers 503 until the controller's first pass has written its status."""
    deadline = time.monotonic() + 30
    while True:
        try:
            _json(url + "api/status.json")
            return
        except urllib.error.HTTPError as error:
            if error.code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data
