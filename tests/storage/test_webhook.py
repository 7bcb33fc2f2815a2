"""Webhook storage against a Dropbox stand-in on 127.0.0.1: the storage document's snippet
(endpoints swapped) builds, registers and runs; ``${NAME}`` templates resolve from the
environment, then the secret store, at build and at run, and never reach the server; requests
are retried; a missing template is a one-line error naming it. Also the modern style:
``WebhookStorage`` / ``webhook+http://`` in ``from_source``, snapshotted at deploy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.errors import ConfigError
from conveyor.schemas import RunState
from conveyor.settings import Settings
from conveyor.sources.flowfile import file_version
from fixtures.dropbox_server import DROPBOX_TOKEN, DropboxServer
from storage.conftest import python, run_and_wait, run_logs, write_script

pytestmark = pytest.mark.service

SEED_WEBHOOK = """
import json
from conveyor import Flow
from conveyor.storage import Webhook

flow = Flow(
    "dropbox-flow",
    storage=Webhook(
        build_request_kwargs={
            "url": "__DROPBOX__/2/files/upload",
            "headers": {
                "Content-Type": "application/octet-stream",
                "Dropbox-API-Arg": json.dumps(
                    {
                        "path": "/Apps/prefect-test-app/dropbox-flow.flow",
                        "mode": "overwrite",
                        "autorename": False,
                        "strict_conflict": True,
                    }
                ),
                "Authorization": "Bearer ${DBOX_OAUTH2_TOKEN}"
            },
        },
        build_request_http_method="POST",
        get_flow_request_kwargs={
            "url": "__DROPBOX__/2/files/download",
            "headers": {
                "Accept": "application/octet-stream",
                "Dropbox-API-Arg": json.dumps(
                    {"path": "/Apps/prefect-test-app/dropbox-flow.flow"}
                ),
                "Authorization": "Bearer ${DBOX_OAUTH2_TOKEN}"
            },
        },
        get_flow_request_http_method="POST",
    )
)

flow.storage.build()
"""

AFTER_SEED = """
# --- the test's additions after the snippet: a task, then registration
from conveyor import task

@task
def fetched() -> str:
    return "fetched over HTTP"

with flow:
    fetched()

