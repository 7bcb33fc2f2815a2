"""The ``pip_install_requirements`` pull step: the flow runs in an environment holding the
requirements file of its code.

```yaml
pull:
  - git_clone: {id: clone, repository: https://github.com/org/flows.git}
  - pip_install_requirements:
      directory: "{{ clone.directory }}"     # default: the current working directory
      requirements_file: requirements.txt    # the default
      stream_output: true                    # uv's output in the run's logs
```

Prefect runs ``pip install -r`` into the worker's own interpreter on every run. Here the file
(with the files it includes through ``-r`` / ``-c``) is read from the run's code and handed to
the executor (`StepContext.install`), which builds — once per worker, keyed by digest — or
reuses the environment holding exactly those requirements plus the run's
``EXTRA_PIP_PACKAGES``, and starts the flow with its interpreter (`conveyor.envs`). Outputs are
Prefect's ``stdout`` and ``stderr`` plus ``environment`` (its directory), ``python`` and
``digest``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.envs import EnvSpec, read_requirements
from conveyor.errors import ConfigError
from conveyor.steps import StepContext

__all__ = ["pip_install_requirements"]


def pip_install_requirements(
    ctx: StepContext,
    directory: str | None = None,
    requirements_file: str = "requirements.txt",
    stream_output: bool = True,
) -> dict[str, Any]:
    """Make the flow's environment hold ``requirements_file`` (see the module docstring)."""
    if ctx.install is None:
        raise ConfigError(
            "pip_install_requirements needs a flow in its own process; this executor runs "
            "flows in the worker's interpreter",
            hint="run the pool with the process executor (not --in-process)",
        )
    root = ctx.code_dir.resolve()
    base = ctx.cwd if directory is None else Path(directory)
    if not base.is_absolute():
        base = ctx.cwd / base
    file = (base / requirements_file).resolve()
    if not file.is_relative_to(root):
        raise ConfigError(
            f"requirements file {requirements_file} is outside the run's code directory",
            hint="give a path relative to the repository root",
        )
    requirements, constraints = read_requirements(file, root=root)
    name = file.relative_to(root).as_posix()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if stream_output:
            ctx.log(line, "stdout")

    spec = EnvSpec(requirements=requirements, constraints=constraints, names=(name,))
    environment = ctx.install(spec, log)
    return {
        "stdout": "\n".join(lines),
        "stderr": "",
        "environment": str(environment.path),
        "python": str(environment.python),
        "digest": environment.digest,
    }
