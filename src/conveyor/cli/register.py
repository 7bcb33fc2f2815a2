"""`conveyor register`: register the flows of a script or module, the first generation's way.

```
conveyor register --path flows.py [--path more.py] [--module pkg.flows] [-l LABEL ...]
                  [--project NAME] [--pool POOL] [--name FLOW ...]
```

A ``--path`` folder stands for the ``.py`` files directly in it, as in Prefect 1; a ``--name``
that no flow has is an error naming the flows there are.

Each file is run as a script (its module-level ``flow.register()`` and ``storage.build()`` do
nothing while it is loaded); every flow it defines is registered as the deployment
``<flow>/<project or "default">`` with the labels given (`conveyor.storage.register_flows`).
Flows without storage are stored as the script itself (``Local(path=..., stored_as_script=True)``,
labelled with this host's name); a module's, as that module (``Module``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from conveyor.cli._common import client, console, load_settings, note
from conveyor.errors import ConfigError

__all__ = ["register"]


def register_command(
    path: list[Path] = typer.Option(
        [], "--path", "-p", help="A flow script, or a folder of them (repeatable)."
    ),
    module: list[str] = typer.Option([], "--module", "-m", help="A flow module (repeatable)."),
    label: list[str] = typer.Option([], "--label", "-l", help="Label (repeatable)."),
    project: str | None = typer.Option(
        None, "--project", help='Project: the deployment name (default "default").'
    ),
    pool: str = typer.Option("default", "--pool", help="Work pool the runs go to."),
    name: list[str] = typer.Option([], "--name", "-n", help="Only the flows of this name."),
) -> None:
    """Register every flow of the scripts and modules given (deployment FLOW/PROJECT)."""
    from conveyor.storage._register import (
        load_flows_from_module,
        load_flows_from_script,
        register_flows,
    )

    if not path and not module:
        raise ConfigError("nothing to register", hint="pass --path flows.py or --module pkg.mod")
    settings = load_settings()
    groups = [load_flows_from_script(str(p)) for p in _scripts(path)]
    groups += [load_flows_from_module(m) for m in module]
    found = {f.name for flows, _ in groups for f in flows}
    missing = sorted(set(name) - found)
    if missing:
        raise ConfigError(
            f"no flow named {', '.join(map(repr, missing))} in the scripts and modules given "
            f"(they define: {', '.join(sorted(found)) or 'no flows'})",
            hint="check --name against the flows' names",
        )
    count = 0
    with client(settings) as api:
        for flows, namespace in groups:
            chosen = [f for f in flows if not name or f.name in name]
            for deployment in register_flows(
                chosen,
                project_name=project,
                labels=label,
                work_pool=pool,
                settings=settings,
                client=api,
                notify=note,
                namespace=namespace,
            ):
                count += 1
                console.print(
                    f"registered {deployment.flow_name}/{deployment.name} version "
                    f"{deployment.version} (revision {deployment.revision})"
                )
    if count == 0:
        raise ConfigError("no flows found to register", hint="define a Flow at the top level")


def _scripts(paths: list[Path]) -> list[Path]:
    """Each ``--path``: a script, or a folder standing for the ``.py`` files directly in it
    (Prefect 1's ``register -p flows/``)."""
    scripts: list[Path] = []
    for path in paths:
        if not path.is_dir():
            scripts.append(path)
            continue
        inside = sorted(p for p in path.iterdir() if p.suffix == ".py" and p.is_file())
        if not inside:
            raise ConfigError(f"folder {path} holds no .py files", hint="pass a flow script")
        scripts += inside
    return scripts


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("register")(register_command)
