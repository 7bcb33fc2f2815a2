"""The source registry: built-in kinds, install hints for missing extras, entry-point plugins."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import _registry
from conveyor._registry import (
    BUILTIN_SOURCES,
    ENTRY_POINT_GROUP,
    BackendSpec,
    get_source_class,
    known_kinds,
)
from conveyor.errors import ConfigError, MissingDependency
from conveyor.sources.base import source_from_spec, source_from_url
from conveyor.sources.local import LocalSource
from conveyor.sources.store import LocalStoreSource

PLUGIN_MODULE = """
from conveyor.sources.base import Source


class PluginSource(Source):
    kind = "{kind}"

    def __init__(self, where: str) -> None:
        self.where = where

    def resolve(self) -> str:
        return "v1"

    def fetch(self, version, dest, *, scratch=None) -> None:
        (dest / "flow.py").write_text("x = 1\\n")

    def to_spec(self):
        return {{"kind": self.kind, "where": self.where}}
"""


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Entry points are read once per process: forget them around each test."""
    _registry._all_specs.cache_clear()
    yield
    _registry._all_specs.cache_clear()


def install_plugin(
    site: Path, monkeypatch: pytest.MonkeyPatch, *, module: str, entries: dict[str, str]
) -> None:
    """A distribution on sys.path registering ``entries`` in the ``conveyor.sources`` group."""
    site.mkdir(exist_ok=True)
    dist = site / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_builtin_kinds_are_known_and_sorted() -> None:
    kinds = known_kinds()
    assert kinds == sorted(kinds)
    for kind in ("local", "store", "git", "s3", "gcs", "azure", "blob", "oci", "webhook"):
        assert kind in kinds


def test_builtin_classes_are_imported_on_demand() -> None:
    assert get_source_class("local") is LocalSource
    assert get_source_class("store") is LocalStoreSource


def test_unknown_kind_is_a_config_error_listing_the_kinds() -> None:
    with pytest.raises(ConfigError, match="unknown source kind 'ftp'") as caught:
        get_source_class("ftp")
    assert caught.value.hint is not None
    assert "local" in caught.value.hint
    assert "store" in caught.value.hint


def test_missing_extra_names_the_pip_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a backend whose module imports a dependency that is not installed
    (tmp_path / "conveyor_fake_cloud.py").write_text("import conveyor_fake_sdk_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = BackendSpec(
        "conveyor_fake_cloud:CloudSource", "fakecloud", ("conveyor_fake_sdk_not_installed",)
    )
    monkeypatch.setitem(BUILTIN_SOURCES, "fakecloud", spec)

    # When its class is asked for, then the error says which extra installs it
    with pytest.raises(MissingDependency) as caught:
        get_source_class("fakecloud")
    assert caught.value.extra == "fakecloud"
    assert caught.value.package == "conveyor_fake_sdk_not_installed"
    assert caught.value.hint == "pip install 'conveyor[fakecloud]'"
    assert "the fakecloud source needs the Python package" in str(caught.value)


def test_a_missing_module_that_is_not_the_extra_is_not_blamed_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conveyor_fake_buggy.py").write_text("import conveyor_typo_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = BackendSpec("conveyor_fake_buggy:X", "fakecloud", ("conveyor_fake_sdk",))
    monkeypatch.setitem(BUILTIN_SOURCES, "buggy", spec)
    with pytest.raises(ModuleNotFoundError, match="conveyor_typo_module"):
        get_source_class("buggy")


def test_entry_point_plugins_are_discovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an installed distribution that registers a source kind
    site = tmp_path / "site"
    install_plugin(
        site,
        monkeypatch,
        module="conveyor_plugin_demo",
        entries={"demo": "conveyor_plugin_demo:PluginSource"},
    )
    (site / "conveyor_plugin_demo.py").write_text(PLUGIN_MODULE.format(kind="demo"))

    # Then the kind is known, its class loads, and a stored spec rebuilds it
    assert "demo" in known_kinds()
    cls = get_source_class("demo")
    assert cls.__name__ == "PluginSource"
    source = source_from_spec({"kind": "demo", "where": "over there"})
    assert type(source) is cls
    assert source.to_spec() == {"kind": "demo", "where": "over there"}
    assert source.resolve() == "v1"


def test_a_plugin_cannot_replace_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    install_plugin(
        site,
        monkeypatch,
        module="conveyor_plugin_evil",
        entries={"local": "conveyor_plugin_evil:PluginSource"},
    )
    (site / "conveyor_plugin_evil.py").write_text(PLUGIN_MODULE.format(kind="local"))
    assert get_source_class("local") is LocalSource


@pytest.mark.parametrize(
    "target", ["conveyor_plugin_absent:Source", "conveyor_plugin_attr:Missing"]
)
def test_a_broken_plugin_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    site = tmp_path / "site"
    install_plugin(site, monkeypatch, module="conveyor_plugin_attr", entries={"broken": target})
    (site / "conveyor_plugin_attr.py").write_text("X = 1\n")
    with pytest.raises(ConfigError, match="source kind 'broken' could not be loaded") as caught:
        get_source_class("broken")
    assert target in str(caught.value)
    assert caught.value.hint is not None
    assert ENTRY_POINT_GROUP in caught.value.hint


@pytest.mark.parametrize(
    "location",
    ["project", "./project", "file://{root}/project", "{root}/project"],
)
def test_source_from_url_builds_a_local_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    monkeypatch.chdir(tmp_path)
    source = source_from_url(location.format(root=tmp_path))
    assert isinstance(source, LocalSource)
    assert source.path == tmp_path / "project"
    assert isinstance(source_from_url(tmp_path / "project"), LocalSource)


def test_source_from_url_with_an_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"no source handles URLs starting with ftp://") as caught:
        source_from_url("ftp://host/code")
    assert caught.value.hint is not None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"path": "/x"}, "source spec has no kind"),
        ({"kind": "nope"}, "unknown source kind 'nope'"),
        ({"kind": "local", "path": "/x", "branch": "main"}, "does not fit LocalSource"),
        ({"kind": "local"}, "does not fit LocalSource"),
    ],
)
def test_bad_spec_is_a_config_error(spec: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        source_from_spec(spec)
