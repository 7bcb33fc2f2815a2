"""A blob store that accepts the connection and never answers (a real "black hole" server on
127.0.0.1) fails within about ``CONVEYOR_NETWORK_RETRY_SECONDS``, on S3, GCS and Azure, at deploy
(``conveyor deploy`` into ``CONVEYOR_BUNDLE_STORE=s3://...``) and at run time (a fetch); a real
transfer of a few MB still works with the same small setting, and options the storage sets
itself win over the bounds."""

# ruff: noqa: F401, F811  (fixtures imported from fixtures.* are parameters here)
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import SourceUnavailable
from conveyor.settings import Settings
from conveyor.sources.base import FetchContext
from conveyor.sources.blob import BlobStorage
from e2e.conftest import api, command_env, conveyor, one_line_error, wait_for_run
from fixtures.black_hole import BlackHole, black_hole
from fixtures.blob_servers import (
    AWS_KEY_ID,
    AWS_SECRET,
    AZURITE_KEY,
    Azurite,
    FakeGcs,
    MotoServer,
    azurite,
    fake_gcs,
    moto_server,
)
from worker.flows_project import write_project

pytestmark = [pytest.mark.service]

BUDGET = "3"
BOUND = 30.0
"""Seconds a hung store may hold a call with a 3 s budget (before the fix: many minutes)."""


def _pointing_at(scheme: str, url: str) -> dict[str, str]:
    """The environment that makes ``scheme://`` stores reach ``url``."""
    if scheme == "s3":
        return {
            "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
            "AWS_ENDPOINT_URL_S3": url,
        }
    if scheme == "gs":
        return {"STORAGE_EMULATOR_HOST": url}
    return {
        "AZURE_STORAGE_CONNECTION_STRING": (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={url}/devstoreaccount1;"
        )
    }


def _ctx(environ: dict[str, str], budget: str = BUDGET) -> FetchContext:
    env = {**os.environ, **environ, "CONVEYOR_NETWORK_RETRY_SECONDS": budget}
    return FetchContext(environ=env, settings=Settings.from_env(env))


def _assert_names_the_hang(message: str, where: str) -> None:
    assert "did not answer in time" in message
    assert where in message
    assert "\n" not in message
    assert AWS_SECRET not in message
    assert AZURITE_KEY not in message


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheme", ["s3", "gs", "az"])
def test_a_hung_store_fails_within_the_budget(scheme: str, black_hole: BlackHole) -> None:
    # Given a store whose endpoint accepts connections and never answers, and a 3 s budget
    ctx = _ctx(_pointing_at(scheme, black_hole.url))
    source = BlobStorage(f"{scheme}://hung-bucket/flows")

    # When deploy resolves it
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as caught:
        source.resolve(ctx)
    elapsed = time.monotonic() - started

    # Then it fails in seconds, in one line naming the store, after really reaching the hole
    assert elapsed < BOUND, f"{elapsed:.1f} s"
    assert black_hole.accepted >= 1
    _assert_names_the_hang(str(caught.value), f"{scheme}://hung-bucket/flows")
    if scheme == "s3":
        assert black_hole.url in str(caught.value)  # botocore says which endpoint it waited on
    assert "CONVEYOR_NETWORK_RETRY_SECONDS" in str(caught.value.hint)


