"""A damaged archive in a bundle store (overwritten, truncated) is stored again by the next
deploy, which compares the stored object's size (the HEAD it makes anyway) with the bundle's;
a run that meets a damaged archive is told which object it is and to delete it, then deploy."""

# ruff: noqa: F401, F811  (fixtures imported from fixtures.blob_servers are parameters here)
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from conveyor.errors import BundleError
from conveyor.settings import Settings
from conveyor.sources.base import FetchContext
from conveyor.sources.store import BundleStore
from fixtures.blob_servers import (
    AWS_KEY_ID,
    AWS_SECRET,
    AZURITE_KEY,
    Azurite,
    MotoServer,
    azurite,
    moto_server,
)
from sources.contract import snapshot, write_known_tree


def _ctx(moto: MotoServer, settings: Settings | None) -> FetchContext:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_ENDPOINT_URL_S3": moto.endpoint,
    }
    return FetchContext(environ=env, settings=settings)


@pytest.mark.parametrize("remembered", [True, False], ids=["same-machine", "other-machine"])
def test_a_damaged_archive_in_an_s3_store_is_stored_again_by_the_next_deploy(
    moto_server: MotoServer,
    tmp_path: Path,
    settings: Settings,
    remembered: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a tree pushed to an S3 bundle store, whose archive is then overwritten with junk
    bucket = moto_server.new_bucket()
    tree = write_known_tree(tmp_path / "tree")
    store = BundleStore(f"s3://{bucket}/conveyor")
    version = store.push(tree, _ctx(moto_server, settings))
    key = f"conveyor/{version}.tar.zst"
    moto_server.client().put_object(Bucket=bucket, Key=key, Body=b"junk" * 10)

    # Then a cold run fails, and is told to deploy again
    with pytest.raises(BundleError, match="archive is corrupt") as caught:
        store.fetch(version, tmp_path / "cold", _ctx(moto_server, settings))
    assert "deploy again" in str(caught.value.hint)

    # When the same tree is deployed again (from this machine, or one that never packed it)
    ctx = _ctx(moto_server, settings if remembered else None)
    with caplog.at_level(logging.WARNING, logger="conveyor.sources.store"):
        assert store.push(tree, ctx) == version

    # Then it said so in one line, the archive was stored again, and a run gets the code
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "has 40 bytes, not" in warnings[0]
    assert "storing it again" in warnings[0]
    head = moto_server.client().head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] != 40
    dest = tmp_path / "dest"
    dest.mkdir()
    store.fetch(version, dest, _ctx(moto_server, settings))
    assert snapshot(dest, skip=(".conveyor",)) == snapshot(tree)

    # And a third deploy finds the right size and uploads nothing
    before = len(moto_server.requests())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="conveyor.sources.store"):
        store.push(tree, _ctx(moto_server, settings))
    assert [m for m, _, _ in moto_server.requests()[before:]] == ["HEAD"]
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_truncated_archive_in_a_directory_store_is_stored_again(
    tmp_path: Path, settings: Settings
) -> None:
    tree = write_known_tree(tmp_path / "tree")
    store = BundleStore(tmp_path / "store")
    ctx = FetchContext(settings=settings)
    version = store.push(tree, ctx)
    archive = tmp_path / "store" / f"{version}.tar.zst"
    good = archive.read_bytes()
    archive.write_bytes(good[: len(good) // 2])

    assert store.push(tree, ctx) == version
    assert archive.read_bytes() == good


def test_a_damaged_archive_of_the_bundles_own_size_is_named_and_the_run_says_how_to_repair_it(
    moto_server: MotoServer, tmp_path: Path, settings: Settings
) -> None:
    # Given a tree pushed to an S3 bundle store, whose archive then has one byte flipped (the
    # same size: a deploy does not see it)
    bucket = moto_server.new_bucket()
    tree = write_known_tree(tmp_path / "tree")
    store = BundleStore(f"s3://{bucket}/conveyor")
    version = store.push(tree, _ctx(moto_server, settings))
    key = f"conveyor/{version}.tar.zst"
    good = moto_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    flipped = good[:40] + bytes([good[40] ^ 0xFF]) + good[41:]
    moto_server.client().put_object(Bucket=bucket, Key=key, Body=flipped)
    assert store.push(tree, _ctx(moto_server, settings)) == version  # not stored again

    # When a cold run fetches it, Then the error names the object and says to delete it first
    with pytest.raises(BundleError) as caught:
        store.fetch(version, tmp_path / "cold", _ctx(moto_server, settings))
    url = f"s3://{bucket}/{key}"
    assert str(caught.value).startswith(f"{url}: ")
    assert caught.value.hint == (
        f"delete {url} and deploy again (a deploy stores a bundle that is missing)"
    )

    # When the user does so, the next deploy stores it again, and a run gets the code
    moto_server.client().delete_object(Bucket=bucket, Key=key)
    assert store.push(tree, _ctx(moto_server, settings)) == version
    dest = tmp_path / "dest"
    dest.mkdir()
    store.fetch(version, dest, _ctx(moto_server, settings))
    assert snapshot(dest, skip=(".conveyor",)) == snapshot(tree)


def test_a_store_the_credentials_may_only_read_says_they_must_be_allowed_to_write(
    azurite: Azurite, tmp_path: Path, settings: Settings
) -> None:
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from conveyor.errors import AuthenticationError

    # Given a container and a SAS that may read and list it, not write
    container = azurite.new_bucket()
    sas = generate_container_sas(
        "devstoreaccount1",
        container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    conn = (
        f"BlobEndpoint=http://127.0.0.1:{azurite.port}/devstoreaccount1;SharedAccessSignature={sas}"
    )
    ctx = FetchContext(environ={**os.environ, "AZURE_STORAGE_CONNECTION_STRING": conn})
    tree = write_known_tree(tmp_path / "tree")

    # When a deploy pushes a bundle there, Then the refusal says what the credentials lack
    with pytest.raises(AuthenticationError) as caught:
        BundleStore(f"az://{container}/conveyor").push(tree, ctx)
    assert "the credentials were missing or rejected" in str(caught.value)
    assert caught.value.hint == (
        "check that the credentials are correct, not expired and allowed to write there"
    )
    assert sas.split("sig=")[1][:12] not in f"{caught.value} {caught.value.hint}"
