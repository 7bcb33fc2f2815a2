"""`S3` storage against moto's S3 server: the storage document's snippet (bucket name swapped, the
endpoint from ``AWS_ENDPOINT_URL_S3``) builds under ``s3-flow/<timestamp>``, registers, and a
worker with an empty cache runs it; task results and the run's result land in the same bucket
and ``conveyor runs result`` reads it back. Script mode through ``conveyor register``;
``AWS_CREDENTIALS`` from the environment or the secret store (never stored); client and upload
options; a replaced object is refused."""

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
from e2e.conftest import command_env, conveyor, ok
from fixtures.blob_servers import MotoServer
from fixtures.ports import free_port
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

SEED_S3 = """
from conveyor import Flow
from conveyor.storage import S3

flow = Flow("s3-flow", storage=S3(bucket="__BUCKET__"))

flow.storage.build()
"""


def _keys(moto: MotoServer, bucket: str) -> list[str]:
    listed = moto.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def _object(moto: MotoServer, bucket: str, key: str) -> bytes:
    body: bytes = moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def test_seed_snippet_builds_registers_and_runs_with_results_in_the_bucket(
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the document's S3 snippet, verbatim but for the bucket, then tasks and register()
    bucket = moto_server.new_bucket()
    script = write_script(
        tmp_path / "project" / "s3_flow.py", SEED_S3.replace("__BUCKET__", bucket) + AFTER_SEED
    )
    out = python(script, env={"AWS_ENDPOINT_URL_S3": moto_server.endpoint})
    built = out.split("BUILT ", 1)[1].split()[0]
    stored = out.split("STORED ", 1)[1].split()[0]
    version = out.split("DEPLOYED ", 1)[1].split()[2]

    # Then build() put the flow under s3-flow/<slugified UTC timestamp>, and registering the
    # grown flow put it under a new timestamp (the first object is never rewritten)
    assert re.fullmatch(rf"s3-flow/{TIMESTAMP}", built), built
    assert re.fullmatch(rf"s3-flow/{TIMESTAMP}", stored), stored
    assert built != stored
    assert _keys(moto_server, bucket) == sorted([built, stored])
    assert json.loads(_object(moto_server, bucket, stored))["flow_name"] == "s3-flow"
    deployment = client.get_deployment("s3-flow", "default")
    assert deployment.version == version
    assert deployment.source == {
        "kind": "flow-file",
        "location": {"url": {"url": f"s3://{bucket}/{stored}"}},
        "filename": "flow.pickle",
        "signed": True,
    }
    assert deployment.job_variables == {"labels": ["seed"]}

    # When an agent with the label and an empty cache runs it
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    run = run_and_wait(settings, client, "s3-flow", labels=["seed"])

    # Then it ran the registered flow; each task's result is an object in the bucket
    # (S3Result, the flow's default), and so is the run's result, which is not JSON
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.version == version
    assert run.result_ref == f"s3://{bucket}/results/{run.id}/result.pickle"
    keys = _keys(moto_server, bucket)
    assert f"results/{run.id}/result.pickle" in keys
    shout = [k for k in keys if re.fullmatch(rf"results/s3-flow/shout-{TIMESTAMP}\.result", k)]
    assert len(shout) == 1, keys
    assert pickle.loads(_object(moto_server, bucket, shout[0])) == "HELLO"
    assert f"s3://{bucket}/{shout[0]}" in run_logs(client, run.id)
    printed = ok(
        conveyor(
            "runs", "result", run.id, env=command_env(AWS_ENDPOINT_URL_S3=moto_server.endpoint)
        )
    )
    assert printed.strip() == repr({"shout": "HELLO", "measure": ("hello", 5)})


README_S3 = """
from conveyor import Flow, task
from conveyor.storage import S3

@task
def shout(text: str) -> str:
    return text.upper()

with Flow("s3-flow", storage=S3(bucket="__BUCKET__")) as flow:
    shout("hello")

flow.storage.build()
print("BUILT", flow.storage.flows[flow.name])
deployment = flow.register(labels=["s3"])
print("STORED", flow.storage.flows[flow.name])
"""


def test_build_then_register_pins_the_object_build_stored_and_stores_no_other(
    tmp_path: Path, client: ConveyorClient, moto_server: MotoServer
) -> None:
    # Given the README's example: a complete flow, build(), then register()
    bucket = moto_server.new_bucket()
    script = write_script(
        tmp_path / "project" / "s3_flow.py", README_S3.replace("__BUCKET__", bucket)
    )
    out = python(script, env={"AWS_ENDPOINT_URL_S3": moto_server.endpoint})
    built = out.split("BUILT ", 1)[1].split()[0]
    stored = out.split("STORED ", 1)[1].split()[0]

    # Then registering (which gives the flow its storage's S3Result) stored nothing new: the
    # deployment pins the very object build() put in the bucket, and it is the only one
    assert stored == built
    assert _keys(moto_server, bucket) == [built]
    deployment = client.get_deployment("s3-flow", "default")
    assert deployment.source["location"] == {"url": {"url": f"s3://{bucket}/{built}"}}


def test_script_mode_uploads_the_script_conveyor_register_is_loading(
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a script whose S3 storage is in script mode, with no key and no local path
    bucket = moto_server.new_bucket()
    script = write_script(
        tmp_path / "flows" / "etl.py",
        f"""
        from conveyor import Flow, task
        from conveyor.storage import S3

        @task
        def add(a: int, b: int) -> int:
            return a + b

        with Flow("etl", storage=S3(bucket="{bucket}", stored_as_script=True)) as flow:
            add(1, 2)
        """,
    )
    env = command_env(AWS_ENDPOINT_URL_S3=moto_server.endpoint)
    # When `conveyor register --path` loads and registers it
    ok(conveyor("register", "--path", str(script), "-l", "etl", env=env))

    # Then the very file was uploaded, and the deployment runs it from the bucket
    deployment = client.get_deployment("etl", "default")
    (key,) = [k for k in _keys(moto_server, bucket) if k.startswith("etl/")]
    assert _object(moto_server, bucket, key) == script.read_bytes()
    assert deployment.entrypoint == "etl.py:flow"
    assert "signed" not in deployment.source
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    run = run_and_wait(settings, client, "etl", labels=["etl"])
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"add": 3}


def test_script_mode_without_a_file_needs_a_key(settings: Settings, client: ConveyorClient) -> None:
    from conveyor import Flow
    from conveyor.storage import S3

    flow = Flow("no-script", storage=S3(bucket="flows", stored_as_script=True))
    with pytest.raises(ConfigError, match="A `key` must be provided") as caught:
        flow.storage.build(settings=settings, client=client)
    assert "\n" not in str(caught.value)


def test_aws_credentials_from_the_secret_store_reach_the_worker_and_never_the_database(
    tmp_path: Path,
    settings: Settings,
    client: ConveyorClient,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import S3

    # Given AWS_CREDENTIALS in the secret store only (no AWS_* keys anywhere on the worker)
    secret_key = "conveyor-s3-secret-f00d6e7a"
    client.set_secret(
        "AWS_CREDENTIALS",
        json.dumps({"ACCESS_KEY": "AKIAFROMSTORE", "SECRET_ACCESS_KEY": secret_key}),
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    bucket = moto_server.new_bucket()

    @task
    def keys_in_env() -> list[str]:
        import os

        return sorted(k for k in os.environ if k.startswith("AWS_") and "KEY" in k)

    with Flow("s3-secret", storage=S3(bucket=bucket, secrets=["AWS_CREDENTIALS"])) as flow:
        keys_in_env()

    # When it is built and registered here, and run by a worker with an empty cache
    deployment = flow.register(settings=settings, client=client)
    assert deployment.job_variables["env"] == {"AWS_CREDENTIALS": "${AWS_CREDENTIALS}"}
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, "s3-secret")

    # Then the worker read the object with the stored credentials, the run wrote its task
    # result with them, and the secret is in no file under the home (database, cache) or log
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    assert run.result == {"keys_in_env": []}
    assert any(k.startswith("results/s3-secret/") for k in _keys(moto_server, bucket))
    assert leaks(settings.home, [secret_key], run_logs(client, run.id)) == []

    # When the store no longer has it, the run fails before the flow starts, naming it
    client.delete_secret("AWS_CREDENTIALS")
    failed = run_and_wait(settings, client, "s3-secret")
    assert failed.state == RunState.FAILED
    assert "template ${AWS_CREDENTIALS} has no value" in (failed.error or "")
    # ...and with no credentials at all, uploading is a one-line error naming the object
    from conveyor.errors import AuthenticationError

    with Flow("s3-nothing", storage=S3(bucket=bucket, key="k/nothing")) as bare:
        keys_in_env()
    with pytest.raises(AuthenticationError, match=f"s3://{bucket}/k/nothing: the credentials"):
        bare.storage.build(settings=settings, client=client)


def test_aws_credentials_in_the_environment_come_first(
    settings: Settings,
    client: ConveyorClient,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import S3

    # Given AWS_CREDENTIALS in the environment, and a broken value in the store
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv(
        "AWS_CREDENTIALS", json.dumps({"ACCESS_KEY": "AKIAENV", "SECRET_ACCESS_KEY": "from-env"})
    )
    client.set_secret("AWS_CREDENTIALS", "not json")
    bucket = moto_server.new_bucket()

    @task
    def one() -> int:
        return 1

    with Flow("s3-env", storage=S3(bucket=bucket)) as flow:
        one()
    flow.register(settings=settings, client=client)
    run = run_and_wait(settings, client, "s3-env")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    # and a bad AWS_CREDENTIALS is a one-line error naming the secret, not its value
    monkeypatch.delenv("AWS_CREDENTIALS")
    with pytest.raises(ConfigError, match="the AWS_CREDENTIALS secret is not JSON"):
        flow.storage.build(settings=settings, client=client)


def test_client_and_upload_options_and_a_replaced_object_is_refused(
    settings: Settings, client: ConveyorClient, moto_server: MotoServer
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import S3

    bucket = moto_server.new_bucket()

    @task
    def one() -> int:
        return 1

    storage = S3(
        bucket=bucket,
        key="pinned/etl.flow",
        client_options={"endpoint_url": moto_server.endpoint},
        upload_options={"Metadata": {"team": "data"}, "ContentType": "application/json"},
    )
    with Flow("s3-options", storage=storage) as flow:
        one()
    # The client options are stored with the deployment (the worker needs the endpoint), the
    # upload options went to the upload only
    deployment = flow.register(settings=settings, client=client)
    assert deployment.source["location"]["url"] == {
        "url": f"s3://{bucket}/pinned/etl.flow",
        "client_kwargs": {"endpoint_url": moto_server.endpoint},
    }
    head = moto_server.client().head_object(Bucket=bucket, Key="pinned/etl.flow")
    assert head["Metadata"] == {"team": "data"}
    assert head["ContentType"] == "application/json"
    assert storage.result.boto3_kwargs == {"endpoint_url": moto_server.endpoint}
    run = run_and_wait(settings, client, "s3-options")
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)

    # When the object is replaced after registration, a worker with an empty cache refuses it
    moto_server.client().put_object(Bucket=bucket, Key="pinned/etl.flow", Body=b"{}")
    shutil.rmtree(settings.cache_dir)
    changed = run_and_wait(settings, client, "s3-options")
    assert changed.state == RunState.FAILED
    assert f"s3://{bucket}/pinned/etl.flow changed since it was registered" in (changed.error or "")


def test_client_options_endpoint_wins_over_aws_endpoint_url_s3(
    settings: Settings,
    client: ConveyorClient,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import S3

    # Given AWS_ENDPOINT_URL_S3 naming another endpoint (nothing listens there) and a storage
    # whose client_options name the real one, with AWS_CREDENTIALS in the environment too
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv(
        "AWS_CREDENTIALS", json.dumps({"ACCESS_KEY": "AKIAENV", "SECRET_ACCESS_KEY": "from-env"})
    )
    bucket = moto_server.new_bucket()

    @task
    def one() -> int:
        return 1

    storage = S3(bucket=bucket, client_options={"endpoint_url": moto_server.endpoint})
    with Flow("s3-both-endpoints", storage=storage) as flow:
        one()

    # When it is registered and run by a worker with an empty cache, in the same environment
    deployment = flow.register(settings=settings, client=client)
    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    run = run_and_wait(settings, client, "s3-both-endpoints")

    # Then the storage's own endpoint was used for the upload, the fetch and the task result
    # (not a TypeError from boto3 given two endpoints)
    assert run.state == RunState.COMPLETED, run_logs(client, run.id)
    keys = _keys(moto_server, bucket)
    assert deployment.source["location"]["url"]["url"].split("/", 3)[3] in keys
    assert any(k.startswith("results/s3-both-endpoints/one-") for k in keys), keys


def test_a_misspelt_upload_option_is_refused_before_anything_is_uploaded(
    settings: Settings, client: ConveyorClient, moto_server: MotoServer
) -> None:
    from conveyor import Flow, task
    from conveyor.storage import S3

    bucket = moto_server.new_bucket()

    @task
    def one() -> int:
        return 1

    # Given upload options with a typo (the object would be stored unencrypted)
    storage = S3(
        bucket=bucket,
        client_options={"endpoint_url": moto_server.endpoint},
        upload_options={"ServerSideEncription": "AES256"},
    )
    with Flow("s3-typo", storage=storage) as flow:
        one()

    # When it is registered, Then a one-line error names the key and the one meant
    with pytest.raises(ConfigError, match="'ServerSideEncription' is not an argument") as caught:
        flow.register(settings=settings, client=client)
    assert "did you mean 'ServerSideEncryption'?" in str(caught.value)
    assert "\n" not in str(caught.value)
    # ...and nothing was uploaded or deployed
    assert _keys(moto_server, bucket) == []
    assert client.list_deployments() == []

    # When spelt right, it reaches the object
    storage.upload_options = {"ServerSideEncryption": "AES256"}
    flow.register(settings=settings, client=client)
    (key,) = _keys(moto_server, bucket)
    head = moto_server.client().head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256"


def test_a_flow_too_large_to_read_back_is_refused_before_it_is_uploaded(
    settings: Settings,
    client: ConveyorClient,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conveyor import Flow, task
    from conveyor.sources.blob import flowfile
    from conveyor.storage import S3

    # Given a flow whose pickle is larger than a run may read back (the limit lowered here
    # from 256 MiB: the upload used to succeed and only the deploy's read refused it, leaving
    # the object in the bucket)
    monkeypatch.setattr(flowfile, "MAX_FLOW_FILE_BYTES", 4096)
    bucket = moto_server.new_bucket()
    data = b"x" * 8192

    @task
    def size() -> int:
        return len(data)

    storage = S3(bucket=bucket, client_options={"endpoint_url": moto_server.endpoint})
    with Flow("s3-large", storage=storage) as flow:
        size()

    # When it is registered, Then a one-line error says why and what to do, and nothing is
    # uploaded or deployed
    with pytest.raises(ConfigError, match=r"flow 's3-large' pickles to \d+ bytes") as caught:
        flow.register(settings=settings, client=client)
    assert "more than a flow file may be (4096); nothing was uploaded" in str(caught.value)
    assert "load it when the flow runs" in (caught.value.hint or "")
    assert _keys(moto_server, bucket) == []
    assert client.list_deployments() == []


def test_constructor_validation() -> None:
    from conveyor.storage import S3, S3Result

    with pytest.raises(ConfigError, match="is not a valid S3 bucket name"):
        S3(bucket="")
    with pytest.raises(ConfigError, match="is not a valid S3 bucket name"):
        S3(bucket="a/b")
    with pytest.raises(
        ConfigError, match=r"client_options\.aws_secret_access_key must be a template"
    ):
        S3(bucket="b", client_options={"aws_secret_access_key": "literal"})
    templated = S3(bucket="b", client_options={"aws_secret_access_key": "${S3_SECRET}"})
    assert templated.location_options() == {
        "client_kwargs": {"aws_secret_access_key": "${S3_SECRET}"}
    }
    storage = S3(bucket="b", key="/k/", secrets=["AWS_CREDENTIALS"], labels=["x"])
    assert (storage.key, storage.secrets, storage.labels) == ("k", ["AWS_CREDENTIALS"], ["x"])
    assert isinstance(storage.result, S3Result)
    assert storage.result.url == "s3://b/results"
    assert storage.run_env() == {"AWS_CREDENTIALS": "${AWS_CREDENTIALS}"}


@pytest.mark.parametrize(
    ("client_options", "message"),
    [
        (
            {"endpoint": "http://127.0.0.1:9000"},
            "S3 client_options key 'endpoint' is not an argument of boto3's client "
            "(did you mean 'endpoint_url'?)",
        ),
        (
            {"region": "eu-west-1"},
            "S3 client_options key 'region' is not an argument of boto3's client "
            "(did you mean 'region_name'?)",
        ),
        (
            {"endpoint_url": "127.0.0.1:9000"},
            "S3 client_options endpoint_url '127.0.0.1:9000' is not an http(s) URL",
        ),
    ],
)
def test_a_client_option_boto3_cannot_take_is_a_one_line_error_at_construction(
    client_options: dict[str, str], message: str
) -> None:
    from conveyor.storage import S3

    # (these failed only at upload, as "the store failed with TypeError" / "ValueError")
    with pytest.raises(ConfigError) as caught:
        S3(bucket="flows", client_options=client_options)
    assert str(caught.value) == message
    # ...while every real argument, and a templated endpoint, is taken
    S3(
        bucket="flows",
        client_options={
            "endpoint_url": "${S3_ENDPOINT}",
            "region_name": "eu-west-1",
            "use_ssl": False,
            "verify": False,
            "api_version": "2006-03-01",
        },
    )
