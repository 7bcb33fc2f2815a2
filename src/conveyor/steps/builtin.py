"""Built-in steps: ``git_clone``, ``set_working_directory``, ``run_shell_script``.

- ``git_clone`` names the code: at deploy, `git_clone_source` turns its arguments into the
  deployment's `GitRepository` (credentials by name or template only; a literal token is refused
  so it is never stored). On the worker, `git_clone` materialises the deployment's pinned commit
  through the code cache into the run's code directory and returns ``{"directory", "commit"}``
  (Prefect's output names).
- ``set_working_directory`` moves the flow's working directory and import root (inside the run's
  code directory, checked once its templates are resolved on the worker); returns
  ``{"directory"}``.
- ``run_shell_script`` runs each line of ``script`` as a command (no shell; ``$VAR`` expanded
  when ``expand_env_vars``) in the working directory, with the run's environment plus ``env``;
  streams its output to the run's logs when ``stream_output``; returns ``{"stdout", "stderr"}``.
  ``{{ $ENV }}`` and ``{{ step_id.key }}`` in ``script`` are substituted on the worker; a secret
  template there would put the secret in a command line, so `check_run_shell_script` refuses it
  (at deploy, and on the worker for a deployment stored before): secrets go through ``env``.

Text arguments arrive as a `Secret` when a template was substituted into them (`resolve_templates`
wraps every such string); the steps reveal them where they are used.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.errors import CommandError, ConfigError
from conveyor.secrets import Secret, reveal, template_ref, template_refs
from conveyor.sources.git import GitRepository, TokenCredentials
from conveyor.sources.git.credentials import check_username
from conveyor.steps import StepContext

__all__ = [
    "check_run_shell_script",
    "git_clone",
    "git_clone_source",
    "git_clone_step",
    "run_shell_script",
    "set_working_directory",
]

SCRIPT_TIMEOUT_SECONDS = 3600.0


def _credentials(access_token: Any, credentials: Any) -> str | TokenCredentials | None:
    if access_token is not None and credentials is not None:
        raise ConfigError("git_clone takes access_token or credentials, not both")
    if isinstance(credentials, Mapping):
        return _credentials_dict(credentials)
    if isinstance(access_token, Secret):  # a template resolved at run time: memory only
        return TokenCredentials(token=access_token)
    if access_token is not None:
        ref = template_ref(access_token) if isinstance(access_token, str) else None
        if ref is not None and ref.kind == "block":  # {{ prefect.blocks.TYPE.NAME }}
            return ref.name  # saved credentials NAME, as under credentials:
        if ref is not None and ref.kind == "output":
            raise ConfigError(
                f"git_clone access_token {ref.text} is a step output; a token comes from a "
                "secret: ${NAME} or {{ secrets.NAME }}",
                hint="store it with `conveyor secret set NAME` (or export NAME on the worker)",
            )
        if ref is None or ref.kind not in ("secret", "env"):
            raise ConfigError(
                "git_clone access_token must be a template such as ${GITHUB_TOKEN}, "
                "never the token itself (it would be stored with the deployment)",
                hint="store it with `conveyor secret set GITHUB_TOKEN` and write "
                "access_token: ${GITHUB_TOKEN}",
            )
        return str(access_token).strip()
    if credentials is None:
        return None
    if isinstance(credentials, Secret):
        return TokenCredentials(token=credentials)
    if not isinstance(credentials, str):
        raise ConfigError(
            "git_clone credentials must name saved credentials (credentials: gh)",
            hint="save them with `conveyor credentials create github gh`",
        )
    ref = template_ref(credentials)
    if ref is not None and ref.kind == "block":
        return ref.name  # {{ prefect.blocks.github-credentials.NAME }}: saved credentials NAME
    return credentials.strip()


_TOKEN_KEYS = ("access_token", "token", "password")


def _credentials_dict(credentials: Mapping[Any, Any]) -> str | TokenCredentials:
    """Prefect's ``credentials: {access_token: "{{ prefect.blocks.secret.NAME }}"}`` (what its
    ``GitRepository.to_pull_step`` writes), with an optional ``username``: the token follows the
    ``access_token`` rules (a template, never the token); ``username: U`` makes ``U:<token>``."""
    unknown = sorted(str(k) for k in credentials if k not in ("username", *_TOKEN_KEYS))
    tokens = [credentials[k] for k in _TOKEN_KEYS if credentials.get(k) is not None]
    if unknown or len(tokens) != 1:
        what = f"unknown key {unknown[0]!r}" if unknown else "one access_token is needed"
        raise ConfigError(
            f"git_clone credentials: {what}",
            hint='write credentials: {access_token: "${TOKEN}", username: USER} (username '
            "optional), or name saved credentials: credentials: gh",
        )
    token = _credentials(tokens[0], None)
    assert token is not None
    username = credentials.get("username")
    if username is None:
        return token
    if not isinstance(username, str | Secret):
        raise ConfigError(f"git_clone credentials: username {username!r} is not a user name")
    if isinstance(username, str) and not template_refs(username):
        check_username(username)  # a template is resolved (and checked) by the worker
    if isinstance(token, TokenCredentials):  # on the worker: the templates are resolved
        return TokenCredentials(token=Secret(f"{reveal(username)}:{reveal(token.token)}"))
    return f"{username}:{token}"  # user:${TOKEN}, as load_credentials reads it


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
    ``prefect.yaml`` files and ignored: the code goes to the run's code directory)."""
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


