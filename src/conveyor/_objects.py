"""The content-addressed file store under the code cache: each distinct file once, sealed.

Layout of ``<cache>/.objects/``::

    ab/<sha256>        a plain file whose content hashes to its name, mode 0o444
    ab/<sha256>.x      the same for an executable file, mode 0o555 (hard links share the
                       inode, so its mode too: the same bytes executable and not are two objects)
    stamps.log         each object's `Stamp` (`conveyor._stamps.StampBook`)
    .lock              flock: shared around "check an object, then link it", exclusive around
                       "nobody links it, remove it" (`ObjectStore.collect`)

A checkout is a tree of hard links to objects, so an object's link count is 1 (the store) plus
the checkouts (and hard-link workspaces) holding it: an object with one link is garbage, and
evicting a checkout frees exactly the objects it held alone.

An object is *usable* when its stat equals its recorded stamp, or, when it does not, when
hashing it again gives its name and it is still sealed (read-only, the cache user's): the stamp
is then recorded again. An object that fails is removed from the store (`ObjectStore.discard`),
so nothing links it again.

`Fill` is one fill's view of the store, handed to a source as ``FetchContext.objects``: a source
that knows a file's digest before writing it (a bundle's manifest, a git tree) asks `Fill.link`
to link the stored object instead, and tells `Fill.wrote` what it wrote (digests it computed
while writing); `Fill.known` then spares `Source.verify` hashing those files again, and
`Fill.adopt` turns every file of the finished tree into (a link to) an object.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from conveyor._premade import Premade
from conveyor._stamps import Stamp, StampBook

__all__ = ["OBJECTS_DIR", "Fill", "ObjectStore", "hash_file", "object_name", "sealed_mode"]

logger = logging.getLogger(__name__)

OBJECTS_DIR = ".objects"
_EXEC_SUFFIX = ".x"
_CHUNK = 1 << 20


def object_name(sha256: str, executable: bool) -> str:
    """``<sha256>`` or ``<sha256>.x``."""
    return sha256 + _EXEC_SUFFIX if executable else sha256


def sealed_mode(name: str) -> int:
    """The permission bits an object named ``name`` must have."""
    return 0o555 if name.endswith(_EXEC_SUFFIX) else 0o444


def hash_file(path: Path | str) -> tuple[str, os.stat_result]:
    """``(sha256 hex, stat)`` of a regular file, read without following a final symlink; the stat
    is taken after reading and equals the one before (else `OSError` ``EAGAIN``: it changed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        digest = hashlib.sha256()
        buffer = bytearray(_CHUNK)
        while count := os.readv(fd, [buffer]):
            digest.update(memoryview(buffer)[:count])
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if Stamp.of(before) != Stamp.of(after):
        raise OSError(errno.EAGAIN, "changed while it was hashed", str(path))
    return digest.hexdigest(), after


class ObjectStore:
    """The objects under ``root`` (``<cache>/.objects``); the constructor does no I/O."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.stamps = StampBook(self.root / "stamps.log")
        self._top = os.fspath(self.root)

    def path(self, name: str) -> Path:
        """Where object ``name`` lives (whether or not it is there)."""
        return Path(self.where(name))

    def where(self, name: str) -> str:
        """`path`, as a string (for the hot loops)."""
        return f"{self._top}/{name[:2]}/{name}"

    @contextlib.contextmanager
    def locked(self, *, exclusive: bool = False) -> Iterator[None]:
        """Hold the store's flock (shared: linking; exclusive: removing unlinked objects)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def intact(self, name: str, st: os.stat_result, recorded: Stamp | None) -> bool:
        """Whether the object whose stat is ``st`` holds its name's bytes, sealed: its stamp
        says so, or hashing it again does (the stamp is then recorded again)."""
        if recorded == Stamp.of(st) and stat.S_IMODE(st.st_mode) == sealed_mode(name):
            return True
        return self.confirm(name, self.path(name), ino=st.st_ino)

    def confirm(
        self,
        name: str,
        path: Path,
        *,
        ino: int | None = None,
        stamps: list[tuple[str, Stamp]] | None = None,
    ) -> bool:
        """Hash the file at ``path`` (a link to object ``name``); True when it holds the
        object's bytes and is sealed. Its stamp is recorded when ``path`` is the store's own
        object (same inode) — or added to ``stamps``, for the caller to record many at once;
        a file that is the store's object and fails is discarded."""
        try:
            sha, st = hash_file(path)
        except OSError:
            return False
        good = (
            sha == name[:64]
            and stat.S_IMODE(st.st_mode) == sealed_mode(name)
            and st.st_uid == os.geteuid()
        )
        try:
            stored = os.lstat(self.path(name)).st_ino
        except OSError:
            stored = None
        if stored == st.st_ino and (ino is None or ino == st.st_ino):
            if not good:
                self.discard(name, st.st_ino)
            elif stamps is not None:
                stamps.append((name, Stamp.of(st)))
            else:
                self.stamps.record([(name, Stamp.of(st))])
        return good

    def discard(self, name: str, ino: int) -> None:
        """Take object ``name`` out of the store if it is still the inode ``ino`` (it failed a
        check): no fill links it again; checkouts holding it fail their next check. Needs no
        lock: a fill links an object only after checking it, which this one now fails."""
        path = self.path(name)
        try:
            if os.lstat(path).st_ino != ino:
                return
            os.unlink(path)
        except FileNotFoundError:
            return
        self.stamps.forget([name])
        logger.warning("discarded an object that no longer matches its name object=%s", name)

    def collect(self, names: Iterable[str]) -> tuple[int, int]:
        """Remove the objects ``names`` that no checkout links any more (one link left);
        returns ``(bytes, objects)`` removed."""
        freed = count = 0
        gone: list[str] = []
        with self.locked(exclusive=True):
            for name in dict.fromkeys(names):
                path = self.where(name)
                try:
                    st = os.lstat(path)
                    if st.st_nlink != 1 or not stat.S_ISREG(st.st_mode):
                        continue
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                freed += st.st_size
                count += 1
                gone.append(name)
            self.stamps.forget(gone)
        return freed, count

    def sweep(self) -> tuple[int, int]:
        """One pass over every object: remove those nobody links (left by killed fills or
        evictions); returns ``(bytes, objects)`` that stay, each counted once."""
        size = count = 0
        gone: list[str] = []
        live: list[str] = []
        with self.locked(exclusive=True):
            for shard in self._shards():
                with contextlib.suppress(FileNotFoundError), os.scandir(shard) as it:
                    for entry in it:
                        if entry.name.startswith("."):
                            continue
                        try:
                            st = entry.stat(follow_symlinks=False)
                            if st.st_nlink == 1 and stat.S_ISREG(st.st_mode):
                                os.unlink(entry.path)
                                gone.append(entry.name)
                                continue
                        except FileNotFoundError:
                            continue
                        size += st.st_size
                        count += 1
                        live.append(entry.name)
            self.stamps.forget(gone)
            self.stamps.compact(live)
        if gone:
            logger.info("cache removed unlinked objects count=%d", len(gone))
        return size, count

    def usage(self) -> tuple[int, int]:
        """``(bytes, objects)`` on disk, each object counted once however many links it has."""
        size = count = 0
        for shard in self._shards():
            with contextlib.suppress(FileNotFoundError), os.scandir(shard) as it:
                for entry in it:
                    if not entry.name.startswith("."):
                        with contextlib.suppress(FileNotFoundError):
                            size += entry.stat(follow_symlinks=False).st_size
                            count += 1
        return size, count

    def restamp(self, names: Mapping[str, Stamp]) -> None:
        """After this process linked or unlinked objects it had checked (``names``: the stamp
        each had just before), record their new stat when only the link count changed."""
        fresh: list[tuple[str, Stamp]] = []
        for name, before in names.items():
            try:
                now = Stamp.of(os.lstat(self.where(name)))
            except FileNotFoundError:
                continue
            if (now.ino, now.size, now.mtime) == (before.ino, before.size, before.mtime):
                fresh.append((name, now))
        self.stamps.record(fresh)

    def _shards(self) -> list[str]:
        try:
            with os.scandir(self.root) as it:
                return sorted(e.path for e in it if len(e.name) == 2 and e.is_dir())
        except FileNotFoundError:
            return []


Digests = Mapping[str, str]
"""Algorithm → hex digest of one file's content (``sha256``, ``git-sha1``, ...)."""


class Fill:
    """One fill's use of the store; see the module docstring. Safe to use from several threads
    (an unpacker's writers). From its first link until `close` it holds the store's shared lock,
    so no object it checked can be collected before it links it."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        aliases: Callable[[], Mapping[str, str]] = dict,
        shape: Callable[[], Iterable[str]] = tuple,
        spares: str | None = None,
    ):
        self.store = store
        self._aliases_of = aliases
        self._shape_of = shape
        self._spares = spares
        self._premade: dict[str, Premade] = {}
        self.premaking = False
        """Whether the source asked for directories ahead (`premake`)."""
        self._aliases: Mapping[str, str] | None = None
        self._stamps: dict[str, Stamp] = {}
        self._known: dict[str, tuple[tuple[int, int, int], Digests]] = {}
        self._adopted: dict[str, tuple[int, str]] = {}
        self._touched: dict[str, Stamp] = {}
        self._linked: dict[str, int] = {}
        self._present: set[str] = set()
        self._listed: set[str] = set()
        self._shards: set[str] = set()
        self._mutex = threading.RLock()
        self._lock_fd: int | None = None
        self.linked = 0
        """Files linked from the store instead of written."""
        self.unpacked: tuple[str, str] | None = None
        """(directory, version) a bundle was unpacked into by this fill, every file checked
        against its manifest as it was written or linked: `vouches` for it."""

    def vouches(self, path: Path | str, version: str) -> bool:
        """Whether this fill itself unpacked and checked ``version`` into ``path`` (a source's
        `verify` then need not walk it again)."""
        return self.unpacked == (os.fspath(path), version)

    def premake(self, dest: str) -> None:
        """Start making, below ``dest`` (empty), the directories the source's latest checkout
        has (``shape``), while the caller waits for its source; see `conveyor._premade`."""
        with self._mutex:
            if dest not in self._premade:
                self._premade[dest] = Premade(dest, self._shape_of(), spares=self._spares)
                self.premaking = True

    def premade(self, dest: str) -> Premade | None:
        """The directories `premake` is making below ``dest``, if it was asked to (once)."""
        with self._mutex:
            return self._premade.pop(dest, None)

    def close(self) -> None:
        """Stop making directories ahead, and release the store's lock (idempotent)."""
        with self._mutex:
            premade, self._premade = list(self._premade.values()), {}
        for made in premade:
            made.cancel()
        with self._mutex:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _hold(self) -> None:
        with self._mutex:
            if self._lock_fd is None:
                self.store.root.mkdir(parents=True, exist_ok=True)
                fd = os.open(
                    self.store.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                fcntl.flock(fd, fcntl.LOCK_SH)
                self._lock_fd = fd

    def expect(self, names: Iterable[str]) -> None:
        """Load the stamps of objects this fill may link, and list which of them the store
        holds (a directory listing per shard, instead of a lookup per file)."""
        with self._mutex:
            wanted = [n for n in names if n not in self._stamps]
        if not wanted:
            return
        found = self.store.stamps.get(wanted)
        shards = {n[:2] for n in wanted} - self._listed
        present: set[str] = set()
        for shard in shards:
            try:
                present.update(os.listdir(os.path.join(self.store._top, shard)))
            except OSError:
                continue
        with self._mutex:
            self._stamps.update(found)
            self._present |= present
            self._listed |= shards

    def lookup(self, algorithm: str, digest: str) -> str | None:
        """The sha256 of content known by another digest (a git blob id) from earlier fills."""
        with self._mutex:
            if self._aliases is None:
                self._aliases = self._aliases_of()
            return self._aliases.get(f"{algorithm}:{digest}")

    def lookup_all(self, algorithm: str, digests: Iterable[str]) -> list[str | None]:
        """`lookup` of many digests of one algorithm."""
        with self._mutex:
            if self._aliases is None:
                self._aliases = self._aliases_of()
            get = self._aliases.get
        return [get(f"{algorithm}:{d}") for d in digests]

    def link(
        self, dest: Path | str, sha256: str, executable: bool, *, aliases: Digests | None = None
    ) -> bool:
        """Create ``dest`` (its directory exists, it does not) as a link to the stored object of
        this content, if there is one and it is intact; False: write the file yourself."""
        digests = {"sha256": sha256, **(aliases or {})}
        return self.link_all([(os.fspath(dest), sha256, executable, digests)])[0]

    def link_all(self, items: Sequence[tuple[str, str, bool, Digests]]) -> list[bool]:
        """`link` for many files (``(dest, sha256, executable, digests)``, their directories
        made; each ``digests`` is kept as given): the same checks and links, with one
        bookkeeping pass. Which were linked."""
        linked = [False] * len(items)
        if not items:
            return linked
        self.expect(object_name(sha, x) for _dest, sha, x, _digests in items)
        self._hold()
        done = self._link_range(items, linked)
        with self._mutex:
            touched, counts, adopted, known = (
                self._touched,
                self._linked,
                self._adopted,
                self._known,
            )
            stamps = self._stamps
            for dest, name, after, digests in done:
                touched[name] = stamps[name]
                counts[name] = counts.get(name, 0) + 1
                ino = after.st_ino
                adopted[dest] = (ino, name)
                known[dest] = ((ino, after.st_size, after.st_mtime_ns), digests)
            self.linked += len(done)
        return linked

    def _link_range(
        self,
        items: Sequence[tuple[str, str, bool, Digests]],
        linked: list[bool],
    ) -> list[tuple[str, str, os.stat_result, Digests]]:
        """Link each item whose object is present and intact (its stat is its recorded stamp,
        sealed; or, failing that, `ObjectStore.intact`); per linked item ``(dest, name, stat
        after, digests)``, the object's new stamp kept in ``self._stamps``."""
        store, stamps, present, listed = self.store, self._stamps, self._present, self._listed
        top = store._top
        lstat, link = os.lstat, os.link
        file_mode, exec_mode = stat.S_IFREG | 0o444, stat.S_IFREG | 0o555
        done: list[tuple[str, str, os.stat_result, Digests]] = []
        for i, (dest, sha256, executable, digests) in enumerate(items):
            name = sha256 + _EXEC_SUFFIX if executable else sha256
            if name not in present and name[:2] in listed:
                continue
            path = f"{top}/{name[:2]}/{name}"
            mode = exec_mode if executable else file_mode
            try:
                st = lstat(path)
                recorded = stamps.get(name)
                if (
                    recorded is None
                    or recorded.ino != st.st_ino
                    or recorded.size != st.st_size
                    or recorded.mtime != st.st_mtime_ns
                    or recorded.ctime != st.st_ctime_ns
                    or st.st_mode != mode
                ) and not (stat.S_ISREG(st.st_mode) and store.intact(name, st, recorded)):
                    continue
                link(path, dest, follow_symlinks=False)
            except OSError as exc:  # gone, a link count at its limit, another file system
                logger.debug("object not linked object=%s error=%s", name, exc)
                continue
            after = lstat(dest)
            stamps[name] = Stamp(after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns)
            done.append((dest, name, after, digests))
            linked[i] = True
        return done

    def wrote(
        self,
        path: Path | str,
        st: os.stat_result,
        digests: Digests,
        *,
        store: bool = False,
    ) -> None:
        """The caller wrote ``path`` (stat ``st`` after writing) with content of ``digests``;
        ``store``: it is finished and sealed, store it now (from the writer's thread)."""
        self._remember(path, st, dict(digests))
        if store:
            executable = bool(st.st_mode & stat.S_IXUSR)
            self.adopt(os.fspath(path), digests["sha256"], executable, st)

    def known(self, path: Path | str, st: os.stat_result) -> Digests | None:
        """The digests of the file at ``path`` if this fill wrote or linked it and it is
        unchanged since (``st`` its current stat); None when it must be hashed."""
        entry = self._known.get(os.fspath(path))
        if entry is None or entry[0] != (st.st_ino, st.st_size, st.st_mtime_ns):
            return None
        return entry[1]

    def recorded(self, path: str) -> Digests | None:
        """The digests this fill recorded for ``path`` when it wrote or linked it (whatever the
        file holds now)."""
        entry = self._known.get(path)
        return entry[1] if entry is not None else None

    def alias(self, path: str) -> str:
        """``algorithm:digest`` of the other digest recorded for ``path`` (a git blob id), or
        ``""``."""
        entry = self._known.get(path)
        return _alias(entry[1]) if entry is not None else ""

    def settled(
        self, found: Iterable[tuple[str, str, os.stat_result]]
    ) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, os.stat_result]]]:
        """Of the files ``found`` (``(rel, path, stat)``), those this fill linked or stored and
        whose object's stat is still the one taken right after this fill last linked it (so
        nothing changed it since, as a use's stamp check would tell), sealed: rel → (object,
        `alias`); and the rest, in order."""
        adopted, touched, known = self._adopted, self._touched, self._known
        file_mode, exec_mode = stat.S_IFREG | 0o444, stat.S_IFREG | 0o555
        files: dict[str, tuple[str, str]] = {}
        rest: list[tuple[str, str, os.stat_result]] = []
        for item in found:
            rel, path, st = item
            entry = adopted.get(path)
            if entry is None or entry[0] != st.st_ino:
                rest.append(item)
                continue
            name = entry[1]
            mode = exec_mode if name.endswith(_EXEC_SUFFIX) else file_mode
            now = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if touched.get(name) != now or st.st_mode != mode:
                rest.append(item)
                continue
            digests = known.get(path)
            files[rel] = (name, _alias(digests[1]) if digests is not None else "")
        return files, rest

    def adopted(self, path: str, st: os.stat_result) -> str | None:
        """The object ``path`` (stat ``st``) links, if this fill linked or stored it."""
        entry = self._adopted.get(path)
        return entry[1] if entry is not None and entry[0] == st.st_ino else None

    def adopt(
        self, path: str, sha256: str, executable: bool, mine: os.stat_result | None = None
    ) -> str:
        """Make the finished file at ``path`` (content ``sha256``, stat ``mine`` when known)
        a link to its object: link the stored one in its place, or seal this one and store
        it. Returns the object name."""
        name = object_name(sha256, executable)
        target = self.store.where(name)
        self._hold()
        for _attempt in range(3):
            try:
                st: os.stat_result | None = os.lstat(target)
            except FileNotFoundError:
                st = None
            if st is None:
                if mine is None or stat.S_IMODE(mine.st_mode) != sealed_mode(name):
                    os.chmod(path, sealed_mode(name))
                self._shard(name)
                try:
                    os.link(path, target, follow_symlinks=False)
                except FileExistsError:
                    continue  # stored by another fill meanwhile: link that one
                ino = mine.st_ino if mine is not None else os.lstat(path).st_ino
                return self._took(path, ino, name, Stamp.of(mine) if mine else None, fresh=True)
            ino = mine.st_ino if mine is not None else os.lstat(path).st_ino
            if st.st_ino == ino:
                return self._took(path, ino, name, None)  # linked from the store already
            if name not in self._stamps:
                self.expect([name])
            intact = self.store.intact(name, st, self._stamps.get(name))
            if intact and _swap_in(target, path):
                return self._took(path, st.st_ino, name, Stamp.of(st))
            # damaged, at its link limit, or gone: this file becomes the object
            os.chmod(path, sealed_mode(name))
            if _swap_in(path, target):
                return self._took(path, ino, name, None, fresh=True)
        raise OSError(errno.EIO, "could not store the object", target)

    def _took(
        self, path: str, ino: int, name: str, _before: Stamp | None, *, fresh: bool = False
    ) -> str:
        after = Stamp.of(os.lstat(self.store.where(name)))  # after this link: its ctime
        with self._mutex:
            self._present.add(name)
            self._adopted[path] = (ino, name)
            self._touched[name] = after
            self._linked[name] = self._linked.get(name, 0) + 1
        return name

    def _shard(self, name: str) -> None:
        if name[:2] not in self._shards:
            os.makedirs(os.path.join(self.store._top, name[:2]), exist_ok=True)
            with self._mutex:
                self._shards.add(name[:2])

    def finish(self) -> None:
        """Record the stamps of every object this fill linked or stored: the stat taken right
        after linking it, or, for one linked several times (from several threads), a new one."""
        with self._mutex:
            touched, self._touched = self._touched, {}
            counts, self._linked = self._linked, {}
        once = [(name, stamp) for name, stamp in touched.items() if counts.get(name, 0) == 1]
        self.store.stamps.record(once)
        self.store.restamp({n: s for n, s in touched.items() if counts.get(n, 0) != 1})

    def _remember(self, path: Path | str, st: os.stat_result, digests: dict[str, str]) -> None:
        with self._mutex:
            self._known[os.fspath(path)] = ((st.st_ino, st.st_size, st.st_mtime_ns), digests)


def _alias(digests: Digests) -> str:
    for algorithm, value in digests.items():
        if algorithm != "sha256":
            return f"{algorithm}:{value}"
    return ""


def _swap_in(source: str, dest: str) -> bool:
    """Make ``dest`` a hard link to ``source``, replacing what is there atomically."""
    head, tail = os.path.split(dest)
    tmp = os.path.join(head, f".{tail[:80]}.{secrets.token_hex(4)}.link")
    try:
        os.link(source, tmp, follow_symlinks=False)
    except OSError as exc:
        logger.debug("cannot link path=%s error=%s", source, exc)
        return False
    try:
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True
