"""The source contract: where a deployment's code lives.

A source needs two methods:

- `Source.resolve` (deploy time): the moving ref → an immutable version string;
- `Source.fetch` (run time): write exactly that version into an empty directory.

Push-capable sources (`PushableSource`) add `push(tree) -> version`. Constructors do no I/O.
Everything about cache paths, locks, atomic renames and eviction lives in `conveyor.cache`; a
source never manages its own directories. A source that benefits from persistent state between
fetches (a git mirror) gets a ``scratch`` directory from the cache, owned by that source's key.

A source is stored in a deployment as its *spec*: `Source.to_spec` returns a JSON-safe dict with a
``kind`` and constructor arguments, holding only credential **names**, never values;
`source_from_spec` rebuilds it on the worker.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from conveyor._registry import SCHEME_TO_KIND, get_source_class
from conveyor.errors import ConfigError

__all__ = [
    "PushableSource",
    "Source",
    "source_from_spec",
    "source_from_url",
]


class Source(ABC):
    """Where a deployment's code lives. Subclasses set ``kind`` and implement the two methods."""

    kind: ClassVar[str]

    @abstractmethod
    def resolve(self) -> str:
        """The immutable version the source's ref points at now (deploy time; may do I/O)."""

    @abstractmethod
    def fetch(self, version: str, dest: Path, *, scratch: Path | None = None) -> None:
        """Write ``version`` into ``dest``, an existing empty directory.

        ``scratch`` is a persistent directory the cache keeps for this source (for a mirror); the
        source must lock inside it itself if it writes there. Raise `VersionNotFound` when the
        version does not exist, never leave partial files in ``scratch`` that a later fetch would
        trust.
        """

    def verify(self, version: str, path: Path) -> None:
        """Check that ``path`` holds exactly ``version``; raise `IntegrityError` if not.

        The default checks a bundle version (``sha256-…``) against the tree's manifest. Sources
        whose versions are not bundle digests (git commits) override it.
        """
        from conveyor.bundles import verify_tree

        verify_tree(path, version)

    @abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """A JSON-safe, secret-free description: ``{"kind": ..., **constructor arguments}``."""

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Source:
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

    def describe(self) -> str:
        """A one-line, redacted description for logs and the CLI."""
        return f"{self.kind}:{json.dumps(self.identity(), sort_keys=True)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class PushableSource(Source):
    """A source that can store a tree (deploy time) and return its version."""

    @abstractmethod
    def push(self, tree: Path) -> str:
        """Store the code tree at ``tree`` and return its version; a no-op if already present."""


def source_from_spec(spec: dict[str, Any]) -> Source:
    """Rebuild a source from a deployment's stored spec."""
    kind = spec.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"source spec has no kind: {sorted(spec)}")
    cls = get_source_class(kind)
    try:
        return cls.from_spec(spec)
    except TypeError as exc:
        raise ConfigError(
            f"source spec of kind {kind!r} does not fit {cls.__name__}: {exc}",
            hint="the deployment was made by another Conveyor version; redeploy it",
        ) from None


def source_from_url(url: str | Path, **options: Any) -> Source:
    """A source from a path or URL: a folder, ``file://``, a git URL, ``s3://``, ``gs://``, ...

    ``options`` go to the source's constructor (``branch=``, ``credentials=``, ...).
    """
    text = str(url)
    if isinstance(url, Path) or "://" not in text:
        if text.startswith("git@") or (text.endswith(".git") and ":" in text.split("/")[0]):
            return get_source_class("git")(text, **options)  # type: ignore[call-arg]
        return get_source_class("local")(Path(text), **options)  # type: ignore[call-arg]
    scheme = text.split("://", 1)[0].lower()
    kind = SCHEME_TO_KIND.get(scheme)
    if kind is None:
        raise ConfigError(
            f"no source handles URLs starting with {scheme}://",
            hint="use a folder path, a git URL, or an s3:// gs:// az:// oci:// URL",
        )
    if kind == "local":
        return get_source_class("local")(Path(text.split("://", 1)[1]), **options)  # type: ignore[call-arg]
    return get_source_class(kind)(text, **options)  # type: ignore[call-arg]
