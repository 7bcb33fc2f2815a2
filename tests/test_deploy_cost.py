# ruff: noqa: F401, F811  (fixtures imported from fixtures.git_server are parameters here)
"""Deploy does only new work (issue 14, item 4).

- re-deploying unchanged code starts no preflight child (the `subprocess.Popen` of
  `conveyor._preflight` is counted) and reads no file of the folder (an audit hook);
- a git deploy of a large repository fetches only the entrypoint's module and what it imports
  from the tree (blobs counted in the mirror), and the deployment still runs;
- what the static view cannot settle (a dynamic import, a data file found at run time) falls
  back to the whole tree and still deploys.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit_helpers import opens
from conveyor import _preflight, _statcache
from conveyor.cache import CodeCache
from conveyor.client import ConveyorClient
from conveyor.connect import connect
from conveyor.deploy import from_source
from conveyor.errors import FlowLoadError
from conveyor.schemas import RunState
from conveyor.settings import Settings
from conveyor.sources.git import GitRepository
from conveyor.sources.git._partial import PartialCheckout
from conveyor.worker.loop import Worker
from conveyor.worker.options import WorkerOptions
from fixtures.git_server import Repo, Repos, git_repos_root, repos, run_git

FLOW = """\
from conveyor import flow

from lib.util import double


@flow(retries=2)
def main(n: int = 1) -> int:
    return double(n)
"""
UTIL = "from .consts import FACTOR\n\n\ndef double(n: int) -> int:\n    return n * FACTOR\n"


@pytest.fixture
def client(settings: Settings) -> Iterator[ConveyorClient]:
    with connect(settings) as api:
        yield api


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv of every preflight child started (the preflight's process boundary)."""
    started: list[list[str]] = []
    real = subprocess.Popen

    def counting(argv: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(argv, list) and "--describe" in argv:
            started.append(list(argv))
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(_preflight.subprocess, "Popen", counting)
    return started


def write_project(root: Path, files: int = 0) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "flows.py").write_text(FLOW)
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "util.py").write_text(UTIL)
    (root / "lib" / "consts.py").write_text("FACTOR = 2\n")
    for i in range(files):
        path = root / f"pkg{i % 7}" / f"mod{i}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"X = {i}\n" + "# filler\n" * 50)
    return root


def run_once(settings: Settings, client: ConveyorClient, deployment: Any, n: int) -> Any:
    run = client.create_run(deployment.flow_name, deployment.name, parameters={"n": n})
    options = WorkerOptions(pool="default", name="w1", lease_seconds=5.0, poll_seconds=0.2)
    Worker.from_settings(settings, client, options).work(burst=True)
    return client.get_run(run.id)


# -- re-deploying unchanged code --------------------------------------------------------------


def test_redeploying_an_unchanged_folder_starts_no_preflight_and_reads_no_file(
    settings, client, children, tmp_path, monkeypatch
):
    # Given a folder deployed once (files old enough to be trusted by the stat cache)
    monkeypatch.setattr(_statcache, "RACY_SECONDS", 0.0)
    project = write_project(tmp_path / "project", files=20)
    first = from_source(project, "flows.py:main").deploy("d", settings=settings, client=client)
    assert len(children) == 1
    assert first.retries == 2
    # When it is deployed again, unchanged
    with opens(project) as opened:
        again = from_source(project, "flows.py:main").deploy("d", settings=settings, client=client)
    # Then no preflight child was started, no file of the folder was read, and the deployment
    # is the same version with the same flow details (no new revision)
    assert len(children) == 1
    assert opened == []
    assert again.version == first.version
    assert again.revision == first.revision
    assert again.parameter_schema == first.parameter_schema
    assert again.retries == 2


def test_a_change_of_code_entrypoint_or_working_directory_preflights_again(
    settings, client, children, tmp_path
):
    project = write_project(tmp_path / "project")
    (project / "app").mkdir()
    (project / "app" / "flows.py").write_text(
        "from conveyor import flow\n\n\n@flow(retries=1)\ndef main() -> int:\n    return 1\n"
    )
    deploy = from_source(project, "flows.py:main").deploy
    deploy("d", settings=settings, client=client)
    deploy("d", settings=settings, client=client)
    assert len(children) == 1
    # another working directory: the flow there is another one
    moved = deploy(
        "d",
        settings=settings,
        client=client,
        pull_steps=[{"set_working_directory": {"directory": "app"}}],
    )
    assert len(children) == 2
    assert moved.retries == 1
    # a change of the code: a new version
    (project / "lib" / "consts.py").write_text("FACTOR = 3\n")
    deploy("d", settings=settings, client=client)
    assert len(children) == 3
    # another entrypoint in the same version
    (project / "other.py").write_text(FLOW.replace("def main", "def other"))
    from_source(project, "other.py:other").deploy("o", settings=settings, client=client)
    assert len(children) == 4
    # a failed preflight is not remembered
    (project / "broken.py").write_text("raise RuntimeError('nope')\n")
    for _ in range(2):
        with pytest.raises(FlowLoadError, match="nope"):
            from_source(project, "broken.py:main").deploy("b", settings=settings, client=client)
    assert len(children) == 6


