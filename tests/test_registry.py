"""`Registry[T]` and its four uses: sources (with the URL-scheme map), steps, executors and result
stores. Built-ins are imported on demand, install hints name the extra, entry-point plug-ins are
discovered, ``register`` adds at run time, and nothing ever fails as a raw import error."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor._registry import Entry, Registry
from conveyor.errors import ConfigError, MissingDependency
from conveyor.results import RESULT_STORES
from conveyor.sources import SOURCES, source_from_spec, source_from_url
from conveyor.sources.git import GitRepository
from conveyor.sources.local import LocalSource
from conveyor.sources.store import BundleStore
from conveyor.steps import STEPS
from conveyor.worker.executors import EXECUTORS

PLUGIN_MODULE = """
from conveyor.sources.base import Source


class PluginSource(Source):
    kind = "{kind}"

    def __init__(self, where: str) -> None:
        self.where = where

    def resolve(self, ctx=None) -> str:
        return "v1"

    def fetch(self, version, dest, ctx=None) -> None:
        (dest / "flow.py").write_text("x = 1\\n")

    def to_spec(self):
        return {{"kind": self.kind, "where": self.where}}
"""


@pytest.fixture
def registry() -> Registry[object]:
    """A fresh registry of the sources' entry-point group (what plug-ins register in)."""
    return Registry("source kind", group="conveyor.sources", builtins={})


@pytest.fixture(autouse=True)
def forget_plugins() -> Iterator[None]:
    """Entry points are read once per registry: read them again around each test."""
    SOURCES._plugins = None
    yield
    SOURCES._plugins = None


def install_plugin(
    site: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    module: str,
    entries: dict[str, str],
    group: str = "conveyor.sources",
) -> None:
    """A distribution on sys.path registering ``entries`` in the entry-point ``group``."""
    site.mkdir(exist_ok=True)
    dist = site / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (dist / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_every_family_uses_the_one_registry() -> None:
    for family in (SOURCES, STEPS, EXECUTORS, RESULT_STORES):
        assert isinstance(family, Registry)
    assert {"blob", "flow-file", "git", "local", "module", "oci", "store", "webhook"} <= set(
        SOURCES.names()
    )
    assert "process" in EXECUTORS
    assert {"git_clone", "set_working_directory", "run_shell_script"} <= set(STEPS.names())
    assert "local" in RESULT_STORES


def test_no_row_for_a_backend_that_does_not_exist() -> None:
    # Every built-in row of every family imports: no phantom backend is advertised.
    for family in (SOURCES, EXECUTORS, RESULT_STORES):
        for name in family.names():
            assert family.get(name) is not None


def test_builtin_classes_are_imported_on_demand() -> None:
    assert SOURCES.get("local") is LocalSource
    assert SOURCES.get("store") is BundleStore
    assert SOURCES.get("git") is GitRepository


def test_unknown_name_is_a_config_error_listing_the_names() -> None:
    with pytest.raises(ConfigError, match="unknown source kind 'ftp'") as caught:
        SOURCES.get("ftp")
    assert caught.value.hint is not None
    assert "local" in caught.value.hint
    assert "git" in caught.value.hint


def test_missing_extra_names_the_pip_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry[object]
) -> None:
    # Given a backend whose module imports a dependency that is not installed
    (tmp_path / "conveyor_fake_cloud.py").write_text("import conveyor_fake_sdk_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.register(
        "fakecloud",
        Entry("conveyor_fake_cloud:CloudSource", "fakecloud", ("conveyor_fake_sdk_not_installed",)),
    )

    # When its class is asked for, then the error says which extra installs it
    with pytest.raises(MissingDependency) as caught:
        registry.get("fakecloud")
    assert caught.value.extra == "fakecloud"
    assert caught.value.package == "conveyor_fake_sdk_not_installed"
    assert caught.value.hint == "pip install 'conveyor[fakecloud]'"
    assert "the fakecloud source kind needs the Python package" in str(caught.value)


