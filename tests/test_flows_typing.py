"""mypy --strict understands decorated flows and tasks (see typecheck_flows.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.slow
def test_mypy_keeps_the_signature_of_decorated_functions(tmp_path: Path) -> None:
    # Every `type: ignore[code]` in the file must be needed (strict = warn_unused_ignores), and
    # every assert_type must hold: a clean run proves both the types and the expected errors.
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file",
            str(config),
            "--follow-imports=silent",
            str(HERE / "typecheck_flows.py"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
