"""Named build / push / pull steps: their registry, and running them in order.

```yaml
pull:
  - git_clone:
      id: clone
      repository: https://github.com/org/flows.git
      branch: main
      credentials: gh              # saved with `conveyor credentials create github gh`
  - set_working_directory:
      directory: "{{ clone.directory }}/flows"
  - run_shell_script:
      script: ./prepare.sh
```

A step is a one-key mapping ``{NAME: {arguments}}``. ``NAME`` is a built-in (``git_clone``), its
qualified form (``conveyor.steps.git_clone``), the Prefect name users bring from ``prefect.yaml``
(``prefect.deployments.steps.git_clone``), or a step registered in the ``conveyor.steps``
entry-point group (or with ``STEPS.register``). An ``id`` argument names the step's outputs for
later ``{{ id.key }}`` templates.

Pull steps are the run-time recipe, run by the worker in order (`run_steps`), each with a
`StepContext`: the step that names the code (``git_clone``) materialises the deployment's
*pinned* version through the code cache (never a branch's latest, unless the deployment follows
its ref); ``set_working_directory`` sets the flow's working directory and import root;
``run_shell_script`` runs commands there. Templates are resolved on the worker, step by step:
``{{ step_id.key }}`` from earlier outputs, ``${NAME}`` / ``{{ secrets.NAME }}`` and
``{{ $ENV }}`` from the worker's environment and secret store; a text argument with a value
substituted into it reaches the step as a `Secret` (masked in the run's logs), which the step
reveals where it uses it. At deploy time `source_from_pull_steps` turns the code-naming step
into the deployment's `Source` and `check_steps` refuses any step the worker could not run
(unknown, misplaced, wrong arguments, or refused by its `StepSpec.check`: a secret in
``run_shell_script``'s command line), so no step is silently ignored.

A step function is ``function(ctx: StepContext, **arguments) -> dict | None``; its dict is its
outputs. A step that names code also has a ``to_source(**arguments) -> Source`` factory
(`StepSpec`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor._registry import Entry, Registry, import_target
from conveyor.errors import ConfigError
from conveyor.secrets import Secret, resolve_templates

if TYPE_CHECKING:
    from conveyor.envs import Environment, EnvSpec
    from conveyor.secrets import SecretStore
    from conveyor.sources.base import Source

__all__ = [
    "STEPS",
    "StepContext",
    "StepSpec",
    "apply_outputs",
    "check_steps",
    "names_code",
    "parse_step",
    "run_deploy_steps",
    "run_steps",
    "source_from_pull_steps",
    "step_function",
]


@dataclass(frozen=True)
class StepSpec:
    """Where a step's function lives and, for a step that names code, its source factory."""

    run: str
    to_source: str | None = None
    sections: tuple[str, ...] = ("build", "push", "pull")
    """Where the step may appear in a project file."""
    check: str | None = None
    """``"module:function"`` called as ``function(step, arguments)`` with the arguments as
    written (templates not resolved), at deploy and again before the worker resolves them;
    raises `ConfigError` for arguments no run could use (a secret bound for a command line)."""

    def function(self) -> Callable[..., Any]:
        found: Callable[..., Any] = import_target(self.run)
        return found

    def checker(self) -> Callable[[str, Mapping[str, Any]], None] | None:
        return import_target(self.check) if self.check else None

    def source_factory(self) -> Callable[..., Source] | None:
        return import_target(self.to_source) if self.to_source else None


