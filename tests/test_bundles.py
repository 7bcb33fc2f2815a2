"""Bundles: versions, deterministic archives, ignore rules and tree verification."""

from __future__ import annotations

import builtins
import io
import json
import logging
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import zstandard

from conveyor.bundles import (
    MANIFEST_PATH,
    Manifest,
    ManifestEntry,
    build_manifest,
    compute_version,
    is_bundle_version,
    pack,
    unpack,
    verify_tree,
)
from conveyor.errors import BundleError, IntegrityError
from sources.contract import snapshot, write_known_tree


def members(archive: bytes) -> list[tarfile.TarInfo]:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive))
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        return list(tar)


def pack_bytes(root: Path) -> bytes:
    out = io.BytesIO()
    pack(root, out)
    return out.getvalue()


def paths(root: Path) -> list[str]:
    return [e.path for e in build_manifest(root).entries]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_known_tree(tmp_path / "a" / "project")


# -- versions and determinism ---------------------------------------------------------------------


def test_same_tree_in_two_directories_gives_same_version_and_bytes(
    tree: Path, tmp_path: Path
) -> None:
    # Given the same tree copied elsewhere, written in another order, with other mtimes and modes
    other = tmp_path / "b" / "elsewhere"
    for rel, (kind, data, executable) in sorted(snapshot(tree).items(), reverse=True):
        path = other / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "link":
            path.symlink_to(data.decode())
        else:
            path.write_bytes(data)
            path.chmod(0o775 if executable else 0o660)
            os.utime(path, (1_234_567_890, 1_234_567_890))

    # Then the version and every byte of the archive are the same
    assert compute_version(other) == compute_version(tree)
    assert pack_bytes(other) == pack_bytes(tree)


def test_touch_changes_neither_version_nor_bytes(tree: Path) -> None:
    version, archive = compute_version(tree), pack_bytes(tree)
    for path in tree.rglob("*"):
        os.utime(path, follow_symlinks=False)
    assert compute_version(tree) == version
    assert pack_bytes(tree) == archive


def test_pack_to_a_path_writes_the_same_bytes_as_to_a_stream(tree: Path, tmp_path: Path) -> None:
    manifest = pack(tree, tmp_path / "out" / "b.tar.zst")
    assert (tmp_path / "out" / "b.tar.zst").read_bytes() == pack_bytes(tree)
    assert manifest.version == compute_version(tree)
    assert sorted(os.listdir(tmp_path / "out")) == ["b.tar.zst"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda t: (t / "README.md").write_bytes(b"# known tree!"), id="one-byte"),
        pytest.param(lambda t: (t / "flows/hello.py").chmod(0o755), id="chmod+x"),
        pytest.param(lambda t: (t / "bin/run.sh").chmod(0o644), id="chmod-x"),
        pytest.param(lambda t: (t / "README.md").rename(t / "README.txt"), id="rename"),
        pytest.param(lambda t: (t / "empty.py").write_bytes(b""), id="new-empty-file"),
        pytest.param(lambda t: (t / "flows/lib/util.py").unlink(), id="delete"),
        pytest.param(
            lambda t: (
                (t / "flows/alias.py").unlink() or (t / "flows/alias.py").symlink_to("lib/util.py")
            ),
            id="relink",
        ),
    ],
)
def test_any_content_or_mode_change_gives_another_version(tree: Path, change: object) -> None:
    before, archive = compute_version(tree), pack_bytes(tree)
    change(tree)  # type: ignore[operator]
    assert compute_version(tree) != before
    assert pack_bytes(tree) != archive


def test_archive_metadata_is_normalised(tree: Path) -> None:
    found = members(pack_bytes(tree))
    assert found[0].name == MANIFEST_PATH
    names = [m.name for m in found[1:]]
    assert names == sorted(names) == paths(tree)
    for member in found:
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
            0,
            0,
            0,
            "",
            "",
        )
        assert not member.isdir()
    modes = {m.name: m.mode for m in found}
    assert modes["bin/run.sh"] == 0o755
    assert modes["flows/hello.py"] == 0o644
    assert next(m for m in found if m.name == "flows/alias.py").linkname == "hello.py"


