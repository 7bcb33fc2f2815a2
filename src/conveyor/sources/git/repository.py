"""Git repositories as a source: GitHub, GitLab, Bitbucket (Cloud and Server), CodeCommit, any host.

``GitRepository(url, credentials=..., branch=...)`` resolves the branch or tag (or the remote's
HEAD) to a full commit at deploy time with ``git ls-remote``, and fetches exactly that commit at
run time: one bare mirror per repository in the cache's scratch directory, fetched only when the
commit is missing (depth 1; a partial ``blob:none`` fetch plus one batch of exactly the blobs
needed when ``directories`` are given, the blobs with the commit in one round trip when the
whole tree is needed — see `PARTIAL_WHOLE_TREE`), then the commit's tree written into the
cache's directory with no ``.git`` (only ``directories`` when given; submodules when asked) and
verified file by file against the commit.

Credentials are named in the deployment (``credentials="gh"``), looked up through the
`FetchContext`'s secret store when the network is needed (see
`conveyor.sources.git.credentials.load_credentials`), and handed to git only through the child's
environment. The URL is stored without user info; a URL with a password is refused.

`verify` is stateless: it recomputes the expected manifest from the mirror in ``ctx.scratch``
(no network), so any instance built from the same spec verifies what another one fetched. The
cache holds its scratch lock around ``fetch`` + ``verify``; the mirror takes no lock of its own.
`proof` hands the cache the commit's own commit and tree objects; `expected` rebuilds the
checkout's blob ids from them alone, so every later use is checked without the mirror (see
`conveyor.sources.git._proof`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from conveyor._retry import RetryPolicy
from conveyor.errors import (
    AuthenticationError,
    ConfigError,
    IntegrityError,
    SourceError,
    VersionNotFound,
)
from conveyor.secrets import template_name
from conveyor.sources.base import FetchContext, Source, context
from conveyor.sources.git._auth import AuthSession, GitAuth
from conveyor.sources.git._checkout import (
    GITLINK,
    TreeEntry,
    TreeWriter,
    link_stored,
    list_tree,
    select,
    write_blobs,
)
from conveyor.sources.git._cmd import GitFailed
from conveyor.sources.git._manifest import GitManifest, GitTreeEntry, manifest_of, verify_git_tree
from conveyor.sources.git._mirror import Mirror
from conveyor.sources.git._proof import collect, expected_tree, tree_ids
from conveyor.sources.git._resolve import resolve_ref, resolve_short
from conveyor.sources.git._submodules import read_gitmodules, resolve_submodule_url, same_host
from conveyor.sources.git._validate import (
    FULL_SHA,
    check_commit,
    check_directories,
    check_ref,
    clean_url,
)
from conveyor.sources.git.credentials import (
    PROVIDERS,
    GitCredentials,
    ambient_credentials,
    check_credentials_name,
    load_credentials,
    provider_fits,
    rejected,
)

if TYPE_CHECKING:
    from conveyor._expected import ExpectedTree
    from conveyor.sources.git._partial import PartialCheckout

__all__ = ["GitRepository", "GitSource"]

logger = logging.getLogger(__name__)

_MAX_SUBMODULE_DEPTH = 8
PARTIAL_WHOLE_TREE = False
"""Fetch whole-tree checkouts partially too (commit and trees, then the blobs: two round trips).

