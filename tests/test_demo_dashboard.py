"""The demo's live dashboard in a real headless Chromium (Selenium + chromium-driver): the page
loads without console errors, shows the three regions with their edges up, answers "where
would this client go", and after a region is stopped from the page shows it down within 5 s;
a screenshot is saved. Also the dashboard's JSON API against the real demo.

Without chromium / chromedriver the browser test is skipped with the reason; under CI (``CI``
set: .ci/run installs them) it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from demoutil import DemoProcess, demo_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if os.access("/usr/bin/chromedriver", os.X_OK) else None)
DOWN_WITHIN = 5.0  # the bound for a stopped region to show as down


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    config, _ = demo_config(tmp_path_factory.mktemp("dash"))
    proc = DemoProcess(config, args=("--dashboard", "127.0.0.1:0"))
    try:
        proc.wait_for(r"All 12 processes are up", 90)
        url = proc.wait_for(r"^Dashboard: (http://127\.0\.0\.1:\d+/)$", 20)[1]
        yield proc, url
    finally:
        proc.close()


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def poll(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.1)


def state_of(url: str) -> dict:
    return get_json(url + "api/state")[1]


def test_api_state_shows_regions_edges_traffic_and_dns(demo) -> None:
    _, url = demo
    state = poll(lambda: (s := state_of(url))["updated"] and all(
        e["state"] == "up" for r in s["regions"] for e in r["edges"]) and s, 15,
        "every edge up")
    assert [r["name"] for r in state["regions"]] == ["us-east", "eu-west", "ap-southeast"]
    eu = next(r for r in state["regions"] if r["name"] == "eu-west")
    assert eu["dns"]["client"] == "81.2.69.160" and eu["dns"]["country"] == "GB"
    assert sorted(eu["dns"]["answer"]) == ["127.0.2.1", "127.0.2.2"]
    assert eu["dns"]["region"] == "eu-west" and 0 < eu["dns"]["scope"] <= 24
    assert [o["name"] for o in state["origins"]] == ["origin-1", "origin-2"]
    # traffic: requests through one edge show up as its requests and hit ratio
    edge = eu["edges"][0]
    port = edge["port"]
    for _ in range(4):
        req = urllib.request.Request(f"http://{edge['address']}:{port}/index.html",
                                     headers={"Host": f"www.example.test:{port}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
    row = poll(lambda: next((e for r in state_of(url)["regions"] for e in r["edges"]
                             if e["name"] == edge["name"] and e["requests"] >= 4), None),
               10, "the edge's requests")
    assert row["hit_ratio"] is not None and 0.5 <= row["hit_ratio"] <= 1.0  # 1 miss, 3 hits


def test_api_explain_and_bad_input(demo) -> None:
    _, url = demo
    status, doc = get_json(url + "api/explain?ip=8.8.8.8", timeout=60)
    assert status == 200 and doc["region"] == "us-east" and doc["explain_region"] == "us-east"
    assert sorted(doc["answer"]) == ["127.0.1.1", "127.0.1.2"]
    assert any(line.startswith("ranking") for line in doc["lines"])
    with pytest.raises(urllib.error.HTTPError) as bad:
        get_json(url + "api/explain?ip=not-an-ip")
    assert bad.value.code == 400
    for body, ctype, code in ((b'{"command": "stop", "target": "nowhere"}', "application/json",
                               404),
                              (b'{"command": "rm", "target": "eu-west"}', "application/json",
                               400),
                              (b"stop eu-west", "text/plain", 415)):
        req = urllib.request.Request(url + "api/control", data=body, method="POST",
                                     headers={"Content-Type": ctype})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == code
    req = urllib.request.Request(url + "api/control", method="POST",
                                 data=b'{"command": "stop", "target": "eu-west"}',
                                 headers={"Content-Type": "application/json",
                                          "Origin": "http://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as cross:
        urllib.request.urlopen(req, timeout=10)
    assert cross.value.code == 403


@pytest.fixture
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium / chromedriver missing under CI (.ci/run installs them)")
        pytest.skip("needs chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1050", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def port_of(url: str, edge: str) -> int:
    return next(e["port"] for r in state_of(url)["regions"] for e in r["edges"]
                if e["name"] == edge)


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_dashboard_in_headless_chromium(demo, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    proc, url = demo
    browser.get(url)

    def regions():
        cards = browser.find_elements(By.CSS_SELECTOR, "#regions .region")
        return cards if len(cards) == 3 else None

    cards = poll(regions, 15, "three region cards")
    assert [c.get_attribute("id") for c in cards] == [
        "region-us-east", "region-eu-west", "region-ap-southeast"]
    poll(lambda: all(c.get_attribute("data-state") == "up" for c in regions()), 15,
         "every region up")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#markers .marker")) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "#markers .edge-dot.up")) == 6
    assert browser.find_elements(By.CSS_SELECTOR, "#land path")  # the vendored map drew
    poll(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#flows .flow")) == 3, 10,
         "three DNS flows")

    # where would this client go
    field = browser.find_element(By.ID, "explain-ip")
    field.clear()
    field.send_keys("1.0.16.1")
    browser.find_element(By.ID, "explain-go").click()
    answer = poll(lambda: (e := browser.find_elements(By.ID, "explain-region")) and e[0].text,
                  60, "the explain answer")
    assert answer.startswith("1.0.16.1 -> ap-southeast (scope /")

    # stop a region from the page: it shows down within 5 s
    browser.find_element(By.CSS_SELECTOR,
                         '#region-eu-west button[data-command="stop"]'
                         '[data-target="eu-west"]').click()
    clicked = time.monotonic()
    eu = browser.find_element(By.ID, "region-eu-west")
    poll(lambda: eu.get_attribute("data-state") == "down", DOWN_WITHIN, "eu-west down")
    assert time.monotonic() - clicked < DOWN_WITHIN
    proc.wait_for(r"^dashboard: stop eu-west$", 5)
    # GeoDNS moves eu-west's sample client away; the page draws that flow as moved
    poll(lambda: browser.find_elements(By.CSS_SELECTOR, "#flows .flow.moved"), 15,
         "the eu-west client's flow moved")
    # requests through an edge show as its requests/s and hit ratio
    us_port = port_of(url, "us-east-1")
    for _ in range(40):
        req = urllib.request.Request(f"http://127.0.1.1:{us_port}/index.html",
                                     headers={"Host": f"www.example.test:{us_port}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
    rps = browser.find_element(By.CSS_SELECTOR, "#edge-us-east-1 td.num")
    poll(lambda: float(rps.text) > 0, 10, "us-east-1's requests/s on the page")
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("GEOEDGE_SCREENSHOT"):  # refresh the README's picture
        shutil.copy(shot, os.environ["GEOEDGE_SCREENSHOT"])
    assert console_errors(browser) == []

    # and back
    browser.find_element(By.CSS_SELECTOR,
                         '#region-eu-west button[data-command="start"]').click()
    poll(lambda: eu.get_attribute("data-state") == "up", 30, "eu-west up again")
    assert console_errors(browser) == []


def test_a_busy_dashboard_port_falls_back_to_a_free_one(tmp_path: Path, demo) -> None:
    """The default port is taken (the module's demo holds one): another demo picks another."""
    _, url = demo
    busy = url.rstrip("/").rsplit(":", 1)[1]
    config, _ = demo_config(tmp_path)
    proc = DemoProcess(config, args=("--dashboard", f"127.0.0.1:{busy}"))
    try:
        proc.wait_for(r"All 12 processes are up", 90)
        other = proc.wait_for(r"^Dashboard: http://127\.0\.0\.1:(\d+)/$", 20)[1]
        assert other != busy
    finally:
        proc.close()
