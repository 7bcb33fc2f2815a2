"""Blob stores end to end, through the real command line: deploy from S3 / Azure / GCS (folder
mode, saved credentials), and a local folder into ``CONVEYOR_BUNDLE_STORE=s3://...`` (bundle
mode); workers with empty caches run them; a second run makes no request; a changed object is
refused and followed with ``--follow-ref``; results land beside the code and ``runs result``
returns them; no key or connection string leaks anywhere."""

# ruff: noqa: F401, F811  (fixtures imported from fixtures.blob_servers are parameters here)
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor.sources.base import FetchContext
from conveyor.sources.blob import BlobStorage
from conveyor.sources.blob._transfer import upload_folder
from e2e.conftest import api, command_env, conveyor, ok, wait_for_run
from fixtures.blob_servers import (
    AWS_KEY_ID,
    AWS_SECRET,
    Azurite,
    FakeGcs,
    MotoServer,
    azurite,
    fake_gcs,
    moto_server,
)
from worker.flows_project import write_project

pytestmark = [pytest.mark.slow, pytest.mark.service]


def _stdin(args: list[str], data: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        input=data,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return ok(result)


def _worker(env: dict[str, str], cache: Path) -> subprocess.CompletedProcess[str]:
    result = conveyor(
        "worker", "start", "--burst", env={**env, "CONVEYOR_CACHE_DIR": str(cache)}, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _leaks(home: Path, texts: list[str], needles: list[str]) -> list[str]:
    found = []
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n[:6]}…" for n in needles if n.encode() in data]
    for text in texts:
        found += [f"output: {n[:6]}…" for n in needles if n in text]
    return found


def test_s3_folder_and_bundle_deploys_run_pinned_with_results_beside_the_code(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    # Given the project as plain files in a bucket, and saved AWS credentials (secret on stdin)
    env = command_env(AWS_ACCESS_KEY_ID="unused", AWS_SECRET_ACCESS_KEY="unused")
    bucket = moto_server.new_bucket()
    project = write_project(tmp_path / "project")
    outputs = [
        _stdin(
            [
                "credentials",
                "create",
                "aws",
                "s3-ci",
                "--access-key-id",
                AWS_KEY_ID,
                "--endpoint-url",
                moto_server.endpoint,
            ],
            AWS_SECRET + "\n",
            env,
        )
    ]
    folder = BlobStorage(f"s3://{bucket}/flows", endpoint_url=moto_server.endpoint)
    ctx = FetchContext(
        environ={"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    )
    upload_folder(folder.filesystem(ctx), folder.location, project)

    # When it is deployed from the bucket (folder mode) and run by a worker with an empty cache
    source = f"s3://{bucket}/flows"
    for name, fn in (("s3-hello", "hello"), ("s3-pair", "pair")):
        outputs.append(
            ok(
                conveyor(
                    "deploy",
                    f"flows.py:{fn}",
                    "--name",
                    name,
                    "--source",
                    source,
                    "--credentials",
                    "s3-ci",
                    env=env,
                    cwd=tmp_path,
                )
            )
        )
    with api(env) as client:
        deployment = client.get_deployment("hello", "s3-hello")
        assert deployment.version.startswith("pins-")
        assert deployment.source["credentials"] == "s3-ci"
        first = client.create_run("hello", "s3-hello", parameters={"name": "Ada"})
        pair = client.create_run("pair", "s3-pair")
    outputs.append(_worker(env, tmp_path / "cache").stdout)

    # Then it ran the pinned objects, and the non-JSON result went to the same bucket
    with api(env) as client:
        done = wait_for_run(client, first.id)
        assert done.state.value == "completed", done.error
        assert done.result == "HELLO ADA"
        paired = wait_for_run(client, pair.id)
        assert paired.state.value == "completed", paired.error
    assert paired.result_ref == f"s3://{bucket}/results/{pair.id}/result.pickle"
    keys = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"results/{pair.id}/result.pickle" in keys
    printed = ok(conveyor("runs", "result", pair.id, env=env))
    assert printed.strip() == "(1, 2)"
    ok(conveyor("runs", "result", pair.id, "--output", str(tmp_path / "r.pickle"), env=env))
    assert (tmp_path / "r.pickle").stat().st_size > 0

    # When it runs again on the same worker cache: not one request reaches the store
    before = len(moto_server.requests())
    with api(env) as client:
        second = client.create_run("hello", "s3-hello", parameters={"name": "Bo"})
    outputs.append(_worker(env, tmp_path / "cache").stdout)
    with api(env) as client:
        assert wait_for_run(client, second.id).result == "HELLO BO"
    assert moto_server.requests()[before:] == []

    # When an object changes in the bucket after the deploy
    client_s3 = moto_server.client()
    changed = (project / "helpers.py").read_text().replace("upper()", "lower()")
    client_s3.put_object(Bucket=bucket, Key="flows/helpers.py", Body=changed.encode())
    with api(env) as client:
        refused = client.create_run("hello", "s3-hello", parameters={"name": "Cy"})
    outputs.append(_worker(env, tmp_path / "cold-cache").stdout)
    with api(env) as client:
        failed = wait_for_run(client, refused.id)
    # Then the run fails naming the key; a deployment following its ref takes the new objects
    assert failed.state.value == "failed"
    assert "helpers.py was changed or deleted" in (failed.error or "")
    ok(
        conveyor(
            "deploy",
            "flows.py:hello",
            "--name",
            "s3-follow",
            "--source",
            source,
            "--credentials",
            "s3-ci",
            "--follow-ref",
            env=env,
            cwd=tmp_path,
        )
    )
    with api(env) as client:
        followed = client.create_run("hello", "s3-follow", parameters={"name": "Cy"})
    outputs.append(_worker(env, tmp_path / "cache").stdout)
    with api(env) as client:
        done = wait_for_run(client, followed.id)
        assert done.result == "hello cy", done.error
        assert done.version != deployment.version
        outputs += [line.message for line in client.read_logs(first.id)]
        outputs += [line.message for line in client.read_logs(refused.id)]
        outputs += [failed.error or ""]

    # And no secret reached a file under CONVEYOR_HOME, the database, a log or an output
    assert _leaks(Path(env["CONVEYOR_HOME"]), outputs, [AWS_SECRET]) == []
    assert _leaks(tmp_path / "cache", [], [AWS_SECRET, AWS_KEY_ID]) == []


def test_a_local_folder_lands_in_an_s3_bundle_store_and_runs_anywhere(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    # Given CONVEYOR_BUNDLE_STORE on a bucket (credentials from the platform's chain)
    bucket = moto_server.new_bucket()
    env = command_env(
        AWS_ACCESS_KEY_ID=AWS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=AWS_SECRET,
        AWS_ENDPOINT_URL_S3=moto_server.endpoint,
        CONVEYOR_BUNDLE_STORE=f"s3://{bucket}/conveyor",
    )
    project = write_project(tmp_path / "project")
    ok(conveyor("deploy", "flows.py:hello", "--name", "bundled", env=env, cwd=project))
    with api(env) as client:
        deployment = client.get_deployment("hello", "bundled")
    assert deployment.source == {"kind": "store", "url": f"s3://{bucket}/conveyor"}
    stored = [o["Key"] for o in moto_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert stored == [f"conveyor/{deployment.version}.tar.zst"]

    # When the same code is deployed again, nothing is uploaded
    before = len(moto_server.requests())
    ok(conveyor("deploy", "flows.py:hello", "--name", "bundled", env=env, cwd=project))
    assert [r for r in moto_server.requests()[before:] if r[0] in ("PUT", "POST")] == []

    # When a worker with an empty cache runs it: one GET of the archive, then none at all
    with api(env) as client:
        run = client.create_run("hello", "bundled", parameters={"name": "Ada"})
    before = len(moto_server.requests())
    _worker(env, tmp_path / "cache")
    cold = moto_server.requests()[before:]
    assert [m for m, _, _ in cold] == ["GET"]
    with api(env) as client:
        assert wait_for_run(client, run.id).result == "HELLO ADA"
        again = client.create_run("hello", "bundled", parameters={"name": "Bo"})
    before = len(moto_server.requests())
    _worker(env, tmp_path / "cache")
    assert moto_server.requests()[before:] == []
    with api(env) as client:
        assert wait_for_run(client, again.id).result == "HELLO BO"


@pytest.mark.parametrize("platform", ["az", "gs"])
def test_deploy_from_azure_and_gcs_and_run_on_a_worker(
    platform: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: Any = request.getfixturevalue("azurite" if platform == "az" else "fake_gcs")
    bucket = server.new_bucket()
    project = write_project(tmp_path / "project")
    if platform == "az":
        env = command_env()
        _stdin(["credentials", "create", "azure", "az-ci"], server.connection_string, env)
        extra = ["--credentials", "az-ci"]
        ctx = FetchContext(environ={"AZURE_STORAGE_CONNECTION_STRING": server.connection_string})
        options: dict[str, Any] = {}
        secret = server.connection_string.split("AccountKey=")[1].split(";")[0]
    else:
        env = command_env(STORAGE_EMULATOR_HOST=server.endpoint)
        extra = []
        ctx = FetchContext(environ={})
        options = server.options()
        secret = None
    folder = BlobStorage(f"{platform}://{bucket}/flows", **options)
    upload_folder(folder.filesystem(ctx), folder.location, project)
    out = ok(
        conveyor(
            "deploy",
            "flows.py:hello",
            "--name",
            f"{platform}-hello",
            "--source",
            f"{platform}://{bucket}/flows",
            *extra,
            env=env,
            cwd=tmp_path,
        )
    )
    with api(env) as client:
        run = client.create_run("hello", f"{platform}-hello", parameters={"name": "Ada"})
    worker = _worker(env, tmp_path / "cache")
    with api(env) as client:
        done = wait_for_run(client, run.id)
        assert done.state.value == "completed", done.error
        assert done.result == "HELLO ADA"
        logs = [line.message for line in client.read_logs(run.id)]
    if secret is not None:
        assert _leaks(Path(env["CONVEYOR_HOME"]), [out, worker.stdout, *logs], [secret]) == []


def test_a_large_upload_shows_a_progress_bar_when_asked_and_a_small_one_none(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    # Given a bundle store on a bucket, and a project with 2 MiB of data beside its flow
    bucket = moto_server.new_bucket()
    base = command_env(
        AWS_ACCESS_KEY_ID=AWS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=AWS_SECRET,
        AWS_ENDPOINT_URL_S3=moto_server.endpoint,
        CONVEYOR_BUNDLE_STORE=f"s3://{bucket}/conveyor",
    )
    project = write_project(tmp_path / "project")
    (project / "data.bin").write_bytes(os.urandom(2 << 20))
    bar = f"pushing to s3://{bucket}/conveyor"

    # When it is deployed with progress turned off (stderr is no terminal here either)
    quiet = conveyor(
        "deploy",
        "flows.py:hello",
        "--name",
        "big",
        env={**base, "CONVEYOR_PROGRESS": "0"},
        cwd=project,
    )
    # Then no bar is drawn
    ok(quiet)
    assert bar not in quiet.stderr

    # When changed data is deployed with progress asked for
    (project / "data.bin").write_bytes(os.urandom(2 << 20))
    shown = conveyor(
        "deploy",
        "flows.py:hello",
        "--name",
        "big",
        env={**base, "CONVEYOR_PROGRESS": "1"},
        cwd=project,
    )
    # Then the upload's bar says where it went, with its size
    ok(shown)
    assert bar in shown.stderr
    assert "MB" in shown.stderr

    # When a project of a few small files is deployed with progress asked for: no bar
    small = write_project(tmp_path / "small")
    (small / "notes.txt").write_text("small\n")
    tiny = conveyor(
        "deploy",
        "flows.py:hello",
        "--name",
        "small",
        env={**base, "CONVEYOR_PROGRESS": "1"},
        cwd=small,
    )
    ok(tiny)
    assert bar not in tiny.stderr
