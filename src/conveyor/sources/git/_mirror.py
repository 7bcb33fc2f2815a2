"""One bare mirror per repository, kept in the source's scratch directory.

The mirror is a partial-clone-capable (promisor remote, ``blob:none``), shallow bare repository
whose only remote is the repository URL (never a credential: credentials reach each git child
through its environment). A commit is fetched only when it is missing (``git cat-file -e
<sha>^{commit}``), at ``--depth=1``, and kept by a ref ``refs/conveyor/<sha>`` so nothing prunes
it: with ``--filter=blob:none`` when only some blobs are needed (they are then fetched in one
batch), or with its blobs in the same round trip otherwise. Servers that do not allow filters
answer with everything at once (git warns and ignores the filter); servers that refuse to serve
an unadvertised commit (protocol v0 without ``uploadpack.allowReachableSHA1InWant``) get a full
fetch of all branches and tags instead.

The mirror takes no lock of its own: it lives in the source's scratch directory, which the code
cache holds locked for the whole fetch and verify (one process at a time updates or reads it).
Stale ``*.lock`` files left by a killed git are removed on entry, and a mirror whose creation did
not finish is made again.

A mirror is never trusted half-written: every network fetch into it runs inside a journal
(`conveyor.sources.git._journal`); what a failed fetch wrote is rolled back at once (which also
gives back the disk space of a fetch that filled the disk), what a killed one wrote is rolled
back the next time the mirror is opened, and a mirror that cannot be rolled back is discarded.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conveyor._process import Completed
from conveyor.errors import VersionNotFound
from conveyor.sources.git import _journal as journal
from conveyor.sources.git._auth import AuthSession
from conveyor.sources.git._cmd import OFFLINE, Failure, GitFailed, git, raise_for

__all__ = ["Mirror"]

logger = logging.getLogger(__name__)

_MARKER = "conveyor-mirror"
_STALE_LOCKS = ("shallow.lock", "config.lock", "packed-refs.lock", "HEAD.lock", "index.lock")


def _keep(sha: str) -> str:
    """The refspec that fetches ``sha`` and keeps it by a ref (so nothing prunes it)."""
    return f"+{sha}:refs/conveyor/{sha}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Mirror:
    """The bare mirror of ``url`` at ``path`` (a ``*.git`` directory inside scratch)."""

    def __init__(self, path: Path, url: str, *, source: str, object_format: str = "sha1"):
        self.path = path
        self.url = url
        self.source = source
        self.object_format = object_format

    # -- locking and creation --------------------------------------------------------------------

    @contextmanager
    def opened(self) -> Iterator[Mirror]:
        """Make sure the mirror exists (the caller holds the scratch directory's lock)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._prepare()
        yield self

    def _prepare(self) -> None:
        if self.path.is_dir() and not (self.path / _MARKER).is_file():
            logger.info("removing unfinished git mirror path=%s", self.path)
            self.discard()
        for leftover in self.path.parent.glob(self.path.name + ".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if self.path.is_dir():
            self._remove_stale_locks()
            if journal.pending(self.path):
                logger.info("rolling back an interrupted git fetch path=%s", self.path)
                self._roll_back()
        if self.path.is_dir():
            return
        tmp = self.path.with_name(f"{self.path.name}.tmp-{time.time_ns()}")
        try:
            self._create(tmp)
            tmp.rename(self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.debug("created git mirror path=%s", self.path)

    def _create(self, tmp: Path) -> None:
        args = ["init", "--bare", "-q", "--template="]
        if self.object_format != "sha1":
            args.append(f"--object-format={self.object_format}")
        try:
            git([*args, str(tmp)])
        except GitFailed as exc:
            raise raise_for(exc, source=self.source, action="creating a mirror of") from None
        with open(tmp / "config", "a", encoding="utf-8") as fh:
            fh.write(
                "[core]\n\trepositoryformatversion = 1\n\tlogAllRefUpdates = false\n"
                "[extensions]\n\tpartialClone = origin\n"
                f'[remote "origin"]\n\turl = {_quote(self.url)}\n\tpromisor = true\n'
                "\tpartialCloneFilter = blob:none\n"
                "[gc]\n\tauto = 0\n[fetch]\n\twriteCommitGraph = false\n"
            )
        (tmp / _MARKER).write_text(self.url + "\n", encoding="utf-8")

    def discard(self) -> None:
        """Remove the mirror (the next `opened` makes a new one)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def _roll_back(self) -> None:
        """Undo a failed or interrupted fetch; discard the mirror when that is impossible."""
        try:
            removed = journal.roll_back(self.path)
        except (journal.Broken, OSError) as exc:
            logger.warning("discarding git mirror path=%s reason=%s", self.path, exc)
            self.discard()
            return
        logger.info(
            "rolled back a failed git fetch path=%s files_removed=%d", self.path, len(removed)
        )

    def _remove_stale_locks(self) -> None:
        # We hold the mirror's flock, so no git of ours is running here: any lock is stale.
        for name in _STALE_LOCKS:
            (self.path / name).unlink(missing_ok=True)
        for stale in (self.path / "refs").rglob("*.lock"):
            stale.unlink(missing_ok=True)

    # -- queries (no network) --------------------------------------------------------------------

    def _git(self, *args: str, input: bytes | None = None) -> str:
        """A local git command in the mirror; lazy fetches are disabled."""
        done = git(["--git-dir", str(self.path), *OFFLINE, *args], input=input)
        return done.stdout

    def has_commit(self, sha: str) -> bool:
        """Whether the commit (and so its trees: they arrive in the same pack) is here."""
        try:
            self._git("cat-file", "-e", f"{sha}^{{commit}}")
        except GitFailed:
            return False
        return True

    def missing_objects(self, sha: str, wanted: Iterable[str]) -> list[str]:
        """Which of ``wanted`` (objects of ``sha``'s tree) are not in the mirror yet."""
        want = set(wanted)
        if not want:
            return []
        out = self._git("rev-list", "--objects", "--no-walk", "--missing=print", sha)
        missing = {line[1:].split()[0] for line in out.splitlines() if line.startswith("?")}
        return sorted(missing & want)

    def missing_at(self, sha: str, paths: Iterable[str]) -> list[str]:
        """The blobs at ``paths`` of ``sha``'s tree that the mirror lacks (a walk of those paths
        only: cheap for a few files of a large tree)."""
        wanted = list(paths)
        if not wanted:
            return []
        out = self._git(
            "--literal-pathspecs",
            "rev-list",
            "--objects",
            "--no-walk",
            "--missing=print",
            sha,
            "--",
            *wanted,
        )
        return sorted({line[1:].split()[0] for line in out.splitlines() if line.startswith("?")})

    # -- network -----------------------------------------------------------------------------------

    def _fetch(
        self, auth: AuthSession, *args: str, input: bytes | None = None, noop: bool = False
    ) -> str:
        negotiation = ["-c", "fetch.negotiationAlgorithm=noop"] if noop else []
        journal.begin(self.path)
        try:
            done = self._run_fetch(auth, negotiation, args, input)
        except BaseException:
            self._roll_back()
            raise
        journal.commit(self.path)
        return done.stderr

    def _run_fetch(
        self, auth: AuthSession, negotiation: list[str], args: tuple[str, ...], input: bytes | None
    ) -> Completed:
        return git(
            [
                "--git-dir",
                str(self.path),
                *negotiation,
                "fetch",
                "--no-tags",
                "--no-write-fetch-head",
                "--recurse-submodules=no",
                "--quiet",
                *args,
            ],
            auth=auth.env(),
            network=True,
            input=input,
            retry=auth.retry,
        )

    def fetch_commit(self, sha: str, auth: AuthSession, *, blobs: bool = False) -> None:
        """Fetch commit ``sha`` at depth 1 and keep a ref to it: without its blobs (a partial
        fetch, where the server allows filters), or with them when ``blobs``."""
        started = time.perf_counter()
        wanted = "--no-filter" if blobs else "--filter=blob:none"
        try:
            stderr = self._fetch(auth, "--depth=1", wanted, "origin", _keep(sha))
        except GitFailed as exc:
            if exc.failure is Failure.VERSION:
                raise VersionNotFound(
                    f"commit {sha} not found in {self.source}",
                    source=self.source,
                    hint="check that the commit was pushed (and not force-pushed away), "
                    "or redeploy from an existing branch or tag",
                ) from None
            if exc.failure is not Failure.UNADVERTISED:
                raise raise_for(exc, source=self.source, action=f"fetching {sha} from") from None
            logger.info("server refuses fetch by commit; fetching branches and tags sha=%s", sha)
            self._fetch_all_refs(sha, auth)
        else:
            if "filtering not recognized" in stderr:
                logger.info("git server ignores filters; fetched whole tree source=%s", self.source)
        logger.info(
            "git fetched commit=%s source=%s seconds=%.3f",
            sha,
            self.source,
            time.perf_counter() - started,
        )

    def _fetch_all_refs(self, sha: str, auth: AuthSession) -> None:
        try:
            # A server that refuses unadvertised commits refuses blobs by id too: take them all.
            self._fetch(
                auth,
                "--no-filter",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            )
        except GitFailed as exc:
            raise raise_for(exc, source=self.source, action="fetching branches from") from None
        if not self.has_commit(sha):
            raise VersionNotFound(
                f"commit {sha} not found in {self.source} (on no branch or tag)",
                source=self.source,
                hint="check that the commit was pushed (and not force-pushed away), "
                "or redeploy from an existing branch or tag",
            )
        git(["--git-dir", str(self.path), "update-ref", f"refs/conveyor/{sha}", sha])

    def fetch_objects(
        self, sha: str, oids: list[str], auth: AuthSession, *, paths: list[str] | None = None
    ) -> None:
        """Fetch ``oids`` (blobs of ``sha``'s tree; at ``paths`` when given, which makes the
        check afterwards cheap) in one request; fall back to a refetch."""
        if not oids:
            return
        started = time.perf_counter()
        try:
            self._fetch(
                auth,
                "--filter=blob:none",
                "--stdin",
                "origin",
                input=("\n".join(oids) + "\n").encode(),
                noop=True,
            )
        except GitFailed as exc:
            if exc.failure not in (Failure.UNADVERTISED, Failure.VERSION):
                raise raise_for(exc, source=self.source, action="fetching files from") from None
            logger.info("server refuses blob fetches; refetching the whole commit sha=%s", sha)
            try:
                self._fetch(auth, "--refetch", "--no-filter", "--depth=1", "origin", _keep(sha))
            except GitFailed as exc2:
                raise raise_for(exc2, source=self.source, action="fetching files from") from None
        still = (
            self.missing_objects(sha, oids)
            if paths is None
            else sorted(set(self.missing_at(sha, paths)) & set(oids))
        )
        if still:
            raise VersionNotFound(
                f"{len(still)} files of commit {sha} could not be fetched from {self.source}",
                source=self.source,
            )
        logger.info(
            "git fetched files count=%d source=%s seconds=%.3f",
            len(oids),
            self.source,
            time.perf_counter() - started,
        )
