"""The dashboard (docs/cli.md) in a real headless Chromium (Debian `chromium` and
`chromium-driver`, driven by selenium), against `storebox fleet serve` as its own process
and a real mosquitto: the table fills, the filters narrow it, an incident appears on top
live (no reload) when shops go down, and a click shows the shop's timeline, which follows
the shop live too."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.fleet.test_fleet_server import Simulator, state
from tests.support.mosquitto import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
KT = [f"kt-{i:02d}" for i in range(8)]
SKT = [f"skt-{i:02d}" for i in range(4)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


@pytest.fixture
def fleet_serve(tmp_path: Path, database: str, broker: Mosquitto) -> Iterator[str]:
    """`storebox fleet serve --config` in its own process; its URL once it is subscribed."""
    port = free_port()
    config = tmp_path / "fleet.toml"
    config.write_text(f'[fleet_server]\nmqtt_url = "{broker.url}"\n'
                      f'listen = "127.0.0.1:{port}"\ndatabase = "{database}"\nflush_s = 0.1\n')
    log = open(tmp_path / "fleet-serve.log", "wb")  # noqa: SIM115 (the child writes it)
    proc = subprocess.Popen([sys.executable, "-m", "firmware", "fleet", "serve",
                             "--config", str(config)], cwd=ROOT, stdout=log, stderr=log,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, tmp_path / "fleet-serve.log")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if json.load(r)["mqtt"]:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"fleet serve did not come up:\n{log.read_text()}")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium through the chromedriver of the same Debian release (selenium's
    own driver download is never used: the Service names the binary)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def publish(broker: Mosquitto, steps: Callable[[Simulator], Awaitable[None]]) -> None:
    """Boxes publishing (one MQTT connection, closed after `steps`)."""
    async def run() -> None:
        async with Simulator(broker.port) as sim:
            await steps(sim)

    asyncio.run(run())


def wait(driver: WebDriver, check: Callable[[WebDriver], Any], what: str) -> Any:
    """Until `check` holds; an element the page re-rendered meanwhile is looked for again."""
    return WebDriverWait(driver, 10, poll_frequency=0.1,
                         ignored_exceptions=[StaleElementReferenceException]).until(check, what)


def texts(driver: WebDriver, css: str) -> list[str]:
    """The rendered text of every element matching `css`, read in one script."""
    found: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText.trim())",
        css)
    return found


def incidents(driver: WebDriver) -> list[dict[str, Any]]:
    """The open incidents as shown: text, claim link and top edge, read in one script."""
    found: list[dict[str, Any]] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#incidents .incident.open'), e => ({"
        " text: e.innerText.trim(), claim: e.querySelector('a.claim').href,"
        " top: e.getBoundingClientRect().top}))")
    return found


def rows(driver: WebDriver) -> list[list[str]]:
    """The table's cells, read in one script: the page re-renders the table on every live
    update, so cells found one WebDriver call at a time can go stale between calls."""
    cells: list[list[str]] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#boxes tr'),"
        " tr => Array.from(tr.querySelectorAll('td'), td => td.innerText.trim()))")
    return cells


def test_the_dashboard_in_chromium(fleet_serve: str, broker: Mosquitto,
                                   browser: WebDriver, tmp_path: Path) -> None:
    async def shops_up(sim: Simulator) -> None:
        for device in KT + SKT:
            await sim.status(device, "online", f"{device}-1")
            region = "Busan" if device in ("kt-06", "kt-07") else "Seoul"
            await sim.state(device, state("KT" if device in KT else "SKT", region))

    publish(broker, shops_up)
    browser.get(fleet_serve + "/")
    wait(browser, lambda d: len(rows(d)) == 12 and all(r[1] == "online" for r in rows(d)),
         "the table fills with 12 online shops")
    assert browser.find_element(By.ID, "live").text == "live"
    browser.execute_script("window.notReloaded = true")

    # the filters narrow the table
    Select(browser.find_element(By.ID, "f-isp")).select_by_value("SKT")
    assert [r[0] for r in rows(browser)] == SKT
    Select(browser.find_element(By.ID, "f-isp")).select_by_value("")
    browser.find_element(By.ID, "f-text").send_keys("busan")
    assert [r[0] for r in rows(browser)] == ["kt-06", "kt-07"]
    browser.find_element(By.ID, "f-text").clear()
    Select(browser.find_element(By.ID, "f-region")).select_by_value("Seoul")
    Select(browser.find_element(By.ID, "f-active")).select_by_value("lte")
    assert rows(browser) == [] and "showing 0 of 0" in browser.find_element(By.ID, "shown").text

    # KT's wired network fails at six shops: the incident appears live, on top
    async def kt_down(sim: Simulator) -> None:
        for i, device in enumerate(KT[:6]):
            await sim.state(device, state("KT", "Seoul", wired="down", lte="up",
                                          same_carrier=i < 2))
        await sim.client.publish("storebox/kt-01/events", json.dumps(
            {"seq": 1, "session": "kt-01-1", "kind": "failover",
             "at": datetime.now(UTC).isoformat(), "message": "wired down; on LTE"}), qos=1)

    publish(broker, kt_down)
    # (it opens at the fifth shop; the sixth joins with the server's next recount)
    incident = wait(browser, lambda d: [i for i in incidents(d) if " at 6 shops " in i["text"]],
                    "an open incident of six shops")[0]
    assert incident["text"].startswith("#1 KT wired down at 6 shops (Seoul 6) since ")
    assert "; 2 without failover" in incident["text"]
    assert incident["claim"].endswith("/api/incidents/1/claim.csv")
    table_top = browser.execute_script(
        "return document.getElementById('boxes').getBoundingClientRect().top")
    assert incident["top"] < table_top  # incidents above the shops
    assert browser.execute_script("return window.notReloaded") is True
    wait(browser, lambda d: len(rows(d)) == 6, "the six shops on LTE in Seoul")
    assert all(r[1:5] == ["online", "lte", "down", "up"] for r in rows(browser))

    # a click shows the shop's timeline; it follows the shop live
    wait(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, '#boxes tr[data-device="kt-01"]').click() is None, "a click on kt-01")
    wait(browser, lambda d: d.find_element(By.ID, "shop").is_displayed()
         and len(texts(d, "#timeline li")) >= 3, "the timeline")
    assert texts(browser, "#shop-title") == ["kt-01"]
    facts = texts(browser, "#shop-facts")[0]
    assert "the LTE SIM is on the wired ISP's carrier" in facts and "incident #1" in facts
    entries = texts(browser, "#timeline li")
    assert any("failover: wired down; on LTE" in e for e in entries[:2]), entries
    order = [next(i for i, e in enumerate(entries) if text in e) for text in
             ("on lte, wired down, LTE up", "on wired, wired up, LTE standby",
              "online; no state received yet")]
    assert order == sorted(order), entries  # newest first

    publish(broker, lambda sim: sim.state("kt-01", state("KT", "Seoul")))
    wait(browser, lambda d: "on wired, wired up, LTE standby" in texts(d, "#timeline li")[0],
         "the timeline follows live")
    assert browser.execute_script("return window.notReloaded") is True
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