# -- git: a partial checkout of what the entrypoint needs -----------------------------------------


def mirror_blobs(settings: Settings) -> set[str]:
    """The blobs in the deployer's git mirror (under its code cache)."""
    mirrors = list(settings.cache_dir.glob("*/.scratch/mirror.git"))
    assert len(mirrors) == 1, mirrors
    out = run_git(
        "cat-file",
        "--batch-all-objects",
        "--batch-check=%(objecttype) %(objectname)",
        cwd=mirrors[0],
    )
    return {line.split()[1] for line in out.splitlines() if line.startswith("blob ")}


def blob_ids(repo: Repo, sha: str, *paths: str) -> set[str]:
    return {run_git("rev-parse", f"{sha}:{path}", cwd=repo.bare) for path in paths}


def big_repo(
    repos: Repos, extra: dict[str, str | bytes] | None = None, *, count: int = 150
) -> tuple[Repo, str]:
    repo = repos.make()
    files: dict[str, str | bytes] = {
        "flows.py": FLOW,
        "lib/__init__.py": "",
        "lib/util.py": UTIL,
        "lib/consts.py": "FACTOR = 2\n",
        "lib/unused.py": "UNUSED = 1\n",
        "README.md": "# a large repository\n",
    }
    for i in range(count):
        files[f"pkg{i % 5}/data{i}.bin"] = os.urandom(20_000)
    files.update(extra or {})
    return repo, repo.commit(files)


def test_a_git_deploy_fetches_only_the_entrypoint_and_its_imports_and_runs(
    settings, client, repos, children
):
    # Given a repository of 150 big files and a flow that imports two modules of the tree
    repo, sha = big_repo(repos)
    source = GitRepository(repo.file_url, branch="main")
    # When it is deployed with an empty cache
    deployment = from_source(source, "flows.py:main").deploy("g", settings=settings, client=client)
    # Then the mirror holds exactly the blobs of the flow file and what it imports (with the
    # package's __init__), none of the others, and the flow's details were learnt
    needed = blob_ids(repo, sha, "flows.py", "lib/__init__.py", "lib/util.py", "lib/consts.py")
    assert mirror_blobs(settings) == needed
    assert deployment.version == sha
    assert deployment.retries == 2
    assert len(children) == 1
    # And the deployment runs: the worker fetches the rest of the commit and runs it
    run = run_once(settings, client, deployment, 21)
    assert run.state is RunState.COMPLETED, run.error
    assert run.result == 42
    assert len(mirror_blobs(settings)) == 156
    # And deploying it again starts no preflight and fetches nothing
    again = from_source(source, "flows.py:main").deploy("g", settings=settings, client=client)
    assert again.revision == deployment.revision
    assert len(children) == 1


def test_a_git_deploy_starts_its_preflight_child_before_fetching_the_flow_files(
    settings, client, repos, children, monkeypatch
):
    # Given a repository whose flow imports modules of the tree
    repo, sha = big_repo(repos, count=10)
    events: list[str] = []
    real_fetch = PartialCheckout.fetch

    def fetch(self: PartialCheckout, paths: Any) -> dict[str, bytes]:
        wanted = list(paths)
        events.append(f"fetch {len(children)} {sorted(wanted)}")
        return real_fetch(self, wanted)

    monkeypatch.setattr(PartialCheckout, "fetch", fetch)
    # When it is deployed with an empty cache
    source = GitRepository(repo.file_url, branch="main")
    deployment = from_source(source, "flows.py:main").deploy("g", settings=settings, client=client)
    # Then one preflight child was started, waiting at its gate, before the flow's files were
    # fetched (its interpreter starts while they come), and it learnt the flow from them
    assert len(children) == 1
    assert children[0][-2:] == ["--describe", "--gate"]
    assert "-P" in children[0]
    flow_fetches = [e for e in events if "flows.py" in e]
    assert flow_fetches
    assert flow_fetches[0].startswith("fetch 1 ")
    assert deployment.version == sha
    assert deployment.retries == 2
    assert deployment.parameter_schema["properties"]["n"]["default"] == 1


