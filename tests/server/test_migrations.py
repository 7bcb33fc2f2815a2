"""Migrations: the head, the schema they make, concurrent first starts, and packaging."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from conveyor.server.db import Database
from conveyor.server.migrate import HEAD, alembic_config, ensure_schema
from conveyor.server.tables import Base

ROOT = Path(__file__).resolve().parents[2]
# The build backend comes from uv's cache; read where it is before tests move HOME.
UV_CACHE = os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache" / "uv")


def test_head_constant_matches_the_migration_scripts():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_migrated_schema_matches_the_tables(backend, tmp_path, request):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else (f"sqlite:///{tmp_path / 'm.db'}")
    )
    db = Database(url)
    ensure_schema(db)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        pools = conn.execute(text("SELECT name, type FROM pools")).all()
    db.dispose()
    assert diff == []
    assert pools == [("default", "process")]


def test_a_migrated_database_is_checked_without_importing_alembic(settings):
    ensure_schema(Database(settings.effective_database_url))
    code = (
        "import sys\n"
        "from conveyor.server.db import Database\n"
        "from conveyor.server.migrate import ensure_schema\n"
        f"ensure_schema(Database({settings.effective_database_url!r}))\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


CONCURRENT_START = """
import sys
from conveyor.server.db import Database
from conveyor.server.migrate import ensure_schema
print("ready", flush=True)
sys.stdin.readline()
db = Database(sys.argv[1])
ensure_schema(db)
db.dispose()
print("done", flush=True)
"""


def start_together(url: str, count: int) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_START, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for proc in procs:  # barrier: every process has imported everything
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_concurrent_first_starts_migrate_once(backend, tmp_path, request):
    # Given an empty database and four processes released at the same moment
    url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else (f"sqlite:///{tmp_path / 'race.db'}")
    )
    # When each brings the schema up to date
    results = start_together(url, 4)
    # Then all succeed and the schema and the default pool exist once
    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("done")
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            HEAD
        ]
        assert conn.execute(text("SELECT count(*) FROM pools")).scalar_one() == 1
    engine.dispose()


@pytest.mark.slow
def test_the_wheel_ships_migrations_that_run(tmp_path):
    # Given a wheel built from this tree (offline, with the cached build backend)
    from conveyor._uv import find_uv

    uv = find_uv()  # the uv package's binary when none is on PATH (Conveyor depends on it)
    built = subprocess.run(
        [uv, "build", "--wheel", "--offline", "-o", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "UV_CACHE_DIR": UV_CACHE},
    )
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel offline here: {built.stderr.strip()[-200:]}")
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "conveyor/server/migrations/env.py" in names
    assert "conveyor/server/migrations/script.py.mako" in names
    assert "conveyor/server/migrations/versions/r0001_initial.py" in names
    # When the unpacked wheel (not the source tree) migrates a fresh database
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import conveyor.server.migrate as m\n"
        "from conveyor.server.db import Database\n"
        f"m.ensure_schema(Database('sqlite:///{tmp_path / 'w.db'}'))\n"
        "print(m.__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n" + code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    # Then it ran from the wheel's files and made the schema
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(site))
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
    engine.dispose()
