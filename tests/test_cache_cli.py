"""`conveyor cache ls | info | prune`, run as a real command against the isolated CONVEYOR_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cache_helpers import FakeSource, distinct_size, expected_files
from conveyor.cache import CodeCache
from conveyor.cli.cache import format_size
from conveyor.settings import Settings

BIG = "sha256-" + "a" * 64


def size_of(version: str) -> int:
    return sum(len(b) for b in expected_files(version, 1000).values())


def conveyor(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def filled(settings: Settings, tmp_path: Path) -> tuple[CodeCache, FakeSource]:
    cache = CodeCache.from_settings(settings)
    source = FakeSource("app", state=str(tmp_path / "state"))
    cache.ensure(source, BIG)
    cache.ensure(source, "v2")
    return cache, source


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (5 * 1024**2 + 1, "5.0 MiB"),
        (3 * 1024**3, "3.0 GiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


def test_ls_and_info_on_an_empty_cache(settings: Settings) -> None:
    ls = conveyor("cache", "ls")
    assert ls.returncode == 0, ls.stderr
    assert f"the code cache at {settings.cache_dir} is empty" in ls.stdout
    info = conveyor("cache", "info")
    assert info.returncode == 0, info.stderr
    assert str(settings.cache_dir) in info.stdout
    assert "2.0 GiB (2147483648 bytes)" in info.stdout


def test_ls_lists_every_version_with_size_and_lease(
    filled: tuple[CodeCache, FakeSource],
) -> None:
    cache, source = filled
    with cache.lease(source, "v2"):
        result = conveyor("cache", "ls")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    first = next(line for line in lines if BIG in line)
    second = next(line for line in lines if " v2 " in line)
    assert lines.index(first) < lines.index(second)  # least recently used first
    for line, version, leased in ((first, BIG, "no"), (second, "v2", "yes")):
        assert source.describe() in line
        assert f" {format_size(size_of(version))} " in line
        assert line.rstrip(" │").endswith(leased)


def test_info_totals(filled: tuple[CodeCache, FakeSource], settings: Settings) -> None:
    result = conveyor("cache", "info")
    assert result.returncode == 0, result.stderr
    assert str(settings.cache_dir) in result.stdout
    assert f"({distinct_size(BIG, 'v2')} bytes)" in result.stdout  # shared files once
    assert [line.split()[-1] for line in result.stdout.splitlines()[-2:]] == ["2", "0"]


def test_prune_to_a_size_evicts_oldest(filled: tuple[CodeCache, FakeSource]) -> None:
    cache, _ = filled
    result = conveyor("cache", "prune", "--max-bytes", str(size_of("v2")))
    assert result.returncode == 0, result.stderr
    assert BIG in result.stdout
    assert "evicted 1 version(s)" in result.stdout
    assert [e.version for e in cache.entries()] == ["v2"]

    empty = conveyor("cache", "prune", "--max-bytes", "0")
    assert "evicted 1 version(s)" in empty.stdout
    assert "cache now 0 B in 0 version(s)" in empty.stdout
    assert cache.entries() == []


def test_prune_with_default_budget_keeps_what_fits(filled: tuple[CodeCache, FakeSource]) -> None:
    result = conveyor("cache", "prune")
    assert result.returncode == 0, result.stderr
    assert "evicted 0 version(s), freed 0 B; cache now" in result.stdout
    assert len(filled[0].entries()) == 2


def test_prune_rejects_a_bad_size() -> None:
    result = conveyor("cache", "prune", "--max-bytes", "lots")
    assert result.returncode == 1
    assert "--max-bytes 'lots' is not a size" in result.stderr
    assert "Traceback" not in result.stderr


def test_scratch_directories_are_listed_counted_and_pruned(
    settings: Settings, tmp_path: Path
) -> None:
    # Given a source that keeps 4 KiB in its scratch directory (as git keeps its mirror)
    cache = CodeCache.from_settings(settings)
    source = FakeSource("mirrored", state=str(tmp_path / "state"), scratch=True, scratch_bytes=4096)
    cache.ensure(source, "v1")

    # Then ls shows it as an entry of its own, info counts it, prune evicts it and says so
    listed = conveyor("cache", "ls")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if " scratch " in line)
    assert source.describe() in row
    assert " - " in row
    assert " 4.0 KiB " in row
    info = conveyor("cache", "info")
    assert "4.0 KiB in 1 directory" in info.stdout
    assert f"({size_of('v1') + 4096} bytes)" in info.stdout
    pruned = conveyor("cache", "prune", "--max-bytes", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert (
        f"evicted 1 version(s) and 1 scratch directory, freed {format_size(size_of('v1') + 4096)}"
        in pruned.stdout
    )
    assert "cache now 0 B in 0 version(s)" in pruned.stdout
    assert cache.entries() == []