def test_a_preflight_started_ahead_imports_nothing_from_where_it_starts(tmp_path, monkeypatch):
    # Given a tree whose flow takes its name from a sibling module, and a directory holding a
    # module of the same name that says otherwise (and would fail the load)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "naming.py").write_text('NAME = "from-the-tree"\n')
    (tree / "flows.py").write_text(
        "from conveyor import flow\nfrom naming import NAME\n\n"
        "try:\n    import only_elsewhere  # noqa: F401\n\n    NAME = 'leaked'\n"
        "except ImportError:\n    pass\n\n\n"
        "@flow(name=NAME)\ndef main() -> None:\n    pass\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "naming.py").write_text('raise SystemExit("imported from the start directory")\n')
    (elsewhere / "only_elsewhere.py").write_text("")
    monkeypatch.chdir(elsewhere)
    # When a preflight is started there ahead of its tree, then aimed at the tree
    early = _preflight.Preflight.ahead()
    info = early.aim(tree, "flows.py:main").result()
    # Then the flow was loaded from the tree alone
    assert info.flow_name == "from-the-tree"


def test_a_preflight_started_ahead_and_given_up_exits_having_loaded_nothing(tmp_path, monkeypatch):
    # Given a preflight started ahead in a directory whose module would leave a mark if loaded
    marker = tmp_path / "loaded"
    (tmp_path / "flows.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    early = _preflight.Preflight.ahead()
    # When it is cancelled
    early.cancel()
    # Then its child is gone, nothing was loaded, and aiming it now starts a new child that
    # still answers (a child that died before its aim is replaced, not trusted)
    assert early._proc is not None
    assert early._proc.poll() is not None
    assert not marker.exists()
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "flows.py").write_text(
        "from conveyor import flow\n\n\n@flow\ndef main(x: int = 3) -> int:\n    return x\n"
    )
    replaced = early.aim(tmp_path / "tree", "flows.py:main")
    assert replaced is not early
    info = replaced.result()
    assert info.flow_name == "main"
    assert info.parameter_schema["properties"]["x"]["default"] == 3
    assert not marker.exists()


def test_a_git_deploy_checks_every_path_of_the_commit(settings, client, repos):
    from conveyor.errors import ConfigError

    long = "d/" * 520 + "x.py"
    repo, _ = big_repo(repos, {long: "X = 1\n"}, count=5)
    source = GitRepository(repo.file_url, branch="main")
    with pytest.raises(ConfigError, match="bytes long"):
        from_source(source, "flows.py:main").deploy("g", settings=settings, client=client)


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (
            {"flows.py": FLOW + "\nimport importlib\nimportlib.import_module('lib.unused')\n"},
            "a dynamic import",
        ),
        (
            {
                "flows.py": FLOW
                + "\nfrom pathlib import Path\n"
                + "SETTINGS = (Path(__file__).parent / 'conf' / 'settings.txt').read_text()\n",
                "conf/settings.txt": "on\n",
            },
            "a data file found at run time",
        ),
    ],
)
def test_what_cannot_be_followed_statically_falls_back_to_the_whole_tree(
    settings, client, repos, extra, why
):
    # Given a flow that needs something the static view cannot see
    repo, sha = big_repo(repos, extra, count=30)
    source = GitRepository(repo.file_url, branch="main")
    # When it is deployed
    deployment = from_source(source, "flows.py:main").deploy("g", settings=settings, client=client)
    # Then it deploys, from the whole tree
    assert deployment.version == sha, why
    assert deployment.retries == 2
    assert len(mirror_blobs(settings)) > 30


def test_a_preflight_started_ahead_that_dies_before_its_gate_is_started_again(
    tmp_path, monkeypatch
):
    # Given an early preflight child that dies without reaching its gate, after deploy aimed it
    # (as one that cannot import Conveyor does, when aiming is quicker than its death), and a
    # tree whose flow counts its loads
    real = subprocess.Popen
    started: list[list[str]] = []

    def dying_early(argv: Any, *args: Any, **kwargs: Any) -> Any:
        started.append(list(argv))
        if isinstance(argv, list) and argv[-2:] == ["--describe", "--gate"]:
            argv = [argv[0], "-c", "import sys; sys.stdin.readline(); sys.exit('no conveyor')"]
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(_preflight.subprocess, "Popen", dying_early)
    loads = tmp_path / "loads"
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "flows.py").write_text(
        f"with open({str(loads)!r}, 'a') as out:\n    out.write('x')\n\n"
        "from conveyor import flow\n\n\n@flow\ndef main(y: int = 5) -> int:\n    return y\n"
    )
    # When it is aimed at the tree
    info = _preflight.Preflight.ahead().aim(tree, "flows.py:main").result()
    # Then a new child loaded the flow, once, and answered
    assert len(started) == 2
    assert started[1][-3:] == ["--describe", str(tree), "flows.py:main"]
    assert info.parameter_schema["properties"]["y"]["default"] == 5
    assert loads.read_text() == "x"


def test_a_flow_whose_import_kills_an_early_preflight_is_reported_not_loaded_again(tmp_path):
    # Given a flow whose import ends the process with no answer
    loads = tmp_path / "loads"
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "flows.py").write_text(
        f"import os\nwith open({str(loads)!r}, 'a') as out:\n    out.write('x')\nos._exit(3)\n"
    )
    # When a preflight started ahead loads it
    with pytest.raises(FlowLoadError, match="could not be loaded") as caught:
        _preflight.Preflight.ahead().aim(tree, "flows.py:main").result()
    # Then the error is one line and the module ran once (the child had reached its gate)
    assert "\n" not in str(caught.value)
    assert loads.read_text() == "x"
