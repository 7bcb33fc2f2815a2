"""The run environment at deploy: the preflight loads the flow with the interpreter its runs
will have, so a module that imports a package only its requirements provide deploys.

`preflight_python` reads what the worker will install — the deployment's
``pip_install_requirements`` steps (their ``directory`` templates naming the code step's
directory, as at run time) and ``EXTRA_PIP_PACKAGES`` — and builds or reuses that environment in
this machine's code cache (`conveyor.envs`); None when there is nothing to install.

It asks what the worker asks, with the same functions: the run's job variables (the caller
passes the deployment's over its pool's defaults, `conveyor._jobvars.effective_job_variables`),
their ``env`` over this machine's environment (`run_environ`, as over the worker's), and from
that the extra packages and the index settings (`conveyor.envs.run_extras`): a deployment whose
``env`` sets ``UV_FIND_LINKS`` / ``UV_NO_INDEX`` is checked against those, not this shell's.
Templates in ``env`` resolve against this environment, then ``store`` (the server's secrets), as
on the worker; a variable whose template has no value here is left out (the worker may have it),
and named in the hint when the environment then cannot be built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.envs import EnvCache, EnvSpec, read_requirements, run_extras
from conveyor.errors import InstallError

if TYPE_CHECKING:
    from conveyor.secrets import SecretStore
    from conveyor.settings import Settings

__all__ = ["preflight_python", "requirement_files", "run_environ_here"]

logger = logging.getLogger(__name__)


def preflight_python(
    tree: Path,
    root: Path,
    pull_steps: Sequence[Mapping[str, Any]],
    job_variables: Mapping[str, Any],
    settings: Settings,
    *,
    store: SecretStore | None = None,
) -> str | None:
    """The interpreter of the deployment's run environment, built here; None without one.
    ``job_variables`` are the run's (the pool's defaults included)."""
    spec = EnvSpec()
    top = tree.resolve()
    for file in requirement_files(tree, root, pull_steps):
        text, constraints = read_requirements(file, root=top)
        name = file.relative_to(top).as_posix() if file.is_relative_to(top) else file.name
        spec = spec.merged(EnvSpec(requirements=text, constraints=constraints, names=(name,)))
    extra = job_variables.get("EXTRA_PIP_PACKAGES")
    left_out: dict[str, str] = {}
    env = run_environ_here(job_variables, store=store, left_out=left_out)
    extras = run_extras(env, extra_packages=extra if isinstance(extra, str) else None)
    full = EnvSpec(
        requirements=spec.requirements,
        constraints=spec.constraints,
        packages=tuple(p for p in extras.packages if "{{" not in p and "${" not in p),
        index=extras.index,
        names=spec.names,  # what `conveyor cache ls` and the run's log name it by
    )
    if full.empty:
        return None
    cache = EnvCache(settings.cache_dir, max_bytes=settings.cache_max_bytes, environ=env)
    try:
        return str(cache.ensure(full).python)
    except InstallError as exc:
        if not left_out:
            raise
        key, why = next(iter(sorted(left_out.items())))
        raise InstallError(
            exc.reason,
            hint=f"this check ran without job variable env.{key} ({why}): give it a value "
            "where you deploy too, or check the requirement and the package index",
        ) from exc


def run_environ_here(
    job_variables: Mapping[str, Any],
    *,
    store: SecretStore | None = None,
    left_out: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment a run with ``job_variables`` would get on a worker whose environment is
    this process's: see the module docstring for templates without a value here (``left_out``
    receives their names and why)."""
    from conveyor._jobvars import child_environ, job_env, run_environ
    from conveyor.errors import ConveyorError
    from conveyor.secrets import resolve_templates, reveal

    env = job_variables.get("env")
    resolved: dict[str, Any] = {}
    for key, value in env.items() if isinstance(env, Mapping) else ():
        try:
            resolved[key] = resolve_templates(value, store=store, environ=child_environ(os.environ))
        except ConveyorError as exc:
            logger.info("job variable env.%s left out of the deploy check: %s", key, exc)
            if left_out is not None:
                left_out[key] = str(exc)
    own = {key: reveal(value) for key, value in job_env({"env": resolved}).items()}
    return run_environ(os.environ, own)


def requirement_files(
    tree: Path, root: Path, pull_steps: Sequence[Mapping[str, Any]]
) -> list[Path]:
    """The requirements file of each ``pip_install_requirements`` step, as the worker will find
    it (templates naming the code step's directory mean ``tree``; relative to the working
    directory once a ``set_working_directory`` step ran)."""
    from conveyor.secrets import resolve_templates
    from conveyor.steps import names_code, parse_step

    files: list[Path] = []
    outputs: dict[str, Any] = {"directory": str(tree)}
    cwd = tree
    for step in pull_steps:
        name, arguments, step_id = parse_step(step)
        if names_code(step) and step_id:
            outputs[step_id] = {"directory": str(tree)}
        if name == "set_working_directory":
            cwd = root
        if name != "pip_install_requirements":
            continue
        resolved = resolve_templates(arguments, outputs=outputs, kinds={"output"})
        base = Path(str(resolved.get("directory") or cwd))
        base = base if base.is_absolute() else cwd / base
        files.append((base / str(resolved.get("requirements_file", "requirements.txt"))).resolve())
    return files
