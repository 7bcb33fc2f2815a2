"""`conveyor bundle PATH [--output FILE]`: the version of a folder, and optionally its archive."""

from __future__ import annotations

from pathlib import Path

import typer

from conveyor.cli._common import console
from conveyor.errors import ConfigError

__all__ = ["register"]


def bundle(
    path: Path = typer.Argument(
        ..., help="The folder to bundle.", metavar="PATH", show_default=False
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the bundle archive (.tar.zst) to this file."
    ),
) -> None:
    """Print the bundle version, file count and size of a folder; write its archive with -o."""
    from conveyor.bundles import build_manifest, pack
    from conveyor.cli.cache import format_size

    if not path.exists():
        raise ConfigError(f"{path} does not exist", hint="give the path of a folder to bundle")
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder", hint="give the path of a folder to bundle")
    if output is not None and output.is_dir():
        raise ConfigError(f"--output {output} is a directory", hint="give a file name")
    manifest = build_manifest(path)
    if output is not None:
        pack(path, output, manifest=manifest)
    console.print(f"version  {manifest.version}")
    console.print(f"files    {manifest.file_count}")
    console.print(f"size     {format_size(manifest.total_size)}")
    if output is not None:
        console.print(f"archive  {output} ({format_size(output.stat().st_size)})")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("bundle")(bundle)
