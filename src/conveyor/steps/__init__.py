"""Named build / push / pull steps and their registry.

```yaml
pull:
  - git_clone:
      repository: https://github.com/org/flows.git
      branch: main
      credentials: gh              # saved with `conveyor credentials create github gh`
      # access_token: ${GH_TOKEN}  # or a plain secret, as a template (never the token)
  - set_working_directory:
      directory: flows
```

- `source_from_pull_steps`: the `Source` a deployment's pull steps name (deploy time).
- `run_steps`: run steps in order, resolving ``${NAME}`` (environment, then the secret store)
  and ``{{ id.key }}`` / ``{{ key }}`` (earlier outputs); returns the merged outputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError
from conveyor.steps._registry import (
    BUILTIN_STEPS,
    StepSpec,
    get_source_factory,
    get_step,
    known_steps,
    parse_step,
)

if TYPE_CHECKING:
    from conveyor.secrets import SecretStore
    from conveyor.sources.base import Source

__all__ = [
    "BUILTIN_STEPS",
    "StepSpec",
    "get_step",
    "known_steps",
    "parse_step",
    "run_steps",
    "source_from_pull_steps",
]

_OUTPUT = re.compile(r"^\s*\{\{\s*([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)?)\s*\}\}\s*$")
_NAME_ARGUMENTS = {"access_token", "credentials"}  # names, resolved by the source itself


def _check_arguments(name: str, function: Any, arguments: Mapping[str, Any]) -> None:
    import inspect

    try:
        inspect.signature(function).bind(**arguments)
    except TypeError as exc:
        raise ConfigError(f"step {name}: {exc}") from None


def source_from_pull_steps(steps: Sequence[Mapping[str, Any]]) -> Source:
    """The one `Source` named by ``steps`` (a ``git_clone``, ...); a clear error otherwise."""
    found: list[Source] = []
    for step in steps:
        name, arguments, _ = parse_step(step)
        factory = get_source_factory(name)
        if factory is None:
            continue
        _check_arguments(name, factory, arguments)
        found.append(factory(**arguments))
    if not found:
        raise ConfigError(
            "no pull step says where the code is",
            hint="add a git_clone step (repository: https://...)",
        )
    if len(found) > 1:
        raise ConfigError("more than one pull step names the code; keep one")
    return found[0]


def _output(value: Any, outputs: Mapping[str, Any]) -> Any:
    if not isinstance(value, str):
        return value
    match = _OUTPUT.match(value)
    if not match:
        return value
    key = match.group(1)
    step_id, _, field = key.partition(".")
    scoped = outputs.get(step_id)
    if field and isinstance(scoped, Mapping) and field in scoped:
        return scoped[field]
    if not field and key in outputs:
        return outputs[key]
    return value  # not an output: a name (credentials) or a later template


def run_steps(
    steps: Sequence[Mapping[str, Any]],
    *,
    store: SecretStore | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``steps`` in order; each step's dict output is merged (and kept under its ``id``)."""
    from conveyor.secrets import resolve_templates

    outputs: dict[str, Any] = {}
    for step in steps:
        name, arguments, step_id = parse_step(step)
        resolved: dict[str, Any] = {}
        for key, value in arguments.items():
            value = _output(value, outputs)
            if key not in _NAME_ARGUMENTS:
                value = resolve_templates(value, store=store, environ=environ)
            resolved[key] = value
        if name == "set_working_directory" and "directory" in outputs:
            resolved.setdefault("base", outputs["directory"])
        function = get_step(name)
        _check_arguments(name, function, resolved)
        result = function(**resolved)
        if isinstance(result, Mapping):
            outputs.update(result)
            if step_id:
                outputs[step_id] = dict(result)
    return outputs