_BUILTIN = "conveyor.steps.builtin"
_BLOB = "conveyor.steps.blob"
STEPS: Registry[StepSpec | Callable[..., Any]] = Registry(
    "step",
    group="conveyor.steps",
    builtins={
        "git_clone": Entry(
            StepSpec(f"{_BUILTIN}:git_clone", f"{_BUILTIN}:git_clone_source", ("pull",))
        ),
        "set_working_directory": Entry(StepSpec(f"{_BUILTIN}:set_working_directory")),
        "run_shell_script": Entry(
            StepSpec(f"{_BUILTIN}:run_shell_script", check=f"{_BUILTIN}:check_run_shell_script")
        ),
        **{
            name: Entry(StepSpec(f"{_BLOB}:{name}", f"{_BLOB}:{factory}", ("pull",)))
            for name, factory in (
                ("pull_from_remote_storage", "remote_storage_source"),
                ("pull_from_s3", "s3_source"),
                ("pull_from_gcs", "gcs_source"),
                ("pull_from_azure_blob_storage", "azure_source"),
            )
        },
        **{
            name: Entry(StepSpec(f"{_BLOB}:{name}", sections=("build", "push")))
            for name in ("push_to_s3", "push_to_gcs", "push_to_azure_blob_storage")
        },
        "pip_install_requirements": Entry(
            StepSpec("conveyor.steps.requirements:pip_install_requirements", sections=("pull",))
        ),
        "build_docker_image": Entry(
            StepSpec("conveyor.docker.steps:build_docker_image", sections=("build",))
        ),
        "push_docker_image": Entry(
            StepSpec("conveyor.docker.steps:push_docker_image", sections=("push",))
        ),
    },
)
"""Step name → `StepSpec` (built-ins) or the step function itself (plug-ins)."""

_PREFIXES = (
    "conveyor.steps.",
    "conveyor.steps.builtin.",
    "prefect.deployments.steps.",
    "prefect.deployments.steps.pull.",
    "prefect.deployments.steps.utility.",
    "conveyor.steps.blob.",
    "prefect_aws.deployments.steps.",
    "prefect_gcp.deployments.steps.",
    "prefect_azure.deployments.steps.",
    "prefect_docker.deployments.steps.",
)


def _canonical(name: str) -> str:
    if name in STEPS:
        return name
    for prefix in _PREFIXES:
        short = name[len(prefix) :]
        if name.startswith(prefix) and short in STEPS:
            return short
    raise ConfigError(f"unknown step {name!r}", hint=f"use one of: {', '.join(STEPS.names())}")


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


def step_function(name: str) -> Callable[..., Any]:
    """The function of step ``name`` (a canonical name, from `parse_step`)."""
    found = STEPS.get(name)
    return found.function() if isinstance(found, StepSpec) else found


_function = step_function


def _bind(name: str, function: Callable[..., Any], arguments: Mapping[str, Any]) -> None:
    try:
        inspect.signature(function).bind(None, **arguments)
    except TypeError as exc:
        raise ConfigError(f"step {name}: {exc}") from None


def _check(name: str, arguments: Mapping[str, Any], step_id: str | None) -> None:
    """The step's own check of its arguments as written (`StepSpec.check`)."""
    spec = STEPS.get(name)
    checker = spec.checker() if isinstance(spec, StepSpec) else None
    if checker is not None:
        checker(f"{name} (id {step_id})" if step_id else name, arguments)


def check_steps(steps: Sequence[Mapping[str, Any]], *, section: str = "pull") -> None:
    """Refuse, at deploy time, any step a worker could not run: unknown names, a step that does
    not belong in ``section``, arguments its function does not take or its check refuses."""
    for step in steps:
        name, arguments, step_id = parse_step(step)
        spec = STEPS.get(name)
        if isinstance(spec, StepSpec) and section not in spec.sections:
            raise ConfigError(
                f"step {name} cannot run in the {section} section",
                hint=f"it belongs in: {', '.join(spec.sections)}",
            )
        _bind(name, _function(name), arguments)
        _check(name, arguments, step_id)


