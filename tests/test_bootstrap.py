"""`scripts/bootstrap.sh` on a machine without `uv` on PATH: the project's own .venv gets
everything (not the interpreter that ran uv), and `make demo`'s first import works."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bootstrap_without_uv_on_path_installs_into_the_project_venv(tmp_path: Path) -> None:
    # Given a copy of the project and a PATH with no `uv` on it
    project = tmp_path / "project"
    subprocess.run(
        ["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(project)], check=True, timeout=120
    )
    for name in ("scripts/bootstrap.sh", "pyproject.toml"):  # the working tree's versions
        shutil.copyfile(ROOT / name, project / name)
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if p and not (Path(p) / "uv").exists()
    )
    env = {**os.environ, "PATH": path}
    env.pop("VIRTUAL_ENV", None)
    assert shutil.which("uv", path=path) is None

    # When the bootstrap runs
    done = subprocess.run(
        ["bash", "scripts/bootstrap.sh", ""],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    # Then it succeeded and the project's .venv imports what the demo needs
    assert done.returncode == 0, done.stdout + done.stderr
    check = subprocess.run(
        [str(project / ".venv/bin/python"), "-c", "import conveyor, rich, typer; print('ok')"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.stdout.strip() == "ok", check.stderr