def test_manifest_is_canonical_and_its_digest_is_the_version(tree: Path) -> None:
    manifest = build_manifest(tree)
    data = manifest.canonical()
    raw = json.loads(data)
    assert raw["format"] == 1
    assert data == json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    assert is_bundle_version(manifest.version)
    assert Manifest.from_canonical(data) == manifest
    assert manifest.file_count == len(raw["files"]) == 8
    assert manifest.total_size == sum(len(d) for k, d, _ in snapshot(tree).values() if k == "file")
    entry = manifest.by_path["bin/run.sh"]
    assert entry == ManifestEntry("bin/run.sh", entry.sha256, 19, executable=True)
    assert manifest.by_path["flows/alias.py"].link_target == "hello.py"


def test_embedded_manifest_is_the_first_member(tree: Path) -> None:
    archive = pack_bytes(tree)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive))
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        first = tar.next()
        assert first is not None
        data = tar.extractfile(first).read()  # type: ignore[union-attr]
    assert data == build_manifest(tree).canonical()


# -- what is left out -----------------------------------------------------------------------------

IGNORE_CASES = [
    pytest.param(
        {"a.py": "", ".git/config": "", "sub/.git": "gitdir: x", "__pycache__/a.pyc": ""},
        {},
        [".gitignore", "a.py"],
        id="vcs-and-pycache",
    ),
    pytest.param(
        {"a.py": "", "b.pyc": "", "pkg/c.pyo": "", ".venv/lib/x.py": "", "venv/y.py": ""},
        {},
        [".gitignore", "a.py"],
        id="bytecode-and-venvs",
    ),
    pytest.param(
        {"a.py": "", "env3/pyvenv.cfg": "", "env3/lib/site.py": "", "pyvenv.cfg.txt": ""},
        {},
        [".gitignore", "a.py", "pyvenv.cfg.txt"],
        id="any-dir-with-pyvenv-cfg",
    ),
    pytest.param(
        {"a.py": "", ".mypy_cache/x": "", ".pytest_cache/y": "", ".ruff_cache/z": "", ".tox/t": ""},
        {},
        [".gitignore", "a.py"],
        id="tool-caches",
    ),
    pytest.param(
        {"a.py": "", "web/node_modules/m/index.js": "", "web/app.js": ""},
        {},
        [".gitignore", "a.py", "web/app.js"],
        id="node-modules",
    ),
    pytest.param(
        {"a.py": "", "debug.log": "", "build/out.bin": "", "keep.log": "", "docs/build": ""},
        {".gitignore": "*.log\n!keep.log\nbuild/\n"},
        [".gitignore", "a.py", "docs/build", "keep.log"],
        id="gitignore-patterns-negation-dir-only",
    ),
    pytest.param(
        {"a.py": "", "secret.env": "", "data/big.csv": "", "data/small.csv": ""},
        {".conveyorignore": "*.env\ndata/big.csv\n"},
        [".conveyorignore", ".gitignore", "a.py", "data/small.csv"],
        id="conveyorignore",
    ),
    pytest.param(
        {"a.py": "", "dist/pkg.whl": "", "dist/other.tgz": ""},
        {".gitignore": "dist/*\n", ".conveyorignore": "!dist/pkg.whl\n"},
        [".conveyorignore", ".gitignore", "a.py", "dist/pkg.whl"],
        id="conveyorignore-re-includes-gitignored",
    ),
    pytest.param(
        {"a.py": "", "sub/x.tmp": "", "sub/y.py": "", "x.tmp": "", "sub/deep/z.tmp": ""},
        {"sub/.gitignore": "*.tmp\n"},
        [".gitignore", "a.py", "sub/.gitignore", "sub/y.py", "x.tmp"],
        id="nested-gitignore-applies-below-it",
    ),
    pytest.param(
        {"a.log": "", "sub/a.log": "", "sub/b.log": ""},
        {".gitignore": "*.log\n", "sub/.gitignore": "!a.log\n"},
        [".gitignore", "sub/.gitignore", "sub/a.log"],
        id="deeper-gitignore-wins",
    ),
    pytest.param(
        {"a.py": "", "/anchored.txt": "", "sub/anchored.txt": ""},
        {".gitignore": "/anchored.txt\n"},
        [".gitignore", "a.py", "sub/anchored.txt"],
        id="anchored-pattern",
    ),
    pytest.param(
        {"a.py": "", "node_modules/vendored.js": "", "__pycache__/x.pyc": ""},
        {".conveyorignore": "!node_modules/\n"},
        [".conveyorignore", ".gitignore", "a.py", "node_modules/vendored.js"],
        id="defaults-can-be-re-included",
    ),
    pytest.param(
        {"a.py": ""},
        {".gitignore": ".gitignore\n.conveyorignore\n", ".conveyorignore": "# nothing\n"},
        [".conveyorignore", ".gitignore", "a.py"],
        id="ignore-files-are-always-kept",
    ),
    pytest.param(
        {"a.py": "", ".conveyor/manifest.json": "{}", "sub/.conveyor/x": "", ".env": "A=1"},
        {},
        [".env", ".gitignore", "a.py", "sub/.conveyor/x"],
        id="reserved-root-conveyor-dir-only",
    ),
]


