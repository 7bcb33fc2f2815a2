"""The API models build their validators on first use, and before the HTTP routes are declared."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import datetime, sys
import conveyor.schemas as s
models = [s.Run, s.Deployment, s.DeploymentCreate, s.LogRecord, s.ClaimRequest]
print([m.__pydantic_complete__ for m in models])
try:
    s.PoolCreate(name="../x")
except Exception as exc:
    print(type(exc).__name__, "is not a valid work pool name" in str(exc))
print(s.PoolCreate.__pydantic_complete__, s.Run.__pydantic_complete__)
import conveyor.server.routes
print(all(m.__pydantic_complete__ and m.model_config["defer_build"] is False for m in models))
"""


def test_models_are_built_on_first_use_and_all_before_the_routes() -> None:
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", _SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.splitlines() == [
        "[False, False, False, False, False]",
        "ValidationError True",
        "True False",
        "True",
    ]
