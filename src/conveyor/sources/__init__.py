"""Where code lives: the `Source` contract (`conveyor.sources.base`), its backends, and how a
path, a URL or a stored spec becomes one.

- `SOURCES`: source kind → class, a `Registry` (built-ins below; third parties register in the
  ``conveyor.sources`` entry-point group or with ``SOURCES.register``). Only backends that exist
  have a row.
- `SCHEMES`: URL scheme → kind. ``https://`` is git only when it says so: a ``.git`` suffix, an
  explicit ``git+https://``, or a `GitRepository`; any other ``https://`` URL is refused with the
  forms that are accepted (a webhook or blob source is never guessed from a host name).
- `source_from_url` (deploy time) and `source_from_spec` (the worker, from a deployment).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor._registry import Entry, Registry
from conveyor.errors import ConfigError
from conveyor.sources.base import FetchContext, PushableSource, Source

__all__ = [
    "SCHEMES",
    "SOURCES",
    "FetchContext",
    "PushableSource",
    "Source",
    "register_scheme",
    "source_from_spec",
    "source_from_url",
]

SOURCES: Registry[type[Source]] = Registry(
    "source kind",
    group="conveyor.sources",
    builtins={
        "local": Entry("conveyor.sources.local:LocalSource"),
        "store": Entry("conveyor.sources.store:BundleStore"),
        "git": Entry("conveyor.sources.git.repository:GitRepository"),
        "blob": Entry("conveyor.sources.blob:BlobStorage"),
        "webhook": Entry("conveyor.sources.webhook:WebhookSource"),
        "flow-file": Entry("conveyor.sources.flowfile:FlowFileSource"),
        "module": Entry("conveyor.sources.module:ModuleSource"),
        "oci": Entry("conveyor.sources.oci.source:ImageSource"),
    },
)

SCHEMES: dict[str, str] = {
    "file": "local",
    "git": "git",
    "ssh": "git",
    "git+ssh": "git",
    "git+https": "git",
    "git+http": "git",
    "git+file": "git",
    "s3": "blob",
    "s3a": "blob",
    "gs": "blob",
    "gcs": "blob",
    "az": "blob",
    "abfs": "blob",
    "abfss": "blob",
    "webhook+https": "webhook",
    "webhook+http": "webhook",
    "oci": "oci",
    "docker": "oci",
}
"""URL scheme → source kind (``https`` is handled by `source_from_url`: git when it ends in
``.git``)."""


def register_scheme(scheme: str, kind: str, *, replace: bool = False) -> None:
    """Route URLs starting with ``scheme://`` to source ``kind``."""
    scheme = scheme.lower()
    if scheme in SCHEMES and not replace:
        raise ConfigError(f"URL scheme {scheme}:// is already handled by {SCHEMES[scheme]!r}")
    SCHEMES[scheme] = kind


def _supported() -> str:
    schemes = sorted(f"{s}://" for s in SCHEMES if s != "file")
    return "a folder path, file://, https://….git, " + ", ".join(schemes)


def source_from_spec(spec: Mapping[str, Any]) -> Source:
    """Rebuild a source from a deployment's stored spec."""
    kind = spec.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"source spec has no kind: {sorted(spec)}")
    cls = SOURCES.get(kind)
    try:
        return cls.from_spec(spec)
    except TypeError as exc:
        raise ConfigError(
            f"source spec of kind {kind!r} does not fit {cls.__name__}: {exc}",
            hint="the deployment was made by another Conveyor version; redeploy it",
        ) from None


def source_from_url(url: str | os.PathLike[str], **options: Any) -> Source:
    """A source from a folder path or a URL (``options`` go to the source's constructor:
    ``branch=``, ``credentials=``, ...).

    A ``file://`` URL of a directory that is a git repository (``*.git`` or with a ``.git``
    inside) is a git source, as ``GitRepository("file://…")`` is; any other folder is a local
    source.
    """
    text = os.fspath(url)
    if isinstance(url, Path) or "://" not in text:
        if not isinstance(url, Path):
            _refuse_typo(text)
        if text.startswith("git@") or (text.endswith(".git") and ":" in text.split("/")[0]):
            return _build("git", text, options)
        return _build("local", Path(text), options)
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        path = Path(text.split("://", 1)[1])
        if _is_git_dir(path):
            return _build("git", text, options)
        return _build("local", path, options)
    if scheme in ("https", "http"):
        if text.split("?", 1)[0].rstrip("/").endswith(".git"):
            return _build("git", text, options)
        raise ConfigError(
            f"no source handles {scheme}:// URLs that are not git repositories: {_short(text)}",
            hint=f"for git, end the URL in .git or write git+{scheme}://…; "
            f"sources available: {_supported()}",
        )
    kind = SCHEMES.get(scheme)
    if kind is None and scheme in SOURCES:
        kind = scheme  # a plug-in named after its scheme
    if kind is None and _fsspec_protocol(scheme):
        kind = "blob"  # any other fsspec protocol whose package is installed
    if kind is None:
        raise ConfigError(
            f"no source handles {scheme}:// URLs",
            hint=f"use {_supported()}",
        )
    return _build(kind, text, options)


def _refuse_typo(text: str) -> None:
    """Refuse ``s3:/bucket/flows`` (one slash: it would be read as a local folder named
    ``s3:``) unless such a folder exists."""
    from conveyor._urltypo import shown, url_typo

    meant = url_typo(text, schemes={*SCHEMES, "http", "https"})
    if meant is not None and not Path(text).exists():
        raise ConfigError(
            f"{shown(text)!r} is neither a folder nor a URL: did you mean {shown(meant)}",
            hint=f"use {_supported()}",
        )


def _build(kind: str, location: Any, options: Mapping[str, Any]) -> Source:
    cls = SOURCES.get(kind)
    try:
        return cls(location, **options)  # type: ignore[call-arg]
    except TypeError:
        unknown = _unknown_options(cls, options)
        if not unknown:
            raise  # not about the options: a bug of the source
        raise ConfigError(f"{', '.join(unknown)} does not apply to a {kind} source") from None


def _unknown_options(cls: Any, options: Mapping[str, Any]) -> list[str]:
    """The names in ``options`` that ``cls`` takes no keyword argument for."""
    import inspect

    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return sorted(options)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return []
    accepted = {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return sorted(set(options) - accepted)


def _fsspec_protocol(scheme: str) -> bool:
    """Whether fsspec knows ``scheme`` and its package is installed (nothing is imported)."""
    import importlib.util

    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:
        return False
    if scheme in registry:
        return True
    spec = known_implementations.get(scheme)
    if spec is None or scheme in ("http", "https", "file", "local"):
        return False
    module = str(spec.get("class", "")).split(".")[0]
    return bool(module) and importlib.util.find_spec(module) is not None


def _is_git_dir(path: Path) -> bool:
    return path.name.endswith(".git") or (path / ".git").exists() or (path / "HEAD").is_file()


def _short(text: str) -> str:
    from conveyor.secrets import redact_url

    shown = redact_url(text)
    return shown if len(shown) <= 120 else shown[:117] + "..."
