"""`conveyor credentials create|ls|rm`: git credentials in the server's encrypted secret store.

```
printf %s "$TOKEN" | conveyor credentials create github gh
printf %s "$TOKEN" | conveyor credentials create gitlab gl [--username DEPLOY_USER] [--url URL]
printf %s "$TOKEN" | conveyor credentials create bitbucket bb [--username U] [--server] [--url URL]
printf %s "$APP_PW" | conveyor credentials create bitbucket bb --username U --app-password
printf '%s\\n%s' "$SECRET" "$SESSION" | conveyor credentials create codecommit cc \\
    --access-key-id AKIA... [--region eu-west-1]
conveyor credentials create ssh deploy-key --known-hosts known_hosts < ~/.ssh/id_ed25519
printf '%s\n%s' "$SECRET" "$SESSION" | conveyor credentials create aws s3-ci \
    --access-key-id AKIA... [--region eu-west-1] [--endpoint-url http://minio:9000]
conveyor credentials create gcp gcs-ci [--project P] < service-account.json
printf %s "$AZURE_STORAGE_CONNECTION_STRING" | conveyor credentials create azure az-ci
conveyor credentials create azure az-mi --account-url https://acct.blob.core.windows.net
printf %s "$PASSWORD" | conveyor credentials create docker ghcr --username U --registry ghcr.io
```

Secrets are read from stdin (a hidden prompt on a terminal), never from the command line, so
they stay out of shell history and ``ps``. Deployments then name them: ``--credentials gh``.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer

from conveyor.cli._common import client, console
from conveyor.errors import ConfigError

__all__ = ["register"]

credentials_app = typer.Typer(
    name="credentials",
    help="Git, blob-store and registry credentials, stored encrypted and named by deployments.",
    no_args_is_help=True,
)


class Provider(StrEnum):
    github = "github"
    gitlab = "gitlab"
    bitbucket = "bitbucket"
    codecommit = "codecommit"
    ssh = "ssh"
    aws = "aws"
    gcp = "gcp"
    azure = "azure"
    docker = "docker"


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(credentials_app, name="credentials")


def _read_stdin(what: str, *, multiline: bool = False) -> str:
    if sys.stdin.isatty():
        if multiline:
            raise ConfigError(
                f"pipe the {what} in on stdin",
                hint="e.g. conveyor credentials create ssh NAME < ~/.ssh/id_ed25519",
            )
        import getpass

        value = getpass.getpass(f"{what}: ")
    else:
        value = sys.stdin.read()
    value = value if multiline else value.strip("\r\n")
    if not value.strip():
        raise ConfigError(f"no {what} on stdin", hint='pipe it in: printf %s "$TOKEN" | ...')
    return value


@credentials_app.command("create")
def create(
    provider: Provider = typer.Argument(
        ..., help="github, gitlab, bitbucket, codecommit, ssh, aws, gcp, azure or docker"
    ),
    name: str = typer.Argument(..., help="Name deployments use: --credentials NAME."),
    username: str | None = typer.Option(
        None, "--username", help="GitLab deploy-token user, Bitbucket user (app password/Server)."
    ),
    url: str | None = typer.Option(
        None, "--url", help="Self-hosted GitLab/Bitbucket: only this host gets the credentials."
    ),
    server: bool = typer.Option(False, "--server", help="Bitbucket Server / Data Center."),
    app_password: bool = typer.Option(
        False, "--app-password", help="Bitbucket Cloud: stdin holds an app password."
    ),
    access_key_id: str | None = typer.Option(
        None, "--access-key-id", help="CodeCommit, aws: the AWS access key id."
    ),
    region: str | None = typer.Option(None, "--region", help="CodeCommit, aws: the AWS region."),
    endpoint_url: str | None = typer.Option(
        None, "--endpoint-url", help="aws: an S3-compatible endpoint (MinIO, Ceph, ...)."
    ),
    profile: str | None = typer.Option(None, "--profile", help="aws: a profile name instead."),
    project: str | None = typer.Option(None, "--project", help="gcp: the project."),
    account_url: str | None = typer.Option(
        None, "--account-url", help="azure: the account URL (DefaultAzureCredential; no stdin)."
    ),
    known_hosts: Path | None = typer.Option(
        None, "--known-hosts", help="SSH: a known_hosts file with the server's host key."
    ),
    accept_new_host_keys: bool = typer.Option(
        False, "--accept-new-host-keys", help="SSH: trust a host key seen for the first time."
    ),
    registry: str | None = typer.Option(
        None, "--registry", help="Docker: the registry host (ghcr.io, 127.0.0.1:5000)."
    ),
) -> None:
    """Store credentials under NAME; the secret part is read from stdin."""
    from conveyor.credentials import credentials_secret_name
    from conveyor.sources.git.credentials import (
        BitBucketCredentials,
        CodeCommitCredentials,
        GitHubCredentials,
        GitLabCredentials,
        SSHCredentials,
    )
    from conveyor.sources.oci.credentials import DockerRegistryCredentials

    credentials_secret_name(name)  # validate before reading any secret
    creds: Credentials
    if provider is Provider.docker:
        if not username or not registry:
            raise ConfigError(
                "docker credentials need --username and --registry",
                hint='printf %s "$PASSWORD" | conveyor credentials create docker NAME '
                "--username U --registry ghcr.io",
            )
        creds = DockerRegistryCredentials(
            username=username, password=_read_stdin("password"), registry_url=registry
        )
    elif provider in (Provider.aws, Provider.gcp, Provider.azure):
        creds = _blob_credentials(
            provider,
            access_key_id=access_key_id,
            region=region,
            endpoint_url=endpoint_url,
            profile=profile,
            project=project,
            account_url=account_url,
        )
    elif provider is Provider.github:
        creds = GitHubCredentials(token=_read_stdin("token"))
    elif provider is Provider.gitlab:
        creds = GitLabCredentials(token=_read_stdin("token"), username=username, url=url)
    elif provider is Provider.bitbucket:
        secret = _read_stdin("app password" if app_password else "token")
        creds = BitBucketCredentials(
            token=None if app_password else secret,
            password=secret if app_password else None,
            username=username,
            url=url,
            server=server,
        )
    elif provider is Provider.codecommit:
        if not access_key_id:
            raise ConfigError("codecommit credentials need --access-key-id")
        lines = _read_stdin("secret access key", multiline=True).strip().splitlines()
        creds = CodeCommitCredentials(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=lines[0].strip(),
            aws_session_token=lines[1].strip() if len(lines) > 1 and lines[1].strip() else None,
            region=region,
        )
    else:
        hosts = None
        if known_hosts is not None:
            try:
                hosts = known_hosts.read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read {known_hosts}: {exc.strerror}") from None
        creds = SSHCredentials(
            private_key=_read_stdin("private key", multiline=True),
            known_hosts=hosts,
            accept_new_host_keys=accept_new_host_keys,
        )
    with client() as api:
        creds.save(name, store=api)
    console.print(f"stored {creds.type} credentials {name}")


def _blob_credentials(
    provider: Provider,
    *,
    access_key_id: str | None,
    region: str | None,
    endpoint_url: str | None,
    profile: str | None,
    project: str | None,
    account_url: str | None,
) -> Credentials:
    from conveyor.sources.blob.credentials import (
        AwsCredentials,
        AzureBlobStorageCredentials,
        GcpCredentials,
    )

    if provider is Provider.aws:
        if not access_key_id:
            if profile is None:
                raise ConfigError(
                    "aws credentials need --access-key-id (the secret key comes from stdin) "
                    "or --profile"
                )
            return AwsCredentials(
                profile_name=profile, region_name=region, endpoint_url=endpoint_url
            )
        lines = _read_stdin("secret access key", multiline=True).strip().splitlines()
        return AwsCredentials(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=lines[0].strip(),
            aws_session_token=lines[1].strip() if len(lines) > 1 and lines[1].strip() else None,
            profile_name=profile,
            region_name=region,
            endpoint_url=endpoint_url,
        )
    if provider is Provider.gcp:
        info = _read_stdin("service account JSON", multiline=True)
        return GcpCredentials(service_account_info=info.strip(), project=project)
    if account_url:
        return AzureBlobStorageCredentials(account_url=account_url)
    return AzureBlobStorageCredentials(connection_string=_read_stdin("connection string"))


from conveyor.credentials import Credentials  # noqa: E402  (annotations above)


@credentials_app.command("ls")
def ls() -> None:
    """List stored credentials by name (never their values)."""
    from conveyor.credentials import CREDENTIALS_PREFIX

    with client() as api:
        names = [
            s.name[len(CREDENTIALS_PREFIX) :]
            for s in api.list_secrets()
            if s.name.startswith(CREDENTIALS_PREFIX)
        ]
    for found in names:
        console.print(found)


@credentials_app.command("rm")
def rm(name: str = typer.Argument(..., help="Credentials name.")) -> None:
    """Delete stored credentials."""
    from conveyor.credentials import credentials_secret_name, did_you_mean
    from conveyor.errors import ObjectNotFound

    with client() as api:
        try:
            api.delete_secret(credentials_secret_name(name))
        except ObjectNotFound:  # said in credentials' words, not the secret store's
            raise ConfigError(
                f"no credentials named {name!r}",
                hint=did_you_mean(name, api) or "conveyor credentials ls",
            ) from None
    console.print(f"deleted credentials {name}")
