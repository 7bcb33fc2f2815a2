"""Credentials for git hosts, saved in the server's encrypted secret store and loaded by name.

- `GitHubCredentials(token)`: ``x-access-token`` + the token (PAT or app installation token).
- `GitLabCredentials(token, username=None, url=None)`: ``oauth2`` + a personal/project/group
  access token; a deploy token with its own user name. ``url`` binds them to a self-hosted host.
- `BitBucketCredentials(token=None, username=None, password=None, url=None, server=False)`:
  Cloud: ``x-token-auth`` + an access token, or user + app password; Server/Data Center
  (``server=True``): user + token.
- `CodeCommitCredentials(aws_access_key_id, aws_secret_access_key, aws_session_token=None,
  region=None)`: access key id + a SigV4-derived password computed for each git command.
- `TokenCredentials(token, username=None)`: a plain secret holding a token; the user name follows
  the repository's ``provider=`` (GitHub ``x-access-token``, GitLab ``oauth2``, Bitbucket
  ``x-token-auth``; ``user:token`` carries its own). For CodeCommit it may hold the first
  generation's ``AWS_CREDENTIALS`` JSON (``{"ACCESS_KEY", "SECRET_ACCESS_KEY", "SESSION_TOKEN"}``).
- `SSHCredentials(private_key, known_hosts=None, accept_new_host_keys=False)`: a private key;
  host keys are checked strictly unless ``accept_new_host_keys``.

The provider comes from the credentials type (or the repository's explicit ``provider=``), never
from the host name.

Every secret field is a `Secret` (``repr`` shows ``****``). ``creds.save("gh")`` stores them as
the secret ``credentials.gh`` (JSON) through `ConveyorClient.set_secret`; ``GitHubCredentials.load
("gh")`` reads them back. A deployment stores only the name. `load_credentials` resolves a name on
the worker: typed credentials ``credentials.NAME`` first, then a plain secret ``NAME`` holding a
token, then an environment variable ``NAME``; a ``${NAME}`` template means a plain token
(environment first, then the store), like every other template; a text with several templates
(``${USER}:${APP_PASSWORD}``) is a ``user:token`` made of them. With ``optional=True`` nothing
found is None (a public repository), and `ambient_credentials` may stand in (CodeCommit: the
``AWS_*`` environment variables).
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, overload

from conveyor.credentials import Credentials, as_secret, did_you_mean, load_saved
from conveyor.errors import AuthenticationError, ConfigError
from conveyor.secrets import (
    Secret,
    SecretStore,
    resolve_templates,
    reveal,
    template_ref,
    template_refs,
)
from conveyor.sources.git._auth import GitAuth, HttpAuth, SshAuth, is_ssh_url

__all__ = [
    "PROVIDERS",
    "BitBucketCredentials",
    "CodeCommitCredentials",
    "GitCredentials",
    "GitHubCredentials",
    "GitLabCredentials",
    "SSHCredentials",
    "TokenCredentials",
    "ambient_credentials",
    "check_credentials_name",
    "check_username",
    "load_credentials",
    "provider_fits",
    "rejected",
]

PROVIDERS = ("github", "gitlab", "bitbucket", "bitbucket-server", "codecommit", "generic")
"""Git hosting providers: they differ in the user name sent with a token."""

_USER_FOR_TOKEN = {
    "github": "x-access-token",
    "gitlab": "oauth2",
    "bitbucket": "x-token-auth",
    "generic": "x-access-token",
}
_USERNAME = re.compile(r"^[^\s:/]{1,200}$")


_TOKEN_SHAPES = re.compile(
    r"^(?:gh[pousr]_|github_pat_|glpat-|gldt-|glrt-|glptt-|ATBB|ATCTT|ATATT)[A-Za-z0-9_\-=]{8,}$"
)
"""The prefixes GitHub, GitLab and Atlassian give their tokens."""


def check_credentials_name(name: str) -> None:
    """Refuse a token passed where the credentials' name goes (it would be echoed and stored);
    the message shows only its prefix."""
    if _TOKEN_SHAPES.match(name.strip()):
        raise ConfigError(
            f"credentials take the name of saved credentials, not a token "
            f"({name.strip()[:4]}… was given)",
            hint="save the token once: printf '%s' \"$TOKEN\" | conveyor credentials create "
            "github|gitlab|bitbucket NAME, then pass credentials=NAME (--credentials NAME)",
        )


def provider_fits(credentials_provider: str | None, provider: str | None) -> bool:
    """Whether credentials made for one provider may be used with a repository's ``provider=``."""
    if not credentials_provider or not provider or credentials_provider == provider:
        return True
    return credentials_provider == "bitbucket" and provider == "bitbucket-server"


