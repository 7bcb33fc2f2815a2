"""What each page shows, read as HTML from the real server: deployments and the run form (same
validation as the API), the run list's filters and pages, a run with its logs, the code a run
used (tree, file, archive, diff), workers, pools, secrets; untrusted text always escaped."""

from __future__ import annotations

import html
import io
import json
import pickle
import re
import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest
from markupsafe import escape

from conveyor.errors import InvalidRequest
from dashboard.conftest import XSS_FLOW, XSS_TEXT, Parked, csrf_of, wait_for
from e2e.conftest import conveyor, ok

pytestmark = [pytest.mark.service]


OLD_LINE = '-        print(f"line {i} for {name}", flush=True)'
NEW_LINE = '+        print(f"row {i} of {name}", flush=True)'


def esc(text: str) -> str:
    """``text`` as the templates escape it."""
    return str(escape(text))


def _run_ids(page: str) -> list[str]:
    return re.findall(r'href="/runs/([0-9a-f-]{36})"', page)


# --- deployments and the run form ---------------------------------------------------------------


def test_deployments_list_and_page(web, done_run) -> None:
    listing = web.get("/deployments").text
    assert "greet/dash" in listing
    assert esc(XSS_FLOW) + "/evil" in listing
    assert XSS_FLOW not in listing
    page = web.get("/deployments/greet/dash").text
    assert done_run.version in page  # the pinned version
    assert "bundle digest" in page
    assert 'name="param.name" value="world"' in page  # defaults fill the run form
    assert 'name="param.lines" value="3"' in page
    assert 'type="checkbox" id="p-4" name="param.loud"' in page
    assert f"/runs/{done_run.id}" in page  # recent runs


def test_the_run_form_creates_a_run_with_typed_parameters(web, api) -> None:
    page = web.get("/deployments/greet/dash")
    answer = web.post(
        "/deployments/greet/dash/runs",
        data={
            "csrf_token": csrf_of(page.text),
            "param.name": "Form",
            "param.lines": "2",
            "param.pause": "",
            "param.loud": "true",
        },
    )
    assert answer.status_code == 303
    run_id = answer.headers["location"].removeprefix("/runs/")
    run = api.get_run(run_id)
    assert run.parameters == {"name": "Form", "lines": 2, "loud": True}  # empty: the default


def test_the_run_form_refuses_what_the_api_refuses_with_the_same_message(web, api) -> None:
    with pytest.raises(InvalidRequest) as refused:
        api.create_run("greet", "dash", parameters={"lines": "many"})
    page = web.get("/deployments/greet/dash")
    answer = web.post(
        "/deployments/greet/dash/runs",
        data={"csrf_token": csrf_of(page.text), "param.name": "x", "param.lines": "many"},
    )
    assert answer.status_code == 422
    assert esc(refused.value.message) in answer.text
    assert 'name="param.lines" value="many"' in answer.text  # the form comes back as typed


def test_the_run_form_keeps_the_apis_parameter_size_limit(site, web, api, tmp_path: Path) -> None:
    # Given a flow of two text parameters, and a form filling each with 600 kB: each field is
    # under the form parser's 1 MB, together they are past the run's 1 MiB parameter limit
    folder = tmp_path / "pair"
    folder.mkdir()
    (folder / "flows.py").write_text(
        "from conveyor import flow\n\n\n@flow\ndef pair(a: str, b: str) -> int:\n"
        "    return len(a) + len(b)\n"
    )
    ok(conveyor("deploy", "flows.py:pair", "--name", "big", env=site.env, cwd=folder))
    page = web.get("/deployments/pair/big")
    answer = web.post(
        "/deployments/pair/big/runs",
        data={"csrf_token": csrf_of(page.text), "param.a": "x" * 600_000, "param.b": "y" * 600_000},
    )
    # Then the form says so, as the API would, and no run was created
    assert answer.status_code == 413
    assert esc("the run's parameters are") in answer.text
    assert "accepts at most" in answer.text
    assert api.list_runs(deployment="pair/big") == []


