"""One validation for names, versions and branches: the API refuses what the CLI refuses, with
the same sentence (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from conveyor import flow
from conveyor._cachefs import check_version as cache_check_version
from conveyor.cli import main
from conveyor.errors import CacheError, ConfigError
from conveyor.settings import Settings
from fixtures.frontends import FRONT_ENDS, front_end

GOOD = {
    "flow_name": "hello",
    "name": "prod",
    "entrypoint": "flows.py:hello",
    "source": {"kind": "local", "path": "/srv/flows"},
    "version": "sha256-" + "a" * 64,
}


@pytest.fixture(params=FRONT_ENDS)
def http(request, backend: Settings, monkeypatch, tmp_path) -> Iterator[httpx.Client]:
    """Raw HTTP to the real app; the CLI (run in-process) on the same database, in an empty
    working directory."""
    if backend.database_url:
        monkeypatch.setenv("CONVEYOR_DATABASE_URL", backend.database_url)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with front_end(request.param, backend) as client:
        yield client


def cli_error(capsys, *args: str) -> str:
    """The CLI's one-line error for ``args`` (and check it is one line plus a hint)."""
    code = main(list(args))
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 1, err
    assert lines[0].startswith("error: "), err
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), err
    return lines[0].removeprefix("error: ")


def api_error(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    detail: str = response.json()["detail"]
    assert "\n" not in detail
    return detail


def put_deployment(http: httpx.Client, **overrides: object) -> httpx.Response:
    return http.put("/api/deployments", json={**GOOD, **overrides})


@pytest.mark.parametrize(
    ("name", "sentence"),
    [
        ("../..", "deployment name '../..' is not valid: it contains '/' or '\\'"),
        ("nul\x00x", "deployment name 'nul\\x00x' is not valid: it contains the control char"),
        ("..", "deployment name '..' is not valid: '.' and '..' are not names"),
        (" padded", "deployment name ' padded' is not valid: it starts or ends with a space"),
        ("x" * 201, "is not valid: it is longer than 200 characters"),
    ],
)
def test_a_deployment_name_is_refused_alike_by_the_cli_and_the_api(http, capsys, name, sentence):
    from_cli = cli_error(capsys, "deploy", "flows.py:hello", "--name", name)
    from_api = api_error(put_deployment(http, name=name))

    assert sentence in from_cli
    assert from_api == f"invalid request: {from_cli}"
    assert http.get("/api/deployments").json() == []


def test_a_flow_name_is_refused_alike_by_the_decorator_and_the_api(http):
    with pytest.raises(ConfigError) as info:
        flow(name="etl/daily")(lambda: None)
    from_api = api_error(put_deployment(http, flow_name="etl/daily"))

    assert str(info.value) == "flow name 'etl/daily' is not valid: it contains '/' or '\\'"
    assert from_api == f"invalid request: {info.value}"


@pytest.mark.parametrize("branch", ["-evil", "a..b", "has space", "x.lock"])
def test_a_git_branch_is_refused_alike_by_the_cli_and_the_api(http, capsys, branch):
    url = "https://git.example.invalid/team/flows.git"  # refused before any network use
    from_cli = cli_error(
        capsys, "deploy", "flows.py:hello", "--name", "n", "--source", url, "--branch", branch
    )
    source = {"kind": "git", "url": url, "branch": branch}
    from_api = api_error(put_deployment(http, source=source))

    assert f"branch {branch!r} is not" in from_cli
    assert from_api == f"source: {from_cli}"
    assert http.get("/api/deployments").json() == []


def test_a_git_url_with_a_password_is_refused_by_the_api(http):
    source = {"kind": "git", "url": "https://user:hunter2@git.example.invalid/r.git"}
    from_api = api_error(put_deployment(http, source=source))
    assert from_api.startswith("source: the repository URL carries a password or token")
    assert "hunter2" not in from_api


@pytest.mark.parametrize(
    "version", ["../../../etc/passwd", "a..b", "v1.lock", "-x", "", "a/b", "sha256-\x00"]
)
def test_a_version_is_refused_alike_by_the_api_and_the_code_cache(http, version):
    from_api = api_error(put_deployment(http, version=version))
    with pytest.raises(CacheError):
        cache_check_version(version)

    assert from_api.startswith("invalid request: ")
    assert "is not a valid code version" in from_api
    assert http.get("/api/deployments").json() == []


@pytest.mark.parametrize("version", ["sha256-" + "b" * 64, "0" * 40, "sha256:" + "c" * 64])
def test_a_good_version_is_accepted_by_both(http, version):
    cache_check_version(version)
    response = put_deployment(http, version=version)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == version


@pytest.mark.parametrize("name", ["../x", "a b", "_gpu", "x" * 65])
def test_a_pool_name_is_refused_alike_by_the_cli_and_the_api(http, capsys, name):
    from_cli = cli_error(capsys, "pool", "create", name)
    from_api = api_error(http.post("/api/pools", json={"name": name}))
    from_deployment = api_error(put_deployment(http, work_pool=name))

    assert from_cli.endswith("is not a valid work pool name")
    assert from_api == from_deployment == f"invalid request: {from_cli}"
    assert [p["name"] for p in http.get("/api/pools").json()] == ["default"]


@pytest.mark.parametrize("name", ["a b", "1TOKEN", "x/y"])
def test_a_secret_name_is_refused_alike_by_the_cli_and_the_api(http, capsys, name):
    from_cli = cli_error(capsys, "secret", "set", name)
    response = http.put(f"/api/secrets/{name.replace('/', '%2F')}", json={"value": "v"})

    assert from_cli == f"{name!r} is not a valid secret name"
    if response.status_code == 404:  # an encoded '/' is not routed: never stored either
        assert "/" in name
    else:
        assert api_error(response) == from_cli
    assert http.get("/api/secrets").json() == []


@pytest.mark.parametrize("labels", [["a b"], ["gpu", ""], "gpu"])
def test_labels_are_checked_on_deployments_and_workers(http, labels):
    deployment = api_error(put_deployment(http, job_variables={"labels": labels}))
    beat = http.post(
        "/api/workers/heartbeat", json={"name": "w", "pool": "default", "labels": labels}
    )

    assert "label" in deployment
    assert beat.status_code == 422, beat.text
    assert http.get("/api/workers").json() == []


def test_the_names_a_user_writes_today_still_work(http, capsys):
    assert main(["pool", "create", "gpu-large.eu"]) == 0
    response = put_deployment(
        http,
        flow_name="nightly etl",
        name="prod_2 (eu)",
        work_pool="gpu-large.eu",
        job_variables={"labels": ["gpu", "region=eu", "host:build-01"]},
    )
    assert response.status_code == 200, response.text
    assert json.loads(response.text)["name"] == "prod_2 (eu)"
