"""`Azure` storage against Azurite: the storage document's snippet with its literal connection
string builds under ``azure-flow/<timestamp>``, saves the string in the encrypted secret store
under a derived name, and a worker with an empty cache (and no connection string of its own)
runs it, its results in the container; the string is in no file, log or output. The fallbacks
(``connection_string_secret``, ``AZURE_STORAGE_CONNECTION_STRING`` in the environment or the
store), ``overwrite``, and script mode."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.errors import ConfigError
from conveyor.schemas import RunState
from conveyor.settings import Settings
from conveyor.sources.blob.source import BlobStorage
from e2e.conftest import command_env, conveyor, ok
from fixtures.blob_servers import AZURITE_KEY, Azurite
from storage.conftest import (
    AFTER_SEED,
    TIMESTAMP,
    leaks,
    python,
    run_and_wait,
    run_logs,
    write_script,
)

pytestmark = [pytest.mark.service, pytest.mark.usefixtures("fresh_filesystems")]

SEED_AZURE = """
from conveyor import Flow
from conveyor.storage import Azure

flow = Flow("azure-flow", storage=Azure(container="__CONTAINER__", connection_string="__CONN__"))

flow.storage.build()
"""


def _blobs(server: Azurite, container: str) -> dict[str, bytes]:
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(server.connection_string) as service:
        box = service.get_container_client(container)
        return {b.name: box.download_blob(b.name).readall() for b in box.list_blobs()}


def _upload(server: Azurite, container: str, name: str, data: bytes) -> None:
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(server.connection_string) as service:
        service.get_container_client(container).upload_blob(name, data, overwrite=True)


def test_seed_snippet_with_a_literal_connection_string_stores_only_a_secret_name(
    tmp_path: Path, settings: Settings, client: ConveyorClient, azurite: Azurite
) -> None:
    # Given the document's Azure snippet, verbatim but for the container and connection string
    container = azurite.new_bucket()
    seed = SEED_AZURE.replace("__CONTAINER__", container).replace(
        "__CONN__", azurite.connection_string
    )
    script = write_script(tmp_path / "project" / "azure_flow.py", seed + AFTER_SEED)
    out = python(script)
    built = out.split("BUILT ", 1)[1].split()[0]
    stored = out.split("STORED ", 1)[1].split()[0]

    # Then the flow is in the container under azure-flow/<slugified UTC timestamp>
    assert re.fullmatch(rf"azure-flow/{TIMESTAMP}", built), built
    assert re.fullmatch(rf"azure-flow/{TIMESTAMP}", stored), stored
    assert sorted(_blobs(azurite, container)) == sorted({built, stored})
    # ...and the deployment names the connection string's secret, never its value
    deployment = client.get_deployment("azure-flow", "default")
    location = deployment.source["location"]["url"]
    secret = location["connection_string"][2:-1]
    assert re.fullmatch(r"_conveyor\.azure-connection\.[0-9a-f]{16}", secret), location
    assert location["url"] == f"az://{container}/{stored}"
    assert deployment.job_variables["env"] == {
        "AZURE_STORAGE_CONNECTION_STRING": "${" + secret + "}"
    }
    assert client.get_secret(secret) == azurite.connection_string

    # When an agent with an empty cache and no connection string of its own runs it
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, "azure-flow", labels=["seed"])

    # Then task results and the run's result are blobs of the same container (AzureResult),
    # `conveyor runs result` reads it back, and the account key is in no file, log or output
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result_ref == f"az://{container}/results/{run.id}/result.pickle"
    blobs = _blobs(azurite, container)
    shout = [n for n in blobs if re.fullmatch(rf"results/azure-flow/shout-{TIMESTAMP}\.result", n)]
    assert len(shout) == 1, sorted(blobs)
    assert pickle.loads(blobs[shout[0]]) == "HELLO"
    printed = ok(conveyor("runs", "result", run.id, env=command_env()))
    assert printed.strip() == repr({"shout": "HELLO", "measure": ("hello", 5)})
    found = leaks(settings.home, [AZURITE_KEY], out, printed, run_logs(client, run.id))
    assert found == []


def test_azure_storage_connection_string_from_the_environment_then_the_store(
    settings: Settings, client: ConveyorClient, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import Azure

    # Given AZURE_STORAGE_CONNECTION_STRING in the environment, and no connection string given
    container = azurite.new_bucket()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)

    @task
    def one() -> int:
        return 1

    with Flow("azure-env", storage=Azure(container=container)) as flow:
        one()
    deployment = flow.register(settings=settings, client=client)
    assert set(deployment.source["location"]["url"]) == {"url"}  # nothing but the object
    assert deployment.job_variables["env"] == {
        "AZURE_STORAGE_CONNECTION_STRING": "${AZURE_STORAGE_CONNECTION_STRING}"
    }
    # When the worker has it in its environment: it runs
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, "azure-env")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    # When the worker has it only in the secret store: it fetches the flow with it too
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    client.set_secret("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    again = run_and_wait(settings, client, "azure-env")
    assert "fetch" in again.timings
    assert again.state == RunState.COMPLETED, run_logs(client, again.id)
    # When neither has one, building is a one-line error naming all three ways
    client.delete_secret("AZURE_STORAGE_CONNECTION_STRING")
    with pytest.raises(ConfigError, match="no Azure connection string") as caught:
        flow.storage.build(settings=settings, client=client)
    assert "AZURE_STORAGE_CONNECTION_STRING" in str(caught.value.hint)
    assert "\n" not in str(caught.value)


def test_connection_string_secret_is_resolved_on_the_worker(
    settings: Settings, client: ConveyorClient, azurite: Azurite
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import Azure

    container = azurite.new_bucket()
    client.set_secret("FLOWS_AZURE", azurite.connection_string)

    @task
    def one() -> int:
        return 1

    storage = Azure(container=container, connection_string_secret="FLOWS_AZURE")
    with Flow("azure-named", storage=storage) as flow:
        one()
    deployment = flow.register(settings=settings, client=client)
    assert deployment.source["location"]["url"]["connection_string"] == "${FLOWS_AZURE}"
    assert deployment.job_variables["env"] == {"AZURE_STORAGE_CONNECTION_STRING": "${FLOWS_AZURE}"}
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, "azure-named")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert any(n.startswith("results/azure-named/one-") for n in _blobs(azurite, container))


def test_overwrite_off_refuses_other_content_at_a_fixed_blob_name(
    settings: Settings, client: ConveyorClient, azurite: Azurite
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import Azure

    container = azurite.new_bucket()
    conn = azurite.connection_string

    @task
    def one() -> int:
        return 1

    with Flow("fixed", storage=Azure(container, conn, blob_name="flows/fixed")) as flow:
        one()
    flow.storage.build(settings=settings, client=client)
    first = _blobs(azurite, container)["flows/fixed"]
    # the same content again: nothing to refuse
    flow.storage.build(settings=settings, client=client)
    # other content at that name (another flow of the same name) is refused, the blob kept
    with Flow("fixed", storage=Azure(container, conn, blob_name="flows/fixed")) as other:
        one()
        one()
    with pytest.raises(ConfigError, match=r"already exists .* overwrite is off"):
        other.storage.build(settings=settings, client=client)
    assert _blobs(azurite, container)["flows/fixed"] == first
    with Flow(
        "fixed", storage=Azure(container, conn, blob_name="flows/fixed", overwrite=True)
    ) as third:
        one()
        one()
    third.storage.build(settings=settings, client=client)
    assert _blobs(azurite, container)["flows/fixed"] != first


def test_script_mode_reads_the_blob_the_user_put_there(
    tmp_path: Path, settings: Settings, client: ConveyorClient, azurite: Azurite
) -> None:
    from conveyor.storage import Azure

    container = azurite.new_bucket()
    conn = azurite.connection_string
    from conveyor import Flow

    unnamed = Flow("s", storage=Azure(container, conn, stored_as_script=True))
    with pytest.raises(ConfigError, match="A `blob_name` must be provided"):
        unnamed.storage.build(settings=settings, client=client)
    text = (
        "from conveyor import Flow, task\n"
        "from conveyor.storage import Azure\n\n"
        "@task\ndef hi() -> str:\n    return 'hi from the container'\n\n"
        f"with Flow('azure-script', storage=Azure({container!r}, {conn!r}, "
        "blob_name='scripts/azure_script.py', stored_as_script=True)) as flow:\n    hi()\n"
    )
    _upload(azurite, container, "scripts/azure_script.py", text.encode())  # placed by hand
    script = write_script(tmp_path / "azure_script.py", text)
    ok(conveyor("register", "--path", str(script), env=command_env()))
    assert sorted(_blobs(azurite, container)) == ["scripts/azure_script.py"]  # nothing uploaded
    deployment = client.get_deployment("azure-script", "default")
    assert deployment.entrypoint == "azure_script.py:flow"
    run = run_and_wait(settings, client, "azure-script")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"hi": "hi from the container"}


def test_constructor_validation() -> None:
    from conveyor.storage import Azure, AzureResult

    with pytest.raises(ConfigError, match="connection_string or connection_string_secret"):
        Azure("c", connection_string="x", connection_string_secret="Y")
    with pytest.raises(ConfigError, match="is not a valid secret name"):
        Azure("c", connection_string_secret="not a name")
    with pytest.raises(ConfigError, match="is not a valid Azure container name"):
        Azure("a/b")
    # a name Azure refuses is refused here, before any request ("InvalidResourceName")
    with pytest.raises(ConfigError, match="'My_Flows' is not a valid Azure container name") as e:
        Azure("My_Flows")
    assert "e.g. 'my-flows'" in (e.value.hint or "")
    for refused in ("c", "a--b", "-flows", "x" * 64):
        with pytest.raises(ConfigError, match="is not a valid Azure container name"):
            Azure(refused)
    with pytest.raises(ConfigError, match="'Flows' is not a valid Azure container name"):
        BlobStorage("az://Flows/code")
    assert Azure("$web").container == "$web"
    storage = Azure("cnt", connection_string="DefaultEndpointsProtocol=http;AccountKey=abc")
    assert "abc" not in repr(storage.__dict__)
    assert storage.secret_name is not None
    assert storage.location_options() == {"connection_string": "${" + storage.secret_name + "}"}
    result = storage.result
    assert isinstance(result, AzureResult)
    assert result.to_spec() == {
        "kind": "blob",
        "url": "az://cnt/results",
        "connection_string": "${" + storage.secret_name + "}",
    }
    restored = pickle.loads(pickle.dumps(result))
    assert restored._literal is None  # the literal never travels with a pickled flow
    assert b"AccountKey=abc" not in pickle.dumps(storage)