ENUM_FLOW = """
from enum import Enum

from conveyor import flow


class Color(str, Enum):
    red = "red"
    blue = "blue"


@flow
def paint(color: Color = Color.red, accent: Color | None = None) -> str:
    return f"{color.value}/{accent.value if accent else '-'}"
"""


def test_an_enum_parameter_is_a_select_and_the_form_runs_it_as_the_cli_does(
    site, web, api, tmp_path: Path
) -> None:
    # Given a deployment whose flow takes an enum.Enum parameter (and an optional one)
    folder = tmp_path / "paint"
    folder.mkdir()
    (folder / "flows.py").write_text(ENUM_FLOW.lstrip())
    ok(conveyor("deploy", "flows.py:paint", "--name", "enum", env=site.env, cwd=folder))

    # When its page is shown, and its run form submitted with "blue" chosen
    page = web.get("/deployments/paint/enum").text
    answer = web.post(
        "/deployments/paint/enum/runs",
        data={"csrf_token": csrf_of(page), "param.color": '"blue"', "param.accent": '"red"'},
    )

    # Then both are selects offering the enum's values (red pre-selected), not JSON text areas,
    # and the run gets the values the CLI's --param color=blue gives
    for name in ("color", "accent"):
        assert re.search(rf'<select[^>]*name="param\.{name}"', page), name
        assert not re.search(rf'<textarea[^>]*name="param\.{name}"', page), name
    assert re.search(r'<option value="(&#34;|&quot;)red(&#34;|&quot;)" selected', page)
    assert answer.status_code == 303, answer.text
    run = api.get_run(answer.headers["location"].removeprefix("/runs/"))
    assert run.parameters == {"color": "blue", "accent": "red"}


SECRET_FLOW = """
from pydantic import SecretStr

from conveyor import flow


@flow
def login(token: SecretStr, user: str = "ada") -> str:
    return user
"""


def test_a_secret_parameter_is_shown_masked_on_the_run_page_and_by_runs_inspect(
    site, web, api, tmp_path: Path
) -> None:
    # Given a run of a flow whose parameter is a SecretStr
    folder = tmp_path / "login"
    folder.mkdir()
    (folder / "flows.py").write_text(SECRET_FLOW.lstrip())
    default = "tok-default-nowhere-3e9a"
    deploy = ["deploy", "flows.py:login", "--name", "secret", "--param", f"token={default}"]
    ok(conveyor(*deploy, env=site.env, cwd=folder))
    secret = "tok-visible-nowhere-8c1f"
    run = api.create_run("login", "secret", parameters={"token": secret, "user": "grace"})

    # When its page and its deployment's are shown, and `conveyor runs inspect` prints it
    page = web.get(f"/runs/{run.id}").text
    deployment_page = web.get("/deployments/login/secret").text
    inspected = ok(conveyor("runs", "inspect", run.id, env=site.env))
    as_json = json.loads(ok(conveyor("runs", "inspect", run.id, "--json", env=site.env)))

    # Then the token is ****, the other parameters as they are
    for shown_text in (page, deployment_page, inspected, json.dumps(as_json)):
        assert secret not in shown_text
        assert default not in shown_text
    assert as_json["parameters"] == {"token": "****", "user": "grace"}
    shown = re.search(r'<pre id="parameters">(.*?)</pre>', page, re.S)
    assert shown is not None
    assert "****" in shown.group(1)
    assert "grace" in shown.group(1)
    assert '"token": "****"' in inspected
    assert '"user": "grace"' in inspected


