"""Per-run workspaces: a writable copy that shares nothing with the cache."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conveyor._fs import copy_writable
from conveyor.worker.executors.workspace import Workspace


def test_copy_is_writable_and_shares_no_inode(tmp_path: Path) -> None:
    # Given a read-only tree, as the cache keeps its checkouts
    source = tmp_path / "checkout"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("x = 1\n")
    (source / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(source / "run.sh", 0o555)
    os.symlink("pkg/mod.py", source / "link.py")
    for path in (source / "pkg" / "mod.py", source / "pkg", source):
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    # When it is copied into a workspace
    dest = tmp_path / "code"
    dest.mkdir()
    copied, files = copy_writable(source, dest)
    # Then every file is a writable copy (own inode), executables stay executable, links stay links
    assert copied == len("x = 1\n") + len("#!/bin/sh\n")
    assert files == 3
    for rel in ("pkg/mod.py", "run.sh"):
        assert os.stat(dest / rel).st_ino != os.stat(source / rel).st_ino
        assert os.stat(dest / rel).st_mode & stat.S_IWUSR
    assert os.stat(dest / "run.sh").st_mode & stat.S_IXUSR
    assert os.readlink(dest / "link.py") == "pkg/mod.py"
    (dest / "pkg" / "mod.py").write_text("x = 2\n")
    assert (source / "pkg" / "mod.py").read_text() == "x = 1\n"


def test_remove_deletes_what_the_flow_left_even_read_only(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path / "work", "run-9", attempt=2)
    workspace.code.mkdir()
    (workspace.code / "a.txt").write_text("a")
    (workspace.code / "sub").mkdir()
    (workspace.code / "sub" / "f").write_text("f")
    os.chmod(workspace.code / "sub", 0o500)

    workspace.remove()

    assert not workspace.root.exists()
    assert workspace.root.name.startswith("run-9-2-")
