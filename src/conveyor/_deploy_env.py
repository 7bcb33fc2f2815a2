"""The run environment at deploy: the preflight loads the flow with the interpreter its runs
will have, so a module that imports a package only its requirements provide deploys.

`preflight_python` reads what the worker will install — the deployment's
``pip_install_requirements`` steps (their ``directory`` templates naming the code step's
directory, as at run time) and ``EXTRA_PIP_PACKAGES`` (top-level job variable, job variables'
``env``, this machine's environment) — and builds or reuses that environment in this machine's
code cache (`conveyor.envs`); None when there is nothing to install.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.envs import EnvCache, EnvSpec, IndexSettings, read_requirements, split_packages

if TYPE_CHECKING:
    from conveyor.settings import Settings

__all__ = ["preflight_python", "requirement_files"]


def preflight_python(
    tree: Path,
    root: Path,
    pull_steps: Sequence[Mapping[str, Any]],
    job_variables: Mapping[str, Any],
    settings: Settings,
) -> str | None:
    """The interpreter of the deployment's run environment, built here; None without one."""
    spec = EnvSpec()
    for file in requirement_files(tree, root, pull_steps):
        text, constraints = read_requirements(file, root=tree.resolve())
        spec = spec.merged(EnvSpec(requirements=text, constraints=constraints))
    extra = job_variables.get("EXTRA_PIP_PACKAGES")
    env = job_variables.get("env")
    packages = (
        *split_packages(extra if isinstance(extra, str) else None),
        *split_packages(env.get("EXTRA_PIP_PACKAGES") if isinstance(env, Mapping) else None),
        *split_packages(os.environ.get("EXTRA_PIP_PACKAGES")),
    )
    full = EnvSpec(
        requirements=spec.requirements,
        constraints=spec.constraints,
        packages=tuple(dict.fromkeys(p for p in packages if "{{" not in p and "${" not in p)),
        index=IndexSettings.from_environ(os.environ),
    )
    if full.empty:
        return None
    cache = EnvCache(settings.cache_dir, max_bytes=settings.cache_max_bytes)
    return str(cache.ensure(full).python)


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