def check_username(username: str | None, what: str = "username") -> None:
    """Refuse a user name git could not send (blanks, ``:``, ``/``, empty, over 200 chars)."""
    if username is not None and not _USERNAME.match(username):
        raise ConfigError(f"{what} {username!r} is not a valid git user name")


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    text = url if "://" in url else f"https://{url}"
    return (urlsplit(text).hostname or "").lower()


def _check_url(creds_url: str | None, repo_url: str, kind: str) -> None:
    """Credentials bound to a host (``url=``) are never sent to another host."""
    if creds_url and "://" in repo_url and _host(creds_url) != _host(repo_url):
        raise ConfigError(
            f"{kind} credentials are for {_host(creds_url)}, not {_host(repo_url)}",
            hint="use credentials made for the repository's host",
        )


class GitCredentials(Credentials):
    """Base of the git credentials kinds. ``name`` is set by `save` / `load`."""

    provider: ClassVar[str | None]

    @abstractmethod
    def git_auth(self, url: str, *, provider: str | None = None) -> GitAuth:
        """How to authenticate git to ``url`` (``provider`` matters only for plain tokens)."""


def _post_init(obj: Any, *secret_fields: str) -> None:
    for f in secret_fields:
        object.__setattr__(obj, f, as_secret(getattr(obj, f), f))


@dataclass(frozen=True)
class GitHubCredentials(GitCredentials):
    """A GitHub token (fine-grained or classic PAT, or an app installation token)."""

    type: ClassVar[str] = "github"
    provider: ClassVar[str | None] = "github"
    token: Secret | str
    name: str | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        _post_init(self, "token")
        if not self.token:
            raise ConfigError("GitHubCredentials need a token")

    def git_auth(self, url: str, *, provider: str | None = None) -> GitAuth:
        return HttpAuth("x-access-token", Secret(reveal(self.token)))


@dataclass(frozen=True)
class GitLabCredentials(GitCredentials):
    """A GitLab personal/project/group access token (``oauth2``), or a deploy token + its user.

    ``url`` is the GitLab instance (self-hosted); when set, the token is only sent to that host.
    """

    type: ClassVar[str] = "gitlab"
    provider: ClassVar[str | None] = "gitlab"
    token: Secret | str
    username: str | None = None
    url: str | None = None
    name: str | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        _post_init(self, "token")
        check_username(self.username)
        if not self.token:
            raise ConfigError("GitLabCredentials need a token")

    def git_auth(self, url: str, *, provider: str | None = None) -> GitAuth:
        _check_url(self.url, url, "GitLab")
        return HttpAuth(self.username or "oauth2", Secret(reveal(self.token)))


