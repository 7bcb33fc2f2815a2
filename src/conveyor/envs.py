"""Run environments: a run's requirements installed once per worker, keyed by their digest.

A run whose pull steps install requirements (``pip_install_requirements``) or whose job
variables or worker set ``EXTRA_PIP_PACKAGES`` runs its flow with the interpreter of an
environment built for exactly that (`EnvSpec`): its requirements text, its extra packages, the
index settings and the worker's Python. ``EnvCache.lease(spec)`` returns it:

- **warm**: ``<cache>/.envs/<digest>/`` exists (it is renamed into place complete): touch its
  "last used" time; no lock, no uv, no index request;
- **cold**: take the digest's lock (`filelock`: one build across processes; the others wait
  and reuse it), look again, build with **uv** into a temporary sibling
  (``uv venv --relocatable``, then ``uv pip install --compile-bytecode``), layer it over the
  worker's environment, check that Conveyor imports in it, make it read-only, record its
  metadata and ``os.replace`` it into place; then evict least-recently-used cache entries until
  the byte budget holds. A failed install raises `InstallError` (the package and uv's reason,
  one line) and leaves nothing behind; a process killed mid-build leaves only a ``.tmp-*``
  directory that no run trusts and the next build (or ``conveyor cache prune``) removes.

While a run uses an environment it holds a shared flock on ``<digest>.lease``: environments,
like checkouts, are never evicted while leased (`conveyor._cacheentries`).

**Layering.** The environment's site-packages hold only the run's requirements;
``_conveyor_worker.pth`` then appends the worker's own site directories (``site.addsitedir``,
so the worker's ``.pth`` files — an editable Conveyor — apply too). The run's packages win over
the worker's; Conveyor and its dependencies stay importable. Two deployments pinning different
versions of one package get two environments and run side by side.

**Index settings** come from the run's environment — ``UV_INDEX_URL`` / ``UV_DEFAULT_INDEX``,
``UV_EXTRA_INDEX_URL`` / ``UV_INDEX``, ``UV_FIND_LINKS``, ``UV_NO_INDEX``, or pip's
``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``, ``PIP_FIND_LINKS``, ``PIP_NO_INDEX`` — and are part
of the digest. uv gets them through its environment (never argv) with ``UV_NO_CONFIG=1``, so
nothing outside the digest changes what is installed. ``UV_CACHE_DIR`` is uv's own download
cache and is passed through.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import site
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from conveyor import _cacheentries as entries_
from conveyor import _cachefs as fs
from conveyor._uv import check_uv, find_uv, run_uv
from conveyor.errors import CacheError, InstallError
from conveyor.secrets import redact_url

__all__ = [
    "EnvCache",
    "EnvSpec",
    "Environment",
    "IndexSettings",
    "read_requirements",
    "run_extras",
    "split_packages",
]

logger = logging.getLogger(__name__)

_FORMAT = "conveyor-env-1"
_REQUIREMENTS = "conveyor-requirements.txt"
_CONSTRAINTS = "conveyor-constraints.txt"
_LAYER = "_conveyor_worker.pth"
_TRUE = {"1", "true", "yes", "on"}


def split_packages(text: str | None) -> tuple[str, ...]:
    """``EXTRA_PIP_PACKAGES`` as Prefect's images read it: requirements separated by blanks."""
    return tuple(text.split()) if text else ()


@dataclass(frozen=True)
class IndexSettings:
    """Where uv looks for packages (part of the environment's digest)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> IndexSettings:
        """uv's variables first, then pip's."""

        def first(*names: str) -> str | None:
            return next((env[n].strip() for n in names if env.get(n, "").strip()), None)

        def many(*names: str, sep: str | None = None) -> tuple[str, ...]:
            found = first(*names)
            if found is None:
                return ()
            return tuple(p for p in (found.split(sep) if sep else found.split()) if p.strip())

        links = many("UV_FIND_LINKS", sep=",") or many("PIP_FIND_LINKS")
        return cls(
            index_url=first("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"),
            extra_index_urls=many("UV_INDEX", "UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL"),
            find_links=tuple(s.strip() for s in links),
            no_index=(first("UV_NO_INDEX", "PIP_NO_INDEX") or "").lower() in _TRUE,
        )

    def uv_environ(self) -> dict[str, str]:
        """These settings as uv's environment variables."""
        env: dict[str, str] = {}
        if self.index_url:
            env["UV_INDEX_URL"] = self.index_url
        if self.extra_index_urls:
            env["UV_EXTRA_INDEX_URL"] = " ".join(self.extra_index_urls)
        if self.find_links:
            env["UV_FIND_LINKS"] = ",".join(self.find_links)
        if self.no_index:
            env["UV_NO_INDEX"] = "1"
        return env

    def describe(self) -> str:
        """Redacted, for logs and metadata."""
        parts = [redact_url(self.index_url)] if self.index_url else []
        parts += [redact_url(u) for u in (*self.extra_index_urls, *self.find_links)]
        return ", ".join(parts) + (" (no index)" if self.no_index else "") or "default index"


