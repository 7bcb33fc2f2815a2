"""Safe unpacking: hostile archives are refused with nothing left behind; integrity is checked."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard

from conveyor._manifest import unsafe_path_reason
from conveyor.bundles import MANIFEST_PATH, UnpackLimits, compute_version, pack, unpack
from conveyor.errors import BundleError, IntegrityError, UnsafeArchive
from sources.contract import snapshot, write_known_tree


@dataclass
class Member:
    """One crafted tar member; ``listed`` puts it in the embedded manifest (when it can be)."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    link: str = ""
    listed: bool = True
    manifest_size: int | None = None
    pax: dict[str, str] = field(default_factory=dict)


def reg(name: str, data: bytes = b"print('hi')\n", **kw: object) -> Member:
    return Member(name, data=data, **kw)  # type: ignore[arg-type]


def sym(name: str, target: str) -> Member:
    return Member(name, type=tarfile.SYMTYPE, link=target, mode=0o777)


def hard(name: str, target: str, content: bytes = b"print('hi')\n") -> Member:
    return Member(name, type=tarfile.LNKTYPE, link=target, data=content)


def special(name: str, kind: bytes) -> Member:
    return Member(name, type=kind, listed=False)


def manifest_entry(m: Member) -> dict[str, object]:
    if m.type == tarfile.SYMTYPE:
        sha = hashlib.sha256(m.link.encode()).hexdigest()
        return {
            "executable": False,
            "link_target": m.link,
            "path": m.name,
            "sha256": sha,
            "size": 0,
        }
    return {
        "executable": bool(m.mode & 0o100),
        "path": m.name,
        "sha256": hashlib.sha256(m.data).hexdigest(),
        "size": len(m.data) if m.manifest_size is None else m.manifest_size,
    }


def canonical(entries: list[dict[str, object]]) -> bytes:
    data = {"files": sorted(entries, key=lambda e: str(e["path"])), "format": 1}
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def craft(members: list[Member], *, manifest: bytes | None = None) -> bytes:
    """A zstd tar: the manifest first (listing the ``listed`` members), then ``members``."""
    if manifest is None:
        # Hostile names cannot be in a valid manifest: the member check must catch them.
        listed = {
            m.name: manifest_entry(m)
            for m in members
            if m.listed and not unsafe_path_reason(m.name) and not m.name.startswith(".conveyor")
        }
        manifest = canonical(list(listed.values()))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if manifest:
            info = tarfile.TarInfo(MANIFEST_PATH)
            info.size = len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.linkname, info.pax_headers = m.type, m.mode, m.link, m.pax
            if m.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            carries_data = m.type == tarfile.REGTYPE
            info.size = len(m.data) if carries_data else 0
            tar.addfile(info, io.BytesIO(m.data) if carries_data else None)
    return zstandard.ZstdCompressor().compress(raw.getvalue())


HOSTILE = [
    pytest.param([reg("ok.py"), reg("/tmp/conveyor-evil.py")], "absolute path", id="absolute"),
    pytest.param([reg("ok.py"), reg("../evil.py")], "leaves the tree", id="dotdot"),
    pytest.param([reg("a/../../evil.py")], "leaves the tree", id="dotdot-inside"),
    pytest.param([reg("./a.py")], "not normalised", id="dot-component"),
    pytest.param([sym("link", "/etc/passwd")], "absolute", id="symlink-absolute"),
    pytest.param([sym("sub/link", "../../outside")], "leaves the tree", id="symlink-dotdot"),
    pytest.param(
        [sym("sub/up", ".."), sym("sub/esc", "up/../outside")],
        "leaves the tree",
        id="symlink-through-symlink",
    ),
    pytest.param([sym("dir", "sub"), reg("dir/pwned.py")], "conflicts", id="file-under-symlink"),
    pytest.param([hard("h", "/etc/passwd")], "hardlink", id="hardlink-absolute"),
    pytest.param([hard("h", "../outside")], "hardlink", id="hardlink-dotdot"),
    pytest.param([hard("a.py", "b.py"), reg("b.py")], "not an earlier file", id="hardlink-later"),
    pytest.param([reg("a.py"), special("null", tarfile.CHRTYPE)], "device", id="char-device"),
    pytest.param([special("disk", tarfile.BLKTYPE)], "device", id="block-device"),
    pytest.param([reg("a.py"), special("pipe", tarfile.FIFOTYPE)], "fifo", id="fifo"),
    pytest.param([reg("a.py"), reg("a.py")], "appears twice", id="duplicate"),
    pytest.param([reg(".conveyor/manifest.json", b"{}")], "reserved", id="reserved-dir"),
    pytest.param(
        [reg("a.py", pax={"comment": "x" * 200_000})], "larger than 64 KiB", id="header-bomb"
    ),
]


