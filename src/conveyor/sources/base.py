"""The source contract: where a deployment's code lives.

A source needs two methods:

- `Source.resolve` (deploy time): the moving ref → an immutable version string;
- `Source.fetch` (run time): write exactly that version into an empty directory;

and `Source.verify`, which checks a tree against a version; `Source.proof` and `Source.expected`
let the cache check every later copy of a checkout without the source (see `conveyor._expected`).
All are *stateless*: a source
rebuilt from its spec (`Source.to_spec`, on another machine, in another process) resolves,
fetches and verifies exactly as the instance that deployed it. Push-capable sources
(`PushableSource`) add `push(tree) -> version`. Constructors do no I/O.

Everything about cache paths, locks, atomic renames and eviction lives in `conveyor.cache`; a
source never manages its own directories and never reads the environment. What it needs at run
time comes in a `FetchContext` built by the cache (or by the entry point that deploys):

- ``scratch``: a persistent directory the cache keeps for a source that asks for one
  (``uses_scratch``: a git mirror), held under the cache's lock for the whole ``fetch`` +
  ``verify`` (None at deploy time);
- ``secrets``: the secret store that credentials names and ``${NAME}`` templates resolve from;
- ``environ``: the environment those templates look in first;
- ``settings``: the process's `Settings`;
- ``bundle_server``: the Conveyor server's bundle store, when the process has a client.

``supports_versioning`` says whether a version stays fetchable from the source itself (a git
commit does; a local folder or a plain blob prefix changes in place). Deploy snapshots every
source that does not into the bundle store and pins the snapshot.

A source is stored in a deployment as its *spec*: a JSON-safe dict with a ``kind`` and
constructor arguments, holding only credential **names**, never values; `source_from_spec` (in
`conveyor.sources`) rebuilds it on the worker.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from conveyor._expected import ExpectedTree
    from conveyor._objects import Fill
    from conveyor.secrets import SecretStore
    from conveyor.settings import Settings
    from conveyor.sources.store import StoreBackend

__all__ = ["FetchContext", "PushableSource", "Source", "context"]


@dataclass(frozen=True)
class FetchContext:
    """What a source may use besides its own arguments (built by the cache or an entry point)."""

    scratch: Path | None = None
    secrets: SecretStore | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    settings: Settings | None = None
    bundle_server: StoreBackend | None = None
    """The Conveyor server's bundle store, when this process is connected to a server."""
    objects: Fill | None = None
    """The cache's object store during a fill (`conveyor._objects.Fill`): a source that knows a
    file's digest before writing it may link the stored file instead, and tells what it wrote,
    so `verify` need not hash it again. None outside the cache."""

    def with_scratch(self, scratch: Path | None) -> FetchContext:
        """The same context with another scratch directory."""
        return replace(self, scratch=scratch)

    def with_objects(self, objects: Fill | None) -> FetchContext:
        """The same context with the object store of a fill."""
        return replace(self, objects=objects)


_EMPTY = FetchContext()


class Source(ABC):
    """Where a deployment's code lives. Subclasses set ``kind`` and implement the methods."""

    kind: ClassVar[str]
    supports_versioning: ClassVar[bool] = True
    """True when a version can be fetched from the source again later (git commits); False
    when the source changes in place (a folder), so deploy snapshots it into the bundle store."""
    uses_scratch: ClassVar[bool] = False
    """True when the source keeps state in ``ctx.scratch`` between fetches (a git mirror): the
    cache then holds the scratch directory's lock around its ``fetch`` and ``verify``, so fills
    of different versions of one such source take turns. Other sources get no scratch and
    fill in parallel."""

    @abstractmethod
    def resolve(self, ctx: FetchContext | None = None) -> str:
        """The immutable version the source's ref points at now (deploy time; may do I/O)."""

    @abstractmethod
    def fetch(self, version: str, dest: Path, ctx: FetchContext | None = None) -> None:
        """Write ``version`` into ``dest``, an existing empty directory.

        Raise `VersionNotFound` when the version does not exist. Whatever is left in
        ``ctx.scratch`` must be usable (or recognisably unfinished) for the next fetch.
        """

    def verify(self, version: str, path: Path, ctx: FetchContext | None = None) -> None:
        """Check that ``path`` holds exactly ``version``; raise `IntegrityError` if not.

        Stateless: it may use ``ctx.scratch`` but nothing remembered from a fetch. The default
        checks a bundle version (``sha256-…``) against the tree's manifest.
        """
        from conveyor.bundles import verify_tree

        objects = context(ctx).objects
        if objects is not None and objects.vouches(path, version):
            return  # unpacked by this fill, every file checked against the manifest then
        verify_tree(path, version, known=objects.known if objects is not None else None)

    def expected_size(self, version: str, ctx: FetchContext | None = None) -> int | None:
        """How many bytes the checkout of ``version`` will take, when the source can tell
        cheaply (an index listing sizes); None (the default) when it cannot. The cache makes
        that much room before fetching. A source that runs out of disk while fetching raises
        ``OSError`` with ``errno.ENOSPC`` (or an error caused by one): the cache reports it as
        its own disk being full."""
        return None

    def proof(self, version: str, path: Path, ctx: FetchContext | None = None) -> bytes | None:
        """Evidence, taken right after `verify` passed on ``path`` (same context), from which
        `expected` rebuilds what every checkout of ``version`` holds, trusting nothing but the
        version: it must hash to it. The cache keeps it beside the checkout.

        The default is the canonical bundle manifest for a ``sha256-…`` version, None otherwise
        (the cache then checks every copy with `verify` instead).
        """
        from conveyor._expected import bundle_proof

        return bundle_proof(Path(path), version)

    def expected(self, version: str, proof: bytes | None) -> ExpectedTree | None:
        """Every file of ``version`` with its digest, from `proof` (no I/O, no state).

        Raise `IntegrityError` when ``proof`` is missing or does not authenticate ``version``;
        return None when this source has no digests to offer (see `proof`).
        """
        from conveyor._expected import bundle_expected

        return bundle_expected(version, proof)

    @abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """A JSON-safe, secret-free description: ``{"kind": ..., **constructor arguments}``."""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Source:
        """Rebuild a source from `to_spec` output (``kind`` already removed or ignored)."""
        args = {k: v for k, v in spec.items() if k != "kind"}
        return cls(**args)

    def key(self) -> str:
        """A short stable id for the cache directory: hash of the redacted, normalised spec."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        """What makes two sources the same code location (no refs, no credentials).

        Defaults to the spec; sources override it to drop fields that do not change which code a
        version names (a branch name, credential names).
        """
        return self.to_spec()

    def follows_ref(self, asked: bool) -> bool:
        """Whether each run of a deployment of this source resolves its ref again: ``asked`` (the
        deploy's ``follow_ref``), or the source's own option (`GitRepository` ``follow_ref=``).
        A source whose ref cannot move refuses ``asked`` (`ConfigError`)."""
        return asked

    def describe(self) -> str:
        """A one-line, redacted description for logs and the CLI."""
        return f"{self.kind}:{json.dumps(self.identity(), sort_keys=True)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class PushableSource(Source):
    """A source that can store a tree (deploy time) and return its version."""

    @abstractmethod
    def push(self, tree: Path, ctx: FetchContext | None = None) -> str:
        """Store the code tree at ``tree`` and return its version; a no-op if already present."""


def context(ctx: FetchContext | None) -> FetchContext:
    """``ctx``, or the empty context (no scratch, no secrets, an empty environment)."""
    return _EMPTY if ctx is None else ctx
