"""`BlobStorage` on real servers (moto S3, Azurite, fake-gcs-server): the contract in bundle and
folder mode on each, conditional pushes, pinned folders, credentials and error classes."""

# ruff: noqa: F401, F811  (fixtures imported from fixtures.blob_servers are parameters here)
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conveyor.errors import (
    AuthenticationError,
    ConfigError,
    IntegrityError,
    SourceNotFound,
    VersionNotFound,
)
from conveyor.sources import source_from_spec, source_from_url
from conveyor.sources.base import FetchContext, Source
from conveyor.sources.blob import AwsCredentials, BlobStorage, S3Bucket
from conveyor.sources.blob._fs import BlobUrl
from conveyor.sources.blob._transfer import upload_folder
from conveyor.sources.blob.store import BlobStoreBackend
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
from sources.contract import SourceContract, snapshot, write_known_tree


class Backend:
    """One server as the tests see it: a scheme, a fresh bucket, options and a context."""

    def __init__(self, scheme: str, server: Any) -> None:
        self.scheme = scheme
        self.server = server

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        if isinstance(self.server, Azurite):
            env["AZURE_STORAGE_CONNECTION_STRING"] = self.server.connection_string
        if isinstance(self.server, MotoServer):
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = AWS_KEY_ID, AWS_SECRET
            env["AWS_ENDPOINT_URL_S3"] = self.server.endpoint
        if isinstance(self.server, FakeGcs):
            env["STORAGE_EMULATOR_HOST"] = self.server.endpoint
        return env

    def ctx(self, settings: Any = None) -> FetchContext:
        return FetchContext(environ=self.environ(), settings=settings)

    def source(self, bucket: str, prefix: str, **options: Any) -> BlobStorage:
        return BlobStorage(f"{self.scheme}://{bucket}/{prefix}", **self.server.options(), **options)


@pytest.fixture(params=["s3", "az", "gs"])
def backend(request: pytest.FixtureRequest) -> Backend:
    server = request.getfixturevalue(
        {"s3": "moto_server", "az": "azurite", "gs": "fake_gcs"}[request.param]
    )
    return Backend(request.param, server)


class _BlobContract(SourceContract):
    @pytest.fixture
    def ctx(self, backend: Backend, tmp_path: Path, settings: Any) -> FetchContext:
        scratch = tmp_path / "contract-scratch"
        scratch.mkdir()
        return FetchContext(scratch=scratch, settings=settings, environ=backend.environ())

    @pytest.fixture
    def missing_source_factory(self, backend: Backend) -> Callable[[], Source]:
        return lambda: backend.source("no-such-bucket-here", "flows")


class TestBlobBundleMode(_BlobContract):
    """Bundle mode: archives under the prefix, the full tree (links, executable bits)."""

    @pytest.fixture
    def tree(self, tmp_path: Path) -> Path:
        return write_known_tree(tmp_path / "tree")

    @pytest.fixture
    def source(self, backend: Backend, tree: Path, ctx: FetchContext) -> BlobStorage:
        source = backend.source(backend.server.new_bucket(), "bundles")
        source.push(tree, ctx)
        return source


class TestBlobFolderMode(_BlobContract):
    """Folder mode: plain objects (no links or modes: objects have none), pinned."""

    unknown_version: ClassVar[str] = "pins-" + "0" * 64
    metadata_dirs: ClassVar[tuple[str, ...]] = (".conveyor",)

    @pytest.fixture
    def tree(self, tmp_path: Path) -> Path:
        tree = write_known_tree(tmp_path / "tree", symlinks=False)
        (tree / "bin/run.sh").chmod(0o644)
        return tree

    @pytest.fixture
    def source(self, backend: Backend, tree: Path, ctx: FetchContext) -> BlobStorage:
        source = backend.source(backend.server.new_bucket(), "plain/flows")
        upload_folder(source.filesystem(ctx), source.location, tree)
        return source


