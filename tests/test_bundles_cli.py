"""`conveyor bundle PATH [--output FILE]`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.bundles import build_manifest, pack, unpack
from conveyor.cli import main
from sources.contract import write_known_tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_known_tree(tmp_path / "project")


def test_prints_version_file_count_and_size(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = build_manifest(tree)
    assert main(["bundle", str(tree)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"version  {manifest.version}",
        "files    8",
        "size     97.8 KiB",
    ]


def test_output_writes_the_deterministic_archive(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dist" / "project.tar.zst"
    assert main(["bundle", str(tree), "--output", str(out)]) == 0
    expected = io.BytesIO()
    manifest = pack(tree, expected)
    assert out.read_bytes() == expected.getvalue()
    assert f"archive  {out} (" in capsys.readouterr().out
    assert unpack(out, tmp_path / "check", expected_version=manifest.version) == manifest


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda t: t / "missing", "does not exist"),
        (lambda t: t / "README.md", "is not a folder"),
        (
            lambda t: (t / "evil").symlink_to("/etc/passwd") or t,
            "symlink evil -> /etc/passwd points outside the tree",
        ),
    ],
)
def test_bad_path_is_a_one_line_error(
    tree: Path, capsys: pytest.CaptureFixture[str], setup: object, message: str
) -> None:
    path = setup(tree)  # type: ignore[operator]
    assert main(["bundle", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in captured.err


def test_runs_as_a_real_command(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "bundle", str(tree), "-o", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert build_manifest(tree).version in proc.stdout
    assert out.is_file()
