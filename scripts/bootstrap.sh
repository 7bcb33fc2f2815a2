#!/usr/bin/env bash
# Create .venv with uv and install the project with the given extras.
# Usage: scripts/bootstrap.sh EXTRAS   (e.g. "test,postgres")
# Needs only python3 on PATH: uv is installed with pip when it is missing.
#
# uv is always run as its own binary and always told which interpreter to install into
# (`--python .venv/bin/python`): `python3 -m uv pip install` would otherwise target the
# interpreter that ran it, leaving .venv empty.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
find_uv() {
  if command -v uv >/dev/null 2>&1; then command -v uv; return 0; fi
  python3 -c "import uv, sys; sys.stdout.write(uv.find_uv_bin())" 2>/dev/null
}
if ! uv_bin="$(find_uv)" || [ ! -x "$uv_bin" ]; then
  echo "bootstrap: installing uv with pip" >&2
  python3 -m pip install --quiet --disable-pip-version-check uv 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --user uv 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages uv
  uv_bin="$(find_uv)" || { echo "bootstrap: uv was installed but its binary cannot be found" >&2; exit 1; }
fi
stamp=".venv/.installed-${extras//,/-}"
# Compiled bytecode for our own modules too: this environment may set PYTHONDONTWRITEBYTECODE,
# which would otherwise recompile them on every start of the CLI, a worker child or the server.
compile_src() { .venv/bin/python -m compileall -q -j 0 src >/dev/null 2>&1 || true; }
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && .venv/bin/python -c "import conveyor" 2>/dev/null; then
  compile_src
  exit 0
fi
[ -x .venv/bin/python ] || "$uv_bin" venv --quiet --python python3 .venv
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
"$uv_bin" pip install --quiet --compile-bytecode --python .venv/bin/python -e "$spec"
.venv/bin/python -c "import conveyor" || { echo "bootstrap: .venv does not import conveyor after install" >&2; exit 1; }
rm -f .venv/.installed-*
touch "$stamp"
compile_src
