"""A commit's proof (its own commit and tree objects) read back into the files it names.

`expected_tree` remembers the trees it walked by id: a new commit parses only the trees it
changed, the answer is the one a fresh walk gives, and a proof still has to hold every tree
it names.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conveyor.errors import IntegrityError
from conveyor.sources.git import _proof
from conveyor.sources.git._checkout import list_tree, tree_ids


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def _commit(repo: Path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "change")
    return _git(repo, "rev-parse", "HEAD")


def _proof_of(repo: Path, sha: str) -> bytes:
    git_dir = repo / ".git"
    return _proof.collect(git_dir, [sha, *tree_ids(git_dir, sha, list_tree(git_dir, sha))])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    return root


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_proof, "_TREES", {})
    monkeypatch.setattr(_proof, "_TREES_HELD", 0)


def _walked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    parsed: list[str] = []
    real = _proof._Walk._tree

    def counting(walk: _proof._Walk, oid: str, prefix: str, directories: object) -> object:
        parsed.append(prefix)
        return real(walk, oid, prefix, directories)  # type: ignore[arg-type]

    monkeypatch.setattr(_proof._Walk, "_tree", counting)
    return parsed


def test_a_new_commit_parses_only_the_trees_it_changed_and_reads_the_same(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a commit with nested packages, walked once
    files = {
        f"pkg{i}/sub{j}/mod{k}.py": f"X = {i}{j}{k}\n"
        for i in range(3)
        for j in range(2)
        for k in range(3)
    }
    first = _commit(repo, files)
    _proof.expected_tree(first, _proof_of(repo, first), directories=None, submodules=False)
    parsed = _walked(monkeypatch)
    # When a commit changing one file deep down is walked
    second = _commit(repo, {"pkg1/sub0/mod2.py": "changed\n"})
    proof = _proof_of(repo, second)
    remembered = _proof.expected_tree(second, proof, directories=None, submodules=False)
    # Then only the trees on the way to that file were parsed...
    assert parsed == ["", "pkg1/", "pkg1/sub0/"]
    # ...and the answer is the one a walk from nothing gives
    monkeypatch.setattr(_proof, "_TREES", {})
    fresh = _proof.expected_tree(second, proof, directories=None, submodules=False)
    assert remembered == fresh
    got = {e.path: e.digest for e in remembered.entries if e.kind == "file"}
    assert got["pkg1/sub0/mod2.py"] == _git(repo, "rev-parse", f"{second}:pkg1/sub0/mod2.py")
    assert len(got) == len(files)


def test_a_proof_missing_a_tree_it_names_is_refused_even_when_that_tree_is_remembered(
    repo: Path,
) -> None:
    # Given a commit walked once (its trees remembered)
    first = _commit(repo, {"a/x.py": "A\n", "b/y.py": "B\n"})
    _proof.expected_tree(first, _proof_of(repo, first), directories=None, submodules=False)
    # When the next commit's proof lacks the unchanged tree of b/
    second = _commit(repo, {"a/x.py": "A2\n"})
    b_tree = _git(repo, "rev-parse", f"{second}:b")
    git_dir = repo / ".git"
    names = [n for n in tree_ids(git_dir, second, list_tree(git_dir, second)) if n != b_tree]
    proof = _proof.collect(git_dir, [second, *names])
    # Then it is refused: the proof must hold every tree, remembered or not
    with pytest.raises(IntegrityError, match=f"lack tree {b_tree}"):
        _proof.expected_tree(second, proof, directories=None, submodules=False)
