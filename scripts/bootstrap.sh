#!/usr/bin/env bash
# Create .venv with uv and install the project with the given extras.
# Usage: scripts/bootstrap.sh EXTRAS   (e.g. "test,postgres")
# Needs only python3 on PATH: uv is installed with pip when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if command -v uv >/dev/null 2>&1; then
  uv=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then
  uv=(python3 -m uv)
else
  echo "bootstrap: installing uv with pip" >&2
  python3 -m pip install --quiet --disable-pip-version-check uv 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages uv
  uv=(python3 -m uv)
fi
stamp=".venv/.installed-${extras//,/-}"
# Compiled bytecode for our own modules too: this environment may set PYTHONDONTWRITEBYTECODE,
# which would otherwise recompile them on every start of the CLI, a worker child or the server.
compile_src() { .venv/bin/python -m compileall -q -j 0 src >/dev/null 2>&1 || true; }
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  compile_src
  exit 0
fi
[ -x .venv/bin/python ] || "${uv[@]}" venv --quiet --python python3 .venv
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
VIRTUAL_ENV=.venv "${uv[@]}" pip install --quiet --compile-bytecode -e "$spec"
rm -f .venv/.installed-*
touch "$stamp"
compile_src