@dataclass(frozen=True)
class EnvSpec:
    """What one environment holds: requirements text, constraints, extra packages, index."""

    requirements: str = ""
    constraints: str = ""
    packages: tuple[str, ...] = ()
    index: IndexSettings = field(default_factory=IndexSettings)
    names: tuple[str, ...] = ()
    """Where the requirements came from (``requirements.txt``), for messages only."""

    @property
    def empty(self) -> bool:
        return not self.requirements.strip() and not self.packages

    def merged(self, other: EnvSpec) -> EnvSpec:
        """One environment holding both."""
        return EnvSpec(
            requirements="\n".join(t for t in (self.requirements, other.requirements) if t),
            constraints="\n".join(t for t in (self.constraints, other.constraints) if t),
            packages=tuple(dict.fromkeys((*self.packages, *other.packages))),
            index=other.index if other.index != IndexSettings() else self.index,
            names=(*self.names, *other.names),
        )

    def digest(self) -> str:
        """32 hex digits over the format, the worker's Python and everything above."""
        data = {
            "format": _FORMAT,
            "python": _python_identity(),
            "requirements": _normalise(self.requirements),
            "constraints": _normalise(self.constraints),
            "packages": sorted(set(self.packages)),
            "index": [
                self.index.index_url,
                list(self.index.extra_index_urls),
                list(self.index.find_links),
                self.index.no_index,
            ],
        }
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def describe(self) -> str:
        what = list(self.names) + list(self.packages)
        return ", ".join(what) or "no requirements"


def _normalise(text: str) -> list[str]:
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _python_identity() -> list[str]:
    return [sys.implementation.cache_tag or "", sys.version, sys.prefix, platform.machine()]


def run_extras(env: Mapping[str, str], *, extra_packages: str | None = None) -> EnvSpec:
    """What a run's environment holds besides its requirements, from the run's environment
    ``env`` (`conveyor._jobvars.run_environ`): ``extra_packages`` (the top-level job
    variable) and ``env``'s ``EXTRA_PIP_PACKAGES``, with ``env``'s index settings. The worker
    builds a run's environment with it, and the deploy checks the flow with it."""
    packages = (*split_packages(extra_packages), *split_packages(env.get("EXTRA_PIP_PACKAGES")))
    for package in packages:  # each is a line of the build's requirements file
        if package.startswith(("-", "./", "../", "/", "~", "file:")):
            from conveyor.errors import ConfigError

            raise ConfigError(
                f"EXTRA_PIP_PACKAGES: {package!r} is not a package; run environments are "
                "shared between runs and come from a package index",
                hint="name packages only (s3fs pandas==2.2); index settings go in UV_INDEX_URL, "
                "UV_FIND_LINKS, ...",
            )
    return EnvSpec(packages=tuple(dict.fromkeys(packages)), index=IndexSettings.from_environ(env))


@dataclass(frozen=True)
class Environment:
    """A built environment: run ``python`` to use it."""

    path: Path
    digest: str
    built: bool
    """True when this call built it (False: it was there, or another process built it)."""
    seconds: float = 0.0

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


Log = Callable[[str], None]


