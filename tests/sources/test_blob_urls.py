"""Malformed store and source URLs (``s3:/bucket``, ``s3://``) are refused in one line with the
form that was meant, instead of silently becoming a local folder named ``s3:``."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor._urltypo import url_typo
from conveyor.errors import ConfigError
from conveyor.settings import Settings
from conveyor.sources import source_from_url
from conveyor.sources.local import LocalSource
from conveyor.sources.store import BundleStore
from e2e.conftest import command_env, conveyor, one_line_error
from worker.flows_project import write_project


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("s3:/bundles/conveyor", "s3://bundles/conveyor"),
        ("s3://", "s3://BUCKET/PREFIX"),
        ("s3:", "s3://BUCKET/PREFIX"),
        ("s3:///bucket/x", "s3://bucket/x"),
        ("GS:/b/x", "gs://b/x"),
        ("myfs:/b/x", "myfs://b/x"),
        ("file:/tmp/store", "file:///tmp/store"),
        ("s3://bucket/x", None),
        ("file:///tmp/store", None),
        ("server", None),
        ("/data/a:b/store", None),
        ("./v1:2", None),
        ("notes:v1", None),
        ("C:/store", None),
    ],
)
def test_url_typos(text: str, meant: str | None) -> None:
    assert url_typo(text) == meant


@pytest.mark.parametrize("value", ["s3:/bundles/conveyor", "s3://", "gs:", "az:///c/p"])
def test_a_malformed_bundle_store_setting_is_refused_naming_the_setting(
    value: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CONVEYOR_HOME": str(tmp_path), "CONVEYOR_BUNDLE_STORE": value})
    message = str(caught.value)
    assert message.startswith(f"CONVEYOR_BUNDLE_STORE={value!r} is not a valid URL: write ")
    assert "\n" not in message


@pytest.mark.parametrize(
    "value", ["s3://b/conveyor", "server", "/tmp/a:b/store", "relative:dir", "file:///tmp/s"]
)
def test_valid_bundle_store_settings_pass(value: str, tmp_path: Path) -> None:
    settings = Settings.from_env({"CONVEYOR_HOME": str(tmp_path), "CONVEYOR_BUNDLE_STORE": value})
    assert settings.bundle_store == value


def test_a_bundle_store_made_from_a_malformed_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"write s3://bundles/conveyor"):
        BundleStore("s3:/bundles/conveyor")
    with pytest.raises(ConfigError, match=r"write s3://BUCKET/PREFIX"):
        BundleStore("s3://")
    colon = tmp_path / "a:b"
    assert BundleStore(colon).url == str(colon)
    assert BundleStore(str(colon)).url == str(colon)


def test_a_malformed_credentials_url_is_shown_redacted() -> None:
    with pytest.raises(ConfigError) as caught:
        BundleStore("s3:/key:s3cr3t@bucket/x")
    assert "s3cr3t" not in str(caught.value)


def test_a_source_with_one_slash_asks_whether_the_url_was_meant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        source_from_url("s3:/my-bucket/flows")
    assert "did you mean s3://my-bucket/flows" in str(caught.value)
    assert "\n" not in str(caught.value)

    # A folder whose name only looks like a scheme is still a folder, when it exists
    (tmp_path / "s3:" / "my-bucket").mkdir(parents=True)
    assert isinstance(source_from_url("s3:/my-bucket"), LocalSource)
    # and a colon anywhere else, or after an unknown word, is an ordinary path
    assert isinstance(source_from_url("notes:/x"), LocalSource)
    assert isinstance(source_from_url(str(tmp_path / "a:b")), LocalSource)


@pytest.mark.parametrize("store", ["s3:/bundles/conveyor", "s3://"])
def test_deploy_with_a_malformed_bundle_store_writes_nothing(store: str, tmp_path: Path) -> None:
    # Given a project and a bundle store setting with a scheme typo
    project = write_project(tmp_path / "project")
    env = command_env(CONVEYOR_BUNDLE_STORE=store)

    # When it is deployed, then the deploy fails in one line naming the setting and the form
    error = one_line_error(
        conveyor("deploy", "flows.py:hello", "--name", "x", env=env, cwd=project)
    )
    assert "CONVEYOR_BUNDLE_STORE" in error
    assert "write s3://" in error
    # And no folder named after the scheme was made
    assert not (project / "s3:").exists()


def test_deploy_from_a_one_slash_source_url_asks_whether_the_url_was_meant(
    tmp_path: Path,
) -> None:
    project = write_project(tmp_path / "project")
    result = conveyor(
        "deploy", "flows.py:hello", "--name", "x", "--source", "s3:/my-bucket/flows",
        env=command_env(), cwd=project,
    )  # fmt: skip
    assert "did you mean s3://my-bucket/flows" in one_line_error(result)
