"""Test helpers for the code cache: a controllable source, and a child-process entry point.

`FakeSource` writes a known tree for each version and appends one line per fetch to
``<state>/fetches.log`` (so fetches are counted across processes). Flags make it slow, block until
released, fail, or hand back corrupt code. Its cache key depends only on ``name``, so a failing
and a working instance share one cache directory.

Run as a script (``python tests/cache_helpers.py MODE ...``) it is a separate process that races,
blocks or leases against the test process.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from conveyor.cache import CodeCache
from conveyor.errors import BundleError, IntegrityError, SourceUnavailable
from conveyor.sources.base import FetchContext, Source

HELPER = Path(__file__).resolve()


def expected_files(version: str, size: int) -> dict[str, bytes]:
    """The exact tree `FakeSource` writes for ``version`` (``data.bin`` is ``size`` bytes)."""
    seed = hashlib.sha256(version.encode()).digest()
    data = (seed * (size // len(seed) + 1))[:size]
    return {
        "flow.py": f"VERSION = {version!r}\n".encode(),
        "pkg/__init__.py": b"",
        "pkg/run.sh": b"#!/bin/sh\necho hi\n",
        "data.bin": data,
    }


def distinct_size(*versions: str, size: int = 1000) -> int:
    """Bytes `FakeSource` trees of ``versions`` take in the cache: each distinct file once (the
    versions share ``pkg/__init__.py`` and ``pkg/run.sh``)."""
    return sum(len(b) for b in {d for v in versions for d in expected_files(v, size).values()})


def tree_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` as relative POSIX path -> bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for name, data in tree_files(root).items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


class FakeSource(Source):
    """A source whose behaviour the test controls."""

    kind = "test-fake"

    def __init__(
        self,
        name: str,
        *,
        state: str,
        size: int = 1000,
        delay: float = 0.0,
        block: bool = False,
        fail: bool = False,
        os_error: bool = False,
        corrupt: bool = False,
        reject: bool = False,
        scratch: bool = False,
        scratch_bytes: int = 0,
        expected: int | None = None,
        no_space: bool = False,
    ) -> None:
        self.uses_scratch = scratch  # type: ignore[misc]
        self.name = name
        self.state = state
        self.size = size
        self.delay = delay
        self.block = block
        self.fail = fail
        self.os_error = os_error
        self.corrupt = corrupt
        self.reject = reject
        self.scratch_bytes = scratch_bytes
        self.expected_bytes = expected
        self.no_space = no_space

    @property
    def fetches(self) -> int:
        return count_lines(Path(self.state) / "fetches.log")

    @property
    def verifies(self) -> int:
        return count_lines(Path(self.state) / "verifies.log")

    def resolve(self, ctx: FetchContext | None = None) -> str:
        return "v1"

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        state = Path(self.state)
        state.mkdir(parents=True, exist_ok=True)
        scratch = ctx.scratch if ctx is not None else None
        _append(state / "fetches.log", f"{os.getpid()} {version} {dest.name} {scratch}\n")
        present = sorted(p.name for p in dest.parent.iterdir() if p.is_dir() and p.name[0] != ".")
        _append(state / "present.log", f"{version} {','.join(present)}\n")
        files = expected_files(version, self.size)
        (dest / "flow.py").write_bytes(files["flow.py"])  # something partial first
        if scratch is not None and self.scratch_bytes:
            (scratch / f"state-{version}").write_bytes(b"s" * self.scratch_bytes)
        if self.no_space:  # as an unpacker reports it: its own error, raised "from None"
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest / "data.bin"))
            except OSError:
                raise BundleError(f"cannot write data.bin: {os.strerror(errno.ENOSPC)}") from None
        if self.fail:
            raise SourceUnavailable("the fake source is down", source=self.describe())
        if self.os_error:
            raise PermissionError(13, "Permission denied", str(dest / "data.bin"))
        if self.block:
            write_atomic(state / f"started-{os.getpid()}", str(dest))
            deadline = time.monotonic() + 30
            while not (state / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(self.delay)
        for rel, data in files.items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (dest / "pkg/run.sh").chmod(0o755)
        if self.corrupt:
            (dest / "data.bin").write_bytes(b"tampered")

    def expected_size(self, version: str, ctx: FetchContext | None = None) -> int | None:
        return self.expected_bytes

    def verify(self, version: str, path: Path, ctx: FetchContext | None = None) -> None:
        _append(Path(self.state) / "verifies.log", f"{os.getpid()} {version} {path.name}\n")
        if self.reject:
            raise IntegrityError(f"{version} was rejected by the test", path="flow.py")
        expected = expected_files(version, self.size)
        actual = tree_files(path)
        for rel in sorted(set(expected) | set(actual)):
            if expected.get(rel) != actual.get(rel):
                raise IntegrityError(f"{rel} does not match version {version}", path=rel)

    def proof(self, version: str, path: Path, ctx: FetchContext | None = None) -> bytes | None:
        return None  # no digests to offer, whatever its versions look like: only `verify`

    def expected(self, version: str, proof: bytes | None) -> None:
        return None

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, **self.options()}

    def options(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "size": self.size,
            "delay": self.delay,
            "block": self.block,
            "fail": self.fail,
            "os_error": self.os_error,
            "corrupt": self.corrupt,
            "reject": self.reject,
            "scratch": self.uses_scratch,
            "scratch_bytes": self.scratch_bytes,
            "expected": self.expected_bytes,
            "no_space": self.no_space,
        }

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that a reader polling for ``path`` never sees it half-written."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def helper_command(
    mode: str, root: Path, source: FakeSource, version: str, *extra: str
) -> list[str]:
    """argv that runs this file as a child process against the same cache and source."""
    spec = json.dumps({"name": source.name, **source.options()})
    return [sys.executable, str(HELPER), mode, str(root), spec, version, *extra]


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    """Child-process modes (the cache budget is large unless a test sets it):

    - ``ensure ROOT SPEC VERSION [READY GO]``: (touch READY, wait for GO,) ensure, print JSON;
    - ``lease ROOT SPEC VERSION READY``: hold a lease, touch READY, then sleep until killed.
    """
    mode, root, spec_text, version, *extra = argv
    spec = json.loads(spec_text)
    source = FakeSource(spec.pop("name"), **spec)
    cache = CodeCache(Path(root), max_bytes=10**12)
    if mode == "ensure":
        if extra:
            Path(extra[0]).touch()
            _wait_for(Path(extra[1]), 30)
        path = cache.ensure(source, version)
        print(json.dumps({"pid": os.getpid(), "path": str(path), "digest": tree_digest(path)}))
        return 0
    if mode == "lease":
        with cache.lease(source, version) as path:
            write_atomic(Path(extra[0]), str(path))
            time.sleep(60)
        return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
