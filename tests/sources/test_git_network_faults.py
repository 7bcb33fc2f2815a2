# ruff: noqa: F401, F811  (fixtures imported from fixtures.git_server are parameters here)
"""Git through a fault-injecting TCP proxy on 127.0.0.1, in front of the real smart-HTTP server:
outages longer than the old retry window (three tries over about 2 s) are ridden out within the
retry budget (``CONVEYOR_NETWORK_RETRY_SECONDS``, through the fetch context); a budget shorter
than the outage fails with a one-line `SourceUnavailable`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache_helpers import tree_files
from conveyor.cache import CodeCache
from conveyor.errors import SourceUnavailable
from conveyor.settings import Settings
from conveyor.sources.base import FetchContext
from conveyor.sources.git import GitRepository
from conveyor.sources.git.credentials import GitHubCredentials
from fixtures.faulty_proxy import FaultyProxy, faulty_proxy_for
from fixtures.git_server import DEFAULT_TOKEN, GitHttpServer, Repos, git_http, git_repos_root, repos

pytestmark = pytest.mark.service

OUTAGE = 3.0
"""Seconds the git host is unreachable: longer than the old retry window (three tries, 2 s)."""


@pytest.fixture
def proxy(git_http: GitHttpServer) -> Iterator[FaultyProxy]:
    yield from faulty_proxy_for(git_http.port)


def cache_with_budget(tmp_path: Path, seconds: str) -> CodeCache:
    settings = Settings.from_env(
        {"CONVEYOR_HOME": str(tmp_path / "home"), "CONVEYOR_NETWORK_RETRY_SECONDS": seconds}
    )
    return CodeCache(tmp_path / "cache", max_bytes=10**8, context=FetchContext(settings=settings))


@pytest.mark.parametrize("fault", ["refuse", "reset"])
def test_a_fetch_rides_out_an_outage_longer_than_the_old_retry_window(
    fault: str,
    repos: Repos,
    proxy: FaultyProxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a deployed commit of a repository served through the proxy, and a 30 s budget
    repo = repos.make("outage")
    sha = repo.commit({"flow.py": "WORD = 'through the outage'\n"})
    source = GitRepository(proxy.url(repo.bare.name), credentials=GitHubCredentials(DEFAULT_TOKEN))
    cache = cache_with_budget(tmp_path, "30")

    # When the git host is unreachable for 3 s just as a worker fetches the commit
    getattr(proxy, fault)(OUTAGE)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="conveyor.sources.git._cmd"):
        path = cache.ensure(source, sha)
    elapsed = time.monotonic() - started

    # Then the fetch was retried past the outage and returned exactly the pinned code
    assert tree_files(path) == {"flow.py": b"WORD = 'through the outage'\n"}
    assert OUTAGE - 0.1 <= elapsed < 30
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) >= 2
    assert all("budget_s=30" in line for line in retries)
    if fault == "reset":
        assert proxy.resets >= len(retries)
    assert proxy.accepted >= 1


def test_a_budget_shorter_than_the_outage_fails_in_one_line(
    repos: Repos, proxy: FaultyProxy, tmp_path: Path
) -> None:
    # Given a 1 s retry budget and a 6 s outage
    repo = repos.make("short-budget")
    sha = repo.commit({"flow.py": "WORD = 1\n"})
    url = proxy.url(repo.bare.name)
    source = GitRepository(url, credentials=GitHubCredentials(DEFAULT_TOKEN))
    cache = cache_with_budget(tmp_path, "1")
    proxy.refuse(6.0)

    # When the commit is fetched
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as caught:
        cache.ensure(source, sha)
    elapsed = time.monotonic() - started

    # Then it gave up after about the budget, not the outage, with one line naming the host
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"git server unreachable: fetching {sha} from {url}: ")
    assert "Failed to connect" in message
    assert caught.value.hint == SourceUnavailable.default_hint
    assert 1.0 <= elapsed < 5.5  # the 1 s budget, not the 6 s outage
    assert [e.kind for e in cache.entries()] == ["scratch"]  # the (empty) mirror, no checkout
