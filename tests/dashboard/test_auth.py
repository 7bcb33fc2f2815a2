"""Sign-in, sessions and CSRF against a real server with an API key, and the key-less local
dashboard of ``conveyor ui``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dashboard.conftest import API_KEY, Site, base_env, csrf_of, sign_in, wait_for
from e2e.conftest import Background, conveyor

pytestmark = [pytest.mark.service]


def _pages(run_id: str, deployment_id: str) -> list[str]:
    return [
        "/",
        "/runs",
        "/runs?state=completed",
        f"/runs/{run_id}",
        f"/runs/{run_id}/logs?after=0",
        f"/runs/{run_id}/logs.txt",
        f"/runs/{run_id}/code",
        f"/runs/{run_id}/code/flows.py",
        f"/runs/{run_id}/code.tar.zst",
        f"/runs/{run_id}/result",
        f"/code/raw/run:{run_id}/flows.py",
        f"/code/diff?a=run:{run_id}&b=run:{run_id}",
        "/deployments",
        "/deployments/greet/dash",
        "/deployments/greet/dash/revisions/1/code",
        "/workers",
        "/pools",
        "/secrets",
    ]


def test_without_a_session_every_page_redirects_to_the_login_form(site: Site, done_run) -> None:
    with httpx.Client(base_url=site.url, follow_redirects=False) as anonymous:
        for path in _pages(done_run.id, done_run.deployment_id):
            answer = anonymous.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/login"), path
            assert API_KEY not in answer.text
        for path in ("/secrets", f"/runs/{done_run.id}/cancel", "/deployments/greet/dash/runs"):
            assert anonymous.post(path, data={"x": "1"}).status_code == 303, path
        # htmx polls get a 401 that tells htmx where to go instead of a login page inside the logs
        polled = anonymous.get(f"/runs/{done_run.id}/logs?after=0", headers={"HX-Request": "true"})
        assert polled.status_code == 401
        assert polled.headers["HX-Redirect"].startswith("/login?next=")
        # the login form itself, its stylesheet and script need no session
        assert anonymous.get("/login").status_code == 200
        assert anonymous.get("/static/htmx.min.js").status_code == 200


def test_the_redirect_keeps_where_the_visitor_was_going(site: Site, done_run) -> None:
    with httpx.Client(base_url=site.url, follow_redirects=False) as anonymous:
        answer = anonymous.get(f"/runs/{done_run.id}?log_after=0")
        assert answer.headers["location"] == f"/login?next=%2Fruns%2F{done_run.id}%3Flog_after%3D0"
        form = anonymous.get(answer.headers["location"])
        assert f'name="next" value="/runs/{done_run.id}?log_after=0"' in form.text
        signed = anonymous.post(
            "/login",
            data={
                "api_key": API_KEY,
                "csrf_token": csrf_of(form.text),
                "next": f"/runs/{done_run.id}?log_after=0",
            },
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == f"/runs/{done_run.id}?log_after=0"


def test_a_wrong_key_is_refused_and_gives_no_session(site: Site) -> None:
    with httpx.Client(base_url=site.url, follow_redirects=False) as visitor:
        answer = sign_in(visitor, key="not-the-key")
        assert answer.status_code == 401
        assert "wrong API key" in answer.text
        assert "not-the-key" not in answer.text  # never echoed
        assert "conveyor_session" not in answer.headers.get("set-cookie", "")
        assert visitor.get("/runs").status_code == 303


def test_the_right_key_gives_an_httponly_samesite_session_cookie(site: Site) -> None:
    with httpx.Client(base_url=site.url, follow_redirects=False) as visitor:
        form = visitor.get("/login")
        csrf_cookie = form.headers["set-cookie"]
        assert "conveyor_csrf=" in csrf_cookie
        assert "HttpOnly" in csrf_cookie
        assert "SameSite=strict" in csrf_cookie
        answer = visitor.post(
            "/login", data={"api_key": API_KEY, "csrf_token": csrf_of(form.text), "next": "/"}
        )
        assert answer.status_code == 303
        session = answer.headers["set-cookie"]
        assert session.startswith("conveyor_session=")
        assert "HttpOnly" in session
        assert "SameSite=lax" in session
        assert API_KEY not in session  # a signature, not the key
        assert visitor.get("/runs").status_code == 200


def test_a_forged_session_cookie_is_refused(site: Site) -> None:
    with httpx.Client(base_url=site.url, follow_redirects=False) as visitor:
        visitor.cookies.set("conveyor_session", "9999999999.bm9uY2U.Zm9yZ2Vk")
        assert visitor.get("/runs").status_code == 303
    with httpx.Client(base_url=site.url, follow_redirects=False) as visitor:
        sign_in(visitor)
        good = visitor.cookies["conveyor_session"]
    expires, nonce, mac = good.split(".")
    for cookie, status in ((good, 200), (f"{int(expires) + 3600}.{nonce}.{mac}", 303)):
        with httpx.Client(base_url=site.url, follow_redirects=False) as visitor:
            visitor.cookies.set("conveyor_session", cookie)
            assert visitor.get("/runs").status_code == status  # a longer life breaks the mac


def test_login_form_needs_its_csrf_token_and_next_stays_on_this_site(site: Site) -> None:
    with httpx.Client(base_url=site.url, follow_redirects=False) as visitor:
        visitor.get("/login")
        refused = visitor.post("/login", data={"api_key": API_KEY, "next": "/"})
        assert refused.status_code == 403
        assert "conveyor_session" not in refused.headers.get("set-cookie", "")
        form = visitor.get("/login")
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            answer = visitor.post(
                "/login",
                data={"api_key": API_KEY, "csrf_token": csrf_of(form.text), "next": target},
            )
            assert answer.headers["location"] == "/", target


def test_posts_without_the_visitors_csrf_token_are_refused(site: Site, web, api) -> None:
    # no token at all
    refused = web.post(
        "/secrets", data={"name": "csrf_probe", "kind": "secret", "secret.value": "v"}
    )
    assert refused.status_code == 403
    assert "this form has expired or did not come from this dashboard" in refused.text
    # a token of another visitor (valid for their cookie, not for ours)
    with httpx.Client(base_url=site.url) as other:
        theirs = csrf_of(other.get("/login").text)
    refused = web.post(
        "/secrets",
        data={"name": "csrf_probe", "kind": "secret", "secret.value": "v", "csrf_token": theirs},
    )
    assert refused.status_code == 403
    assert "csrf_probe" not in {s.name for s in api.list_secrets()}


def test_the_api_still_needs_the_key_header_with_a_dashboard_session(site: Site, web) -> None:
    answer = web.get("/api/runs")
    assert answer.status_code == 401
    assert answer.json()["detail"] == "this server requires an API key"
    assert web.get("/api/health", headers={"X-API-Key": API_KEY}).status_code == 200


def test_logout_ends_the_session(site: Site) -> None:
    with httpx.Client(base_url=site.url, follow_redirects=False) as visitor:
        sign_in(visitor)
        page = visitor.get("/runs")
        assert page.status_code == 200
        out = visitor.post("/logout", data={"csrf_token": csrf_of(page.text)})
        assert out.status_code == 303
        assert visitor.get("/runs").status_code == 303


# --- conveyor ui: the embedded, key-less dashboard ----------------------------------------------

_URL = re.compile(r"conveyor dashboard at (http://127\.0\.0\.1:\d+/)")


def test_conveyor_ui_serves_the_local_database_without_sign_in(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(
        "from conveyor import flow\n\n@flow\ndef local(n: int = 1) -> int:\n    return n\n"
    )
    assert (
        conveyor("deploy", "flows.py:local", "--name", "here", env=env, cwd=project).returncode == 0
    )
    ui = Background.start(["ui", "--port", "0"], env=env, log=tmp_path / "ui.log")
    try:
        url = wait_for(lambda: (m := _URL.search(ui.output())) and m.group(1), timeout=30)
        with httpx.Client(base_url=url, follow_redirects=False) as visitor:
            assert visitor.get("/").headers["location"] == "/runs"
            page = visitor.get("/deployments")
            assert page.status_code == 200
            assert "local/here" in page.text
            assert "Sign out" not in page.text
            assert visitor.get("/login").headers["location"] == "/"
            assert visitor.get("/api/health").json()["status"] == "ok"  # the same server
            # without a key there is no sign-in, but forms still need their CSRF token
            assert (
                visitor.post("/secrets", data={"name": "x", "secret.value": "y"}).status_code == 403
            )
    finally:
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert ui.stop(sig=signal.SIGTERM) in (0, -signal.SIGTERM), ui.output()


def test_conveyor_ui_with_a_server_configured_points_at_it(tmp_path: Path) -> None:
    env = base_env(tmp_path, CONVEYOR_API_URL="http://127.0.0.1:9/")
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "ui"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "the dashboard is served by the server at http://127.0.0.1:9/" in result.stdout
