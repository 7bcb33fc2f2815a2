"""The ``build`` and ``push`` sections of a project file: steps run at deploy, in the deploying
process, whose outputs fill ``{{ step_id.key }}`` templates of the deployment.

```yaml
build:
  - run_shell_script:
      id: sha
      script: git rev-parse HEAD
push:
  - push_to_s3: {id: push_code, bucket: flows, folder: etl}
pull:
  - pull_from_s3:
      bucket: "{{ push_code.bucket }}"          # filled in at deploy
      folder: "{{ push_code.folder }}"
      credentials: "{{ secrets.AWS }}"          # left for the worker, resolved per run
deployments:
  - name: nightly
    entrypoint: flows.py:main
    tags: ["{{ sha.stdout }}"]
```

`run_deploy_steps` runs one section in the project folder: each step's templates are resolved
just before it runs — earlier outputs, and (this is the deploying machine) ``${NAME}`` /
``{{ secrets.NAME }}`` / ``{{ $ENV }}`` from its environment and secret store — and its dict of
outputs is kept merged and under its ``id``. `apply_outputs` then fills the outputs into the
rest of the deployment (pull steps, job variables, parameters, tags, description): only
``{{ id.key }}`` templates naming a deploy-time step are replaced. Everything else — secrets,
``{{ $ENV }}``, outputs of pull steps — stays as written and is resolved on the worker, so no
secret is stored with a deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.secrets import resolve_templates, template_ref, template_refs
from conveyor.steps import StepContext, check_steps, parse_step, step_function

if TYPE_CHECKING:
    from conveyor.secrets import SecretStore

__all__ = ["apply_outputs", "run_deploy_steps"]


def run_deploy_steps(
    steps: Sequence[Mapping[str, Any]],
    *,
    folder: Path,
    secrets: SecretStore | None,
    environ: Mapping[str, str],
    section: str = "push",
    outputs: Mapping[str, Any] | None = None,
    log: Callable[[str, str], None] = lambda _line, _stream: None,
) -> dict[str, Any]:
    """Run one deploy-time section in ``folder``; every output so far (``outputs`` first)."""
    check_steps(steps, section=section)
    ctx = StepContext(
        code_dir=Path(folder),
        materialise=lambda _dest: {},
        env=dict(environ),
        secrets=secrets,
        log=log,
        materialised=True,
    )
    found: dict[str, Any] = dict(outputs or {})
    for step in steps:
        name, arguments, step_id = parse_step(step)
        resolved = resolve_templates(
            arguments,
            store=secrets,
            environ=environ,
            outputs=found,
            kinds={"output", "secret", "env"},
        )
        result = step_function(name)(ctx, **resolved)
        if isinstance(result, Mapping):
            found.update(result)
            if step_id:
                found[step_id] = dict(result)
    return found


def apply_outputs(value: Any, outputs: Mapping[str, Any]) -> Any:
    """``value`` with every ``{{ id.key }}`` naming a deploy-time output filled in (a template
    that is the whole string takes the output as it is: a list stays a list)."""
    if isinstance(value, Mapping):
        return {k: apply_outputs(v, outputs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(apply_outputs(v, outputs) for v in value)
    if not isinstance(value, str):
        return value
    known = {
        ref.text: ref
        for ref in template_refs(value)
        if ref.kind == "output" and _known(ref.name, ref.key, outputs)
    }
    if not known:
        return value
    whole = template_ref(value)
    if whole is not None and whole.text in known:
        return outputs[whole.name][whole.key]
    for text, ref in known.items():
        value = value.replace(text, str(outputs[ref.name][ref.key]))
    return value


def _known(name: str, key: str | None, outputs: Mapping[str, Any]) -> bool:
    scoped = outputs.get(name)
    return key is not None and isinstance(scoped, Mapping) and key in scoped