@pytest.fixture(autouse=True, params=["inline", "threads"])
def writers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test with files written on the reading thread (small archives) and on the writer
    threads (large ones)."""
    import conveyor._unpack

    monkeypatch.setattr(conveyor._unpack, "_THREADED", 1 << 62 if request.param == "inline" else 0)
    return str(request.param)


@pytest.fixture(params=["new", "empty"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A destination that does not exist yet, or an existing empty directory."""
    path = tmp_path / "out" / "dest"
    path.parent.mkdir()
    if request.param == "empty":
        path.mkdir()
    return path


def assert_nothing_left(dest: Path, existed: bool) -> None:
    if existed:
        assert list(dest.iterdir()) == []
    else:
        assert not dest.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == (["dest"] if existed else [])
    assert not (dest.parent / "evil.py").exists()
    assert not (dest.parent.parent / "evil.py").exists()
    assert not Path("/tmp/conveyor-evil.py").exists()


@pytest.mark.parametrize(("members", "message"), HOSTILE)
def test_hostile_archive_is_refused_and_nothing_is_left(
    members: list[Member], message: str, dest: Path
) -> None:
    existed = dest.exists()
    with pytest.raises(UnsafeArchive, match=message) as caught:
        unpack(io.BytesIO(craft(members)), dest)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("refusing archive")
    assert_nothing_left(dest, existed)


@pytest.mark.parametrize(
    ("members", "limits", "message"),
    [
        pytest.param(
            [reg(f"f{i}.py") for i in range(5)],
            UnpackLimits(max_entries=3),
            "holds 5 files, more than the limit of 3",
            id="entries-per-manifest",
        ),
        pytest.param(
            [reg("a.py"), *(Member(f"d{i}", type=tarfile.DIRTYPE, listed=False) for i in range(5))],
            UnpackLimits(max_entries=3),
            "more than 3 entries",
            id="entries-counted",
        ),
        pytest.param(
            [reg("big.bin", b"\x00" * 5000)],
            UnpackLimits(max_bytes=1000),
            "holds 5000 bytes, more than the limit of 1000",
            id="bytes-per-manifest",
        ),
        pytest.param(
            [reg("a.py", b"\x00" * 600), reg("big.bin", b"\x00" * 5000, manifest_size=10)],
            UnpackLimits(max_bytes=1000),
            "'big.bin': more than 1000 bytes in all",
            id="bytes-counted-manifest-lies",
        ),
    ],
)
def test_archive_past_the_limits_is_refused(
    members: list[Member], limits: UnpackLimits, message: str, dest: Path
) -> None:
    existed = dest.exists()
    with pytest.raises(UnsafeArchive, match=message):
        unpack(io.BytesIO(craft(members)), dest, limits=limits)
    assert_nothing_left(dest, existed)


def test_manifest_with_a_hostile_path_is_refused(dest: Path) -> None:
    entry = manifest_entry(reg("../evil.py"))
    archive = craft([reg("ok.py")], manifest=canonical([entry]))
    with pytest.raises(UnsafeArchive, match=r"refusing bundle manifest entry '\.\./evil\.py'"):
        unpack(io.BytesIO(archive), dest)
    assert_nothing_left(dest, dest.exists())


# -- integrity ------------------------------------------------------------------------------------


def test_tampered_content_names_the_path(dest: Path) -> None:
    # Same size, other bytes, manifest unchanged: caught while the file is written.
    good, bad = reg("pkg/a.py", b"print(1)\n"), reg("pkg/a.py", b"print(2)\n")
    archive = craft([bad], manifest=canonical([manifest_entry(good)]))
    existed = dest.exists()
    with pytest.raises(IntegrityError, match=r"content differs: pkg/a\.py") as caught:
        unpack(io.BytesIO(archive), dest)
    assert caught.value.path == "pkg/a.py"
    assert_nothing_left(dest, existed)


@pytest.mark.parametrize(
    ("members", "manifest_members", "message", "path"),
    [
        ([reg("a.py"), reg("b.py")], [reg("a.py")], "unexpected file: b.py", "b.py"),
        ([reg("a.py")], [reg("a.py"), reg("b.py")], "missing: b.py", "b.py"),
        ([reg("a.py", mode=0o755)], [reg("a.py")], "executable bit differs: a.py", "a.py"),
        ([sym("l", "a.py"), reg("a.py")], [sym("l", "b.py"), reg("a.py")], "symlink target", "l"),
        ([reg("l")], [sym("l", "a.py")], "file type differs: l", "l"),
        ([reg("a.py", b"12345")], [reg("a.py", b"1234")], "content differs: a.py", "a.py"),
    ],
)
def test_archive_not_matching_its_manifest_is_an_integrity_error(
    members: list[Member], manifest_members: list[Member], message: str, path: str, dest: Path
) -> None:
    existed = dest.exists()
    archive = craft(members, manifest=canonical([manifest_entry(m) for m in manifest_members]))
    with pytest.raises(IntegrityError, match=message) as caught:
        unpack(io.BytesIO(archive), dest)
    assert caught.value.path == path
    assert_nothing_left(dest, existed)


