"""`conveyor init` and `conveyor project schema`.

```
conveyor init [--recipe local|git|s3|gcs|azure|docker] [--field key=value ...] [--force]
conveyor project schema            # the JSON schema of conveyor.yaml, for editors and CI
```

``init`` writes a commented ``conveyor.yaml`` for the recipe (`conveyor._recipes`: the git
remote and branch, the first ``@flow``, ``requirements.txt`` detected) and the schema beside it
as ``conveyor.schema.json`` (the file's first line points editors at it). It refuses to replace
an existing ``conveyor.yaml`` without ``--force``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from conveyor.cli._common import console, err_console
from conveyor.errors import ConfigError

__all__ = ["register"]

project_app = typer.Typer(help="The project file (conveyor.yaml).", no_args_is_help=True)

SCHEMA_FILE = "conveyor.schema.json"


def init(
    recipe: str | None = typer.Option(
        None,
        "--recipe",
        "-r",
        help="local, git, s3, gcs, azure or docker (default: git with a remote, else local).",
    ),
    field: list[str] = typer.Option(
        [], "--field", "-f", help="Recipe field KEY=VALUE (bucket, image_name, entrypoint, ...)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing conveyor.yaml."),
    directory: Path = typer.Option(Path("."), "--directory", help="The project folder."),
) -> None:
    """Write a commented conveyor.yaml for a recipe in the project folder."""
    from conveyor._recipes import find_entrypoint, infer_recipe, render
    from conveyor.project import PROJECT_FILE, load_project, schema_path

    target = directory / PROJECT_FILE
    if target.exists() and not force:
        raise ConfigError(
            f"{target} exists already", hint="pass --force to replace it (it is not merged)"
        )
    fields: dict[str, str] = {}
    for item in field:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--field {item!r} is not KEY=VALUE")
        fields[key.strip()] = value
    chosen = recipe or infer_recipe(directory)
    text = render(chosen, directory, fields)
    target.write_text(text, encoding="utf-8")
    (directory / SCHEMA_FILE).write_text(schema_path().read_text(encoding="utf-8"))
    project = load_project(target)  # what we wrote must read back
    names = ", ".join(d.name for d in project.deployments)
    console.print(f"wrote {target} (recipe {chosen}; deployments: {names})", highlight=False)
    if (directory / "prefect.yaml").is_file():
        err_console.print(
            "note: conveyor deploy now reads conveyor.yaml here, not prefect.yaml "
            "(conveyor deploy --prefect-yaml prefect.yaml still deploys from it)",
            highlight=False,
            markup=False,
        )
    if fields.get("entrypoint") or find_entrypoint(directory):
        console.print("next: conveyor deploy", highlight=False)
        return
    entrypoint = project.deployments[0].entrypoint if project.deployments else "flows.py:main"
    console.print(
        f"no @flow function found in the project folder: entrypoint {entrypoint} is a placeholder",
        highlight=False,
        markup=False,
    )
    console.print(
        "next: write a @flow function (from conveyor import flow), put its FILE:FUNCTION as "
        "entrypoint in conveyor.yaml, then conveyor deploy",
        highlight=False,
        markup=False,
    )


@project_app.command("schema")
def schema() -> None:
    """Print the JSON schema of conveyor.yaml."""
    from conveyor.project import schema_path

    typer.echo(schema_path().read_text(encoding="utf-8"), nl=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("init")(init)
    app.add_typer(project_app, name="project")
