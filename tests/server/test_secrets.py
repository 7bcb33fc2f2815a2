"""The encrypted secret store: API, encryption at rest, key handling."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from conveyor.connect import connect
from conveyor.errors import InvalidRequest, ObjectNotFound
from conveyor.secrets import Secret, SecretStore, resolve_templates

PLAINTEXT = "hunter2-very-secret-value"


@pytest.mark.usefixtures("backend")
def test_set_list_get_delete(api):
    info = api.set_secret("DB_PASSWORD", PLAINTEXT)
    assert info.name == "DB_PASSWORD"
    assert [s.name for s in api.list_secrets()] == ["DB_PASSWORD"]
    assert PLAINTEXT not in str(api.list_secrets())
    assert api.get_secret("DB_PASSWORD") == PLAINTEXT
    updated = api.set_secret("DB_PASSWORD", "rotated")
    assert updated.updated > updated.created == info.created
    assert api.get_secret("DB_PASSWORD") == "rotated"
    api.delete_secret("DB_PASSWORD")
    assert api.get_secret("DB_PASSWORD") is None
    with pytest.raises(ObjectNotFound, match="secret 'DB_PASSWORD' not found"):
        api.delete_secret("DB_PASSWORD")


@pytest.mark.usefixtures("backend")
def test_bad_name_is_refused_without_echoing_the_value(api):
    with pytest.raises(InvalidRequest) as info:
        api.set_secret("has space", PLAINTEXT)
    assert PLAINTEXT not in str(info.value)
    assert PLAINTEXT not in (info.value.hint or "")


@pytest.mark.usefixtures("backend")
def test_client_is_the_worker_secret_store(api, monkeypatch):
    monkeypatch.delenv("GIT_TOKEN", raising=False)
    api.set_secret("GIT_TOKEN", PLAINTEXT)
    assert isinstance(api, SecretStore)
    resolved = resolve_templates({"url": "https://x:${GIT_TOKEN}@h/r.git"}, store=api)
    assert isinstance(resolved["url"], Secret)
    assert resolved["url"].reveal() == f"https://x:{PLAINTEXT}@h/r.git"


def test_sqlite_file_never_holds_the_plaintext(settings):
    # Given a secret stored through the embedded app
    with connect(settings) as api:
        api.set_secret("TOKEN", PLAINTEXT)
        assert api.get_secret("TOKEN") == PLAINTEXT
    # Then neither the database nor its WAL contain the value
    db = settings.home / "conveyor.db"
    for path in [db, *db.parent.glob("conveyor.db-*")]:
        assert PLAINTEXT.encode() not in path.read_bytes(), path
    # And the generated key file is private
    key = settings.home / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.postgres
def test_postgres_rows_hold_only_ciphertext(settings, postgres_url):
    settings = dataclasses.replace(settings, database_url=postgres_url)
    with connect(settings) as api:
        api.set_secret("TOKEN", PLAINTEXT)
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        [stored] = conn.execute(text("SELECT ciphertext FROM secrets")).scalars()
    engine.dispose()
    assert PLAINTEXT.encode() not in bytes(stored)


def test_key_from_environment_is_used_instead_of_a_key_file(settings):
    keyed = dataclasses.replace(settings, secret_key=Secret("k" * 40))
    with connect(keyed) as api:
        api.set_secret("TOKEN", PLAINTEXT)
        assert api.get_secret("TOKEN") == PLAINTEXT
    assert not (settings.home / "secret.key").exists()
    # A server with another key cannot read it, and says so without the value.
    other = dataclasses.replace(settings, secret_key=Secret("z" * 40))
    with connect(other) as api:
        with pytest.raises(Exception, match="cannot be decrypted") as info:
            api.get_secret("TOKEN")
        assert PLAINTEXT not in str(info.value)


def test_concurrent_key_file_creation_yields_one_key(tmp_path: Path):
    from concurrent.futures import ThreadPoolExecutor

    from conveyor.server.secrets import load_key_file

    home = tmp_path / "keys"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: load_key_file(home), range(16)))
    assert len(keys) == 1
    assert [p.name for p in home.iterdir()] == ["secret.key"]