@dataclass(frozen=True)
class BitBucketCredentials(GitCredentials):
    """Bitbucket Cloud (access token, or user + app password) or Server/Data Center (user + token).

    ``server=True`` selects Bitbucket Server/Data Center; ``url`` binds the credentials to a host.
    """

    type: ClassVar[str] = "bitbucket"
    provider: ClassVar[str | None] = "bitbucket"
    token: Secret | str | None = None
    username: str | None = None
    password: Secret | str | None = None
    url: str | None = None
    server: bool = False
    name: str | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        _post_init(self, "token", "password")
        check_username(self.username)
        if not self.token and not self.password:
            raise ConfigError("BitBucketCredentials need a token or a password")
        if self.token and self.password:
            raise ConfigError("BitBucketCredentials take a token or a password, not both")
        if self.password and not self.username:
            raise ConfigError("a Bitbucket app password needs its username")
        if self.server and not self.username:
            raise ConfigError(
                "Bitbucket Server/Data Center credentials need a username",
                hint="pass username= (the token's owner)",
            )

    def git_auth(self, url: str, *, provider: str | None = None) -> GitAuth:
        _check_url(self.url, url, "Bitbucket")
        secret = Secret(reveal(self.token or self.password or ""))
        return HttpAuth(self.username or "x-token-auth", secret)


@dataclass(frozen=True)
class CodeCommitCredentials(GitCredentials):
    """AWS credentials for CodeCommit over HTTPS (the password is derived per command, SigV4).

    ``region`` defaults to the one in the repository's host name.
    """

    type: ClassVar[str] = "codecommit"
    provider: ClassVar[str | None] = "codecommit"
    aws_access_key_id: str
    aws_secret_access_key: Secret | str
    aws_session_token: Secret | str | None = None
    region: str | None = None
    name: str | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        _post_init(self, "aws_secret_access_key", "aws_session_token")
        if not self.aws_access_key_id or not self.aws_secret_access_key:
            raise ConfigError("CodeCommitCredentials need an access key id and a secret key")
        check_username(self.aws_access_key_id, "aws_access_key_id")

    def repository_url(self, repository: str) -> str:
        """The HTTPS clone URL of ``repository`` in this credentials' region."""
        from conveyor.sources.git._codecommit import codecommit_url

        if not self.region:
            raise ConfigError("CodeCommitCredentials need a region to build a repository URL")
        return codecommit_url(repository, region=self.region)

    def git_auth(self, url: str, *, provider: str | None = None) -> GitAuth:
        from conveyor.sources.git._codecommit import codecommit_region, sign_codecommit

        region = self.region or codecommit_region(url)
        if not region:
            raise ConfigError(
                "CodeCommitCredentials need a region for a URL that does not name one",
                hint="pass region='us-east-1' (or the repository's region)",
            )
        password = sign_codecommit(
            url, secret_access_key=reveal(self.aws_secret_access_key), region=region
        )
        if self.aws_session_token:
            user = Secret(f"{self.aws_access_key_id}%{reveal(self.aws_session_token)}")
            return HttpAuth(user, Secret(password))
        return HttpAuth(self.aws_access_key_id, Secret(password))


@dataclass(frozen=True)
class TokenCredentials(GitCredentials):
    """A plain token (a secret in the store); the user name follows the repository's provider.

    A token written ``user:token`` carries its own user name (GitLab deploy tokens, Bitbucket
    Server).
    """

    type: ClassVar[str] = "token"
    provider: ClassVar[str | None] = None
    token: Secret | str
    username: str | None = None
    name: str | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        _post_init(self, "token")
        check_username(self.username)
        if not self.token:
            raise ConfigError("the token is empty")

    def git_auth(self, url: str, *, provider: str | None = None) -> GitAuth:
        text = reveal(self.token).strip()
        user = self.username
        if user is None and ":" in text:
            user, _, text = text.partition(":")
        if user is None:
            chosen = provider or "generic"
            if chosen == "bitbucket-server":
                raise ConfigError(
                    "a Bitbucket Server token needs its user name",
                    hint="store the secret as 'user:token', or use BitBucketCredentials",
                )
            if chosen == "codecommit":
                raise ConfigError("CodeCommit needs CodeCommitCredentials, not a plain token")
            user = _USER_FOR_TOKEN.get(chosen, "x-access-token")
        return HttpAuth(user, Secret(text))