def test_a_missing_module_that_is_not_the_extra_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry[object]
) -> None:
    (tmp_path / "conveyor_fake_buggy.py").write_text("import conveyor_typo_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.register("buggy", Entry("conveyor_fake_buggy:X", "fakecloud", ("conveyor_fake_sdk",)))
    with pytest.raises(ConfigError, match="conveyor_typo_module"):
        registry.get("buggy")


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

    # Then the kind is known, its class loads, a stored spec rebuilds it, and its scheme routes
    assert "demo" in SOURCES.names()
    cls = SOURCES.get("demo")
    assert cls.__name__ == "PluginSource"
    source = source_from_spec({"kind": "demo", "where": "over there"})
    assert type(source) is cls
    assert source.to_spec() == {"kind": "demo", "where": "over there"}
    assert source.resolve() == "v1"
    assert type(source_from_url("demo://over/there")) is cls


def test_a_plugin_cannot_replace_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    install_plugin(
        site,
        monkeypatch,
        module="conveyor_plugin_evil",
        entries={"local": "conveyor_plugin_evil:PluginSource"},
    )
    (site / "conveyor_plugin_evil.py").write_text(PLUGIN_MODULE.format(kind="local"))
    assert SOURCES.get("local") is LocalSource


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
        SOURCES.get("broken")
    assert target in str(caught.value)
    assert caught.value.hint is not None
    assert "conveyor.sources" in caught.value.hint


def test_register_at_run_time_and_replace(registry: Registry[object]) -> None:
    registry.register("thing", "conveyor.sources.local:LocalSource")
    assert registry.get("thing") is LocalSource
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("thing", BundleStore)
    registry.register("thing", BundleStore, replace=True)
    assert registry.get("thing") is BundleStore
    registry.unregister("thing")
    assert "thing" not in registry


@pytest.mark.parametrize(
    "location",
    ["project", "./project", "file://{root}/project", "{root}/project"],
)
def test_source_from_url_builds_a_local_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "project").mkdir()
    source = source_from_url(location.format(root=tmp_path))
    assert isinstance(source, LocalSource)
    assert source.path == tmp_path / "project"
    assert isinstance(source_from_url(tmp_path / "project"), LocalSource)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/o/r.git",
        "git+https://github.com/o/r",
        "git+http://h/o/r",
        "ssh://git@h/o/r",
        "git@github.com:o/r.git",
        "git://h/o/r",
    ],
)
def test_git_urls_say_they_are_git(url: str) -> None:
    source = source_from_url(url)
    assert isinstance(source, GitRepository)
    assert not source.url.startswith("git+")


def test_a_file_url_of_a_git_repository_is_git(tmp_path: Path) -> None:
    bare = tmp_path / "repo.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    worktree = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(worktree)], check=True)
    assert isinstance(source_from_url(bare.as_uri()), GitRepository)
    assert isinstance(source_from_url(worktree.as_uri()), GitRepository)
    plain = tmp_path / "plain"
    plain.mkdir()
    assert isinstance(source_from_url(plain.as_uri()), LocalSource)


def test_plain_https_is_not_guessed_to_be_git() -> None:
    with pytest.raises(ConfigError, match="no source handles https:// URLs") as caught:
        source_from_url("https://example.com/hooks/flow")
    assert caught.value.hint is not None
    assert "git+https://" in caught.value.hint


@pytest.mark.parametrize("scheme", ["nosuch", "zz9"])
def test_an_unknown_scheme_is_one_line_naming_the_supported_ones(scheme: str) -> None:
    with pytest.raises(ConfigError, match=rf"no source handles {scheme}:// URLs") as caught:
        source_from_url(f"{scheme}://bucket/prefix")
    assert "\n" not in str(caught.value)
    assert caught.value.hint is not None
    assert "file://" in caught.value.hint
    assert "git+https://" in caught.value.hint


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


def test_cli_deploy_from_an_unsupported_scheme_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "conveyor"),
            "deploy",
            "f.py:f",
            "-n",
            "x",
            "--source",
            "nosuch://b/p",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: no source handles nosuch:// URLs"
    assert lines[1].startswith("hint: use a folder path")