def git_clone(ctx: StepContext, **arguments: Any) -> dict[str, Any]:
    """Materialise the deployment's pinned commit into the run's code directory."""
    git_clone_source(**arguments)  # the arguments are checked as at deploy
    found = dict(ctx.materialise(ctx.code_dir))
    ctx.materialised = True
    return {"directory": str(ctx.code_dir), **found}


def git_clone_step(repository: GitRepository) -> dict[str, Any]:
    """``repository`` as a ``git_clone`` step (credentials by name or template only)."""
    args: dict[str, Any] = {"repository": repository.url}
    optional: dict[str, Any] = {
        "branch": repository.branch,
        "commit_sha": repository.commit_sha,
        "include_submodules": repository.include_submodules or None,
        "directories": list(repository.directories) if repository.directories else None,
        "provider": repository.provider,
        "follow_ref": repository.follow_ref or None,
    }
    args.update({k: v for k, v in optional.items() if v is not None})
    name = repository.credentials_name
    if name is not None:
        ref = template_ref(name)
        args["access_token" if ref is not None and ref.kind != "block" else "credentials"] = name
    return {"git_clone": args}


def _inside(ctx: StepContext, path: Path, what: str) -> Path:
    resolved = path.resolve()
    root = ctx.code_dir.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise ConfigError(
            f"{what} is outside the run's code directory",
            hint="use a directory relative to the repository root",
        )
    return resolved


def set_working_directory(ctx: StepContext, directory: str | Secret) -> dict[str, str]:
    """Make ``directory`` (relative to the current working directory, or absolute inside the
    code) the flow's working directory and import root."""
    if not isinstance(directory, str | Secret) or not directory:
        raise ConfigError("set_working_directory needs a directory")
    text = reveal(directory)
    # Substituted values are masked in the run's logs: say where the value came from.
    shown = f"{text} (from {directory.name})" if isinstance(directory, Secret) else text
    path = Path(text)
    if not path.is_absolute():
        path = ctx.cwd / path
    resolved = _inside(ctx, path, f"set_working_directory: {shown}")
    if not resolved.is_dir():
        raise ConfigError(
            f"set_working_directory: {shown} is not a directory of the run's code",
            hint="check the directory against the deployed tree (`conveyor runs code RUN`)",
        )
    ctx.working_dir = resolved
    return {"directory": str(resolved)}


def check_run_shell_script(step: str, arguments: Mapping[str, Any]) -> None:
    """Refuse a secret template in ``script``: substituted there, it would be in a command line
    (argv is visible to every user of the machine); a secret goes through ``env``."""
    script = arguments.get("script")
    for ref in template_refs(script) if isinstance(script, str) else ():
        if ref.kind == "secret":
            raise ConfigError(
                f"step {step}: the secret {ref.text} cannot go into script, where it would be "
                f"in a command line; pass it through the step's env instead "
                f'(env: {{TOKEN: "{ref.text}"}}) and have the command read $TOKEN'
            )


def run_shell_script(
    ctx: StepContext,
    script: str | Secret,
    directory: str | Secret | None = None,
    env: Mapping[str, Any] | None = None,
    stream_output: bool = True,
    expand_env_vars: bool = False,
) -> dict[str, str]:
    """Run each line of ``script`` as one command; a failing command fails the step."""
    if not isinstance(script, str | Secret) or not reveal(script).strip():
        raise ConfigError("run_shell_script needs a script")
    if directory is None:
        cwd = ctx.cwd
    else:
        where = reveal(directory)
        cwd = _inside(ctx, ctx.cwd / where, f"run_shell_script: directory {where}")
    run_env = {k: reveal(v) for k, v in ctx.env.items()}
    run_env.update({str(k): reveal(v) if v is not None else "" for k, v in (env or {}).items()})
    stdout: list[str] = []
    stderr: list[str] = []
    for line in reveal(script).strip().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text = os.path.expandvars(line) if expand_env_vars else line
        _run_line(ctx, text, cwd, run_env, stream_output, stdout, stderr)
    return {"stdout": "\n".join(stdout), "stderr": "\n".join(stderr)}


def _run_line(
    ctx: StepContext,
    line: str,
    cwd: Path,
    env: dict[str, str],
    stream: bool,
    stdout: list[str],
    stderr: list[str],
) -> None:
    argv = shlex.split(line)
    timeout = ctx.timeout_seconds or SCRIPT_TIMEOUT_SECONDS
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, timeout=timeout, check=False, **ctx.popen
        )
    except FileNotFoundError:
        raise ConfigError(f"run_shell_script: command {argv[0]!r} was not found") from None
    except subprocess.TimeoutExpired:
        raise CommandError(line, returncode=None, stderr=f"timed out after {timeout:g}s") from None
    out = proc.stdout.decode(errors="replace").rstrip("\n")
    err = proc.stderr.decode(errors="replace").rstrip("\n")
    if stream:
        for text in out.splitlines():
            ctx.log(text, "stdout")
        for text in err.splitlines():
            ctx.log(text, "stderr")
    stdout.append(out)
    stderr.append(err)
    if proc.returncode != 0:
        last = err.splitlines()[-1] if err else f"exit status {proc.returncode}"
        raise CommandError(line, returncode=proc.returncode, stderr=last)
