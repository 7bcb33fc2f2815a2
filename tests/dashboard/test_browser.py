"""The dashboard in a real headless Chromium against a real server and worker: sign in with the
key, trigger a run from the form and watch its logs arrive live (no reload), open its code, diff
two runs, create credentials whose value never reaches the page source, and see that a flow
name, a parameter and a log line carrying markup render as text. Each page is screenshotted.

The tests run in file order and share one signed-in browser (session-scoped fixtures).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dashboard.conftest import API_KEY, XSS_FLOW, XSS_TEXT, Parked, Site, shoot, wait_for

pytestmark = [pytest.mark.service, pytest.mark.slow]

XSS_PARAM = '<img src=x onerror="window.__xss=3">'


def _by(css: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    return (By.CSS_SELECTOR, css)


def _text(driver: Any, css: str) -> str:
    """The rendered text of the first match, read in one step (htmx may swap the element)."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
    return str(driver.execute_script(script, css)).strip()


def _no_injected_markup(driver: Any) -> None:
    """Nothing untrusted became an element or ran."""
    assert driver.find_elements(*_by("img[src='x']")) == []
    assert driver.find_elements(*_by("main script")) == []
    assert driver.execute_script("return window.__xss === undefined")


@pytest.fixture(scope="module")
def signed_in(browser: Any, site: Site) -> Any:
    """The browser, signed in through the login form (a wrong key first)."""
    browser.get(site.url + "/runs")
    wait_for(lambda: "/login" in browser.current_url)
    shoot(browser, "login")
    browser.find_element(*_by("#api_key")).send_keys("wrong-key")
    browser.find_element(*_by("#sign-in")).click()
    assert "wrong API key" in wait_for(lambda: _text(browser, "#login-error"))
    browser.find_element(*_by("#api_key")).send_keys(API_KEY)
    browser.find_element(*_by("#sign-in")).click()
    wait_for(lambda: browser.current_url.endswith("/runs"))
    cookie = browser.get_cookie("conveyor_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    return browser


def test_trigger_a_run_from_the_form_and_watch_its_logs_live(
    signed_in: Any, site: Site, worker: Any, api: Any
) -> None:
    driver = signed_in
    driver.get(site.url + "/deployments/greet/dash")
    shoot(driver, "deployment")
    form = {"param.name": XSS_PARAM, "param.lines": "4", "param.pause": "0.8"}
    for name, value in form.items():
        field = driver.find_element(*_by(f"[name='{name}']"))
        field.clear()
        field.send_keys(value)
    driver.find_element(*_by("#run-button")).click()
    wait_for(lambda: "/runs/" in driver.current_url)
    run_id = driver.current_url.rsplit("/", 1)[1]
    driver.execute_script("window.__page = 'first load'")
    # the first line shows while the run is still running, then the rest, without a reload
    wait_for(lambda: "line 0 for" in _text(driver, "#log-lines"), timeout=60)
    assert api.get_run(run_id).state.value in ("running", "completed")
    shoot(driver, "run-live")
    wait_for(lambda: _text(driver, "#run-state") == "completed", timeout=60)
    logs = _text(driver, "#log-lines")
    assert [f"line {i} for {XSS_PARAM}" in logs for i in range(4)] == [True] * 4
    assert driver.execute_script("return window.__page") == "first load"  # htmx, not a reload
    assert driver.find_elements(*_by("#log-poller[hx-get]")) == []  # final: polling stopped
    assert json.dumps(XSS_PARAM) in _text(driver, "#parameters")  # shown as text (JSON)
    _no_injected_markup(driver)
    driver.refresh()
    shoot(driver, "run")


def test_open_the_code_a_run_used(signed_in: Any, site: Site, done_run: Any) -> None:
    driver = signed_in
    driver.get(f"{site.url}/runs/{done_run.id}")
    driver.find_element(*_by("#code-link")).click()
    wait_for(lambda: driver.current_url.endswith("/code"))
    assert _text(driver, "#code-version") == done_run.version
    assert "flows.py" in _text(driver, "#tree")
    shoot(driver, "code-tree")
    driver.find_element(*_by("#tree a[href$='/flows.py']")).click()
    wait_for(lambda: driver.find_elements(*_by("#source .highlight")))
    source = _text(driver, "#source")
    assert "def greet(" in source
    assert driver.find_elements(*_by("#source .highlight .k"))  # Pygments keyword spans
    shoot(driver, "code-file")


def test_diff_two_runs(signed_in: Any, site: Site, parked: Parked) -> None:
    driver = signed_in
    driver.get(f"{site.url}/runs/{parked.second.id}")
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(*_by("#compare-form select"))).select_by_value(
        f"run:{parked.first.id}"
    )
    driver.find_element(*_by("#compare-button")).click()
    wait_for(lambda: "/code/diff" in driver.current_url)
    assert _text(driver, "#diff-summary").startswith("2 files changed")
    added = [e.text for e in driver.find_elements(*_by("pre.diff .add"))]
    assert '+        print(f"row {i} of {name}", flush=True)' in added
    assert "+added in version two" in added
    shoot(driver, "diff")


def test_credentials_value_never_reaches_the_page_source(signed_in: Any, site: Site) -> None:
    driver = signed_in
    driver.get(site.url + "/secrets")
    value = "ghp_BrowserSecret0123456789"
    driver.find_element(*_by("#secret-name")).send_keys("gh-browser")
    driver.find_element(*_by("input[name='kind'][value='github']")).click()
    token = driver.find_element(*_by("input[name='github.token']"))
    assert token.is_displayed()  # the chosen kind's fields show (CSS only)
    assert not driver.find_element(*_by("input[name='gitlab.token']")).is_displayed()
    token.send_keys(value)
    driver.find_element(*_by("#secret-save")).click()
    wait_for(lambda: "Stored credentials.gh-browser" in _text(driver, "#saved"))
    assert "github credentials" in _text(driver, "#secrets")
    assert value not in driver.page_source
    driver.get(site.url + "/secrets")
    assert value not in driver.page_source
    assert all(
        f.get_attribute("value") == "" for f in driver.find_elements(*_by("input[type=password]"))
    )
    shoot(driver, "secrets")


def test_markup_in_flow_names_parameters_and_logs_renders_as_text(
    signed_in: Any, site: Site, api: Any, worker: Any
) -> None:
    driver = signed_in
    run = api.create_run(XSS_FLOW, "evil", parameters={"note": XSS_TEXT})
    wait_for(lambda: api.get_run(run.id).state.is_final, timeout=60)
    driver.get(site.url + "/deployments")
    assert f"{XSS_FLOW}/evil" in _text(driver, "#deployments")
    _no_injected_markup(driver)
    driver.get(f"{site.url}/runs/{run.id}")
    assert XSS_TEXT in _text(driver, "#log-lines")
    assert XSS_TEXT in _text(driver, "#parameters")
    assert XSS_FLOW in driver.find_element(*_by(".crumbs")).text
    _no_injected_markup(driver)


def test_lists_workers_and_pools(signed_in: Any, site: Site, done_run: Any) -> None:
    driver = signed_in
    for page, css in (("runs", "table.runs"), ("workers", "#workers"), ("pools", "#pool-default")):
        driver.get(f"{site.url}/{page}")
        assert driver.find_elements(*_by(css)), page
        shoot(driver, page)
    driver.get(f"{site.url}/workers")
    assert done_run.worker in _text(driver, "#workers")
    driver.get(f"{site.url}/deployments")
    shoot(driver, "deployments")
