"""`EnvCache` under the cache's rules: single-flight across processes, nothing trusted after a
SIGKILL mid-build, counted in the budget, evicted least recently used but never while leased;
plus the digest, requirements files and uv's errors as one line."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conveyor._uv import find_uv, uv_failure
from conveyor.cache import CodeCache
from conveyor.envs import EnvCache, EnvSpec, IndexSettings, read_requirements
from conveyor.errors import ConfigError, InstallError
from fixtures.package_index import PackageIndex
from fixtures.ports import wait_until


def spec(index: PackageIndex, requirements: str = "cv-greeting==1.0") -> EnvSpec:
    return EnvSpec(requirements=requirements, index=IndexSettings(index_url=index.url))


def imports(env_python: Path, module: str) -> str:
    done = subprocess.run(
        [str(env_python), "-c", f"import {module}; print({module}.__name__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def test_an_environment_is_read_only_and_layered_over_the_worker(
    index_env: PackageIndex, tmp_path: Path
) -> None:
    cache = EnvCache(tmp_path / "cache", max_bytes=10**9)
    env = cache.ensure(spec(index_env))
    assert env.built
    assert imports(env.python, "cv_greeting") == "cv_greeting"
    assert imports(env.python, "conveyor.worker.child") == "conveyor.worker.child"
    site_packages = next(env.path.glob("lib/python*/site-packages"))
    assert stat.S_IMODE((site_packages / "cv_greeting" / "__init__.py").stat().st_mode) == 0o444
    assert stat.S_IMODE(site_packages.stat().st_mode) == 0o555  # sealed like a checkout
    meta = json.loads((env.path.parent / f"{env.digest}.meta.json").read_text())
    assert meta["kind"] == "env"
    assert meta["size"] > 0
    assert meta["index"] == index_env.url


def test_concurrent_processes_build_one_environment(
    index_env: PackageIndex, tmp_path: Path
) -> None:
    # Given three processes asking for the same environment at the same moment
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from conveyor.envs import EnvCache, EnvSpec, IndexSettings
        while not Path({str(go)!r}).exists():
            time.sleep(0.005)
        index = IndexSettings(index_url={index_env.url!r})
        spec = EnvSpec(requirements="cv-greeting==2.0", index=index)
        env = EnvCache(Path({str(tmp_path / "cache")!r}), max_bytes=10**9).ensure(spec)
        print(env.built, env.path)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    before = len(index_env.requests())
    go.touch()
    answers = [proc.communicate(timeout=120)[0].split() for proc in procs]

    # Then exactly one built it, and all three use the same directory
    assert sorted(a[0] for a in answers) == ["False", "False", "True"]
    assert len({a[1] for a in answers}) == 1
    asked = [r for r in index_env.requests()[before:] if r == "GET /simple/cv-greeting/"]
    assert len(asked) == 1  # one resolution: one uv run


def test_a_sigkill_mid_build_leaves_nothing_trusted(
    index_env: PackageIndex, tmp_path: Path
) -> None:
    # Given a build whose `uv pip install` has finished but whose process is killed before the
    # environment is sealed and renamed into place (uv is wrapped to stop there)
    marker = tmp_path / "installed"
    wrapper = tmp_path / "uv-wrapper"
    wrapper.write_text(
        f'#!/bin/sh\n"{find_uv()}" "$@"\nrc=$?\n'
        f'if [ "$1" = "pip" ]; then touch "{marker}"; sleep 60; fi\nexit $rc\n'
    )
    wrapper.chmod(0o755)
    root = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from conveyor.envs import EnvCache, EnvSpec, IndexSettings
        index = IndexSettings(index_url={index_env.url!r})
        spec = EnvSpec(requirements="cv-greeting==1.0", index=index)
        EnvCache(Path({str(root)!r}), max_bytes=10**9, uv={str(wrapper)!r}).ensure(spec)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        assert wait_until(marker.exists, timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    # Then only a temporary directory is left: no environment a run would use
    envs = root / ".envs"
    wanted = EnvCache(root, max_bytes=10**9).path_for(spec(index_env))
    assert not wanted.exists()
    assert [p.name.startswith(".tmp-") for p in envs.iterdir() if p.is_dir()] == [True]

    # And the next request builds it afresh (the lock died with the process) and sweeps the debris
    env = EnvCache(root, max_bytes=10**9).ensure(spec(index_env))
    assert env.built
    assert env.path == wanted
    assert imports(env.python, "cv_greeting") == "cv_greeting"
    assert [p.name for p in envs.iterdir() if p.is_dir()] == [wanted.name]


def test_environments_count_in_the_budget_and_are_not_evicted_while_leased(
    index_env: PackageIndex, tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    old_spec, new_spec = spec(index_env, "cv-greeting==1.0"), spec(index_env, "cv-greeting==2.0")
    cache = EnvCache(root, max_bytes=10**9)
    code = CodeCache(root, max_bytes=10**9)
    with cache.lease(old_spec) as old:
        size = next(e.size for e in code.entries() if e.version == old.digest)
        assert size > 0
        # A budget that holds one environment: building the second cannot evict the leased one
        tight = EnvCache(root, max_bytes=size + size // 2)
        time.sleep(0.01)
        new = tight.ensure(new_spec)
        assert old.path.is_dir()
        assert new.path.is_dir()
        info = code.info()
        assert info.entry_count == 2
        assert info.leased_count == 1
    # Once the run is over, the least recently used one goes first (the lease's end was a use
    # of the old one; a warm request for the new one makes the old one the older)
    time.sleep(0.01)
    assert not tight.ensure(new_spec).built
    evicted = code.prune(max_bytes=size + size // 2)
    assert [e.version for e in evicted] == [old.digest]
    assert [e.kind for e in evicted] == ["env"]
    assert not old.path.exists()
    assert new.path.is_dir()


def test_the_digest_follows_what_is_installed_and_from_where() -> None:
    base = EnvSpec(requirements="a==1\nb==2", packages=("c",))
    assert (
        base.digest()
        == EnvSpec(requirements="# deps\na==1  # pinned\n\nb==2", packages=("c",)).digest()
    )
    assert base.digest() == EnvSpec(requirements="a==1\nb==2", packages=("c", "c")).digest()
    assert base.digest() != EnvSpec(requirements="a==1\nb==3", packages=("c",)).digest()
    assert base.digest() != EnvSpec(requirements="a==1\nb==2", packages=("d",)).digest()
    moved = EnvSpec(requirements="a==1\nb==2", packages=("c",), index=IndexSettings("http://x/"))
    assert base.digest() != moved.digest()


def test_index_settings_come_from_uv_or_pip_variables() -> None:
    found = IndexSettings.from_environ(
        {
            "PIP_INDEX_URL": "https://user:tok@pypi.example/simple",
            "PIP_EXTRA_INDEX_URL": "https://a/simple https://b/simple",
            "UV_FIND_LINKS": "/wheels,https://c/links",
        }
    )
    assert found.index_url == "https://user:tok@pypi.example/simple"
    assert found.extra_index_urls == ("https://a/simple", "https://b/simple")
    assert found.find_links == ("/wheels", "https://c/links")
    assert "tok" not in found.describe()
    assert found.uv_environ()["UV_INDEX_URL"] == "https://user:tok@pypi.example/simple"
    assert IndexSettings.from_environ({"UV_INDEX_URL": "u", "PIP_INDEX_URL": "p"}).index_url == "u"


def test_requirements_files_include_their_nested_files_and_refuse_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "requirements.txt").write_text(
        "# top\n-r sub/base.txt\n--constraint=constraints.txt\nrich>=13  # ui\n"
    )
    (tmp_path / "sub" / "base.txt").write_text("httpx==0.27.0\n")
    (tmp_path / "constraints.txt").write_text("anyio<5\n")
    requirements, constraints = read_requirements(tmp_path / "requirements.txt", root=tmp_path)
    assert requirements.splitlines() == ["httpx==0.27.0", "rich>=13"]
    assert constraints.splitlines() == ["anyio<5"]

    for bad in ("-e .", "./libs/pkg", "file:///tmp/pkg", "--editable=git+https://x/y"):
        (tmp_path / "bad.txt").write_text(f"rich\n{bad}\n")
        with pytest.raises(ConfigError, match=r"bad.txt:2: .* installs from a path"):
            read_requirements(tmp_path / "bad.txt", root=tmp_path)
    (tmp_path / "escape.txt").write_text("-r ../../etc/passwd\n")
    with pytest.raises(ConfigError, match="outside the code"):
        read_requirements(tmp_path / "escape.txt", root=tmp_path)
    with pytest.raises(ConfigError, match=r"missing\.txt does not exist in the code"):
        read_requirements(tmp_path / "missing.txt", root=tmp_path)


def test_uv_errors_are_one_sentence_whatever_the_terminal_width(
    index_env: PackageIndex, tmp_path: Path
) -> None:
    # Given a worker started where COLUMNS is narrow (uv wraps its errors to it)
    environ = {**os.environ, "COLUMNS": "40"}
    cache = EnvCache(tmp_path / "cache", max_bytes=10**9, environ=environ)

    # When a requirement cannot be resolved
    with pytest.raises(InstallError) as caught:
        cache.ensure(spec(index_env, "cv-greeting==9.9"))

    # Then the line is uv's sentences, not its wrapped pieces joined with ": "
    assert str(caught.value) == (
        "could not install the run's requirements: No solution found when resolving "
        "dependencies: Because there is no version of cv-greeting==9.9 and you require "
        "cv-greeting==9.9, we can conclude that your requirements are unsatisfiable."
    )


def test_a_requirement_uv_cannot_parse_is_named_in_the_users_file(
    index_env: PackageIndex, tmp_path: Path
) -> None:
    cache = EnvCache(tmp_path / "cache", max_bytes=10**9)
    spec = EnvSpec(requirements="cv greeting", names=("requirements.txt",), index=IndexSettings())

    with pytest.raises(InstallError) as caught:
        cache.ensure(spec)

    # not "in `.tmp-<digest>-<pid>/conveyor-requirements.txt` at position 0"
    assert str(caught.value).startswith(
        "could not install the run's requirements: Couldn't parse requirement in requirements.txt: "
    )
    assert str(caught.value).endswith(": cv greeting")


def test_a_private_index_refusing_the_token_says_so_without_the_token(
    index_env: PackageIndex, tmp_path: Path
) -> None:
    # Given a private index (Basic auth) and a run whose UV_INDEX_URL holds a wrong token
    private = PackageIndex.start(index_env.wheels, tmp_path / "private.log", token="right-tok3n")
    try:
        wrong = private.url.replace("http://", "http://__token__:wr0ng-tok3n@")
        cache = EnvCache(tmp_path / "cache", max_bytes=10**9)

        # When the environment is built
        with pytest.raises(InstallError) as caught:
            cache.ensure(EnvSpec(requirements="cv-greeting==1.0", index=IndexSettings(wrong)))

        # Then the one line says the index refused the credentials (uv's resolver alone says
        # "not found in the package registry"), and never shows the token
        message = str(caught.value)
        assert "\n" not in message
        assert "cv-greeting" in message
        assert "401 Unauthorized" in message
        assert "wr0ng-tok3n" not in message
        # and with the right token it builds
        right = private.url.replace("http://", "http://__token__:right-tok3n@")
        assert cache.ensure(EnvSpec(requirements="cv-greeting==1.0", index=IndexSettings(right)))
    finally:
        private.stop()


@pytest.mark.parametrize(
    ("output", "line"),
    [
        (
            [
                "Using Python 3.11.7 environment at: .tmp-x",
                "  \u00d7 No solution found when resolving dependencies:",
                "  ╰─▶ Because there is no version of nosuch==1.0 and you require nosuch==1.0, "
                "we can conclude that your requirements are unsatisfiable.",
            ],
            "No solution found when resolving dependencies: Because there is no version of "
            "nosuch==1.0 and you require nosuch==1.0, we can conclude that your requirements "
            "are unsatisfiable.",
        ),
        (
            [
                "error: Request failed after 3 retries",
                "  cause: Failed to fetch: https://user:hunter2@idx.example/simple/x/",
                "  cause: Connection refused (os error 111)",
            ],
            "Request failed after 3 retries: Failed to fetch: "
            "https://user:****@idx.example/simple/x/: Connection refused (os error 111)",
        ),
        (
            [
                "error: Couldn't parse requirement in `r.txt` at position 0",
                "  cause: Unexpected end of version specifier, expected version",
                "         foo==",
                "            ^^",
            ],
            "Couldn't parse requirement in `r.txt` at position 0: Unexpected end of version "
            "specifier, expected version: foo==",
        ),
        (
            [
                "Using Python 3.11.7 environment at: .tmp-x",
                "error: No solution found when resolving dependencies",
                "  cause: Because cv-greeting was not found in the package registry and you "
                "require cv-greeting==2.0, we can conclude that your requirements are "
                "unsatisfiable.",
                "",
                "hint: An index URL (https://__token__:hunter2@idx.example/simple) could not be "
                "queried due to a lack of valid authentication credentials (401 Unauthorized).",
            ],
            "No solution found when resolving dependencies: Because cv-greeting was not found "
            "in the package registry and you require cv-greeting==2.0, we can conclude that "
            "your requirements are unsatisfiable. (An index URL "
            "(https://__token__:****@idx.example/simple) could not be queried due to a lack of "
            "valid authentication credentials (401 Unauthorized))",
        ),
    ],
)
def test_uv_errors_become_one_line_without_secrets(output: list[str], line: str) -> None:
    assert uv_failure(output) == line