@dataclass(frozen=True)
class SSHCredentials(GitCredentials):
    """An SSH private key (unencrypted, OpenSSH/PEM text) and the host keys to trust.

    ``known_hosts`` is known_hosts text (``ssh-keyscan HOST``); without it the user's and the
    system's known_hosts files are used. Host keys are always checked (``StrictHostKeyChecking
    =yes``); ``accept_new_host_keys=True`` trusts a host seen for the first time
    (``accept-new``), never a changed key.
    """

    type: ClassVar[str] = "ssh"
    provider: ClassVar[str | None] = None
    private_key: Secret | str
    known_hosts: str | None = None
    accept_new_host_keys: bool = False
    name: str | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        _post_init(self, "private_key")
        if "PRIVATE KEY" not in reveal(self.private_key):
            raise ConfigError(
                "private_key does not look like a private key",
                hint="pass the text of the key file (-----BEGIN ... PRIVATE KEY-----)",
            )

    def git_auth(self, url: str, *, provider: str | None = None) -> GitAuth:
        return SshAuth(
            Secret(reveal(self.private_key)), self.known_hosts, self.accept_new_host_keys
        )


def rejected(
    exc: AuthenticationError, creds: GitCredentials | None, auth: GitAuth | None
) -> AuthenticationError:
    """``exc`` (the server refused) saying which credentials were sent and as which user (only
    a provider's fixed user name: another may come from a secret), and what to check."""
    if is_ssh_url(exc.source) or isinstance(auth, SshAuth):
        return exc  # SSH keys and host keys have their own messages
    if creds is None:
        return AuthenticationError(
            f"{exc.message}: no credentials were given",
            source=exc.source,
            hint="pass credentials=NAME (`conveyor credentials create github|gitlab|bitbucket "
            "NAME`, or `--credentials NAME` with `conveyor deploy`)",
        )
    what = f"credentials {creds.name!r}" if creds.name else f"the {creds.type} credentials"
    user = auth.username if isinstance(auth, HttpAuth) else None
    if isinstance(user, str) and user in _USER_FOR_TOKEN.values():
        what += f" (user {user})"
    hint = AuthenticationError.default_hint
    if isinstance(creds, TokenCredentials) and user == _USER_FOR_TOKEN["generic"]:
        hint = (
            f"{hint}; a plain token goes as user {user} (GitHub's convention): for GitLab or "
            "Bitbucket pass provider='gitlab' / 'bitbucket', or save typed credentials with "
            "`conveyor credentials create gitlab|bitbucket NAME`"
        )
    return AuthenticationError(f"{exc.message} with {what}", source=exc.source, hint=hint)


@overload
def load_credentials(
    ref: str,
    *,
    store: SecretStore | None,
    environ: Mapping[str, str],
    optional: Literal[False] = False,
    provider: str | None = None,
) -> GitCredentials: ...


@overload
def load_credentials(
    ref: str,
    *,
    store: SecretStore | None,
    environ: Mapping[str, str],
    optional: bool,
    provider: str | None = None,
) -> GitCredentials | None: ...


def load_credentials(
    ref: str,
    *,
    store: SecretStore | None,
    environ: Mapping[str, str],
    optional: bool = False,
    provider: str | None = None,
) -> GitCredentials | None:
    """The git credentials a deployment names, looked up on the worker.

    ``NAME``: saved credentials ``credentials.NAME`` first, then a plain secret ``NAME`` holding
    a token, then the environment variable ``NAME``. A ``${NAME}`` / ``{{ secrets.NAME }}``
    template is a plain token (the environment first, then the store); ``{{ $NAME }}`` a token
    in the environment only; ``{{ prefect.blocks.TYPE.NAME }}`` saved credentials ``NAME``; a
    text with several templates is the token they make. ``optional``: None when nothing is
    found (instead of the error). For ``provider="codecommit"`` a token holding
    ``AWS_CREDENTIALS`` JSON becomes `CodeCommitCredentials` (region: the JSON's ``REGION``, else
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION``).
    """
    found = _load(ref.strip(), store=store, environ=environ, optional=optional)
    if provider == "codecommit" and isinstance(found, TokenCredentials):
        text = reveal(found.token).strip()
        if text.startswith("{"):
            return _aws_json(text, found.name, environ)
    return found


