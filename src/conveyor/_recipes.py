"""``conveyor init``: a commented ``conveyor.yaml`` for a recipe, filled in from the folder.

Recipes (`RECIPES`) are YAML files shipped in ``conveyor/recipes/`` with ``<<field>>``
placeholders (``{{ }}`` and ``${ }}`` belong to the file's own templates). `render` fills them
from what the folder shows — its name, the first ``@flow`` function found (the entrypoint), the
git remote ``origin`` and current branch (credentials stripped from the URL), the folder's
place in its repository (a subfolder gets a ``set_working_directory`` step, so the entrypoint and
``requirements.txt`` mean the same there as here), whether there is a ``requirements.txt`` (then
the pull steps install it) — and from ``--field key=value`` overrides. `infer_recipe`:
``git`` when the folder is a git checkout with an ``origin``, else ``local``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from conveyor.errors import ConfigError

__all__ = ["RECIPES", "find_entrypoint", "git_origin", "infer_recipe", "render"]

RECIPES = ("local", "git", "s3", "gcs", "azure", "docker")
_DIR = Path(__file__).with_name("recipes")
_PLACEHOLDER = re.compile(r"<<([a-z_]+)>>")
_SKIP_DIRS = {".git", ".venv", "venv", "env", "node_modules", "__pycache__", "build", "dist"}
_REQUIREMENTS = (
    "\n  - pip_install_requirements:             # the flow runs in an environment holding"
    "\n      requirements_file: requirements.txt  # these (built once per worker, by digest)"
)
_NO_REQUIREMENTS = (
    "\n  # - pip_install_requirements:           # with a requirements.txt: the flow runs in"
    "\n  #     requirements_file: requirements.txt  # an environment holding it"
)


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def git_origin(folder: Path) -> tuple[str, str] | None:
    """(remote ``origin`` URL without credentials, current branch or ``main``), or None."""
    url = _git(folder, "remote", "get-url", "origin")
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    branch = _git(folder, "rev-parse", "--abbrev-ref", "HEAD")
    return url, branch if branch and branch != "HEAD" else "main"


def _working_directory(folder: Path) -> str:
    """The pull step that enters ``folder`` in the clone when it is a subfolder of its
    repository (the clone holds the whole repository), else nothing."""
    prefix = (_git(folder, "rev-parse", "--show-prefix") or "").strip("/")
    if not prefix:
        return ""
    return (
        "\n  - set_working_directory:               # this project is the repository's "
        f"{prefix}/ folder"
        f'\n      directory: "{{{{ clone.directory }}}}/{prefix}"'
    )


def infer_recipe(folder: Path) -> str:
    return "git" if git_origin(folder) is not None else "local"


def _is_flow(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Name):
        return target.id == "flow"
    return isinstance(target, ast.Attribute) and target.attr == "flow"


def find_entrypoint(folder: Path) -> str | None:
    """``path.py:function`` of the first ``@flow`` function under ``folder`` (sorted paths)."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    for file in sorted(files, key=lambda p: (len(p.relative_to(folder).parts), str(p))):
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                _is_flow(d) for d in node.decorator_list
            ):
                return f"{file.relative_to(folder).as_posix()}:{node.name}"
    return None


def render(recipe: str, folder: Path, fields: Mapping[str, str] | None = None) -> str:
    """The commented ``conveyor.yaml`` of ``recipe`` for ``folder``."""
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}", hint=f"use one of: {', '.join(RECIPES)}")
    folder = folder.resolve()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name).strip("-.") or "project"
    entrypoint = find_entrypoint(folder)
    values: dict[str, str] = {
        "recipe": recipe,
        "name": name,
        "deployment": "default",
        "entrypoint": entrypoint or "flows.py:main  # no @flow function found: set it",
        "work_pool": "docker" if recipe == "docker" else "default",
        "bucket": "my-bucket",
        "container": "my-container",
        "folder": name,
        "image_name": f"registry.example.com/{name}",
        "requirements": _REQUIREMENTS,
        "workdir": "",
    }
    if not (folder / "requirements.txt").is_file():
        values["requirements"] = " []" + _NO_REQUIREMENTS if recipe == "local" else _NO_REQUIREMENTS
    origin = git_origin(folder)
    if recipe == "git":
        if origin is None and not (fields and "repository" in fields):
            raise ConfigError(
                f"{folder} has no git remote 'origin' for the git recipe",
                hint="add one (git remote add origin URL), or pass --field repository=URL",
            )
        values["repository"], values["branch"] = origin or ("", "main")
        values["workdir"] = _working_directory(folder) if origin is not None else ""
    internal = {"recipe", "requirements", "workdir"}
    for key, value in (fields or {}).items():
        if key not in values or key in internal:
            known = sorted(set(values) - internal)
            raise ConfigError(f"unknown field {key!r}", hint=f"fields: {', '.join(known)}")
        values[key] = value
    text = (_DIR / "_header.yaml").read_text(encoding="utf-8")
    text += (_DIR / f"{recipe}.yaml").read_text(encoding="utf-8")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