# -- bundle mode -------------------------------------------------------------------------------


def test_a_push_of_unchanged_code_uploads_nothing(moto_server: MotoServer, tmp_path: Path) -> None:
    # Given a pushed tree
    backend = Backend("s3", moto_server)
    tree = write_known_tree(tmp_path / "tree")
    source = backend.source(moto_server.new_bucket(), "code")
    version = source.push(tree, backend.ctx())
    before = len(moto_server.requests())

    # When the same (touched) tree is pushed again
    for path in tree.rglob("*"):
        if not path.is_symlink():
            os.utime(path)
    again = source.push(tree, backend.ctx())

    # Then nothing was written: one HEAD for the archive, one GET of the latest pointer
    requests = moto_server.requests()[before:]
    assert again == version
    assert [r[0] for r in requests if r[0] in ("PUT", "POST")] == []
    assert sorted(r[0] for r in requests) == ["GET", "HEAD"], requests


def test_two_pushes_racing_on_one_version_both_succeed_with_one_object(
    backend: Backend, tmp_path: Path
) -> None:
    # Given two threads pushing the same tree to one empty store at the same moment
    tree = write_known_tree(tmp_path / "tree")
    bucket = backend.server.new_bucket()
    url = f"{backend.scheme}://{bucket}/store"
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def push() -> None:
        store = BlobStoreBackend(url, backend.ctx())
        archive = tmp_path / f"a-{threading.get_ident()}.tar.zst"
        from conveyor.bundles import pack

        version = pack(tree, archive).version
        barrier.wait()
        results.append((version, store.put(f"{version}.tar.zst", archive)))

    threads = [threading.Thread(target=push) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # Then both succeeded, exactly one wrote, and the store holds one object for the version
    assert len(results) == 2
    assert {v for v, _ in results} == {results[0][0]}
    assert sorted(written for _, written in results) == [False, True]
    fs = BlobStoreBackend(url, backend.ctx()).fs
    names = [n.rsplit("/", 1)[1] for n in fs.find(f"{bucket}/store")]
    assert names == [f"{results[0][0]}.tar.zst"]


def test_a_cold_bundle_fetch_is_one_get(moto_server: MotoServer, tmp_path: Path) -> None:
    backend = Backend("s3", moto_server)
    tree = write_known_tree(tmp_path / "tree")
    source = backend.source(moto_server.new_bucket(), "code")
    version = source.push(tree, backend.ctx())
    before = len(moto_server.requests())
    dest = tmp_path / "dest"
    dest.mkdir()
    source_from_spec(source.to_spec()).fetch(version, dest, backend.ctx())
    requests = moto_server.requests()[before:]
    assert [(m, p.rsplit("/", 1)[-1]) for m, p, _ in requests] == [("GET", f"{version}.tar.zst")]
    assert snapshot(dest, skip=(".conveyor",)) == snapshot(tree)


# -- folder mode -------------------------------------------------------------------------------


def _folder(backend: Backend, tmp_path: Path, **options: Any) -> tuple[BlobStorage, Path, str]:
    tree = write_known_tree(tmp_path / "tree", symlinks=False)
    source = backend.source(backend.server.new_bucket(), "flows", **options)
    upload_folder(source.filesystem(backend.ctx()), source.location, tree)
    return source, tree, source.resolve(backend.ctx())


def test_folder_mode_refuses_an_object_changed_after_deploy_naming_its_key(
    backend: Backend, tmp_path: Path
) -> None:
    # Given a pinned folder whose README.md is replaced afterwards
    source, _, version = _folder(backend, tmp_path)
    spec = json.loads(json.dumps(source.to_spec()))
    source.filesystem(backend.ctx()).pipe_file(source.location.join("README.md"), b"new\n")

    # When a worker fetches the pinned version, then it is refused, naming the key
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(Exception) as caught:
        source_from_spec(spec).fetch(version, dest, backend.ctx())
    assert "README.md" in str(caught.value)
    assert "changed or deleted" in str(caught.value)
    assert "\n" not in str(caught.value)

    # And following the ref re-lists: a new version, fetched with the new bytes
    latest = source_from_spec(spec).resolve(backend.ctx())
    assert latest != version
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    source_from_spec(spec).fetch(latest, fresh, backend.ctx())
    assert (fresh / "README.md").read_bytes() == b"new\n"


def test_folder_mode_refuses_a_deleted_object(moto_server: MotoServer, tmp_path: Path) -> None:
    backend = Backend("s3", moto_server)
    source, _, version = _folder(backend, tmp_path)
    source.filesystem(backend.ctx()).rm_file(source.location.join("flows/hello.py"))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(Exception, match=r"flows/hello\.py was changed or deleted"):
        source_from_spec(source.to_spec()).fetch(version, dest, backend.ctx())


def test_a_versioned_bucket_serves_the_pinned_object_after_a_change(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    # Given a folder in a versioned bucket, pinned, then changed
    backend = Backend("s3", moto_server)
    tree = write_known_tree(tmp_path / "tree", symlinks=False)
    bucket = moto_server.new_bucket(versioned=True)
    source = backend.source(bucket, "flows")
    upload_folder(source.filesystem(backend.ctx()), source.location, tree)
    version = source.resolve(backend.ctx())
    assert all(pin.version_id for pin in source._pins or [])
    source.filesystem(backend.ctx()).pipe_file(source.location.join("README.md"), b"new\n")

    # Then the pinned version is still fetched exactly, by version id
    dest = tmp_path / "dest"
    dest.mkdir()
    source_from_spec(source.to_spec()).fetch(version, dest, backend.ctx())
    assert (dest / "README.md").read_bytes() == (tree / "README.md").read_bytes()


def test_a_sibling_prefix_is_not_part_of_the_folder(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    backend = Backend("s3", moto_server)
    source, _, _ = _folder(backend, tmp_path)
    fs = source.filesystem(backend.ctx())
    fs.pipe_file(f"{source.location.bucket}/flows-2/other.py", b"x = 1\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    fresh = source_from_spec({"kind": "blob", "url": source.url, **moto_server.options()})
    fresh.fetch(fresh.resolve(backend.ctx()), dest, backend.ctx())
    assert "other.py" not in {p.name for p in dest.rglob("*")}


def test_a_key_leaving_the_folder_is_refused(moto_server: MotoServer, tmp_path: Path) -> None:
    backend = Backend("s3", moto_server)
    source, _, _ = _folder(backend, tmp_path)
    client = moto_server.client()
    client.put_object(Bucket=source.location.bucket, Key="flows/a/../../escape.py", Body=b"x")
    with pytest.raises(Exception, match="cannot be a file inside the folder"):
        BlobStorage(source.url, **moto_server.options()).resolve(backend.ctx())


# -- credentials, settings and errors -----------------------------------------------------------


def test_saved_aws_credentials_reach_the_store(
    moto_server: MotoServer, tmp_path: Path, settings: Any
) -> None:
    from conveyor.connect import connect

    bucket = moto_server.new_bucket()
    tree = write_known_tree(tmp_path / "tree")
    with connect(settings) as client:
        AwsCredentials(
            aws_access_key_id=AWS_KEY_ID,
            aws_secret_access_key=AWS_SECRET,
            endpoint_url=moto_server.endpoint,
        ).save("s3-ci", store=client)
        ctx = FetchContext(secrets=client, environ={}, settings=settings)
        block = S3Bucket(bucket, bucket_folder="code", credentials="s3-ci")
        version = block.push(tree, ctx)
        assert source_from_spec(block.to_spec()).resolve(ctx) == version
    assert block.to_spec() == {"kind": "blob", "url": f"s3://{bucket}/code", "credentials": "s3-ci"}


def test_the_first_generation_aws_credentials_secret_is_honoured(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    bucket = moto_server.new_bucket()
    raw = json.dumps({"ACCESS_KEY": AWS_KEY_ID, "SECRET_ACCESS_KEY": AWS_SECRET})
    env = {"AWS_CREDENTIALS": raw, "AWS_ENDPOINT_URL_S3": moto_server.endpoint}
    source = BlobStorage(f"s3://{bucket}/code")
    version = source.push(write_known_tree(tmp_path / "tree"), FetchContext(environ=env))
    assert version.startswith("sha256-")


def test_a_literal_secret_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a template") as caught:
        BlobStorage("s3://bucket/flows", key="AKIAXXXXXXXX", secret="s3cr3t-value")
    assert "s3cr3t-value" not in str(caught.value) + str(caught.value.hint)
    BlobStorage("s3://bucket/flows", key="${S3_KEY}", secret="${S3_SECRET}")


def test_an_unsaved_credentials_object_cannot_be_stored() -> None:
    source = BlobStorage(
        "s3://bucket/flows",
        credentials=AwsCredentials(aws_access_key_id="AKIA1", aws_secret_access_key="sk"),
    )
    with pytest.raises(ConfigError, match="must be saved"):
        source.to_spec()


def test_a_missing_bucket_is_source_not_found(backend: Backend) -> None:
    with pytest.raises(SourceNotFound) as caught:
        backend.source("bucket-that-is-not-there", "flows").resolve(backend.ctx())
    assert "\n" not in str(caught.value)


def test_rejected_credentials_are_an_authentication_error(
    moto_server: MotoServer, fake_gcs: FakeGcs, azurite: Azurite
) -> None:
    # moto accepts any key; an Azure account key that is wrong is really refused
    del moto_server, fake_gcs
    bad = azurite.connection_string.replace("Eby8", "AAAA")
    with pytest.raises(AuthenticationError) as caught:
        BlobStorage(f"az://{azurite.new_bucket()}/flows").resolve(
            FetchContext(environ={"AZURE_STORAGE_CONNECTION_STRING": bad})
        )
    assert "AccountKey" not in str(caught.value)
    assert "AAAA" not in str(caught.value)


def test_an_unreachable_store_is_unavailable_after_retries(tmp_path: Path) -> None:
    from conveyor.errors import SourceUnavailable
    from fixtures.ports import free_port

    source = BlobStorage("s3://bucket/flows", endpoint_url=f"http://127.0.0.1:{free_port()}")
    from conveyor.settings import Settings

    env = {**os.environ, "CONVEYOR_NETWORK_RETRY_SECONDS": "0.5", "AWS_MAX_ATTEMPTS": "1"}
    started = time.monotonic()
    with pytest.raises(SourceUnavailable):
        source.resolve(FetchContext(environ=env, settings=Settings.from_env(env)))
    assert time.monotonic() - started < 20  # the 0.5 s budget, not the default 30 s


@pytest.mark.parametrize(
    "url",
    ["s3://bucket/flows", "gs://b/x", "gcs://b/x", "az://cnt/x", "abfs://cnt/x", "memory://b/x"],
)
def test_blob_urls_become_blob_sources(url: str) -> None:
    assert isinstance(source_from_url(url), BlobStorage)


def test_a_url_with_credentials_is_refused() -> None:
    with pytest.raises(ConfigError, match="must not carry credentials"):
        BlobStorage("s3://key:secret@bucket/flows")


def test_blob_url_parsing() -> None:
    url = BlobUrl.parse("s3://bucket/a/b/")
    assert (url.bucket, url.prefix, url.root, url.url) == (
        "bucket",
        "a/b",
        "bucket/a/b",
        "s3://bucket/a/b",
    )
    with pytest.raises(ConfigError):
        BlobUrl.parse("s3://bucket/a/../b")