def test_the_run_form_left_empty_for_a_secret_uses_the_deployments_default(
    site, web, api, tmp_path: Path
) -> None:
    # Given a deployment (on a pool no worker takes) with a default for its required SecretStr
    folder = tmp_path / "login-default"
    folder.mkdir()
    (folder / "flows.py").write_text(SECRET_FLOW.lstrip())
    api.create_pool("form-secrets")
    default = "tok-form-default-5d2b"
    deploy = ["deploy", "flows.py:login", "--name", "formdefault", "--pool", "form-secrets"]
    ok(conveyor(*deploy, "--param", f"token={default}", env=site.env, cwd=folder))
    # When its run form is submitted with the (never pre-filled) secret box left empty
    page = web.get("/deployments/login/formdefault").text
    answer = web.post(
        "/deployments/login/formdefault/runs",
        data={"csrf_token": csrf_of(page), "param.token": "", "param.user": "grace"},
    )
    # Then the run gets the deployment's secret default, not an empty value
    assert answer.status_code == 303, answer.text
    (run,) = api.list_runs(deployment="login/formdefault")
    claimed = api.claim_run("form-secrets", worker="form-checker", labels=run.labels)
    assert claimed is not None
    assert claimed.parameters == {"token": default, "user": "grace"}


# --- runs ---------------------------------------------------------------------------------------


def test_run_list_filters_and_pages(web, api, parked: Parked, done_run) -> None:
    for _ in range(53):
        api.create_run("greet", "parked")
    first = web.get(f"/runs?deployment={parked.deployment_id}").text
    assert "55 runs" in first
    ids = _run_ids(first)
    assert len(ids) == 50
    older = re.search(r'href="(/runs\?[^"]*older=[^"]+)" id="older"', first)
    assert older
    second = web.get(html.unescape(older.group(1))).text
    rest = _run_ids(second)
    assert len(rest) == 5
    assert not set(rest) & set(ids)
    assert {parked.first.id, parked.second.id} <= set(rest)  # the oldest are last
    assert 'id="newer"' in second
    newer = re.search(r'href="(/runs\?[^"]*newer=[^"]+)" id="newer"', second)
    assert _run_ids(web.get(html.unescape(newer.group(1))).text) == ids
    # state, worker and time filters
    completed = web.get("/runs?state=completed").text
    assert done_run.id in _run_ids(completed)
    assert parked.first.id not in _run_ids(completed)
    by_worker = web.get(f"/runs?worker={quote(done_run.worker)}").text
    assert done_run.id in _run_ids(by_worker)
    assert parked.first.id not in _run_ids(by_worker)
    assert _run_ids(web.get("/runs?since=2999-01-01T00:00").text) == []
    assert "invalid" not in web.get("/runs?until=2999-01-01T00:00").text
    assert web.get("/runs?since=yesterday").status_code == 400


def test_run_page_shows_history_timings_parameters_result_and_logs(web, done_run) -> None:
    page = web.get(f"/runs/{done_run.id}").text
    assert 'id="run-state">completed' in page
    for state in ("scheduled", "pending", "running", "completed"):
        assert f"state-{state}" in page
    assert f"claimed by {done_run.worker}" in page
    for phase in done_run.timings:
        assert f"</span>{phase} <b>" in page
    assert "&#34;name&#34;: &#34;Ada&#34;" in page
    assert "&#34;hello Ada&#34;" in page  # the result
    for i in range(3):
        assert f"line {i} for Ada" in page
    assert 'id="log-poller"' not in page  # final: nothing to follow
    # the log poller's fragment: the lines after a seq, and no new poller once final
    lines = web.get(f"/runs/{done_run.id}/logs?after=1").text
    assert "line 0 for Ada" not in lines
    assert "line 2 for Ada" in lines
    assert 'id="log-poller" hx-swap-oob="true"></div>' in lines
    text = web.get(f"/runs/{done_run.id}/logs.txt")
    assert text.headers["content-disposition"].startswith("attachment")
    assert [line.split("] ", 1)[1] for line in text.text.splitlines() if "line " in line] == [
        "line 0 for Ada",
        "line 1 for Ada",
        "line 2 for Ada",
    ]