print("BUILT", flow.storage._build_responses["dropbox-flow"].json()["path_display"])
flow.register()
"""


def seed(dropbox: DropboxServer) -> str:
    return SEED_WEBHOOK.replace("__DROPBOX__", dropbox.url)


def test_seed_snippet_uploads_registers_and_the_worker_downloads_the_pinned_flow(
    dropbox: DropboxServer,
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the snippet, run where the token is in the environment (build time)
    script = write_script(tmp_path / "proj" / "dropbox_flow.py", seed(dropbox) + AFTER_SEED)
    out = python(script, env={"DBOX_OAUTH2_TOKEN": DROPBOX_TOKEN})
    assert "BUILT /Apps/prefect-test-app/dropbox-flow.flow" in out
    stored = dropbox.file("/Apps/prefect-test-app/dropbox-flow.flow").read_bytes()
    deployment = client.get_deployment("dropbox-flow", "default")
    # Then the deployment pins the uploaded bytes, and holds the template, not the token
    assert deployment.version == file_version("flow.pickle", stored)
    assert deployment.source["location"]["webhook"]["method"] == "POST"
    headers = deployment.source["location"]["webhook"]["kwargs"]["headers"]
    assert headers["Authorization"] == "Bearer ${DBOX_OAUTH2_TOKEN}"
    assert DROPBOX_TOKEN not in json.dumps(deployment.model_dump(mode="json"))

    # When the worker has the token only in the server's secret store, an empty cache, and
    # the service fails twice first
    monkeypatch.delenv("DBOX_OAUTH2_TOKEN", raising=False)
    client.set_secret("DBOX_OAUTH2_TOKEN", DROPBOX_TOKEN)
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    before = len(dropbox.requests())
    dropbox.fail_next(2)
    run = run_and_wait(settings, client, "dropbox-flow")

    # Then it downloaded (after two retries) and ran the flow
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"fetched": "fetched over HTTP"}
    downloads = [r for r in dropbox.requests()[before:] if r["path"] == "/2/files/download"]
    assert [r["status"] for r in downloads] == [503, 503, 200]
    assert downloads[-1]["authorization"] == f"Bearer {DROPBOX_TOKEN}"
    assert DROPBOX_TOKEN not in run_logs(client, run.id)
    for db in settings.home.glob("conveyor.db*"):  # the database and its WAL
        assert DROPBOX_TOKEN.encode() not in db.read_bytes()  # the store keeps it encrypted

    # When the stored file is replaced behind the deployment's back, a fresh worker refuses it
    dropbox.file("/Apps/prefect-test-app/dropbox-flow.flow").write_bytes(b"something else")
    shutil.rmtree(settings.cache_dir)
    refused = run_and_wait(settings, client, "dropbox-flow")
    assert refused.state == RunState.FAILED
    assert "changed since it was registered" in (refused.error or "")


def test_a_template_missing_everywhere_is_a_one_line_error_naming_it(
    dropbox: DropboxServer, settings: Settings, client: ConveyorClient
) -> None:
    from conveyor import Flow
    from conveyor.storage import Webhook

    before = len(dropbox.requests())
    storage = Webhook(
        build_request_kwargs={
            "url": f"{dropbox.url}/2/files/upload",
            "headers": {"Authorization": "Bearer ${NOWHERE_TOKEN}"},
        },
        build_request_http_method="POST",
        get_flow_request_kwargs={"url": f"{dropbox.url}/2/files/download"},
        get_flow_request_http_method="POST",
    )
    Flow("missing-template", storage=storage)
    with pytest.raises(ConfigError) as error:
        storage.build(settings=settings, client=client)
    assert str(error.value) == (
        "template ${NOWHERE_TOKEN} has no value in the environment or the secret store"
    )
    assert "\n" not in str(error.value)
    assert "conveyor secret set NOWHERE_TOKEN" in (error.value.hint or "")
    assert len(dropbox.requests()) == before  # nothing was sent


def test_methods_are_checked_and_one_flow_per_storage() -> None:
    from conveyor import Flow
    from conveyor.storage import Webhook

    with pytest.raises(ConfigError, match="HTTP method 'DELETE' not recognized"):
        Webhook(
            build_request_kwargs={"url": "http://127.0.0.1:9/x"},
            build_request_http_method="DELETE",
            get_flow_request_kwargs={"url": "http://127.0.0.1:9/x"},
            get_flow_request_http_method="GET",
        )
    storage = Webhook(
        build_request_kwargs={"url": "http://127.0.0.1:9/x"},
        build_request_http_method="put",
        get_flow_request_kwargs={"url": "http://127.0.0.1:9/x"},
        get_flow_request_http_method="GET",
    )
    assert storage.build_request_http_method == "PUT"
    Flow("first", storage=storage)
    Flow("second", storage=storage)  # replaces: no name conflict for a webhook
    assert list(storage.flows) == ["second"]


@pytest.mark.parametrize(
    ("get_kwargs", "named"),
    [
        ({"headers": {"Authorization": "Bearer lit-9f2c71"}}, "headers['Authorization']"),
        ({"headers": {"X-API-Key": "lit-9f2c71"}}, "headers['X-API-Key']"),
        ({"auth": ["ci", "lit-9f2c71"]}, "auth (the password)"),
        ({"cookies": {"session": "lit-9f2c71"}}, "cookies"),
        ({"params": {"access_token": "lit-9f2c71"}}, "a credential query parameter"),
        ({"url_query": "?access_token=lit-9f2c71"}, "a credential query parameter"),
        ({"url_login": "ci:lit-9f2c71@"}, "url (a user name or password)"),
    ],
)
def test_a_literal_secret_in_the_stored_get_request_is_refused_before_anything_is_sent(
    get_kwargs: dict[str, object],
    named: str,
    dropbox: DropboxServer,
    settings: Settings,
    client: ConveyorClient,
) -> None:
    from conveyor import Flow
    from conveyor.storage import Webhook

    # Given a get request (stored with the deployment) holding a token itself, not a template
    host = dropbox.url.split("://", 1)[1]
    login = str(get_kwargs.pop("url_login", ""))
    query = str(get_kwargs.pop("url_query", ""))
    get = {"url": f"http://{login}{host}/2/files/download{query}", **get_kwargs}
    before = len(dropbox.requests())

    def register() -> None:
        storage = Webhook(
            build_request_kwargs={"url": f"{dropbox.url}/2/files/upload"},
            build_request_http_method="POST",
            get_flow_request_kwargs=get,
            get_flow_request_http_method="POST",
        )
        Flow("leaky", storage=storage).register(settings=settings, client=client)

    # When it is made and registered, Then a one-line error names the argument, not the value
    with pytest.raises(ConfigError, match="holds a literal secret") as caught:
        register()
    shown = f"{caught.value} {caught.value.hint}"
    assert named in shown
    assert "lit-9f2c71" not in shown
    assert "\n" not in shown
    # ...and nothing was uploaded or stored
    assert len(dropbox.requests()) == before
    assert [d.flow_name for d in client.list_deployments()] == []


def test_script_mode_uploads_the_file_and_runs_it(
    dropbox: DropboxServer,
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DBOX_OAUTH2_TOKEN", DROPBOX_TOKEN)
    script = write_script(
        tmp_path / "proj" / "hooked.py",
        f"""
        import json
        from conveyor import Flow, task
        from conveyor.storage import Webhook

        ARG = json.dumps({{"path": "/scripts/hooked.py", "mode": "overwrite"}})
        AUTH = "Bearer ${{DBOX_OAUTH2_TOKEN}}"

        @task
        def answer() -> int:
            return 42

        with Flow("hooked") as flow:
            answer()

        flow.storage = Webhook(
            build_request_kwargs={{"url": "{dropbox.url}/2/files/upload",
                                  "headers": {{"Dropbox-API-Arg": ARG, "Authorization": AUTH}}}},
            build_request_http_method="POST",
            get_flow_request_kwargs={{"url": "{dropbox.url}/2/files/download",
                                     "headers": {{"Dropbox-API-Arg": ARG, "Authorization": AUTH}}}},
            get_flow_request_http_method="POST",
            stored_as_script=True,
            flow_script_path=__file__,
        )

        if __name__ == "__main__":
            flow.register()
        """,
    )
    python(script)
    assert dropbox.file("/scripts/hooked.py").read_text() == script.read_text()
    deployment = client.get_deployment("hooked", "default")
    assert deployment.entrypoint == "hooked.py:flow"
    run = run_and_wait(settings, client, "hooked")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"answer": 42}


def test_modern_style_webhook_sources_are_snapshotted_at_deploy(
    dropbox: DropboxServer,
    settings: Settings,
    client: ConveyorClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conveyor import WebhookStorage, flow

    monkeypatch.setenv("DBOX_OAUTH2_TOKEN", DROPBOX_TOKEN)
    dropbox.file("/modern/hello.py").parent.mkdir(parents=True, exist_ok=True)
    dropbox.file("/modern/hello.py").write_text(
        "from conveyor import flow\n\n@flow\ndef hello(name: str = 'web') -> str:\n"
        "    return 'hello ' + name\n"
    )
    auth = {"Authorization": "Bearer ${DBOX_OAUTH2_TOKEN}"}
    # The first generation's request names...
    source = WebhookStorage(
        get_flow_request_kwargs={
            "url": f"{dropbox.url}/2/files/download",
            "headers": {**auth, "Dropbox-API-Arg": json.dumps({"path": "/modern/hello.py"})},
        },
        get_flow_request_http_method="POST",
        filename="hello.py",
    )
    first = flow.from_source(source, "hello.py:hello").deploy(
        "modern", settings=settings, client=client
    )
    # ...and a URL with the webhook+http scheme
    second = flow.from_source(
        f"webhook+{dropbox.url}/raw/modern/hello.py", "hello.py:hello", headers=auth
    ).deploy("by-url", settings=settings, client=client)
    assert first.version == second.version
    assert first.source["kind"] == "store"
    assert second.source["kind"] == "store"
    # The service loses the file: runs use the snapshot
    dropbox.file("/modern/hello.py").unlink()
    for name in ("modern", "by-url"):
        run = run_and_wait(settings, client, "hello", name)
        assert run.state == RunState.COMPLETED, run_logs(client, run.id)
        assert run.result == "hello web"


def test_prefect_1s_bare_dollar_templates_resolve_at_build_and_at_run(
    dropbox: DropboxServer,
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the snippet written with Prefect 1's other spelling, $NAME (string.Template)
    text = seed(dropbox).replace("${DBOX_OAUTH2_TOKEN}", "$DBOX_OAUTH2_TOKEN") + AFTER_SEED
    assert "${" not in text
    script = write_script(tmp_path / "proj" / "dropbox_flow.py", text)

    # When it is built and registered with the token in the environment
    out = python(script, env={"DBOX_OAUTH2_TOKEN": DROPBOX_TOKEN})

    # Then the upload carried the token, and the deployment holds the template, not the token
    assert "BUILT /Apps/prefect-test-app/dropbox-flow.flow" in out
    deployment = client.get_deployment("dropbox-flow", "default")
    headers = deployment.source["location"]["webhook"]["kwargs"]["headers"]
    assert headers["Authorization"] == "Bearer ${DBOX_OAUTH2_TOKEN}"
    assert DROPBOX_TOKEN not in json.dumps(deployment.model_dump(mode="json"))

    # When a worker with the token in the secret store runs it, Then it downloads and runs
    monkeypatch.delenv("DBOX_OAUTH2_TOKEN", raising=False)
    client.set_secret("DBOX_OAUTH2_TOKEN", DROPBOX_TOKEN)
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, "dropbox-flow")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"fetched": "fetched over HTTP"}


@pytest.mark.timeout(120)
def test_a_webhook_that_never_answers_fails_within_the_budget(tmp_path: Path) -> None:
    import os
    import time

    from conveyor.errors import SourceUnavailable
    from conveyor.sources.base import FetchContext
    from conveyor.sources.webhook import WebhookSource
    from fixtures.black_hole import BlackHole

    # Given a webhook server that accepts connections and never answers, a token, a 3 s budget
    env = {**os.environ, "HOOK_TOKEN": "hook-secret-7781", "CONVEYOR_NETWORK_RETRY_SECONDS": "3"}
    ctx = FetchContext(environ=env, settings=Settings.from_env(env))
    hole = BlackHole().start()
    try:
        source = WebhookSource(
            f"webhook+{hole.url}/flows.py", headers={"Authorization": "Bearer ${HOOK_TOKEN}"}
        )

        # When deploy asks it for the flow
        started = time.monotonic()
        with pytest.raises(SourceUnavailable) as caught:
            source.resolve(ctx)
        elapsed = time.monotonic() - started

        # Then it fails in seconds (the default read timeout was 60 s), in one line naming the
        # URL and what to check, without the token
        assert elapsed < 30, f"{elapsed:.1f} s"
        assert hole.accepted >= 1
        message = str(caught.value)
        assert message == f"GET {hole.url}/flows.py did not answer in time (ReadTimeout)"
        assert "CONVEYOR_NETWORK_RETRY_SECONDS" in str(caught.value.hint)

        # When the request sets its own timeout, with no retries (budget 0)
        mine = {**env, "CONVEYOR_NETWORK_RETRY_SECONDS": "0"}
        quick = WebhookSource(get_flow_request_kwargs={"url": f"{hole.url}/f.py", "timeout": 1})
        started = time.monotonic()
        with pytest.raises(SourceUnavailable):
            quick.resolve(FetchContext(environ=mine, settings=Settings.from_env(mine)))

        # Then its 1 s wins over the 5 s the budget would give
        assert time.monotonic() - started < 4
    finally:
        hole.stop()
    assert "hook-secret-7781" not in message
