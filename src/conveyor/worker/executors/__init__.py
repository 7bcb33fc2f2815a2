"""Executors, found by work-pool type: `EXECUTORS` (``process`` built in; third parties register
in the ``conveyor.executors`` entry-point group or with ``EXECUTORS.register``).

A worker serves one pool and runs each of its runs with the executor registered for the pool's
type; a pool of a type with no executor is refused when the worker starts, with a one-line error
naming the types it can run, and so is an executor that lacks what its runs need on this
machine (`Executor.check`: a container engine, a Kubernetes cluster), before anything is claimed.

- `base`: `RunSpec`, `Outcome`, `Interrupt`, the `Executor` contract and the `Supervisor` of a
  local child;
- `local`: `ProcessExecutor` (``process`` pools) and `InProcessExecutor` (debugging), with their
  per-run `workspace` and `spares`;
- `containers`: `DockerExecutor` and `KubernetesExecutor` (``docker`` / ``kubernetes`` pools),
  submitting what `container` renders from the pool's base job template.
"""

from __future__ import annotations

from conveyor._registry import Entry, Registry
from conveyor.worker.executors.base import (
    Executor,
    Interrupt,
    Outcome,
    RunSpec,
    Started,
    StopReason,
)

__all__ = [
    "EXECUTORS",
    "Executor",
    "Interrupt",
    "Outcome",
    "RunSpec",
    "Started",
    "StopReason",
]

EXECUTORS: Registry[type[Executor]] = Registry(
    "work pool type",
    group="conveyor.executors",
    builtins={
        "process": Entry("conveyor.worker.executors.local:ProcessExecutor"),
        "docker": Entry("conveyor.worker.executors.containers:DockerExecutor"),
        "kubernetes": Entry("conveyor.worker.executors.containers:KubernetesExecutor"),
    },
)
"""Work-pool type → executor class (built with ``cls.for_worker(...)``)."""