def test_a_failed_run_shows_its_error_and_hint(web, api, worker) -> None:
    run = api.create_run("greet", "dash", parameters={"lines": 1})
    wait_for(lambda: api.get_run(run.id).state.is_final, timeout=60)
    # a run of a version the source does not hold fails before the flow starts, with a hint
    from conveyor.schemas import DeploymentCreate

    deployment = api.get_deployment("greet", "dash")
    broken = deployment.model_dump(include=set(DeploymentCreate.model_fields))
    broken.update(name="broken", version="sha256-" + "0" * 64)
    api.put_deployment(DeploymentCreate(**broken))
    failed = api.create_run("greet", "broken")
    final = wait_for(lambda: (r := api.get_run(failed.id)).state.is_final and r, timeout=60)
    assert final.state.value == "failed"
    page = web.get(f"/runs/{failed.id}").text
    assert esc(final.error) in page
    assert 'id="run-hint">hint: ' in page


def test_a_pickled_result_downloads_only_as_the_run_stored_it(web, api, worker, site) -> None:
    # Given a completed run whose result is pickled on the server's machine
    tree = site.home / "pickled-project"
    tree.mkdir()
    (tree / "flows.py").write_text(
        "from conveyor import flow\n\n\n@flow\ndef pair() -> tuple[int, int]:\n    return (1, 2)\n"
    )
    ok(conveyor("deploy", "flows.py:pair", "--name", "pickled", env=site.env, cwd=tree))
    run = api.create_run("pair", "pickled")
    final = wait_for(lambda: (r := api.get_run(run.id)).state.is_final and r, timeout=60)
    assert final.state.value == "completed", final.error
    stored = site.home / ".conveyor" / "results" / run.id / "result.pickle"
    # When it is downloaded, then replaced and downloaded again
    first = web.get(f"/runs/{run.id}/result")
    stored.write_bytes(pickle.dumps((1, 3)))
    second = web.get(f"/runs/{run.id}/result")
    # Then the first is the run's bytes; the second is refused, naming the ref
    assert first.status_code == 200
    assert pickle.loads(first.content) == (1, 2)
    assert len(first.content) == final.result_size
    assert second.status_code == 409
    assert esc(final.result_ref) in second.text
    assert "does not match the digest" in second.text


# --- code ---------------------------------------------------------------------------------------


