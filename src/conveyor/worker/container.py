"""``python -m conveyor.worker.container``: one run, inside the container a pool started.

It reads what the executor put in the environment (see `conveyor.worker.executors.container`),
gets the run and, as its holder, its parameters with their secret values (``SecretStr``
parameters are ``****`` in the run itself), fetches the run's pinned code into its own code
cache (verified, as every fetch), resolves the secret templates of ``CONVEYOR_SECRET_ENV`` (the
environment first, then the server's secret store), runs the flow in a child process as a
process worker would, sends the flow's logs to the server, and prints one ``CONVEYOR_OUTCOME
{json}`` line for the executor outside, which reports the run's state (it holds the lease).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from conveyor.worker.executors.container import OUTCOME_PREFIX

__all__ = ["main"]


def main() -> int:
    from conveyor.cache import CodeCache
    from conveyor.connect import connect, fetch_context
    from conveyor.secrets import Secret, resolve_templates
    from conveyor.settings import Settings
    from conveyor.worker.executors import Interrupt, RunSpec
    from conveyor.worker.executors.local import ProcessExecutor
    from conveyor.worker.executors.workspace import worker_dir
    from conveyor.worker.logs import RunLogs

    env = os.environ
    missing = [
        k
        for k in ("CONVEYOR_RUN_ID", "CONVEYOR_RUN_SOURCE", "CONVEYOR_RUN_VERSION")
        if not env.get(k)
    ]
    if missing:
        print(
            f"error: {', '.join(missing)} not set: this runs inside a pool's container",
            file=sys.stderr,
        )
        return 2
    settings = Settings.from_env()
    run_id = env["CONVEYOR_RUN_ID"]
    with connect(settings) as client:
        run = client.get_run(run_id)
        parameters = dict(run.parameters)  # secret values are **** here: ask as the holder
        if run.worker is not None:
            parameters = client.run_parameters(run_id, worker=run.worker, attempt=run.attempt)
        secret_env = json.loads(env.get("CONVEYOR_SECRET_ENV") or "{}")
        resolved = resolve_templates(secret_env, store=client, environ=env)
        run_env: dict[str, str | Secret] = {
            str(k): v if isinstance(v, Secret) else str(v) for k, v in resolved.items()
        }
        spec = RunSpec(
            run_id=run_id,
            attempt=run.attempt,
            entrypoint=env.get("CONVEYOR_RUN_ENTRYPOINT") or run.entrypoint,
            parameters=parameters,
            source=json.loads(env["CONVEYOR_RUN_SOURCE"]),
            version=env["CONVEYOR_RUN_VERSION"],
            pull_steps=tuple(dict(step) for step in run.pull_steps),
            env=run_env,
            timeout_seconds=run.timeout_seconds,
            kill_margin_seconds=1.0,
        )
        cache = CodeCache.from_settings(settings, context=fetch_context(settings, client))
        executor = ProcessExecutor(
            cache=cache, work_dir=worker_dir(settings.home / "work"), secrets=client, spares=False
        )
        logs = RunLogs(client, run_id).start()
        for name in run.secret_parameters:  # a flow printing its SecretStr's value ships ****
            value = parameters.get(name)
            if isinstance(value, str):
                logs.hide(value)
        report: dict[str, Any]
        try:
            with executor.run(
                spec, logs=logs, interrupt=Interrupt(), started=lambda _timings: True
            ) as outcome:
                report = {
                    "state": outcome.state.value if outcome.state else "crashed",
                    "error": outcome.error,
                    "result": outcome.result,
                    "entered": outcome.entered,
                    "finished": outcome.finished,
                    "timings": dict(outcome.timings),
                }
        except Exception as exc:  # the code could not be fetched or verified: data, not a crash
            logs.emit(f"run failed before the flow started: {exc}", level="ERROR", stream="worker")
            report = {"state": "failed", "error": str(exc), "finished": time.time()}
        finally:
            logs.close()
    try:
        line = json.dumps(report)
    except (TypeError, ValueError):
        report["result"] = None
        line = json.dumps(report)
    print(OUTCOME_PREFIX + line, flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