@pytest.mark.timeout(120)
def test_a_run_fetching_from_a_hung_s3_store_fails_within_the_budget(
    black_hole: BlackHole, tmp_path: Path
) -> None:
    # Given a bundle-mode source whose endpoint hangs (a worker fetching a deployed version)
    ctx = _ctx(_pointing_at("s3", black_hole.url))
    source = BlobStorage("s3://hung-bucket/conveyor", mode="bundle")

    # When the worker fetches the pinned version
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as caught:
        source.fetch("sha256-" + "0" * 64, tmp_path / "dest", ctx)

    # Then it fails within the bound, naming the object and the endpoint
    assert time.monotonic() - started < BOUND
    _assert_names_the_hang(str(caught.value), "s3://hung-bucket/conveyor/sha256-0000")
    assert black_hole.url in str(caught.value)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_conveyor_deploy_into_a_hung_s3_bundle_store_fails_within_the_budget(
    black_hole: BlackHole, tmp_path: Path
) -> None:
    # Given CONVEYOR_BUNDLE_STORE on an S3 endpoint that never answers, and a 3 s budget
    env = command_env(
        **_pointing_at("s3", black_hole.url),
        CONVEYOR_BUNDLE_STORE="s3://hung-bucket/conveyor",
        CONVEYOR_NETWORK_RETRY_SECONDS=BUDGET,
    )
    project = write_project(tmp_path / "project")

    # When a local folder is deployed
    started = time.monotonic()
    result = conveyor(
        "deploy", "flows.py:hello", "--name", "hung", env=env, cwd=project, timeout=120
    )
    elapsed = time.monotonic() - started

    # Then the command fails in seconds with one line naming the store, its endpoint and the fix
    assert elapsed < BOUND, f"{elapsed:.1f} s"
    message = one_line_error(result)
    _assert_names_the_hang(message, "s3://hung-bucket/conveyor/")
    assert black_hole.url in message
    assert "CONVEYOR_NETWORK_RETRY_SECONDS" in result.stderr
    assert AWS_SECRET not in result.stderr + result.stdout


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("scheme", ["gs", "az"])
def test_conveyor_deploy_from_a_hung_gcs_or_azure_folder_fails_within_the_budget(
    scheme: str, black_hole: BlackHole, tmp_path: Path
) -> None:
    # Given a GCS emulator host or an Azure BlobEndpoint that never answers, and a 3 s budget
    env = command_env(**_pointing_at(scheme, black_hole.url), CONVEYOR_NETWORK_RETRY_SECONDS=BUDGET)
    write_project(tmp_path / "project")

    # When a deployment is made from a folder there
    started = time.monotonic()
    result = conveyor(
        "deploy",
        "flows.py:hello",
        "--name",
        "hung",
        "--source",
        f"{scheme}://hung-bucket/flows",
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    elapsed = time.monotonic() - started

    # Then the command fails in seconds with one line naming the folder, and no account key
    assert elapsed < BOUND, f"{elapsed:.1f} s"
    _assert_names_the_hang(one_line_error(result), f"{scheme}://hung-bucket/flows")
    assert "CONVEYOR_NETWORK_RETRY_SECONDS" in result.stderr
    assert AZURITE_KEY not in result.stderr + result.stdout
    assert black_hole.accepted >= 1


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_worker_run_whose_s3_store_hangs_fails_within_the_budget(
    moto_server: MotoServer, black_hole: BlackHole, tmp_path: Path
) -> None:
    # Given a folder deployed into an S3 bundle store that answered at deploy time
    bucket = moto_server.new_bucket()
    env = command_env(
        **_pointing_at("s3", moto_server.endpoint), CONVEYOR_BUNDLE_STORE=f"s3://{bucket}/conveyor"
    )
    project = write_project(tmp_path / "project")
    conveyor("deploy", "flows.py:hello", "--name", "hangs", env=env, cwd=project).check_returncode()
    with api(env) as client:
        run = client.create_run("hello", "hangs", parameters={"name": "Ada"})

    # When a worker with an empty cache and a 3 s budget runs it while the endpoint hangs
    worker = {
        **env,
        "AWS_ENDPOINT_URL_S3": black_hole.url,
        "CONVEYOR_NETWORK_RETRY_SECONDS": BUDGET,
        "CONVEYOR_CACHE_DIR": str(tmp_path / "cache"),
    }
    started = time.monotonic()
    result = conveyor("worker", "start", "--burst", env=worker, timeout=180)
    elapsed = time.monotonic() - started

    # Then the worker is done in seconds and the run failed saying which store did not answer
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 2 * BOUND, f"{elapsed:.1f} s"
    assert black_hole.accepted >= 1
    with api(env) as client:
        done = wait_for_run(client, run.id)
    assert done.state.value in ("failed", "crashed"), done.state
    assert done.error is not None
    _assert_names_the_hang(done.error, f"s3://{bucket}/conveyor/")
    assert black_hole.url in done.error


@pytest.fixture(params=["s3", "az", "gs"])
def store(request: pytest.FixtureRequest) -> tuple[str, Any]:
    name = {"s3": "moto_server", "az": "azurite", "gs": "fake_gcs"}[request.param]
    return request.param, request.getfixturevalue(name)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_transfer_of_a_few_megabytes_works_with_a_small_budget(
    store: tuple[str, Any], tmp_path: Path
) -> None:
    # Given a real store and the smallest budget (each request: one try, short timeouts)
    scheme, server = store
    if isinstance(server, Azurite):
        environ = {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string}
    else:
        environ = _pointing_at(scheme, server.endpoint)
    ctx = _ctx(environ, budget="0")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "flows.py").write_text("X = 1\n")
    (tree / "data.bin").write_bytes(os.urandom(6 << 20))
    source = BlobStorage(f"{scheme}://{server.new_bucket()}/bundles")

    # When it is pushed and fetched back
    version = source.push(tree, ctx)
    source.fetch(version, tmp_path / "dest", ctx)

    # Then every byte arrived
    assert (tmp_path / "dest" / "data.bin").read_bytes() == (tree / "data.bin").read_bytes()