def test_code_tree_file_raw_and_traversal(web, done_run, site) -> None:
    tree = web.get(f"/runs/{done_run.id}/code").text
    assert f'href="/runs/{done_run.id}/code/flows.py">flows.py</a>' in tree
    assert done_run.version in tree
    source = web.get(f"/runs/{done_run.id}/code/flows.py").text
    assert 'class="highlight"' in source
    assert "greet" in source
    assert "Python" in source
    assert XSS_FLOW not in source  # the flow file's own text is escaped too
    raw = web.get(f"/code/raw/run:{done_run.id}/flows.py")
    assert raw.headers["content-disposition"].startswith("attachment")
    assert raw.content == (site.project / "flows.py").read_bytes()
    for bad in ("..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "nope.py"):
        assert web.get(f"/runs/{done_run.id}/code/{bad}").status_code == 404, bad


def test_code_archive_is_the_verified_bundle_of_the_run(web, done_run, tmp_path: Path) -> None:
    from conveyor.bundles import unpack

    answer = web.get(f"/runs/{done_run.id}/code.tar.zst")
    assert answer.status_code == 200
    assert answer.headers["x-conveyor-bundle-version"] == done_run.version
    out = tmp_path / "unpacked"
    out.mkdir()
    unpack(io.BytesIO(answer.content), out, expected_version=done_run.version)
    assert (out / "flows.py").is_file()


def test_diff_between_two_versions(web, parked: Parked) -> None:
    page = web.get(f"/code/diff?a=run:{parked.first.id}&b=run:{parked.second.id}").text
    assert "2 files changed" in page
    assert "+added in version two" in page
    assert f'<span class="del">{esc(OLD_LINE)}</span>' in page
    assert f'<span class="add">{esc(NEW_LINE)}</span>' in page
    same = web.get(f"/code/diff?a=run:{parked.first.id}&b=rev:{parked.deployment_id}:1").text
    assert "The same version: the code is identical." in same
    revisions = web.get("/deployments/greet/parked").text
    assert f"a=rev%3A{parked.deployment_id}%3A1&amp;b=rev%3A{parked.deployment_id}%3A2" in revisions
    assert web.get("/code/diff?a=bogus&b=run:x").status_code == 400


# --- workers, pools, secrets --------------------------------------------------------------------


def test_workers_page_shows_heartbeats_and_cache_figures(web, api, done_run) -> None:
    # the worker sends its cache figures with every heartbeat (every 10 s)
    worker = wait_for(
        lambda: next(
            (w for w in api.list_workers() if w.name == done_run.worker and w.cache_entries), None
        ),
        timeout=30,
        every=0.5,
    )
    page = web.get("/workers").text
    assert done_run.worker in page
    assert "online" in page
    assert f"in {worker.cache_entries} checkout" in page
    hits, misses = worker.cache_hits, worker.cache_misses
    assert misses >= 1
    assert f"% ({hits}/{hits + misses})" in page


def test_pools_page_shows_type_and_job_template(web, parked) -> None:
    page = web.get("/pools").text
    assert 'id="pool-default"' in page
    assert 'id="pool-parked"' in page
    assert "process" in page
    assert "&#34;env&#34;" in page
    assert "&#34;labels&#34;" in page


def test_secrets_create_replace_delete_and_values_never_come_back(web, api, site) -> None:
    from conveyor.sources.git.credentials import GitLabCredentials, load_credentials

    page = web.get("/secrets")
    token = csrf_of(page.text)
    value = "glpat-VerySecretValue-123"
    answer = web.post(
        "/secrets",
        data={
            "csrf_token": token,
            "name": "gl-dash",
            "kind": "gitlab",
            "gitlab.token": value,
            "gitlab.username": "deployer",
        },
    )
    assert answer.status_code == 303
    listing = web.get(answer.headers["location"]).text
    assert "credentials.gl-dash" in listing
    assert "gitlab credentials" in listing
    assert value not in listing
    loaded = load_credentials("gl-dash", store=api, environ={})  # what a worker gets
    assert isinstance(loaded, GitLabCredentials)
    assert loaded.token.reveal() == value
    # a bad name: refused with a message; the secret field is not filled in again
    bad = web.post(
        "/secrets",
        data={"csrf_token": token, "name": "bad name!", "kind": "secret", "secret.value": value},
    )
    assert bad.status_code == 422
    assert "not a valid secret name" in bad.text
    assert value not in bad.text
    # replace, then delete
    web.post(
        "/secrets",
        data={"csrf_token": token, "name": "PLAIN", "kind": "secret", "secret.value": "one"},
    )
    web.post(
        "/secrets",
        data={"csrf_token": token, "name": "PLAIN", "kind": "secret", "secret.value": "two"},
    )
    assert api.get_secret("PLAIN") == "two"
    assert web.post("/secrets/PLAIN/delete", data={"csrf_token": token}).status_code == 303
    assert api.get_secret("PLAIN") is None
    assert ">PLAIN<" not in web.get("/secrets").text


def test_the_saved_message_names_only_a_stored_secret(web, api) -> None:
    # Given a stored secret
    api.set_secret("SAVED_ONE", "v")
    # When the page is asked to confirm it, and then something that is not a stored secret
    confirmed = web.get("/secrets?saved=SAVED_ONE").text
    made_up = web.get("/secrets", params={"saved": "your password expired: call 555-0100"}).text
    missing = web.get("/secrets?saved=NOT_STORED").text
    # Then only the stored secret's name is confirmed; a made-up text is not shown at all
    assert '<p class="ok" id="saved">Stored SAVED_ONE.</p>' in confirmed
    for page in (made_up, missing):
        assert 'id="saved"' not in page
    assert "555-0100" not in made_up
    assert "NOT_STORED" not in missing


def test_pool_links_are_url_encoded(web, site) -> None:
    # Given a pool whose name holds a space, '#' and '?' (stored before names were checked),
    # a deployment in it and a worker of it
    pool = "odd pool #1?x=y"
    ok(conveyor("deploy", "flows.py:greet", "--name", "oddpool", env=site.env, cwd=site.project))
    with sqlite3.connect(site.home / ".conveyor" / "conveyor.db", timeout=30) as db:
        db.execute(
            "INSERT INTO pools (name, type, description, created) VALUES (?, 'process', '', ?)",
            (pool, "2026-01-01 00:00:00.000000"),
        )
        db.execute("UPDATE deployments SET work_pool = ? WHERE name = 'oddpool'", (pool,))
    # When the pages link to it
    encoded = quote(pool, safe="")
    deployment = web.get("/deployments/greet/oddpool").text
    deployments = web.get("/deployments").text
    pools = web.get("/pools").text
    # Then each link is the encoded name, and the anchor on the pools page is the same text
    assert f'href="/pools#pool-{encoded}"' in deployment
    assert f'href="/pools#pool-{encoded}"' in deployments
    assert f'id="pool-{encoded}"' in pools
    assert "#pool-odd pool" not in deployment + deployments
    assert 'id="pool-odd pool' not in pools


# --- untrusted text -----------------------------------------------------------------------------


def test_untrusted_flow_names_parameters_and_logs_are_escaped(web, api, worker) -> None:
    run = api.create_run(XSS_FLOW, "evil", parameters={"note": XSS_TEXT})
    wait_for(lambda: api.get_run(run.id).state.is_final, timeout=60)
    for path in (f"/runs/{run.id}", "/runs", "/deployments", f"/runs/{run.id}/logs?after=0"):
        page = web.get(path).text
        assert XSS_FLOW not in page, path
        assert XSS_TEXT not in page, path
    page = web.get(f"/runs/{run.id}").text
    assert esc(XSS_TEXT) in page  # the log line, as text
    assert web.get(f"/deployments/{quote(XSS_FLOW, safe='')}/evil").status_code == 200


def test_cancel_a_queued_run_from_its_page(web, api, parked: Parked) -> None:
    run = api.create_run("greet", "parked")
    page = web.get(f"/runs/{run.id}")
    assert "Cancel run" in page.text
    answer = web.post(f"/runs/{run.id}/cancel", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 303
    assert api.get_run(run.id).state.value == "cancelled"
    again = web.post(f"/runs/{run.id}/cancel", data={"csrf_token": csrf_of(page.text)})
    assert again.status_code == 409
    assert "is already cancelled" in again.text


def test_pull_steps_never_show_a_token_or_a_password_in_a_url(web, api) -> None:
    from conveyor.schemas import DeploymentCreate

    # Given a deployment whose pull steps carry a literal token and a URL with a password
    base = api.get_deployment("greet", "dash")
    fields = DeploymentCreate.model_fields
    created = DeploymentCreate.model_validate(
        {
            **{k: v for k, v in base.model_dump().items() if k in fields},
            "name": "steps-leak",
            "pull_steps": [
                {
                    "git_clone": {
                        "repository": "https://deployer:hunter2-pw@git.invalid/o/r.git",
                        "access_token": "ghp_LiteralTokenValue42",
                    }
                },
                {
                    "run_shell_script": {
                        "script": "git clone https://u:pw-in-script-7@git.invalid/x.git; echo ${T}",
                        "password": "pw-Plain-99",
                    }
                },
            ],
        }
    )
    api.put_deployment(created)
    # When its page is read, then no secret reaches the browser, but the rest of the step does
    page = web.get("/deployments/greet/steps-leak")
    assert page.status_code == 200
    for secret in ("hunter2-pw", "ghp_LiteralTokenValue42", "pw-Plain-99", "pw-in-script-7"):
        assert secret not in page.text
    assert "git.invalid/o/r.git" in page.text
    assert "git.invalid/x.git; echo ${T}" in page.text


def test_the_log_poller_answers_a_position_past_the_end_with_no_lines(web, done_run) -> None:
    # Given a finished run, when its log fragment is asked for lines after a huge position
    answer = web.get(f"/runs/{done_run.id}/logs", params={"after": str(10**20)})
    # Then the answer is an empty fragment with no poller, not a server error
    assert answer.status_code == 200
    assert "line 0 for" not in answer.text
    assert "hx-get" not in answer.text  # the run is final: no more polling
