"""Script storages in git: `GitHub`, `GitLab`, `Bitbucket`, `CodeCommit` and the generic `Git`.

Each is a `GitRepository` (`conveyor.sources.git`) plus the path of the flow's ``.py`` file in
it. Nothing is uploaded (``build`` stores nothing: push the file yourself); registering resolves
the ref to a commit, and every run loads that commit (the first generation re-resolved the ref at
every run). Runs check out only the file's directory (its siblings import).

Tokens are resolved on the worker when git needs them, the environment first and then the
server's secret store, and reach git only through its child's environment:

- GitHub: ``access_token_secret``, else ``GITHUB_ACCESS_TOKEN``; host ``base_url`` (GitHub
  Enterprise) or github.com;
- GitLab: ``access_token_secret``, else ``GITLAB_ACCESS_TOKEN``; ``host`` or gitlab.com;
- Bitbucket Server: ``access_token_secret``, else ``BITBUCKET_ACCESS_TOKEN`` (``user:token``);
- Bitbucket Cloud (``workspace=``): ``cloud_username_secret`` and ``cloud_app_password_secret``,
  else ``BITBUCKET_CLOUD_USERNAME`` and ``BITBUCKET_CLOUD_APP_PASSWORD``; bitbucket.org;
- CodeCommit: ``AWS_CREDENTIALS`` (``{"ACCESS_KEY": ..., "SECRET_ACCESS_KEY": ...}``), else the
  ``AWS_*`` variables; region and ``endpoint_url`` from ``client_options``;
- Git: ``git_token_secret_name`` (``user:token`` with ``format_access_token``); ``repo_host``.

A default name that resolves to nothing means no token (a public repository); a name given
explicitly must resolve. Refs default as in the first generation: GitHub the repository's
default branch, GitLab and Bitbucket ``master``, CodeCommit and Git the remote's HEAD.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError
from conveyor.sources.git.repository import GitRepository
from conveyor.storage._session import Session
from conveyor.storage.base import Storage

if TYPE_CHECKING:
    from conveyor.flows import Flow
    from conveyor.sources.base import Source

__all__ = ["Bitbucket", "CodeCommit", "Git", "GitHub", "GitLab", "GitStorage"]

logger = logging.getLogger(__name__)

_FULL_SHA = re.compile(r"^[0-9a-fA-F]{40}([0-9a-fA-F]{24})?$")


def _template(name: str) -> str:
    return "${" + name + "}"


def _repo_path(repo: str, what: str) -> str:
    if not isinstance(repo, str) or repo.count("/") < 1 or any(not p for p in repo.split("/")):
        raise ConfigError(f"{what} repo {repo!r} is not 'owner/name'", hint="e.g. my-org/flows")
    return repo.strip("/").removesuffix(".git")


def _pin(ref: str | None) -> dict[str, Any]:
    """``branch=`` or ``commit_sha=`` for a ref (``refs/heads/x`` and ``refs/tags/x`` too)."""
    if ref is None:
        return {}
    if _FULL_SHA.match(ref):
        return {"commit_sha": ref}
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return {"branch": ref[len(prefix) :]}
    return {"branch": ref}


class GitStorage(Storage):
    """A flow script at ``path`` in a git repository (`repository` says which)."""

    scripts_only = True

    def __init__(self, path: str | None, **kwargs: Any) -> None:
        kwargs.pop("stored_as_script", None)
        super().__init__(**kwargs)
        self.path = None if path is None else path.strip("/")

    def _location(self, flow: Flow[..., Any]) -> str:
        if not self.path or not self.path.endswith(".py"):
            raise ConfigError(
                f"{self.name} storage needs the path of the flow's .py file in the repository",
                hint=f"{self.name}(..., path='flows/my_flow.py')",
            )
        return self.path

    def repository(self, environ: Mapping[str, str] | None = None) -> GitRepository:
        """The repository, pinned to the storage's ref (``environ``: this process's)."""
        raise NotImplementedError

    def _checkout_source(self, location: str, current: Session) -> GitRepository:
        repo = self.repository(current.ctx.environ)
        directory = posixpath.dirname(location)
        if directory:
            spec = {**repo.to_spec(), "directories": [directory]}
            return GitRepository(**{k: v for k, v in spec.items() if k != "kind"})
        return repo

    def _load(self, flow_name: str, location: str, current: Session) -> Flow[..., Any]:
        from conveyor.cache import CodeCache
        from conveyor.storage._serialize import extract_flow_from_file

        repo = self._checkout_source(location, current)
        ctx = current.ctx
        commit = repo.resolve(ctx)
        logger.info("Using commit: %s", commit)
        cache = CodeCache.from_settings(current.settings, context=ctx)
        with cache.checkout(repo, commit) as tree:
            return extract_flow_from_file(file_path=tree / location, flow_name=flow_name)

    def deployment_source(
        self, flow_name: str, *, attribute: str, current: Session
    ) -> tuple[Source, str]:
        location = self._check_contained(flow_name)
        return self._checkout_source(location, current), f"{location}:{attribute}"


class GitHub(GitStorage):
    """A flow script in a GitHub repository ``repo`` (``owner/name``) at ``path``."""

    def __init__(
        self,
        repo: str,
        path: str,
        ref: str | None = None,
        access_token_secret: str | None = None,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, **kwargs)
        self.repo = _repo_path(repo, "GitHub")
        self.ref = ref
        self.access_token_secret = access_token_secret
        self.base_url = base_url

    def repository(self, environ: Mapping[str, str] | None = None) -> GitRepository:
        host = (self.base_url or "https://github.com").rstrip("/")
        host = host.removesuffix("/api/v3").replace("://api.github.com", "://github.com")
        return GitRepository(
            f"{host}/{self.repo}.git",
            credentials=_template(self.access_token_secret or "GITHUB_ACCESS_TOKEN"),
            credentials_optional=self.access_token_secret is None,
            provider="github",
            **_pin(self.ref),
        )


class GitLab(GitStorage):
    """A flow script in a GitLab project ``repo`` (``namespace/project``) at ``path``."""

    def __init__(
        self,
        repo: str,
        host: str | None = None,
        path: str | None = None,
        ref: str | None = None,
        access_token_secret: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, **kwargs)
        if isinstance(repo, int) or str(repo).isdigit():
            raise ConfigError(
                f"GitLab project ID {repo} cannot be cloned by number",
                hint="give the project's path: GitLab(repo='namespace/project', ...)",
            )
        self.repo = _repo_path(repo, "GitLab")
        self.host = host
        self.ref = ref
        self.access_token_secret = access_token_secret

    def repository(self, environ: Mapping[str, str] | None = None) -> GitRepository:
        host = (self.host or "https://gitlab.com").rstrip("/")
        return GitRepository(
            f"{host}/{self.repo}.git",
            credentials=_template(self.access_token_secret or "GITLAB_ACCESS_TOKEN"),
            credentials_optional=self.access_token_secret is None,
            provider="gitlab",
            **_pin(self.ref or "master"),
        )


class Bitbucket(GitStorage):
    """A flow script in Bitbucket: Cloud when ``workspace`` is given, else Server (``project``)."""

    def __init__(
        self,
        project: str,
        repo: str,
        workspace: str | None = None,
        host: str | None = None,
        path: str | None = None,
        ref: str | None = None,
        access_token_secret: str | None = None,
        cloud_username_secret: str | None = None,
        cloud_app_password_secret: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, **kwargs)
        if workspace and access_token_secret:
            raise ConfigError(
                "Bitbucket Cloud (workspace=) authenticates with a username and an app "
                "password, not access_token_secret",
                hint="pass cloud_username_secret and cloud_app_password_secret",
            )
        for what, value in (("project", project), ("repo", repo)):
            if not isinstance(value, str) or not value or "/" in value:
                raise ConfigError(f"Bitbucket {what} {value!r} is not a name")
        self.project, self.repo, self.workspace, self.host = project, repo, workspace, host
        self.ref = ref
        self.access_token_secret = access_token_secret
        self.cloud_username_secret = cloud_username_secret
        self.cloud_app_password_secret = cloud_app_password_secret

    def repository(self, environ: Mapping[str, str] | None = None) -> GitRepository:
        host = (self.host or "https://bitbucket.org").rstrip("/")
        pin = _pin(self.ref or "master")
        if self.workspace:
            user = self.cloud_username_secret or "BITBUCKET_CLOUD_USERNAME"
            password = self.cloud_app_password_secret or "BITBUCKET_CLOUD_APP_PASSWORD"
            explicit = bool(self.cloud_username_secret or self.cloud_app_password_secret)
            return GitRepository(
                f"{host}/{self.workspace}/{self.repo}.git",
                credentials=f"{_template(user)}:{_template(password)}",
                credentials_optional=not explicit,
                provider="bitbucket",
                **pin,
            )
        return GitRepository(
            f"{host}/scm/{self.project}/{self.repo}.git",
            credentials=_template(self.access_token_secret or "BITBUCKET_ACCESS_TOKEN"),
            credentials_optional=self.access_token_secret is None,
            provider="bitbucket-server",
            **pin,
        )


class CodeCommit(GitStorage):
    """A flow script in the AWS CodeCommit repository ``repo`` at ``path``.

    ``commit`` is a commit, tag, branch or full ref (HEAD when None). ``client_options``:
    ``region_name`` (else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``) and ``endpoint_url``.
    """

    def __init__(
        self,
        repo: str,
        path: str | None = None,
        commit: str | None = None,
        client_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, **kwargs)
        if not isinstance(repo, str) or not repo or "/" in repo:
            raise ConfigError(f"CodeCommit repo {repo!r} is not a repository name")
        self.repo = repo
        self.commit = commit
        self.client_options = dict(client_options or {})

    def repository(self, environ: Mapping[str, str] | None = None) -> GitRepository:
        from conveyor.sources.git._codecommit import codecommit_url

        env = environ or {}
        endpoint = self.client_options.get("endpoint_url")
        if endpoint:
            url = f"{str(endpoint).rstrip('/')}/v1/repos/{self.repo}"
        else:
            region = (
                self.client_options.get("region_name")
                or env.get("AWS_REGION")
                or env.get("AWS_DEFAULT_REGION")
            )
            if not region:
                raise ConfigError(
                    "CodeCommit needs a region",
                    hint="pass client_options={'region_name': 'us-east-1'} or set "
                    "AWS_DEFAULT_REGION",
                )
            url = codecommit_url(self.repo, region=str(region))
        return GitRepository(
            url,
            credentials=_template("AWS_CREDENTIALS"),
            credentials_optional=True,
            provider="codecommit",
            **_pin(self.commit),
        )


class Git(GitStorage):
    """A flow script at ``flow_path`` in any git repository (``repo`` on ``repo_host``)."""

    def __init__(
        self,
        flow_path: str,
        repo: str | None = None,
        repo_host: str = "github.com",
        flow_name: str | None = None,
        git_token_secret_name: str | None = None,
        git_token_username: str | None = None,
        git_clone_url_secret_name: str | None = None,
        branch_name: str | None = None,
        tag: str | None = None,
        commit: str | None = None,
        clone_depth: int = 1,
        use_ssh: bool = False,
        format_access_token: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(flow_path, **kwargs)
        if sum(x is not None for x in (branch_name, tag, commit)) > 1:
            raise ConfigError("Git storage takes at most one of branch_name, tag and commit")
        if git_clone_url_secret_name is not None:
            raise ConfigError(
                "git_clone_url_secret_name is not supported: a deployment never stores a URL "
                "that holds a token",
                hint="pass repo= and repo_host=, and the token as git_token_secret_name",
            )
        if repo is None:
            raise ConfigError("Git storage needs repo= ('owner/name')")
        if use_ssh and git_token_secret_name:
            logger.warning("Git storage: use_ssh is set, so git_token_secret_name is ignored")
            git_token_secret_name = None
        self.repo = _repo_path(repo, "Git")
        self.repo_host = repo_host
        self.flow_name = flow_name
        self.git_token_secret_name = git_token_secret_name
        self.git_token_username = git_token_username or self.repo.split("/")[0]
        self.ref = branch_name or tag or commit
        self.clone_depth = clone_depth
        self.use_ssh = use_ssh
        self.format_access_token = format_access_token

    def repository(self, environ: Mapping[str, str] | None = None) -> GitRepository:
        host = self.repo_host.rstrip("/")
        if self.use_ssh:
            return GitRepository(f"git@{host}:{self.repo}.git", **_pin(self.ref))
        base = host if "://" in host else f"https://{host}"
        credentials = None
        if self.git_token_secret_name:
            token = _template(self.git_token_secret_name)
            credentials = (
                f"{self.git_token_username}:{token}" if self.format_access_token else token
            )
        return GitRepository(
            f"{base}/{self.repo}.git", credentials=credentials, provider="generic", **_pin(self.ref)
        )
