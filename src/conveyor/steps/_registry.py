"""Step name → lazily imported callable (and, for pull steps that name a code location, the
function that turns the step into a `Source`).

A step is a one-key mapping ``{NAME: {arguments}}``; ``NAME`` is a built-in (``git_clone``), its
qualified form (``conveyor.steps.git_clone``), the Prefect name users bring from
``prefect.yaml`` (``prefect.deployments.steps.git_clone``), or a third-party step registered in
the ``conveyor.steps`` entry-point group (``name = "package.module:function"``). An ``id``
argument names the step's outputs for later ``{{ id.key }}`` templates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from conveyor._registry import import_target
from conveyor.errors import ConfigError

__all__ = [
    "BUILTIN_STEPS",
    "ENTRY_POINT_GROUP",
    "StepSpec",
    "get_source_factory",
    "get_step",
    "get_step_spec",
    "known_steps",
    "parse_step",
]

ENTRY_POINT_GROUP = "conveyor.steps"


@dataclass(frozen=True)
class StepSpec:
    """Where a step's function lives, and (for a pull step naming code) its source factory."""

    target: str
    to_source: str | None = None


BUILTIN_STEPS: dict[str, StepSpec] = {
    "git_clone": StepSpec("conveyor.steps.pull:git_clone", "conveyor.steps.pull:git_clone_source"),
    "set_working_directory": StepSpec("conveyor.steps.pull:set_working_directory"),
}

_PREFIXES = (
    "conveyor.steps.",
    "conveyor.steps.pull.",
    "prefect.deployments.steps.",
    "prefect.deployments.steps.pull.",
)


def _third_party() -> dict[str, StepSpec]:
    return {ep.name: StepSpec(ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def _all_specs() -> dict[str, StepSpec]:
    return {**_third_party(), **BUILTIN_STEPS}


def known_steps() -> list[str]:
    """Every step name: built-in and registered through entry points."""
    return sorted(_all_specs())


def _canonical(name: str) -> str:
    specs = _all_specs()
    if name in specs:
        return name
    for prefix in _PREFIXES:
        if name.startswith(prefix) and name[len(prefix) :] in BUILTIN_STEPS:
            return name[len(prefix) :]
    raise ConfigError(f"unknown step {name!r}", hint=f"use one of: {', '.join(known_steps())}")


def get_step_spec(name: str) -> tuple[str, StepSpec]:
    """The canonical name of step ``name`` and where it lives."""
    canonical = _canonical(name)
    return canonical, _all_specs()[canonical]


def _load(target: str) -> Callable[..., Any]:
    function: Callable[..., Any] = import_target(target)
    return function


def get_step(name: str) -> Callable[..., Any]:
    """The function of step ``name``, imported now."""
    return _load(get_step_spec(name)[1].target)


def get_source_factory(name: str) -> Callable[..., Any] | None:
    """The function turning step ``name``'s arguments into a `Source`, if it has one."""
    spec = get_step_spec(name)[1]
    return _load(spec.to_source) if spec.to_source else None


def parse_step(step: Any) -> tuple[str, dict[str, Any], str | None]:
    """``{NAME: {args}}`` → (canonical name, arguments without ``id``, ``id``)."""
    if not isinstance(step, Mapping) or len(step) != 1:
        raise ConfigError(
            f"a step is a mapping with one key (its name), not {step!r:.80}",
            hint="write it like: - git_clone: {repository: https://...}",
        )
    ((name, args),) = step.items()
    if args is None:
        args = {}
    if not isinstance(name, str) or not isinstance(args, Mapping):
        raise ConfigError(f"step {name!r} must map to its arguments")
    arguments = dict(args)
    step_id = arguments.pop("id", None)
    return _canonical(name), arguments, None if step_id is None else str(step_id)
