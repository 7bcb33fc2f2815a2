"""Fixtures for run environments: a real package index of small wheels on loopback, and the
environment every test's uv sees (that index only, its own uv cache)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.package_index import PackageIndex, build_wheel

WHEELS = (
    ("cv-greeting", "1.0", 'VERSION = "1.0"\n', ("cv-dep",)),
    ("cv-greeting", "2.0", 'VERSION = "2.0"\n', ("cv-dep",)),
    ("cv-dep", "1.0", "DEP = True\n", ()),
    ("cv-extra", "1.0", 'EXTRA = "extra 1.0"\n', ()),
)


@pytest.fixture(scope="session")
def package_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageIndex]:
    """A PEP 503 index on 127.0.0.1 serving cv-greeting 1.0 and 2.0 (both need cv-dep),
    cv-dep and cv-extra; it records every request."""
    root = tmp_path_factory.mktemp("index")
    for name, version, source, requires in WHEELS:
        build_wheel(root / "wheels", name, version, source, requires=requires)
    index = PackageIndex.start(root / "wheels", root / "requests.log")
    try:
        yield index
    finally:
        index.stop()


@pytest.fixture
def index_env(
    package_index: PackageIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> PackageIndex:
    """uv sees only the test index and keeps its downloads in this test's directory."""
    for name in (
        "UV_DEFAULT_INDEX",
        "UV_INDEX",
        "UV_EXTRA_INDEX_URL",
        "UV_FIND_LINKS",
        "UV_NO_INDEX",
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_FIND_LINKS",
        "PIP_NO_INDEX",
        "EXTRA_PIP_PACKAGES",
        "VIRTUAL_ENV",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UV_INDEX_URL", package_index.url)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    return package_index
