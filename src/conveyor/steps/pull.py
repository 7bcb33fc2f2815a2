"""Built-in pull steps: ``git_clone`` and ``set_working_directory``.

In a deployment, ``git_clone`` is where the code lives: `git_clone_source` turns it into a
`GitRepository` (credentials by name or ``${NAME}`` template only; a literal token is refused so
it is never stored). Run directly (``run_steps``), `git_clone` fetches through the code cache and
returns ``{"directory": <checkout>, "commit": <sha>}``; `set_working_directory` returns the
absolute directory later steps and the run use (it never changes this process's directory).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conveyor.credentials import TokenCredentials, template_name
from conveyor.errors import ConfigError
from conveyor.secrets import Secret
from conveyor.sources.git import GitRepository

__all__ = ["git_clone", "git_clone_source", "set_working_directory"]


def _credentials(access_token: Any, credentials: Any) -> str | TokenCredentials | None:
    if access_token is not None and credentials is not None:
        raise ConfigError("git_clone takes access_token or credentials, not both")
    if isinstance(access_token, Secret):  # a template resolved at run time: memory only
        return TokenCredentials(token=access_token)
    if access_token is not None:
        if not isinstance(access_token, str) or template_name(access_token) is None:
            raise ConfigError(
                "git_clone access_token must be a template such as ${GITHUB_TOKEN}, "
                "never the token itself (it would be stored with the deployment)",
                hint="store it with `conveyor secret set GITHUB_TOKEN` and write "
                "access_token: ${GITHUB_TOKEN}",
            )
        return access_token.strip()
    if credentials is None:
        return None
    if isinstance(credentials, Secret):
        return TokenCredentials(token=credentials)
    if not isinstance(credentials, str):
        raise ConfigError(
            "git_clone credentials must name saved credentials (credentials: gh)",
            hint="save them with `conveyor credentials create github gh`",
        )
    named = template_name(credentials)
    if named and credentials.strip().startswith("{{"):
        for prefix in ("credentials.", "prefect.blocks.github-credentials."):
            named = named.removeprefix(prefix)
        return named
    return credentials.strip()


def git_clone_source(
    repository: str,
    branch: str | None = None,
    commit_sha: str | None = None,
    include_submodules: bool = False,
    access_token: Any = None,
    credentials: Any = None,
    directories: Sequence[str] | None = None,
    provider: str | None = None,
    follow_ref: bool = False,
    clone_directory_name: str | None = None,
) -> GitRepository:
    """The `GitRepository` a ``git_clone`` step names (``clone_directory_name`` is accepted for
    ``prefect.yaml`` files and ignored: checkouts live in the code cache)."""
    del clone_directory_name
    return GitRepository(
        repository,
        credentials=_credentials(access_token, credentials),
        branch=branch,
        commit_sha=commit_sha,
        include_submodules=include_submodules,
        directories=directories,
        provider=provider,
        follow_ref=follow_ref,
    )


def git_clone(**arguments: Any) -> dict[str, str]:
    """Fetch the step's repository at its pinned or resolved commit through the code cache."""
    from conveyor.cache import CodeCache
    from conveyor.settings import Settings

    source = git_clone_source(**arguments)
    version = source.resolve()
    path = CodeCache.from_settings(Settings.from_env()).ensure(source, version)
    return {"directory": str(path), "commit": version}


git_clone.__signature__ = inspect.signature(git_clone_source)  # type: ignore[attr-defined]


def set_working_directory(
    directory: str, *, base: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """The absolute working directory: ``directory``, relative to ``base`` (the previous
    step's directory, else the current one)."""
    if not isinstance(directory, str) or not directory:
        raise ConfigError("set_working_directory needs a directory")
    path = Path(directory)
    if not path.is_absolute():
        path = Path(base or Path.cwd()) / path
    return {"directory": str(path.resolve())}
