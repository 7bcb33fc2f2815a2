"""`conveyor._collector.paused`: the cyclic collector off during a cache fill and back after it,
overlapping pauses across threads, and a process that turned the collector off keeping it off."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor._collector import paused
from conveyor.bundles import compute_version
from conveyor.cache import CodeCache
from conveyor.sources.local import LocalSource


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_a_cache_fill_runs_with_the_collector_paused_and_gives_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text("X = 1\n")
    seen: list[bool] = []
    fetch = LocalSource.fetch

    def watching(self: LocalSource, *args: object, **kwargs: object) -> None:
        seen.append(gc.isenabled())
        fetch(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalSource, "fetch", watching)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    with cache.checkout(LocalSource(project), compute_version(project)) as tree:
        assert (tree / "flows.py").read_text() == "X = 1\n"
        assert seen == [False]
        assert gc.isenabled()


def test_a_fill_that_fails_gives_the_collector_back(tmp_path: Path) -> None:
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    with pytest.raises(Exception, match="does not exist"):
        with cache.checkout(LocalSource(tmp_path / "missing"), "sha256-" + "0" * 64):
            pass
    assert gc.isenabled()


def test_overlapping_pauses_end_with_the_last_one() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    states: dict[str, bool] = {}

    def first() -> None:
        with paused():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with paused():
            second_in.set()
            first_out.wait(10)
            states["after the first ended"] = gc.isenabled()
        states["after both ended"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert states == {"after the first ended": False, "after both ended": True}


def test_a_collector_turned_off_stays_off() -> None:
    gc.disable()
    with paused():
        with paused():
            assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_pause_released_from_another_thread_keeps_a_blocks_pause() -> None:
    # Given a pause released by a timer (the conveyor process's first second), once only
    from conveyor._collector import pause

    release = pause()
    timer = threading.Timer(0.05, release)
    with paused():  # a cache fill that began in that second
        timer.start()
        timer.join(10)
        # Then the timer ending its pause does not end the fill's
        assert not gc.isenabled()
    # And the collector is back when the last pause ends; a second release changes nothing
    assert gc.isenabled()
    release()
    with paused():
        assert not gc.isenabled()
    assert gc.isenabled()
