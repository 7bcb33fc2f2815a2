"""`GCS` storage against fake-gcs-server: the storage document's snippet (bucket swapped, the
emulator named by ``STORAGE_EMULATOR_HOST``) builds under ``gcs-flow/<timestamp>``, registers,
and a worker with an empty cache runs it with its results in the bucket; ``GCP_CREDENTIALS`` (a
service account's JSON) from the environment or the secret store is what the worker signs in
with (a stand-in of Google's token endpoint checks the assertion), never stored."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.errors import ConfigError
from conveyor.schemas import RunState
from conveyor.settings import Settings
from fixtures.blob_servers import FakeGcs
from fixtures.gcp_oauth_server import CLIENT_EMAIL, GcpOAuthServer
from storage.conftest import (
    AFTER_SEED,
    TIMESTAMP,
    clear_filesystems,
    leaks,
    python,
    run_and_wait,
    run_logs,
    write_script,
)

pytestmark = [pytest.mark.service, pytest.mark.usefixtures("fresh_filesystems")]

SEED_GCS = """
from conveyor import Flow
from conveyor.storage import GCS

flow = Flow("gcs-flow", storage=GCS(bucket="__BUCKET__"))

flow.storage.build()
"""


def _names(server: FakeGcs, bucket: str) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(f"{server.endpoint}/storage/v1/b/{bucket}/o", timeout=10) as r:
        listed = json.loads(r.read())
    return sorted(item["name"] for item in listed.get("items", []))


def _object(server: FakeGcs, bucket: str, name: str) -> bytes:
    import urllib.parse
    import urllib.request

    quoted = urllib.parse.quote(name, safe="")
    url = f"{server.endpoint}/storage/v1/b/{bucket}/o/{quoted}?alt=media"
    with urllib.request.urlopen(url, timeout=10) as reply:
        data: bytes = reply.read()
    return data


def test_seed_snippet_builds_registers_and_runs_with_results_in_the_bucket(
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
    fake_gcs: FakeGcs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the document's GCS snippet, verbatim but for the bucket, then tasks and register()
    bucket = fake_gcs.new_bucket()
    emulator = {"STORAGE_EMULATOR_HOST": fake_gcs.endpoint}
    script = write_script(
        tmp_path / "project" / "gcs_flow.py", SEED_GCS.replace("__BUCKET__", bucket) + AFTER_SEED
    )
    out = python(script, env=emulator)
    built = out.split("BUILT ", 1)[1].split()[0]
    stored = out.split("STORED ", 1)[1].split()[0]

    # Then the flow is in the bucket under gcs-flow/<slugified UTC timestamp>
    assert re.fullmatch(rf"gcs-flow/{TIMESTAMP}", built), built
    assert re.fullmatch(rf"gcs-flow/{TIMESTAMP}", stored), stored
    assert _names(fake_gcs, bucket) == sorted({built, stored})
    deployment = client.get_deployment("gcs-flow", "default")
    assert deployment.source["location"] == {"url": {"url": f"gs://{bucket}/{stored}"}}

    # When an agent with an empty cache runs it
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)
    run = run_and_wait(settings, client, "gcs-flow", labels=["seed"])

    # Then task results and the run's result are objects in the same bucket (GCSResult)
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result_ref == f"gs://{bucket}/results/{run.id}/result.pickle"
    names = _names(fake_gcs, bucket)
    shout = [n for n in names if re.fullmatch(rf"results/gcs-flow/shout-{TIMESTAMP}\.result", n)]
    assert len(shout) == 1, names
    assert pickle.loads(_object(fake_gcs, bucket, shout[0])) == "HELLO"
    result = pickle.loads(_object(fake_gcs, bucket, f"results/{run.id}/result.pickle"))
    assert result == {"shout": "HELLO", "measure": ("hello", 5)}


@pytest.mark.parametrize("where", ["environment", "secret store"])
def test_gcp_credentials_sign_in_on_the_worker_and_are_never_stored(
    where: str,
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
    fake_gcs: FakeGcs,
    gcp_oauth: GcpOAuthServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import GCS

    # Given a service account's JSON as GCP_CREDENTIALS, in the environment or the store
    raw = json.dumps(gcp_oauth.info)
    private_key = gcp_oauth.info["private_key"].splitlines()[5]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)
    if where == "environment":
        monkeypatch.setenv("GCP_CREDENTIALS", raw)
    else:
        client.set_secret("GCP_CREDENTIALS", raw)
    bucket = fake_gcs.new_bucket()

    @task
    def one() -> int:
        return 1

    with Flow(f"gcs-{where[:3]}", storage=GCS(bucket=bucket, project="test")) as flow:
        one()
    before = len(gcp_oauth.requests())

    # When it is built, registered and run by a worker with an empty cache
    deployment = flow.register(settings=settings, client=client)
    registered = len(gcp_oauth.requests())
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    clear_filesystems()  # the worker makes its own filesystem, as on another machine
    run = run_and_wait(settings, client, flow.name)

    # Then the build and then the worker signed in as the service account (assertions the
    # token endpoint verified), the deployment holds only the project, and the key is nowhere
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert before < registered < len(gcp_oauth.requests())
    signed = gcp_oauth.requests()[before:]
    assert all(r == {"iss": CLIENT_EMAIL, "verified": True} for r in signed)
    assert deployment.source["location"]["url"] == {
        "url": f"gs://{bucket}/{flow.storage.flows[flow.name]}",
        "project": "test",
    }
    assert leaks(settings.home, [private_key], run_logs(client, run.id)) == []


def test_a_bad_gcp_credentials_value_is_a_one_line_error(
    settings: Settings, client: ConveyorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor import Flow
    from conveyor.storage import GCS

    monkeypatch.setenv("GCP_CREDENTIALS", "{not json")
    flow = Flow("gcs-bad", storage=GCS(bucket="flows"))
    with pytest.raises(ConfigError, match="service_account_info is not JSON") as caught:
        flow.storage.build(settings=settings, client=client)
    assert "not json" not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            {"type": "service_account", "private_key": "pk-5d1e0c"},
            "service_account_info (service_account) lacks client_email, token_uri",
        ),
        (
            {"type": "authorized_user", "client_id": "c", "client_secret": "pk-5d1e0c"},
            "service_account_info (authorized_user) lacks refresh_token",
        ),
        ({"type": "external_account", "x": "pk-5d1e0c"}, "has type 'external_account'"),
    ],
)
def test_an_incomplete_gcp_key_names_what_it_lacks_before_anything_is_uploaded(
    key: dict[str, str],
    message: str,
    settings: Settings,
    client: ConveyorClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conveyor import Flow
    from conveyor.storage import GCS

    # (it failed at the first upload as "the store failed with KeyError")
    monkeypatch.setenv("GCP_CREDENTIALS", json.dumps(key))
    flow = Flow("gcs-partial", storage=GCS(bucket="flows"))
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        flow.storage.build(settings=settings, client=client)
    assert "pk-5d1e0c" not in f"{caught.value} {caught.value.hint}"


def test_constructor() -> None:
    from conveyor.storage import GCS, GCSResult

    storage = GCS(bucket="b", key="flows/etl", project="proj")
    assert (storage.bucket, storage.key, storage.project) == ("b", "flows/etl", "proj")
    assert storage.location_options() == {"project": "proj"}
    assert isinstance(storage.result, GCSResult)
    assert storage.result.to_spec() == {"kind": "blob", "url": "gs://b/results", "project": "proj"}
    with pytest.raises(ConfigError, match="is not a project id"):
        GCS(bucket="b", project="")
