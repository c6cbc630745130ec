"""``schedsearch ui`` in a real headless Chromium: the searches list (sorted, updated live), one
PBT search's plotted series and lineage graph, an AutoLRS search's stages, and the schedules page
with a baseline family.

The browser is Debian's chromium and its chromedriver, installed by ``scripts/install-browser.sh``
(``make test`` runs it and passes the driver's path in ``$SCHEDSEARCH_CHROMEDRIVER``). Without
them the test is skipped, saying why; on CI (``$CI``) it fails instead, so it always runs there.
A screenshot of each page is kept in ``$SCHEDSEARCH_ARTIFACTS/ui`` (default ``test-artifacts/ui``
at the top of the checkout) and its folder is printed.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schedsearch.store import HistoryPoint, SQLiteStore
from tests.unit.test_ui_data import POPULATION, STAGES, known_store, pbt_state

REPO = Path(__file__).resolve().parents[2]
DRIVER_ENV = "SCHEDSEARCH_CHROMEDRIVER"
ARTIFACTS_ENV = "SCHEDSEARCH_ARTIFACTS"
# Generous: the machine may be busy with training and other tests.
WAIT_SECONDS = 90


def chromedriver() -> str:
    """The driver's path, or a skip (a failure on CI) saying why there is none."""
    path = os.environ.get(DRIVER_ENV) or shutil.which("chromedriver")
    if path and Path(path).is_file() and shutil.which("chromium"):
        return path
    reason = (
        "chromium and chromedriver are not installed and could not be: "
        "scripts/install-browser.sh installs them (make test runs it; it needs apt-get and root)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test, but {reason}")
    pytest.skip(reason)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    root = Path(os.environ.get(ARTIFACTS_ENV) or REPO / "test-artifacts")
    folder = root / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"ui screenshots: {folder}")
    return folder


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, SQLiteStore]]:
    """``schedsearch ui`` over the known store, on a free port: (its URL, the store)."""
    store = known_store(tmp_path)
    command = [sys.executable, "-m", "schedsearch.cli.main", "ui", "--store", str(store.path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*command, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True
    )
    reader.start()
    try:
        said = []
        while len(said) < 3:  # what it reads, its URL, who can connect
            try:
                said.append(lines.get(timeout=WAIT_SECONDS))
            except queue.Empty:
                pytest.fail(f"schedsearch ui said no URL within {WAIT_SECONDS}s: {said}")
        assert said[0] == f"schedsearch ui: reading {store.path} (read-only)\n", said
        assert "only this machine can connect" in said[2], said
        url = said[1].removeprefix("open ").strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url, store
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver_path = chromedriver()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1300,2200",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_lists_shows_and_compares_searches_in_a_real_browser(
    served: tuple[str, SQLiteStore], browser: Any, artifacts: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, store = served
    wait = WebDriverWait(browser, WAIT_SECONDS)

    def count(selector: str) -> int:
        return len(browser.find_elements(By.CSS_SELECTOR, selector))

    def row_names() -> list[str]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#searches tbody tr")
        return [row.get_attribute("data-search") for row in rows]

    # The searches list, newest first; sorting by name both ways.
    browser.get(url)
    wait.until(lambda _: count("#searches tbody tr") == 3)
    assert sorted(row_names()) == ["digits-autolrs", "digits-hdet", "digits-pbt"]
    assert "reading " in browser.find_element(By.ID, "where").text
    browser.find_element(By.CSS_SELECTOR, "th[data-key=name]").click()
    assert row_names() == ["digits-autolrs", "digits-hdet", "digits-pbt"]
    browser.find_element(By.CSS_SELECTOR, "th[data-key=name]").click()
    assert row_names() == ["digits-pbt", "digits-hdet", "digits-autolrs"]

    # Live: the engine writes to the store, the row changes without a reload.
    store.set_phase("digits-hdet", "Running")
    store.append_history("digits-hdet", [HistoryPoint(0, 50, 0.01, 1.5, 1.4)])
    hdet_phase = "#searches tr[data-search=digits-hdet] .phase-Running"
    wait.until(lambda _: count(hdet_phase) == 1)
    browser.save_screenshot(str(artifacts / "searches.png"))

    # One PBT search: a validation and a training loss series per member; each member's LR plus
    # the best and the base schedule; a lineage node per member's start and per exploit.
    browser.find_element(By.CSS_SELECTOR, "tr[data-search=digits-pbt] a").click()
    wait.until(lambda _: count("#loss-chart .u-legend tr.u-series") > 0)
    wait.until(lambda _: count("#lineage g.lineage-node") > 0)
    assert browser.find_element(By.ID, "search-title").text == "digits-pbt"
    # uPlot's legend has a row per series, the first for the x axis.
    assert count("#loss-chart .u-legend tr.u-series") - 1 == 2 * POPULATION
    assert count("#lr-chart .u-legend tr.u-series") - 1 == POPULATION + 2
    _, exploits = pbt_state()
    assert count("#lineage g.lineage-node") == POPULATION + len(exploits)
    assert count("#lineage path.edge") == len(exploits)
    assert count("#exploits tbody tr") == len(exploits)
    assert "kind: ScheduleSearch" in browser.find_element(By.ID, "spec").text
    browser.save_screenshot(str(artifacts / "search.png"))

    # An AutoLRS search: its stages' probes, one series per stage.
    browser.get(url + "#/search/digits-autolrs")
    wait.until(lambda _: count("#stage-chart .u-legend tr.u-series") > 0)
    assert count("#stage-chart .u-legend tr.u-series") - 1 == len(STAGES)
    assert count("#stages tbody tr") == len(STAGES)
    browser.save_screenshot(str(artifacts / "search-autolrs.png"))

    # The stored schedules: the best with its base schedule, then a baseline family from the
    # menu; the downloads are offered in every format.
    browser.find_element(By.CSS_SELECTOR, "header nav a[data-page=schedules]").click()
    wait.until(lambda _: count("#schedules-chart .u-legend tr.u-series") - 1 == 2)
    Select(browser.find_element(By.ID, "baseline-family")).select_by_value("wsd")
    wait.until(lambda _: count("#schedules-chart .u-legend tr.u-series") - 1 == 3)
    links = browser.find_elements(By.CSS_SELECTOR, "#schedules .downloads a")
    assert [link.get_attribute("data-format") for link in links] == ["json", "yaml", "csv", "torch"]
    assert (
        links[-1].get_attribute("href").endswith("/api/searches/digits-pbt/download?format=torch")
    )
    browser.save_screenshot(str(artifacts / "schedules.png"))
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []
