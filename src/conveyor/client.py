"""Typed client for the Conveyor API (see `conveyor.schemas` for the endpoints).

CONTRACT STUB — the method signatures below are the agreed interface; the server issue fills in
the bodies. With ``settings.api_url`` unset, the client runs the same app in-process against the
SQLite database under ``CONVEYOR_HOME`` (the embedded default).
"""

from __future__ import annotations

from typing import Any

from conveyor.schemas import (
    Deployment,
    DeploymentCreate,
    DeploymentVersion,
    LogLine,
    LogRecord,
    Pool,
    Run,
    RunHeartbeatReply,
    RunState,
    SecretInfo,
    StateUpdate,
    Worker,
)
from conveyor.settings import Settings

__all__ = ["ConveyorClient"]


class ConveyorClient:
    """One object per process; `close()` (or ``with``) releases its connections."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: Settings) -> ConveyorClient:
        return cls(settings)

    def close(self) -> None: ...
    def __enter__(self) -> ConveyorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # health
    def health(self) -> dict[str, Any]:
        raise NotImplementedError

    # pools
    def create_pool(self, name: str, *, type: str = "process", description: str = "") -> Pool:
        raise NotImplementedError

    def list_pools(self) -> list[Pool]:
        raise NotImplementedError

    # deployments ("FLOW/NAME")
    def put_deployment(self, deployment: DeploymentCreate) -> Deployment:
        raise NotImplementedError

    def get_deployment(self, flow_name: str, name: str) -> Deployment:
        raise NotImplementedError

    def list_deployments(self) -> list[Deployment]:
        raise NotImplementedError

    def list_deployment_versions(self, flow_name: str, name: str) -> list[DeploymentVersion]:
        raise NotImplementedError

    # runs
    def create_run(
        self,
        flow_name: str,
        name: str,
        *,
        parameters: dict[str, Any] | None = None,
        follow_ref: bool | None = None,
    ) -> Run:
        raise NotImplementedError

    def get_run(self, run_id: str) -> Run:
        raise NotImplementedError

    def list_runs(
        self, *, deployment: str | None = None, state: RunState | None = None, limit: int = 100
    ) -> list[Run]:
        raise NotImplementedError

    def cancel_run(self, run_id: str) -> Run:
        raise NotImplementedError

    # worker side
    def claim_run(
        self,
        pool: str,
        *,
        worker: str,
        labels: list[str] | None = None,
        lease_seconds: float = 30,
        wait_seconds: float = 0,
    ) -> Run | None:
        raise NotImplementedError

    def heartbeat_run(
        self, run_id: str, *, worker: str, lease_seconds: float = 30
    ) -> RunHeartbeatReply:
        raise NotImplementedError

    def set_run_state(self, run_id: str, update: StateUpdate) -> Run:
        raise NotImplementedError

    def write_logs(self, run_id: str, records: list[LogRecord]) -> None:
        raise NotImplementedError

    def read_logs(self, run_id: str, *, after: int = 0, limit: int = 1000) -> list[LogLine]:
        raise NotImplementedError

    def worker_heartbeat(
        self,
        name: str,
        *,
        pool: str,
        labels: list[str] | None = None,
        limit: int = 1,
        running: int = 0,
    ) -> Worker:
        raise NotImplementedError

    def list_workers(self) -> list[Worker]:
        raise NotImplementedError

    # secrets (values only through get_secret, for `${NAME}` resolution on workers)
    def set_secret(self, name: str, value: str) -> SecretInfo:
        raise NotImplementedError

    def list_secrets(self) -> list[SecretInfo]:
        raise NotImplementedError

    def delete_secret(self, name: str) -> None:
        raise NotImplementedError

    def get_secret(self, name: str) -> str | None:
        raise NotImplementedError