def test_the_storage_s_own_timeouts_and_retries_win(black_hole: BlackHole) -> None:
    # Given settings that set botocore's timeouts and retries, gcsfs's and Azure's timeouts
    ctx = _ctx({**_pointing_at("s3", black_hole.url), **_pointing_at("az", black_hole.url)})
    retries = {"max_attempts": 7, "mode": "adaptive"}
    s3 = BlobStorage(
        "s3://own-bucket/flows", config_kwargs={"read_timeout": 123, "retries": retries}
    ).filesystem(ctx)
    gcs = BlobStorage(
        "gs://own-bucket/flows", endpoint_url=black_hole.url, token="anon", requests_timeout=77
    ).filesystem(ctx)
    azure = BlobStorage("az://own-bucket/flows", read_timeout=88).filesystem(ctx)

    # Then those win, and only what they left unset is bounded by the budget
    assert s3.config_kwargs["read_timeout"] == 123
    assert s3.config_kwargs["retries"] == retries
    assert s3.config_kwargs["connect_timeout"] == 3.0
    assert gcs.requests_timeout == 77
    assert azure.service_client._config.retry_policy.total_retries == 0
    assert azure._timeout_kwargs == {"connection_timeout": 3.0, "read_timeout": 88}

    # And AWS_MAX_ATTEMPTS, botocore's own setting, is left to botocore
    attempts = _ctx({**_pointing_at("s3", black_hole.url), "AWS_MAX_ATTEMPTS": "9"})
    assert "retries" not in BlobStorage("s3://own-bucket/x").filesystem(attempts).config_kwargs


def test_a_botocore_config_in_client_kwargs_works_and_wins(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    from botocore.config import Config

    # Given boto3's way of setting timeouts: a Config among the client's options
    ctx = _ctx(_pointing_at("s3", moto_server.endpoint))
    config = Config(read_timeout=123, retries={"max_attempts": 2})
    source = BlobStorage(f"s3://{moto_server.new_bucket()}/code", client_kwargs={"config": config})
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "flows.py").write_text("X = 1\n")

    # When code is pushed and resolved through it
    version = source.push(tree, ctx)

    # Then it works (s3fs's own config= and this one were a TypeError), with the user's values
    assert source.resolve(ctx) == version
    fs = source.filesystem(ctx)
    assert fs.config_kwargs["read_timeout"] == 123
    assert fs.config_kwargs["retries"]["total_max_attempts"] == 3  # botocore's: 2 retries
    assert fs.config_kwargs["connect_timeout"] == 3.0
    assert "config" not in fs.client_kwargs


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["refuse", "reset"])
def test_a_deploy_rides_out_an_s3_outage_within_the_budget(
    fault: str, moto_server: MotoServer, tmp_path: Path
) -> None:
    from fixtures.faulty_proxy import FaultyProxy

    # Given code pushed to a bucket, reached through a proxy, and a 20 s budget
    bucket = moto_server.new_bucket()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "flows.py").write_text("X = 1\n")
    pushed = BlobStorage(f"s3://{bucket}/code").push(
        tree, _ctx(_pointing_at("s3", moto_server.endpoint))
    )
    proxy = FaultyProxy(moto_server.port).start()
    try:
        ctx = _ctx(_pointing_at("s3", f"http://127.0.0.1:{proxy.port}"), budget="20")

        # When the store is unreachable for 4 s just as deploy resolves the prefix
        getattr(proxy, fault)(4.0)
        started = time.monotonic()
        version = BlobStorage(f"s3://{bucket}/code").resolve(ctx)
        elapsed = time.monotonic() - started
    finally:
        proxy.stop()

    # Then it was retried past the outage (not given up after botocore's few quick tries)
    assert version == pushed
    assert 3.5 <= elapsed < 20, f"{elapsed:.1f} s"