def _load(
    ref: str, *, store: SecretStore | None, environ: Mapping[str, str], optional: bool
) -> GitCredentials | None:
    template = template_ref(ref)
    if template is None and template_refs(ref):
        return _composite(ref, store=store, environ=environ, optional=optional)
    name = template.name if template is not None else ref
    if template is not None and template.kind in ("secret", "env") and name in environ:
        return TokenCredentials(token=Secret(environ[name], name=name), name=ref)
    if template is not None and template.kind not in ("secret", "env", "block"):
        raise ConfigError(f"credentials {ref!r} is not a credentials name or a secret template")
    if store is not None:
        if template is None or template.kind == "block":
            typed = load_saved(name, store)
            if typed is not None:
                if not isinstance(typed, GitCredentials):
                    raise ConfigError(f"credentials {name!r} are {typed.type} credentials, not git")
                return typed
        if template is None or template.kind == "secret":
            value = store.get_secret(name)
            if value is not None:
                return TokenCredentials(token=Secret(value, name=name), name=ref)
    if (template is None or template.kind != "block") and name in environ:
        return TokenCredentials(token=Secret(environ[name], name=name), name=ref)
    if optional:
        return None
    where = "" if store is not None else " (no secret store was given to look in)"
    raise ConfigError(
        f"no credentials or secret named {name!r}{where}",
        hint=did_you_mean(
            name,
            store,
            saved=template is None or template.kind == "block",
            secrets=template is None or template.kind == "secret",
        )
        or f"create them with `conveyor credentials create <provider> {name}` "
        f"or `conveyor secret set {name}`",
    )


def _composite(
    ref: str, *, store: SecretStore | None, environ: Mapping[str, str], optional: bool
) -> GitCredentials | None:
    """``${USER}:${PASSWORD}``: a ``user:token`` made of templates (environment, then store)."""
    if optional:
        for part in template_refs(ref):
            found = part.name in environ or (
                part.kind == "secret" and store is not None and store.get_secret(part.name)
            )
            if not found:
                return None
    value = resolve_templates(ref, store=store, environ=environ, kinds={"secret", "env"})
    return TokenCredentials(token=Secret(reveal(value)), name=ref)


def _aws_json(text: str, name: str | None, environ: Mapping[str, str]) -> CodeCommitCredentials:
    """CodeCommit credentials from the first generation's ``AWS_CREDENTIALS`` JSON."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not data.get("ACCESS_KEY"):
        raise ConfigError(
            f"secret {name!r} is not AWS credentials",
            hint='store {"ACCESS_KEY": "...", "SECRET_ACCESS_KEY": "..."} (AWS_CREDENTIALS)',
        )
    return CodeCommitCredentials(
        aws_access_key_id=str(data["ACCESS_KEY"]),
        aws_secret_access_key=str(data.get("SECRET_ACCESS_KEY") or ""),
        aws_session_token=data.get("SESSION_TOKEN") or None,
        region=data.get("REGION") or _region(environ),
    )


def _region(environ: Mapping[str, str]) -> str | None:
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None


def ambient_credentials(provider: str | None, environ: Mapping[str, str]) -> GitCredentials | None:
    """Credentials the environment gives without being named: CodeCommit's ``AWS_*``."""
    if provider == "codecommit" and environ.get("AWS_ACCESS_KEY_ID"):
        return CodeCommitCredentials(
            aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY", ""),
            aws_session_token=environ.get("AWS_SESSION_TOKEN") or None,
            region=_region(environ),
        )
    return None