def test_archive_of_another_version_is_refused_before_writing(tmp_path: Path, dest: Path) -> None:
    tree = write_known_tree(tmp_path / "tree")
    archive = tmp_path / "b.tar.zst"
    pack(tree, archive)
    existed = dest.exists()
    with pytest.raises(IntegrityError, match="not the expected sha256-000000000000"):
        unpack(archive, dest, expected_version="sha256-" + "0" * 64)
    assert_nothing_left(dest, existed)


# -- corrupt or foreign archives ------------------------------------------------------------------


def plain_tar_zst() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("a.py")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"x=1"))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (os.urandom(4096), "corrupt or not a Conveyor bundle"),
        (b"", "corrupt or not a Conveyor bundle"),
        (plain_tar_zst(), "does not start with .conveyor/manifest.json"),
        (craft([reg("a.py")], manifest=b'{"files": [], "format": 1}'), "not in canonical form"),
        (craft([reg("a.py")], manifest=b'{"files":[],"format":2}'), "unknown format"),
        (craft([reg("a.py")], manifest=b"not json"), "not valid JSON"),
    ],
)
def test_foreign_or_corrupt_archive_is_a_bundle_error(
    archive: bytes, message: str, dest: Path
) -> None:
    existed = dest.exists()
    with pytest.raises(BundleError, match=message):
        unpack(io.BytesIO(archive), dest)
    assert_nothing_left(dest, existed)


def test_truncated_archive_leaves_nothing(tmp_path: Path, dest: Path) -> None:
    tree = write_known_tree(tmp_path / "tree")
    data = io.BytesIO()
    pack(tree, data)
    existed = dest.exists()
    with pytest.raises(BundleError):
        unpack(io.BytesIO(data.getvalue()[: len(data.getvalue()) // 2]), dest)
    assert_nothing_left(dest, existed)


def test_non_empty_destination_is_refused_and_untouched(tmp_path: Path) -> None:
    tree = write_known_tree(tmp_path / "tree")
    archive = tmp_path / "b.tar.zst"
    pack(tree, archive)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(BundleError, match="is not empty"):
        unpack(archive, dest)
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]


def test_missing_archive_file_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read archive"):
        unpack(tmp_path / "nope.tar.zst", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


# -- what is accepted -----------------------------------------------------------------------------


class ReadOnlyStream:
    """Only ``read``: no seek, tell or fileno, like a socket or a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def test_unpack_streams_from_a_non_seekable_source(tmp_path: Path, dest: Path) -> None:
    tree = write_known_tree(tmp_path / "tree")
    data = io.BytesIO()
    version = pack(tree, data).version
    manifest = unpack(ReadOnlyStream(data.getvalue()), dest, expected_version=version)  # type: ignore[arg-type]
    assert manifest.version == version == compute_version(dest)
    assert snapshot(dest, skip=(".conveyor",)) == snapshot(tree)


def test_unpack_does_not_hold_the_archive_in_memory(tmp_path: Path) -> None:
    # Given a 24 MB archive of incompressible files
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(6):
        (tree / f"blob{i}.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    archive = tmp_path / "b.tar.zst"
    version = pack(tree, archive).version
    assert archive.stat().st_size > 24_000_000

    # When it is unpacked, Python allocations peak far below its size
    tracemalloc.start()
    try:
        unpack(archive, tmp_path / "dest", expected_version=version)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


def test_in_tree_hardlink_and_directory_members_are_accepted(dest: Path) -> None:
    members = [
        Member("pkg", type=tarfile.DIRTYPE, mode=0o755, listed=False),
        reg("pkg/a.py"),
        hard("pkg/b.py", "pkg/a.py"),
        sym("pkg/c.py", "a.py"),
    ]
    manifest = unpack(io.BytesIO(craft(members)), dest)
    assert (dest / "pkg/b.py").read_bytes() == (dest / "pkg/a.py").read_bytes()
    assert not (dest / "pkg/b.py").samefile(dest / "pkg/a.py")
    assert os.readlink(dest / "pkg/c.py") == "a.py"
    assert manifest.file_count == 3
    assert compute_version(dest) == manifest.version


def test_unpack_keeps_the_manifest_and_returns_it(tmp_path: Path, dest: Path) -> None:
    tree = write_known_tree(tmp_path / "tree")
    data = io.BytesIO()
    manifest = pack(tree, data)
    got = unpack(io.BytesIO(data.getvalue()), dest, expected_version=manifest.version)
    assert got == manifest
    assert (dest / MANIFEST_PATH).read_bytes() == manifest.canonical()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest"]