Off: a checkout of the whole tree needs every blob anyway, so its commit is fetched with its
blobs in one round trip (``bench/git.py``: 0.9x a plain shallow clone, against 1.5x for two
rounds). A sparse checkout (``directories``) always fetches partially: only its blobs come."""
_FEW_PATHS = 64
"""Up to this many blobs to write, the mirror is asked about their paths only."""


class GitRepository(Source):
    """A git repository; versions are full commit hashes.

    Prefect's ``name`` (the clone's directory) and ``pull_interval`` (how often ``serve``
    pulls) are accepted and ignored: the code goes to each run's code directory, and a run
    fetches its pinned commit (or resolves its ref again with ``follow_ref``).
    """

    kind: ClassVar[str] = "git"
    uses_scratch: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        credentials: GitCredentials | str | None = None,
        branch: str | None = None,
        commit_sha: str | None = None,
        include_submodules: bool = False,
        directories: Sequence[str] | None = None,
        provider: str | None = None,
        follow_ref: bool = False,
        credentials_optional: bool = False,
        name: str | None = None,
        pull_interval: int | None = None,
    ) -> None:
        del name, pull_interval  # Prefect's; see the class docstring
        self.url = clean_url(url)
        if branch is not None and commit_sha is not None:
            raise ConfigError("pass a branch or a commit_sha, not both")
        self.branch = check_ref(branch) if branch is not None else None
        self.commit_sha = check_commit(commit_sha)
        if follow_ref and self.commit_sha:
            raise ConfigError("follow_ref needs a branch or tag: a commit_sha never moves")
        if provider is not None and provider not in PROVIDERS:
            raise ConfigError(
                f"unknown git provider {provider!r}", hint=f"use one of: {', '.join(PROVIDERS)}"
            )
        if credentials is not None and not isinstance(credentials, str | GitCredentials):
            raise ConfigError(
                "credentials must be a credentials object or a saved name, not "
                f"{type(credentials).__name__}",
                hint="a token would be stored with the deployment: save it once with "
                'GitHubCredentials(token=...).save("gh") (or `conveyor credentials create '
                'github gh`), then pass credentials="gh"',
            )
        if isinstance(credentials, str) and not credentials.strip():
            credentials = None
        if isinstance(credentials, str):
            check_credentials_name(credentials)
        if isinstance(credentials, GitCredentials) and not provider_fits(
            credentials.provider, provider
        ):
            raise ConfigError(f"{credentials.type} credentials do not fit provider {provider!r}")
        self.credentials = credentials
        self.include_submodules = bool(include_submodules)
        self.directories = check_directories(directories)
        self.provider = provider
        self.follow_ref = bool(follow_ref)
        self.credentials_optional = bool(credentials_optional) and isinstance(credentials, str)
        """A named credentials that may be missing: the repository is then read without them
        (a public repository), or with `ambient_credentials` (CodeCommit's ``AWS_*``)."""

    # -- identity and specs ------------------------------------------------------------------------

    @property
    def credentials_name(self) -> str | None:
        """The name the deployment stores for the credentials (None when there are none)."""
        if self.credentials is None:
            return None
        if isinstance(self.credentials, str):
            return self.credentials.strip()
        if self.credentials.name is None:
            raise ConfigError(
                "these credentials are not saved, so a deployment cannot name them",
                hint='save them first: creds.save("NAME"), then pass credentials="NAME"',
            )
        return self.credentials.name

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "url": self.url}
        optional: dict[str, Any] = {
            "branch": self.branch,
            "commit_sha": self.commit_sha,
            "include_submodules": self.include_submodules or None,
            "directories": list(self.directories) if self.directories else None,
            "provider": self.provider,
            "follow_ref": self.follow_ref or None,
            "credentials": self.credentials_name,
            "credentials_optional": self.credentials_optional or None,
        }
        spec.update({k: v for k, v in optional.items() if v is not None})
        return spec

    def identity(self) -> dict[str, Any]:
        """The repository and what shapes a checkout; not the ref, not the credentials."""
        ident: dict[str, Any] = {"kind": self.kind, "url": self.url.rstrip("/")}
        if self.directories:
            ident["directories"] = sorted(self.directories)
        if self.include_submodules:
            ident["include_submodules"] = True
        return ident

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GitRepository):
            return NotImplemented
        return self._compare() == other._compare()

    def __hash__(self) -> int:
        return hash(repr(self._compare()))

    def _compare(self) -> tuple[Any, ...]:
        creds = self.credentials
        return (
            self.url,
            self.branch,
            self.commit_sha,
            self.include_submodules,
            self.directories,
            self.provider,
            self.follow_ref,
            creds if not isinstance(creds, str) else creds.strip(),
            self.credentials_optional,
        )

    # -- credentials -------------------------------------------------------------------------------

    def _auth_for(
        self, url: str, ctx: FetchContext, used: list[tuple[GitCredentials, GitAuth]]
    ) -> GitAuth | None:
        if self.credentials is None:
            return None
        creds = self.credentials
        if not isinstance(creds, GitCredentials):
            found = load_credentials(
                creds,
                store=ctx.secrets,
                environ=ctx.environ,
                optional=self.credentials_optional,
                provider=self.provider,
            )
            if found is None:
                found = ambient_credentials(self.provider, ctx.environ)
                if found is None:
                    return None
            creds = found
        if not provider_fits(creds.provider, self.provider):
            raise ConfigError(f"{creds.type} credentials do not fit provider {self.provider!r}")
        auth = creds.git_auth(url, provider=self.provider)
        used.append((creds, auth))
        return auth

    @contextmanager
    def _session(self, ctx: FetchContext, url: str | None = None) -> Iterator[AuthSession]:
        """The credentials for ``url`` (this repository's when None; none for another host). A
        refusal says which credentials were sent (`rejected`)."""
        target = url or self.url
        retry = RetryPolicy.from_settings(ctx.settings)
        used: list[tuple[GitCredentials, GitAuth]] = []
        anonymous = url is not None and not same_host(url, self.url)
        load = (lambda: None) if anonymous else (lambda: self._auth_for(target, ctx, used))
        with AuthSession(target, load, retry=retry) as auth:
            try:
                yield auth
            except AuthenticationError as exc:
                if self.credentials is None or used:
                    creds, sent = used[0] if used else (None, None)
                    raise rejected(exc, creds, sent) from None
                name = self.credentials_name
                if anonymous:
                    raise AuthenticationError(
                        f"{exc.message}: credentials {name!r} are sent only to the repository's "
                        "host",
                        source=exc.source,
                        hint="point the submodule at the repository's host and transport (a "
                        "relative URL such as ../lib.git in .gitmodules), or make it public",
                    ) from None
                name = template_name(name or "") or name  # ${NAME}: NAME
                raise AuthenticationError(  # optional credentials that are nowhere
                    f"{exc.message}: no credentials or secret {name!r} was found",
                    source=exc.source,
                    hint=f"save them (`conveyor credentials create github|gitlab|bitbucket {name}` "
                    f"or `conveyor secret set {name}`), or export {name} on the worker",
                ) from None

    # -- deploy time -------------------------------------------------------------------------------

    def resolve(self, ctx: FetchContext | None = None) -> str:
        """The full commit the branch, tag, short hash or remote HEAD names right now."""
        if self.commit_sha and FULL_SHA.fullmatch(self.commit_sha):
            return self.commit_sha
        try:
            with self._session(context(ctx)) as auth:
                if self.commit_sha:
                    return resolve_short(self.url, self.commit_sha, auth)
                return resolve_ref(self.url, self.branch, auth)
        except OSError as exc:  # a temporary mirror or key file could not be written
            raise SourceError(
                f"could not resolve a commit of {self.url}: {exc.strerror or exc}",
                source=self.url,
                hint="check free space and permissions of the temporary directory (TMPDIR)",
            ) from exc

    def partial_checkout(
        self,
        version: str,
        dest: Path,
        *,
        scratch: Callable[[], AbstractContextManager[FetchContext]],
    ) -> PartialCheckout:
        """Commit ``version`` written into ``dest`` only as far as asked (deploy's preflight:
        see `conveyor.sources.git._partial`); ``scratch`` holds the cache's scratch lock."""
        from conveyor.sources.git._partial import PartialCheckout

        return PartialCheckout(self, self._check_version(version), dest, scratch=scratch)

    def follows_ref(self, asked: bool) -> bool:
        """``follow_ref=True`` here or at deploy; refused for a commit_sha (it never moves)."""
        if asked and self.commit_sha:
            raise ConfigError(
                "follow_ref needs a branch or tag: a commit_sha never moves",
                hint="deploy with a branch (--branch) to follow it, or without follow_ref",
            )
        return asked or self.follow_ref

    def describe_url(self) -> str:
        """The repository URL, safe to show (it never holds credentials)."""
        return self.url

    # -- run time ----------------------------------------------------------------------------------

    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        """Write commit ``version``'s tree into ``dest`` (an empty directory), no ``.git``.

        The mirror lives in ``ctx.scratch`` (kept by the cache, under its lock); without one, a
        temporary mirror is used and removed.
        """
        ctx = context(ctx)
        version = self._check_version(version)
        work = ctx.scratch or Path(tempfile.mkdtemp(prefix="conveyor-git-"))
        try:
            self._materialise(
                self.url,
                version,
                Path(dest),
                work,
                self.directories,
                self.include_submodules,
                0,
                ctx,
            )
            if ctx.objects is not None:  # every blob linked by its id or checked as written
                ctx.objects.unpacked = (os.fspath(dest), version)
        finally:
            if ctx.scratch is None:
                shutil.rmtree(work, ignore_errors=True)

    def verify(self, version: str, path: Path, ctx: FetchContext | None = None) -> None:
        """Check every file in ``path`` against commit ``version`` (git blob ids, modes).

        The expected manifest comes from the mirror in ``ctx.scratch`` (no network). A tree
        this very fill wrote (``ctx.objects`` vouches for it) was checked as it was written.
        """
        ctx = context(ctx)
        version = self._check_version(version)
        if ctx.objects is not None and ctx.objects.vouches(path, version):
            return  # written by this fill, every blob checked against its id (`TreeWriter`)
        manifest = None if ctx.scratch is None else self._manifest_offline(ctx.scratch, version)
        if manifest is None:
            raise IntegrityError(
                f"cannot verify {version}: no mirror holding it in the cache's scratch directory",
                path=str(path),
            )
        objects = ctx.objects
        known = objects.known if objects is not None else None
        verify_git_tree(Path(path), manifest, version=version, known=known)

    def proof(self, version: str, path: Path, ctx: FetchContext | None = None) -> bytes | None:
        """The commit's own objects (commit, the trees leading to the checkout's files, and the
        same for each submodule) from the mirror in ``ctx.scratch``: see `_proof`."""
        ctx = context(ctx)
        version = self._check_version(version)
        if ctx.scratch is None:
            return None
        return b"".join(self._proof(self.url, version, ctx.scratch, self.directories, 0))

    def expected(self, version: str, proof: bytes | None) -> ExpectedTree:
        """Every path of commit ``version``'s checkout with its blob id, from `proof` alone."""
        return expected_tree(
            self._check_version(version),
            proof,
            directories=self.directories,
            submodules=self.include_submodules,
        )

    def _proof(
        self, url: str, sha: str, scratch: Path, directories: Sequence[str] | None, depth: int
    ) -> list[bytes]:
        mirror = self._mirror(url, scratch, depth, sha)
        with mirror.opened():
            entries = select(list_tree(mirror.path, sha), directories, sha=sha, source=url)
            found = [collect(mirror.path, [sha, *tree_ids(mirror.path, sha, entries)])]
            links = [e for e in entries if e.mode == GITLINK and self.include_submodules]
            modules = read_gitmodules(mirror.path, sha) if links else {}
        for entry in links:
            if entry.path not in modules or depth + 1 > _MAX_SUBMODULE_DEPTH:
                raise SourceError(f"submodule {entry.path!r} of {url} cannot be proven")
            sub_url = resolve_submodule_url(url, modules[entry.path])
            found += self._proof(sub_url, entry.oid, scratch, None, depth + 1)
        return found

    def _check_version(self, version: str) -> str:
        if not isinstance(version, str) or not FULL_SHA.fullmatch(version.lower()):
            raise VersionNotFound(
                f"{version!r} is not a full git commit hash", source=self.describe_url()
            )
        return version.lower()

    def _mirror(self, url: str, scratch: Path, depth: int, sha: str) -> Mirror:
        name = (
            "mirror.git"
            if depth == 0
            else (f"modules/{hashlib.sha256(url.encode()).hexdigest()[:16]}.git")
        )
        return Mirror(
            scratch / name, url, source=url, object_format="sha256" if len(sha) == 64 else "sha1"
        )

    def _materialise(
        self,
        url: str,
        sha: str,
        dest: Path,
        scratch: Path,
        directories: Sequence[str] | None,
        submodules: bool,
        depth: int,
        ctx: FetchContext,
    ) -> GitManifest:
        mirror = self._mirror(url, scratch, depth, sha)
        if depth == 0 and ctx.objects is not None:  # while the commit is fetched and listed
            ctx.objects.premake(os.fspath(dest))
        with self._session(ctx, url) as auth, mirror.opened():
            if not mirror.has_commit(sha):
                mirror.fetch_commit(sha, auth, blobs=not (directories or PARTIAL_WHOLE_TREE))
            entries = select(list_tree(mirror.path, sha), directories, sha=sha, source=url)
            algorithm = "sha256" if len(sha) == 64 else "sha1"
            writer = TreeWriter(dest, ctx.objects, algorithm)
            rest = entries if ctx.objects is None else link_stored(entries, writer)
            needed = [e for e in rest if e.kind == "blob"]
            if submodules:
                needed += [e for e in list_tree(mirror.path, sha) if e.path == ".gitmodules"]
            missing = _missing(mirror, sha, needed)
            paths = [e.path for e in needed if e.oid in missing] if missing else []
            few = len(needed) <= _FEW_PATHS  # then the check after fetching walks these only
            mirror.fetch_objects(sha, missing, auth, paths=paths if few else None)
            write_blobs(mirror.path, rest, dest, source=url, writer=writer, algorithm=algorithm)
            modules = read_gitmodules(mirror.path, sha) if submodules else {}
        # Only a submodule's manifest is used (its caller prefixes it and adds it to its own);
        # the top level's is not (`proof` stands for the whole tree), so it is not built.
        manifest = manifest_of(entries, algorithm=algorithm) if depth else []
        for entry in (e for e in entries if e.mode == GITLINK and submodules):
            manifest += self._submodule(
                url, entry.path, entry.oid, modules, dest, scratch, depth, ctx
            )
        return tuple(manifest) if depth else ()

    def _submodule(
        self,
        url: str,
        path: str,
        sha: str,
        modules: dict[str, str],
        dest: Path,
        scratch: Path,
        depth: int,
        ctx: FetchContext,
    ) -> list[GitTreeEntry]:
        if path not in modules:
            raise SourceError(
                f"submodule {path!r} of {url} has no URL in .gitmodules", source=self.url
            )
        if depth + 1 > _MAX_SUBMODULE_DEPTH:
            raise SourceError(f"submodules of {self.url} nest too deep", source=self.url)
        sub_url = resolve_submodule_url(url, modules[path])
        sub = self._materialise(sub_url, sha, dest / path, scratch, None, True, depth + 1, ctx)
        return [GitTreeEntry(f"{path}/{e.path}", e.mode, e.oid, e.algorithm) for e in sub]

    def _manifest_offline(self, scratch: Path, sha: str) -> GitManifest | None:
        """Recompute the manifest from the mirrors (no network); None when they lack the commit."""
        try:
            return self._offline(self.url, sha, scratch, self.directories, 0)
        except (GitFailed, SourceError):
            return None

    def _offline(
        self, url: str, sha: str, scratch: Path, directories: Sequence[str] | None, depth: int
    ) -> GitManifest | None:
        mirror = self._mirror(url, scratch, depth, sha)
        if not mirror.path.is_dir():
            return None
        with mirror.opened():
            if not mirror.has_commit(sha):
                return None
            entries = select(list_tree(mirror.path, sha), directories, sha=sha, source=url)
            links = [e for e in entries if e.mode == GITLINK and self.include_submodules]
            modules = read_gitmodules(mirror.path, sha) if links else {}
        manifest = list(manifest_of(entries, algorithm="sha256" if len(sha) == 64 else "sha1"))
        for entry in links:
            if entry.path not in modules or depth + 1 > _MAX_SUBMODULE_DEPTH:
                return None
            sub_url = resolve_submodule_url(url, modules[entry.path])
            sub = self._offline(sub_url, entry.oid, scratch, None, depth + 1)
            if sub is None:
                return None
            manifest += [
                GitTreeEntry(f"{entry.path}/{e.path}", e.mode, e.oid, e.algorithm) for e in sub
            ]
        return tuple(manifest)


def _missing(mirror: Mirror, sha: str, needed: list[TreeEntry]) -> list[str]:
    """Which blobs of ``needed`` the mirror lacks: by walking their paths alone when they are a
    few (a new commit whose other files were linked from the cache), else the whole tree."""
    wanted = {e.oid for e in needed}
    if not wanted:
        return []
    if len(needed) <= _FEW_PATHS:
        return sorted(set(mirror.missing_at(sha, [e.path for e in needed])) & wanted)
    return mirror.missing_objects(sha, sorted(wanted))


GitSource = GitRepository
"""The `<Kind>Source` name; `GitRepository` is the name Prefect users know."""