@pytest.mark.parametrize(("files", "ignores", "expected"), IGNORE_CASES)
def test_ignore_rules(
    tmp_path: Path, files: dict[str, str], ignores: dict[str, str], expected: list[str]
) -> None:
    root = tmp_path / "tree"
    (root).mkdir()
    (root / ".gitignore").write_text("")
    for rel, text in {**files, **ignores}.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert paths(root) == expected


def test_ignored_files_do_not_change_the_version(tree: Path) -> None:
    before = compute_version(tree)
    (tree / "flows/__pycache__").mkdir()
    (tree / "flows/__pycache__/hello.cpython-311.pyc").write_bytes(b"\x00\x01")
    (tree / ".git").mkdir()
    (tree / ".git/HEAD").write_text("ref: refs/heads/main\n")
    assert compute_version(tree) == before


def test_fifo_in_the_tree_is_skipped_with_a_debug_log(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="conveyor._tree")
    before = compute_version(tree)
    os.mkfifo(tree / "pipe")
    assert compute_version(tree) == before
    assert "skipping special file path=pipe" in caplog.text


# -- what cannot be bundled -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("../../outside.txt", "outside the tree"),
        ("../../project/README.md", "outside the tree"),  # leaves, re-enters by the root's name
        ("../inner/../../x", "outside the tree"),
        ("hop/../../x", "outside the tree"),  # lexically inside, but inner/hop -> ..
    ],
)
def test_symlink_leaving_the_tree_is_refused_at_pack_time(
    tree: Path, tmp_path: Path, target: str, why: str
) -> None:
    (tree / "inner").mkdir()
    (tree / "inner/hop").symlink_to("..")
    (tree / "inner/evil").symlink_to(target)
    out = tmp_path / "out.tar.zst"
    with pytest.raises(BundleError, match=why) as caught:
        pack(tree, out)
    assert "inner/evil" in str(caught.value)
    assert caught.value.hint is not None
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "out" in p.name] == []


def test_symlink_escaping_through_another_link_is_refused(tree: Path) -> None:
    # sub/up -> .. is inside; sub/esc -> up/../x is lexically sub/x but really resolves outside.
    (tree / "sub").mkdir()
    (tree / "sub/up").symlink_to("..")
    (tree / "sub/esc").symlink_to("up/../x")
    with pytest.raises(BundleError, match="sub/esc"):
        build_manifest(tree)


def test_missing_root_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is not a directory"):
        compute_version(tmp_path / "nope")


def test_non_utf8_file_name_is_refused(tree: Path) -> None:
    os.close(os.open(os.fsencode(tree) + b"/bad-\xff.py", os.O_CREAT | os.O_WRONLY, 0o644))
    with pytest.raises(BundleError, match="not valid UTF-8"):
        build_manifest(tree)


