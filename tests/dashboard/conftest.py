"""Dashboard fixtures, all session-scoped: one real ``conveyor server start`` with an API key on a
loopback port, one real worker, a small flow project deployed to it, an HTTP client signed in
through the login form, and a headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium with nothing downloaded) — each stopped by PID at the end.

Screenshots go to ``$CONVEYOR_SCREENSHOT_DIR`` when set (``docs/screenshots`` for the README),
else to ``build/screenshots`` (ignored by git).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import service_unavailable
from e2e.conftest import Background, Server, conveyor, ok

API_KEY = "dash-key-0123456789abcdef"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
XSS_FLOW = '<img src=x onerror="window.__xss=1">'
XSS_TEXT = "<script>window.__xss=2</script>"

FLOWS = """
import time

from conveyor import flow


@flow
def greet(name: str = "world", lines: int = 3, pause: float = 0.0, loud: bool = False) -> str:
    for i in range(lines):
        print(f"line {i} for {name}", flush=True)
        if pause:
            time.sleep(pause)
    return f"hello {name}".upper() if loud else f"hello {name}"


@flow(name=XSS_FLOW)
def xss(note: str = "") -> str:
    print(note or XSS_TEXT, flush=True)
    return "ok"
""".replace("XSS_FLOW", repr(XSS_FLOW)).replace("XSS_TEXT", repr(XSS_TEXT))


def base_env(home: Path, **values: str) -> dict[str, str]:
    """An environment of its own for the session's processes (the per-test ``isolate`` fixture
    does not reach session fixtures)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONVEYOR_", "GIT_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    gitconfig = home / ".gitconfig-test"
    gitconfig.write_text("[user]\n\tname = Conveyor Tests\n\temail = tests@conveyor.invalid\n")
    env.update(
        HOME=str(home),
        CONVEYOR_HOME=str(home / ".conveyor"),
        GIT_CONFIG_GLOBAL=str(gitconfig),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        **values,
    )
    return env


@dataclass
class Site:
    """The running server and what the session deployed to it."""

    server: Server
    env: dict[str, str]
    """The environment of commands that talk to the server (URL and key set)."""
    project: Path
    home: Path

    @property
    def url(self) -> str:
        return self.server.url

    def cli(self, *args: str) -> str:
        return ok(conveyor(*args, env=self.env, cwd=self.project))


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("dashboard")
    env = base_env(home, CONVEYOR_API_KEY=API_KEY)
    server = Server.start(env, log=home / "server.log")
    project = home / "project"
    project.mkdir()
    (project / "flows.py").write_text(FLOWS.lstrip())
    site = Site(
        server=server, env={**env, "CONVEYOR_API_URL": server.url}, project=project, home=home
    )
    try:
        site.cli("deploy", "flows.py:greet", "--name", "dash")
        site.cli("deploy", "flows.py:xss", "--name", "evil")
        yield site
    finally:
        server.stop()


@pytest.fixture(scope="session")
def worker(site: Site) -> Iterator[Background]:
    """One worker process on the default pool for the whole session."""
    process = Background.start(
        ["worker", "start", "--pool", "default", "--limit", "4"],
        env=site.env,
        log=site.home / "worker.log",
    )
    try:
        yield process
    finally:
        process.stop(sig=signal.SIGTERM, timeout=20)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:2000]
    return match.group(1)


def sign_in(client: httpx.Client, key: str = API_KEY) -> httpx.Response:
    """Post the login form as a browser would: GET it (CSRF cookie + token), then POST."""
    form = client.get("/login")
    return client.post(
        "/login", data={"api_key": key, "csrf_token": csrf_of(form.text), "next": "/runs"}
    )


@pytest.fixture(scope="session")
def web(site: Site) -> Iterator[httpx.Client]:
    """An HTTP client signed in to the dashboard (cookies kept, redirects not followed)."""
    with httpx.Client(base_url=site.url, timeout=30, follow_redirects=False) as client:
        answer = sign_in(client)
        assert answer.status_code == 303, answer.text
        yield client


def wait_for(check: Any, *, timeout: float = 30.0, every: float = 0.1) -> Any:
    """``check()`` once it is truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout}s waiting for {check}")
        time.sleep(every)


# --- the browser --------------------------------------------------------------------------------


def screenshot_dir() -> Path:
    chosen = os.environ.get("CONVEYOR_SCREENSHOT_DIR")
    root = Path(__file__).resolve().parents[2]
    path = Path(chosen) if chosen else root / "build" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium on loopback only (other hosts do not resolve), fresh profile."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        service_unavailable(
            f"{CHROMIUM} or {CHROMEDRIVER} missing: apt-get install chromium chromium-driver"
        )
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager: no stats, no downloads
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="conveyor-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except Exception as exc:  # a broken install: say why
        shutil.rmtree(profile, ignore_errors=True)
        service_unavailable(f"headless Chromium did not start: {exc}")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shoot(driver: Any, name: str) -> Path:
    """A full-width screenshot of the current page, as ``<name>.png``."""
    path = screenshot_dir() / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(700, min(int(height) + 40, 2400)))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    return path


# --- data the tests share -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def api(site: Site) -> Iterator[Any]:
    """The API client, with the server's URL and key."""
    from conveyor.connect import connect
    from conveyor.settings import Settings

    with connect(Settings.from_env(site.env)) as client:
        yield client


@pytest.fixture(scope="session")
def done_run(site: Site, worker: Background, api: Any) -> Any:
    """A completed run of ``greet/dash`` (parameters ``name=Ada``, 3 lines)."""
    run = api.create_run("greet", "dash", parameters={"name": "Ada"})
    final = wait_for(lambda: (r := api.get_run(run.id)).state.is_final and r, timeout=60)
    assert final.state.value == "completed", (final.error, site.server.process.output())
    return final


@dataclass
class Parked:
    """Deployment ``greet/parked`` in a pool no worker serves, deployed twice (two versions),
    with one scheduled run of each version."""

    deployment_id: str
    first: Any
    second: Any


@pytest.fixture(scope="session")
def parked(site: Site, api: Any) -> Parked:
    api.create_pool("parked")
    tree = site.home / "parked-project"
    shutil.copytree(site.project, tree)
    env = site.env
    ok(
        conveyor(
            "deploy", "flows.py:greet", "--name", "parked", "--pool", "parked", env=env, cwd=tree
        )
    )
    first = api.create_run("greet", "parked")
    flows = tree / "flows.py"
    flows.write_text(flows.read_text().replace('f"line {i} for {name}"', 'f"row {i} of {name}"'))
    (tree / "notes.txt").write_text("added in version two\n")
    ok(
        conveyor(
            "deploy", "flows.py:greet", "--name", "parked", "--pool", "parked", env=env, cwd=tree
        )
    )
    second = api.create_run("greet", "parked")
    assert first.version != second.version
    return Parked(deployment_id=first.deployment_id, first=first, second=second)