class EnvCache:
    """Environments under ``<root>/.envs``, sharing the code cache's byte budget."""

    lock_timeout: float = 3600.0
    """Seconds to wait for another process building the same environment."""
    lease_timeout: float = 60.0
    build_timeout: float = 1800.0
    """Seconds one uv command may take."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        environ: Mapping[str, str] | None = None,
        uv: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.environ = dict(os.environ if environ is None else environ)
        self.uv = uv
        self.builds = 0
        """Environments this object built (the others were reused)."""

    def path_for(self, spec: EnvSpec) -> Path:
        return self.root / entries_.ENVS_DIR / spec.digest()

    @contextmanager
    def lease(self, spec: EnvSpec, *, log: Log | None = None) -> Iterator[Environment]:
        """`ensure` the environment and keep it from eviction until the block exits."""
        path = self.path_for(spec)
        self._mkdir(path.parent)
        try:
            fd = fs.lock_shared(fs.lease_path(path), timeout=self.lease_timeout)
        except OSError as exc:
            raise CacheError(f"could not lease environment {path.name}: {exc}") from exc
        try:
            yield self.ensure(spec, log=log)
        finally:
            _touch(path)
            os.close(fd)

    def ensure(self, spec: EnvSpec, *, log: Log | None = None) -> Environment:
        """The environment for ``spec``, built at most once across processes."""
        from filelock import FileLock, Timeout

        say = log or (lambda _line: None)
        path = self.path_for(spec)
        if _touch(path):
            say(f"environment {path.name} reused ({spec.describe()})")
            return Environment(path, path.name, built=False)
        self._mkdir(path.parent)
        lock = FileLock(fs.lock_path(path), timeout=self.lock_timeout)
        try:
            with lock:
                if _touch(path):
                    say(f"environment {path.name} built by another run ({spec.describe()})")
                    return Environment(path, path.name, built=False)
                fs.sweep(path.parent, held=path.name)
                started = time.perf_counter()
                self._build(spec, path, say)
                seconds = time.perf_counter() - started
        except Timeout as exc:
            raise CacheError(
                f"timed out after {self.lock_timeout:g}s waiting for another process building "
                f"environment {path.name}",
                hint=f"if no conveyor process is running, remove {fs.lock_path(path)}",
            ) from exc
        self.builds += 1
        say(f"environment {path.name} built in {seconds:.1f}s ({spec.describe()})")
        try:
            entries_.prune(self.root, self.max_bytes, keep=frozenset({path}))
        except (OSError, CacheError) as exc:
            logger.warning("cache budget not enforced env=%s error=%s", path.name, exc)
        return Environment(path, path.name, built=True, seconds=seconds)

    # -- building --------------------------------------------------------------------------------

    def _build(self, spec: EnvSpec, path: Path, say: Log) -> None:
        tmp = path.with_name(fs.temp_name(fs.TMP_PREFIX, path.name))
        try:
            self._install(spec, tmp, say)
            size_files = fs.seal_tree(tmp)
            fs.write_json_atomic(
                fs.meta_path(path),
                tmp=path.with_name(fs.temp_name(fs.TMP_PREFIX, path.name)),
                data={
                    "kind": entries_.ENV,
                    "digest": path.name,
                    "source": f"environment: {spec.describe()}",
                    "packages": list(spec.packages),
                    "requirements": list(spec.names),
                    "index": spec.index.describe(),
                    "python": platform.python_version(),
                    "size": size_files[0],
                    "files": size_files[1],
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
            os.replace(tmp, path)
        except BaseException:
            fs.discard(tmp)
            raise
        logger.info("environment built digest=%s bytes=%d files=%d", path.name, *size_files)

    def _install(self, spec: EnvSpec, tmp: Path, say: Log) -> None:
        uv = self.uv or find_uv()
        env = {k: v for k, v in self.environ.items() if not _index_variable(k)}
        env.update(spec.index.uv_environ())
        env.pop("VIRTUAL_ENV", None)
        cwd = tmp.parent
        base = str(getattr(sys, "_base_executable", sys.executable))
        code, lines = run_uv(
            uv,
            ["venv", "--quiet", "--relocatable", "--python", base, str(tmp)],
            env=env,
            cwd=cwd,
            timeout=self.build_timeout,
        )
        check_uv(code, lines, timeout=self.build_timeout)
        requirements = tmp / _REQUIREMENTS
        requirements.write_text(
            "\n".join([spec.requirements, *spec.packages]) + "\n", encoding="utf-8"
        )
        args = ["pip", "install", "--python", str(tmp / "bin" / "python"), "--compile-bytecode"]
        args += ["-r", str(requirements)]
        if spec.constraints.strip():
            constraints = tmp / _CONSTRAINTS
            constraints.write_text(spec.constraints + "\n", encoding="utf-8")
            args += ["-c", str(constraints)]
        code, lines = run_uv(
            uv,
            args,
            env=env,
            cwd=cwd,
            timeout=self.build_timeout,
            on_line=lambda line: None if line.startswith("Using Python") else say(line),
        )
        check_uv(code, _as_given(lines, requirements, spec), timeout=self.build_timeout)
        self._layer(tmp)
        self._check(tmp, env)

    def _layer(self, tmp: Path) -> None:
        """Append the worker's site directories to the environment's ``sys.path``."""
        purelib = Path(sysconfig.get_path("purelib", vars={"base": tmp, "platbase": tmp}))
        dirs = [d for d in _worker_site_dirs() if Path(d).is_dir()]
        lines = [f"import site; site.addsitedir({d!r})" for d in dirs]
        (purelib / _LAYER).write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _check(self, tmp: Path, env: Mapping[str, str]) -> None:
        """Conveyor must import in the environment (a requirement may shadow its needs)."""
        import subprocess

        done = subprocess.run(
            [str(tmp / "bin" / "python"), "-c", "import conveyor.worker.child"],
            env={k: v for k, v in env.items() if k != "PYTHONPATH"},
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise InstallError(
                f"Conveyor does not import with these requirements: {last[0]}",
                hint="a requirement replaces a package Conveyor needs; relax that pin",
            )

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cannot create {path}: {exc.strerror or exc}",
                hint="set CONVEYOR_CACHE_DIR to a writable directory",
            ) from exc


def _as_given(lines: Sequence[str], file: Path, spec: EnvSpec) -> list[str]:
    """uv's output with the build's own requirements file (and a position in it, which is
    not one in the user's file) called what it was made from: ``requirements.txt``."""
    written = re.compile(
        r"`?\S*" + re.escape(f"{file.parent.name}/{file.name}") + r"`?( at position \d+)?"
    )
    return [written.sub(spec.describe(), line) for line in lines]


def _worker_site_dirs() -> list[str]:
    found = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        found.append(site.getusersitepackages())
    return list(dict.fromkeys(found))


_INDEX_VARIABLES = {
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
}


def _index_variable(name: str) -> bool:
    return name in _INDEX_VARIABLES


def _touch(path: Path) -> bool:
    now = time.time_ns()
    try:
        os.utime(fs.meta_path(path), ns=(now, now))
    except PermissionError:
        pass
    except OSError:
        return False
    return path.is_dir()


def read_requirements(file: Path, *, root: Path, seen: Sequence[Path] = ()) -> tuple[str, str]:
    """(requirements, constraints) of ``file`` with nested ``-r`` / ``-c`` files inlined;
    `ConfigError` for anything that would tie a shared environment to one run's files
    (editable installs, local paths) or leave ``root``."""
    from conveyor.errors import ConfigError

    requirements: list[str] = []
    constraints: list[str] = []
    name = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"requirements file {name} does not exist in the code",
            hint="check requirements_file and directory against the deployed tree",
        ) from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        nested = _nested(line)
        if nested is not None:
            kind, target = nested
            path = (file.parent / target).resolve()
            if not path.is_relative_to(root.resolve()) or path in seen:
                raise ConfigError(f"{name}:{number}: {target} is outside the code, or a loop")
            inner, inner_constraints = read_requirements(path, root=root, seen=(*seen, file))
            (constraints if kind == "c" else requirements).append(inner)
            constraints.append(inner_constraints)
            continue
        if line.startswith(("-e", "--editable")) or line.startswith(
            ("./", "../", "/", "~", "file:")
        ):
            raise ConfigError(
                f"{name}:{number}: {line!r} installs from a path; run environments are shared "
                "between runs and come from a package index",
                hint="publish it to an index or a --find-links directory; code in the "
                "deployment is on the flow's import path already",
            )
        requirements.append(line)
    return (
        "\n".join(t for t in requirements if t),
        "\n".join(t for t in constraints if t),
    )


def _nested(line: str) -> tuple[str, str] | None:
    """``("r" | "c", path)`` for a line including another requirements or constraints file."""
    for flag in ("--requirement", "--constraint", "-r", "-c"):
        if line.startswith(flag):
            return flag.lstrip("-")[0], line[len(flag) :].lstrip(" =")
    return None