def test_unreadable_file_is_a_bundle_error(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 0 does not stop root (the CI user), so the kernel's answer is simulated.
    real_open = builtins.open

    def deny(file: object, *args: object, **kwargs: object) -> object:
        if str(file).endswith("README.md"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(BundleError, match=r"cannot read README\.md: Permission denied"):
        build_manifest(tree)


# -- verify_tree ----------------------------------------------------------------------------------


@pytest.fixture
def checkout(tree: Path, tmp_path: Path) -> tuple[Path, str]:
    archive = tmp_path / "b.tar.zst"
    version = pack(tree, archive).version
    dest = tmp_path / "checkout"
    unpack(archive, dest, expected_version=version)
    return dest, version


@pytest.mark.parametrize(
    ("change", "message", "path"),
    [
        (
            lambda d: (d / "flows/hello.py").write_text("x = 1\n"),
            "content differs",
            "flows/hello.py",
        ),
        (lambda d: (d / "flows/lib/util.py").unlink(), "missing", "flows/lib/util.py"),
        (lambda d: (d / "flows/extra.py").write_text(""), "unexpected file", "flows/extra.py"),
        (lambda d: (d / "README.md").chmod(0o700), "executable bit differs", "README.md"),
        (
            lambda d: (d / "flows/alias.py").unlink() or (d / "flows/alias.py").symlink_to("x"),
            "symlink target differs",
            "flows/alias.py",
        ),
        (
            lambda d: (d / "flows/alias.py").unlink() or (d / "flows/alias.py").write_text(""),
            "file type differs",
            "flows/alias.py",
        ),
    ],
)
def test_verify_tree_names_the_first_differing_path(
    checkout: tuple[Path, str], change: object, message: str, path: str
) -> None:
    dest, version = checkout
    verify_tree(dest, version)
    change(dest)  # type: ignore[operator]
    with pytest.raises(IntegrityError, match=message) as caught:
        verify_tree(dest, version)
    assert caught.value.path == path
    assert path in str(caught.value)


def test_verify_tree_reports_the_first_path_in_sorted_order(checkout: tuple[Path, str]) -> None:
    dest, version = checkout
    (dest / "flows/lib/util.py").write_text("changed\n")
    (dest / "README.md").write_text("changed\n")
    with pytest.raises(IntegrityError) as caught:
        verify_tree(dest, version)
    assert caught.value.path == "README.md"


def test_verify_tree_ignores_the_reserved_dir_and_ignored_files(checkout: tuple[Path, str]) -> None:
    dest, version = checkout
    (dest / ".conveyor/notes.txt").write_text("cache bookkeeping\n")
    (dest / "flows/__pycache__").mkdir()
    (dest / "flows/__pycache__/hello.cpython-311.pyc").write_bytes(b"\x00")
    verify_tree(dest, version)


def test_verify_tree_without_a_trusted_manifest_still_refuses(checkout: tuple[Path, str]) -> None:
    # A forged manifest (digest not the version) is not used to explain the difference.
    dest, version = checkout
    (dest / "README.md").write_text("changed\n")
    (dest / ".conveyor/manifest.json").write_text('{"files":[],"format":1}')
    with pytest.raises(IntegrityError, match="not the expected") as caught:
        verify_tree(dest, version)
    assert caught.value.path is None
    shutil.rmtree(dest / ".conveyor")
    with pytest.raises(IntegrityError, match="not the expected"):
        verify_tree(dest, version)


def test_verify_tree_of_a_plain_folder(tree: Path) -> None:
    verify_tree(tree, compute_version(tree))
    with pytest.raises(IntegrityError):
        verify_tree(tree, "sha256-" + "0" * 64)


def test_verify_tree_with_an_escaping_symlink_is_an_integrity_error(
    checkout: tuple[Path, str],
) -> None:
    dest, version = checkout
    (dest / "evil").symlink_to("/etc/passwd")
    with pytest.raises(IntegrityError, match="outside the tree") as caught:
        verify_tree(dest, version)
    assert caught.value.path == "evil"


def test_round_trip_preserves_bytes_modes_and_links(tree: Path, checkout: tuple[Path, str]) -> None:
    dest, _ = checkout
    assert snapshot(dest, skip=(".conveyor",)) == snapshot(tree)
    assert (dest / MANIFEST_PATH).read_bytes() == build_manifest(tree).canonical()
