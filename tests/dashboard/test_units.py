"""Fast logic tests of the dashboard's parts (the pages themselves are proven against a real
server in test_pages.py and test_browser.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.requests import Request

from conveyor._params import parameter_schema
from conveyor.errors import ConveyorError, InvalidRequest
from conveyor.secrets import Secret
from conveyor.server.dashboard.auth import CSRF_COOKIE, SESSION_COOKIE, Guard
from conveyor.server.dashboard.code import list_dir, safe_path, walk_files
from conveyor.server.dashboard.fmt import short_version, source_rows, version_kind
from conveyor.server.dashboard.forms import parameter_fields, parse_parameters
from conveyor.server.dashboard.history import timing_bar


def _request(cookies: dict[str, str]) -> Request:
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return Request({"type": "http", "headers": [(b"cookie", header.encode())]})


def test_sessions_are_signed_expire_and_follow_the_key() -> None:
    guard = Guard.create(Secret("key-one-0123456789"))
    cookie = guard.new_session()
    assert guard.signed_in(_request({SESSION_COOKIE: cookie}))
    assert not guard.signed_in(_request({}))
    assert not guard.signed_in(_request({SESSION_COOKIE: cookie[:-2] + "xx"}))
    old = guard.new_session(now=time.time() - 13 * 3600)
    assert not guard.signed_in(_request({SESSION_COOKIE: old}))
    # another server with the same key accepts it; a new key signs everyone out
    assert Guard.create(Secret("key-one-0123456789")).signed_in(_request({SESSION_COOKIE: cookie}))
    assert not Guard.create(Secret("key-two-0123456789")).signed_in(
        _request({SESSION_COOKIE: cookie})
    )
    assert guard.key_matches("key-one-0123456789")
    assert not guard.key_matches("key-one")


def test_csrf_tokens_belong_to_one_visitor() -> None:
    guard = Guard.create(None)
    assert not guard.login_required
    nonce, new = guard.csrf_nonce(_request({}))
    assert new
    mine = _request({CSRF_COOKIE: nonce})
    assert guard.csrf_nonce(mine) == (nonce, False)
    token = guard.csrf_token(nonce)
    assert guard.csrf_ok(mine, token)
    other, _ = guard.csrf_nonce(_request({}))
    assert not guard.csrf_ok(_request({CSRF_COOKIE: other}), token)
    assert not guard.csrf_ok(mine, "")
    assert not guard.csrf_ok(_request({}), token)
    assert guard.csrf_nonce(_request({CSRF_COOKIE: "<bad>"}))[1]  # a malformed cookie is replaced


def _flow(
    name: str,
    count: int = 3,
    ratio: float = 0.5,
    flag: bool = False,
    tags: list[str] | None = None,
    mode: str = "a",
) -> None: ...


def test_run_form_fields_follow_the_parameter_schema() -> None:
    schema = parameter_schema(_flow)
    fields = {f.name: f for f in parameter_fields(schema, {"count": 7})}
    assert [f.name for f in parameter_fields(schema, {})] == [
        "name",
        "count",
        "ratio",
        "flag",
        "tags",
        "mode",
    ]
    assert (fields["name"].widget, fields["name"].required, fields["name"].value) == (
        "text",
        True,
        "",
    )
    assert (fields["count"].widget, fields["count"].value) == ("integer", "7")
    assert fields["ratio"].widget == "number"
    assert (fields["flag"].widget, fields["flag"].checked) == ("checkbox", False)
    assert (fields["tags"].widget, fields["tags"].value) == ("json", "null")


def test_a_submitted_run_form_becomes_typed_parameters() -> None:
    schema = parameter_schema(_flow)
    form = {
        "param.name": "Ada",
        "param.count": "12",
        "param.ratio": "",
        "param.flag": "true",
        "param.tags": '["x", "y"]',
    }
    assert parse_parameters(schema, form, {}) == {
        "name": "Ada",
        "count": 12,
        "flag": True,
        "tags": ["x", "y"],
    }
    # a number that does not parse is passed on for validation to name it
    unparsed = parse_parameters(schema, {"param.name": "", "param.count": "many"}, {})
    assert unparsed["count"] == "many"
    with pytest.raises(InvalidRequest, match="parameter 'tags' is not valid JSON"):
        parse_parameters(schema, {"param.name": "x", "param.tags": "[1,"}, {})


def test_secret_parameters_are_never_filled_in() -> None:
    def needs_token(token: SecretStr) -> None: ...

    schema = parameter_schema(needs_token)
    (field,) = parameter_fields(schema, {"token": "s3cret"}, {"param.token": "s3cret"})
    assert (field.widget, field.value) == ("password", "")


def test_version_display_and_redacted_sources() -> None:
    commit = "a" * 40
    assert (version_kind(commit), short_version(commit)) == ("git commit", "a" * 12)
    digest = "sha256-" + "b" * 64
    assert (version_kind(digest), short_version(digest)) == ("bundle digest", digest[:19])
    rows = dict(source_rows({"kind": "git", "url": "https://user:tok3n@host/r.git?sig=abc"}))
    assert "tok3n" not in rows["url"]
    assert "abc" not in rows["url"]


def test_timing_bar_segments_fill_the_bar_in_phase_order() -> None:
    bar = timing_bar({"run": 3.0, "queue": 1.0, "fetch": 0.0, "custom": 4.0})
    assert [s.phase for s in bar] == ["queue", "fetch", "run", "custom"]
    assert [s.width for s in bar] == [12.5, 0.0, 37.5, 50.0]
    assert [s.x for s in bar] == [0.0, 12.5, 12.5, 50.0]
    assert timing_bar({}) == []


def test_paths_from_urls_stay_inside_the_checkout(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink("../secret.txt", root / "escape.txt")
    os.symlink(str(tmp_path), root / "up")
    assert safe_path(root, "pkg/mod.py") == root / "pkg" / "mod.py"
    for bad in ("../secret.txt", "pkg/../../secret.txt", "/etc/passwd/../x", "up/secret.txt"):
        with pytest.raises(ConveyorError):
            safe_path(root, bad)
    names = {e.name: e for e in list_dir(root, "")}
    assert names["escape.txt"].kind == "link"  # shown, not followed
    assert names["escape.txt"].target == "../secret.txt"
    assert sorted(walk_files(root)) == ["escape.txt", "pkg/mod.py", "up"]


def test_the_cache_counts_hits_and_misses_for_heartbeats(tmp_path: Path) -> None:
    from conveyor.cache import CodeCache
    from conveyor.sources.store import LocalStoreSource
    from conveyor.worker.loop import _cache_figures

    tree = tmp_path / "code"
    tree.mkdir()
    (tree / "flows.py").write_text("print('hi')\n")
    store = LocalStoreSource(tmp_path / "store")
    version = store.push(tree)
    cache = CodeCache(tmp_path / "cache", max_bytes=10**9)
    assert _cache_figures(cache) == {
        "cache_bytes": 0,
        "cache_entries": 0,
        "cache_hits": 0,
        "cache_misses": 0,
    }
    cache.ensure(store, version)
    cache.ensure(store, version)
    with cache.lease(store, version):
        pass
    figures = _cache_figures(cache)
    assert figures is not None
    assert (figures["cache_entries"], figures["cache_hits"], figures["cache_misses"]) == (1, 2, 1)
    assert figures["cache_bytes"] > 0


def test_heartbeat_cache_figures_are_stored_and_listed(settings) -> None:
    from conveyor.connect import connect

    with connect(settings) as api:
        api.worker_heartbeat("w-old", pool="default")  # a worker that sends no figures
        api.worker_heartbeat(
            "w-new",
            pool="default",
            cache={"cache_bytes": 2048, "cache_entries": 2, "cache_hits": 9, "cache_misses": 1},
        )
        workers = {w.name: w for w in api.list_workers()}
    assert workers["w-old"].cache_bytes is None
    new = workers["w-new"]
    assert (new.cache_bytes, new.cache_entries, new.cache_hits, new.cache_misses) == (2048, 2, 9, 1)
