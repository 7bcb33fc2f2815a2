"""What deploy checks and preflights the flow from, doing only the work that is new.

`deploy_tree` yields the tree of the version being deployed:

- a folder (a source with ``materialised()``) is read in place;
- a git repository (a source with ``partial_checkout``) is *partial*: a blobless fetch of the
  commit (commit and trees only) gives the listing, every path of which is checked and every
  directory created; files are fetched only when asked (`conveyor.sources.git._partial`);
- anything else is checked out whole through the code cache.

`preflight_flow` then learns the flow's name and parameters:

1. the working directory (``set_working_directory`` steps) and the run environment's
   interpreter (``pip_install_requirements`` steps: their files are fetched first);
2. the `PreflightCache` (`conveyor._preflight`): the same version, entrypoint, working
   directory and interpreter were preflighted before, so no child process is started;
3. in a partial tree, the files loading the flow needs (`conveyor._imports`: its module and what
   it imports from the tree), fetched round by round;
4. the preflight itself (a child interpreter), whose result is cached. In a partial tree the
   child is started before step 3 (`Preflight.ahead`): its interpreter starts while the files
   are fetched, and it loads nothing until they are all there.

In a partial tree, whatever the static view of step 3 cannot settle — a dynamic import, a file
that does not parse, a preflight that fails (an import or a data file it missed), a requirements
file including another — raises `WholeTreeNeeded`, and deploy does it all again from the whole
checkout: the partial tree can only save time, never change the answer.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor._preflight import FlowInfo, Preflight, PreflightCache, preflight_key
from conveyor.errors import ConfigError, FlowLoadError

if TYPE_CHECKING:
    from conveyor.secrets import SecretStore
    from conveyor.settings import Settings
    from conveyor.sources.base import FetchContext, Source
    from conveyor.sources.git._partial import PartialCheckout

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_PATH_LENGTH",
    "DeployTree",
    "WholeTreeNeeded",
    "check_listing",
    "check_paths",
    "deploy_tree",
    "preflight_flow",
    "working_dir",
]

logger = logging.getLogger(__name__)

MAX_PATH_LENGTH = 1024
"""The longest path inside a deployed tree (the worker's cache and workspace add their own)."""
MAX_NAME_LENGTH = 255


class WholeTreeNeeded(Exception):
    """A partial tree cannot settle the preflight: do it from the whole checkout."""


@dataclass(frozen=True)
class DeployTree:
    """The tree deploy reads, the version it is, and its partial checkout when it is one."""

    path: Path
    version: str
    partial: PartialCheckout | None = None


@contextmanager
def deploy_tree(
    source: Source, settings: Settings, ctx: FetchContext, *, partial: bool = True
) -> Iterator[DeployTree]:
    """The tree of the version of ``source`` to deploy (see the module); with ``partial``, a
    git repository's is fetched only as far as the preflight asks."""
    materialised = getattr(source, "materialised", None)
    if callable(materialised):  # the tree is on this machine already (a folder)
        tree = Path(materialised())
        version = source.resolve(ctx)
        check_paths(tree)
        yield DeployTree(tree, version)
        return
    from conveyor.cache import CodeCache

    version = source.resolve(ctx)
    cache = CodeCache.from_settings(settings, context=ctx)
    opener = getattr(source, "partial_checkout", None)
    if partial and callable(opener):
        with tempfile.TemporaryDirectory(prefix="conveyor-deploy-") as tmp:
            checkout: PartialCheckout = opener(
                version, Path(tmp), scratch=lambda: cache.scratch(source)
            ).open()
            if not checkout.whole_tree_needed:
                check_listing(checkout.files)
                yield DeployTree(Path(tmp), version, checkout)
                return
    with cache.checkout(source, version) as whole:
        check_paths(whole)
        yield DeployTree(whole, version)


def preflight_flow(
    tree: DeployTree,
    *,
    source: Source,
    entrypoint: str,
    pull_steps: Sequence[Mapping[str, Any]],
    job_variables: Mapping[str, Any],
    settings: Settings,
    store: SecretStore | None = None,
) -> FlowInfo:
    """The flow's name, parameters and options, from the cache or a preflight (see the
    module); `WholeTreeNeeded` when a partial tree cannot settle it. ``job_variables`` are the
    run's (`conveyor._deploy_env`); ``store`` resolves secret templates in their ``env``."""
    from conveyor._deploy_env import preflight_python, requirement_files

    base = tree.path.resolve()
    partial = tree.partial
    try:
        root = working_dir(tree.path, pull_steps, partial=partial)
        if partial is not None:
            wanted = [_relative(f, base) for f in requirement_files(tree.path, root, pull_steps)]
            partial.fetch(p for p in wanted if p is not None)
        python = preflight_python(tree.path, root, pull_steps, job_variables, settings, store=store)
    except ConfigError as exc:
        if partial is None:
            raise
        raise WholeTreeNeeded(f"the working directory or run environment: {exc}") from exc
    workdir = _relative(root, base) or ""
    key = preflight_key(
        version=tree.version,
        source=source.identity(),
        entrypoint=entrypoint,
        workdir=workdir,
        python=python,
    )
    cache = PreflightCache(settings.cache_dir)
    known = cache.get(key)
    if known is not None:
        logger.debug("preflight result cached entrypoint=%s version=%s", entrypoint, tree.version)
        return known
    ahead: Preflight | None = None
    if partial is not None:
        from conveyor._imports import needed_files

        # The files are fetched round by round: time to start this interpreter's child.
        ahead = Preflight.ahead() if python is None else None
        try:
            needed = needed_files(
                partial.files, entrypoint, workdir=workdir, load=partial.fetch, links=partial.links
            )
            if needed is None:
                raise WholeTreeNeeded("its imports cannot be followed statically")
        except BaseException:
            if ahead is not None:
                ahead.cancel()
            raise
        logger.info(
            "preflight from a partial checkout files=%d of=%d", len(needed), len(partial.files)
        )
    try:
        if ahead is not None:
            info = ahead.aim(root, entrypoint).result()
        else:
            info = Preflight(root, entrypoint, python=python).start().result()
    except FlowLoadError as exc:
        if partial is None:
            raise
        raise WholeTreeNeeded(str(exc)) from exc
    cache.put(key, info)
    return info


def _relative(path: Path, base: Path) -> str | None:
    """``path`` relative to ``base`` in posix form ("" for base itself), None when outside."""
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        return None
    rel = resolved.relative_to(base).as_posix()
    return "" if rel == "." else rel


def working_dir(
    tree: Path,
    pull_steps: Sequence[Mapping[str, Any]],
    *,
    partial: PartialCheckout | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Where the flow's entrypoint is resolved: the tree, moved by ``set_working_directory``
    steps (templates naming the code step's ``directory`` mean the tree). In a ``partial``
    checkout, directories are those of its listing (and the one chosen is created).

    A directory the worker resolves (``{{ $ENV }}``, a secret, a later step's output) is not
    refused here: it is taken as this machine's ``environ`` (default: ``os.environ``) gives it
    when that names a directory of the code, else the directory stays where it was; the worker
    checks it again once resolved (`conveyor.steps.builtin.set_working_directory`)."""
    from conveyor.secrets import Secret, resolve_templates, template_refs
    from conveyor.steps import names_code, parse_step

    outputs: dict[str, Any] = {"directory": str(tree)}
    root = tree
    for step in pull_steps:
        name, arguments, step_id = parse_step(step)
        if names_code(step) and step_id:
            outputs[step_id] = {"directory": str(tree)}
        if name != "set_working_directory":
            continue
        written = arguments.get("directory", "")
        refs = template_refs(written) if isinstance(written, str) else []
        on_worker = any(ref.kind != "output" for ref in refs)
        try:
            resolved = resolve_templates(
                written, environ=environ, outputs=outputs, kinds={"output", "env"}
            )
        except ConfigError:  # an output of a step that runs on the worker, an unset variable
            logger.info("working directory resolved on the worker directory=%s", written)
            continue
        directory = resolved.reveal() if isinstance(resolved, Secret) else str(resolved)
        candidate = (root / directory).resolve()
        inside = _relative(candidate, tree.resolve())
        exists = candidate.is_dir() if partial is None else inside in partial.dirs
        if not exists or inside is None:
            if on_worker:
                logger.info("working directory resolved on the worker directory=%s", written)
                continue
            raise ConfigError(
                f"set_working_directory: {directory} is not a directory of the deployed code",
                hint="give a directory relative to the repository root",
            )
        root = candidate
    if partial is not None:
        partial.directory(_relative(root, tree.resolve()) or "")
    return root


def check_paths(tree: Path) -> None:
    """Refuse a tree that a worker could never check out: over-long paths or names."""
    root = os.fspath(tree).rstrip(os.sep)
    for dirpath, dirnames, filenames in os.walk(root):
        prefix = dirpath[len(root) + 1 :]
        base = len(os.fsencode(prefix)) + 1 if prefix else 0
        for name in (*dirnames, *filenames):
            size = len(os.fsencode(name))
            if size > MAX_NAME_LENGTH or base + size > MAX_PATH_LENGTH:
                _check_path(f"{prefix}/{name}" if prefix else name, name)
        dirnames[:] = [d for d in dirnames if d not in (".git", "__pycache__")]


def check_listing(paths: Iterable[str]) -> None:
    """`check_paths` over a listing of files (``a/b/c.py``; their directories are implied)."""
    seen: set[str] = set()
    for path in paths:
        if len(path) <= MAX_NAME_LENGTH and path.isascii():
            continue  # one byte a character: neither it nor any of its names is too long
        parts = path.split("/")
        for i in range(len(parts)):
            relative = "/".join(parts[: i + 1])
            if relative in seen:
                continue
            seen.add(relative)
            _check_path(relative, parts[i])


def _check_path(relative: str, name: str) -> None:
    if len(name.encode()) > MAX_NAME_LENGTH or len(relative.encode()) > MAX_PATH_LENGTH:
        shown = relative if len(relative) <= 80 else f"{relative[:38]}…{relative[-38:]}"
        raise ConfigError(
            f"path {shown!r} in the code is {len(relative.encode())} bytes long; "
            f"workers can check out paths of at most {MAX_PATH_LENGTH} bytes "
            f"(names of at most {MAX_NAME_LENGTH})",
            hint="shorten it, or leave it out with .conveyorignore",
        )