def source_from_pull_steps(steps: Sequence[Mapping[str, Any]]) -> Source | None:
    """The `Source` the code-naming step of ``steps`` describes (None when no step names code);
    templates are left as written (credentials stay names)."""
    found: list[Source] = []
    for step in steps:
        name, arguments, _ = parse_step(step)
        spec = STEPS.get(name)
        factory = spec.source_factory() if isinstance(spec, StepSpec) else None
        if factory is None:
            continue
        try:
            inspect.signature(factory).bind(**arguments)
        except TypeError as exc:
            raise ConfigError(f"step {name}: {exc}") from None
        found.append(factory(**arguments))
    if len(found) > 1:
        raise ConfigError("more than one pull step names the code; keep one")
    return found[0] if found else None


def names_code(step: Mapping[str, Any]) -> bool:
    """Whether ``step`` is the one that says where the code is (``git_clone``, ...)."""
    name, _, _ = parse_step(step)
    spec = STEPS.get(name)
    return isinstance(spec, StepSpec) and spec.to_source is not None


@dataclass
class StepContext:
    """What a step may use when it runs on the worker.

    ``code_dir`` is where the run's code goes (the code-naming step, or the implicit fetch,
    fills it with the pinned version through ``materialise``); ``working_dir`` starts there and
    is moved by ``set_working_directory``; ``env`` is the run's environment (the worker's, plus
    the job variables' ``env``); ``log`` sends a line to the run's logs; ``mask`` is told every
    secret value a step's arguments resolved to (the worker hides it in the run's logs);
    ``popen`` are extra ``subprocess`` arguments for the commands a step starts (the user a
    ``--run-as`` worker runs them as);
    ``install`` (None when the executor cannot give the flow another interpreter) builds or
    reuses the environment holding a spec's requirements plus those asked for before, and makes
    it the flow's.
    """

    code_dir: Path
    materialise: Callable[[Path], Mapping[str, Any]]
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    secrets: SecretStore | None = None
    log: Callable[[str, str], None] = lambda _line, _stream: None
    mask: Callable[[str], None] = lambda _value: None
    popen: Mapping[str, Any] = field(default_factory=dict)
    timeout_seconds: float | None = None
    working_dir: Path | None = None
    materialised: bool = False
    install: Callable[[EnvSpec, Callable[[str], None]], Environment] | None = None

    def __post_init__(self) -> None:
        if self.working_dir is None:
            self.working_dir = self.code_dir

    @property
    def cwd(self) -> Path:
        assert self.working_dir is not None
        return self.working_dir


def _mask_secrets(value: Any, mask: Callable[[str], None]) -> None:
    """Tell ``mask`` every `Secret` in ``value`` (resolved step arguments)."""
    if isinstance(value, Secret):
        mask(value.reveal())
    elif isinstance(value, Mapping):
        for item in value.values():
            _mask_secrets(item, mask)
    elif isinstance(value, list | tuple):
        for item in value:
            _mask_secrets(item, mask)


def run_steps(steps: Sequence[Mapping[str, Any]], ctx: StepContext) -> dict[str, Any]:
    """Run ``steps`` in order with ``ctx``; returns every output (merged, and under each id).

    The code is materialised first when no step names it, so later steps (and the flow) find it
    in ``ctx.code_dir``.
    """
    outputs: dict[str, Any] = {}
    if not any(names_code(step) for step in steps):
        outputs.update(ctx.materialise(ctx.code_dir))
        ctx.materialised = True
    for step in steps:
        name, arguments, step_id = parse_step(step)
        _check(name, arguments, step_id)  # a deployment stored before the check refuses here
        resolved = resolve_templates(
            arguments,
            store=ctx.secrets,
            environ=ctx.env,
            outputs=outputs,
            kinds={"output", "secret", "env"},
            seen=ctx.mask,
        )
        _mask_secrets(resolved, ctx.mask)
        function = _function(name)
        _bind(name, function, resolved)
        result = function(ctx, **resolved)
        if isinstance(result, Mapping):
            outputs.update(result)
            if step_id:
                outputs[step_id] = dict(result)
    return outputs


from conveyor.steps.deploytime import apply_outputs, run_deploy_steps  # noqa: E402
