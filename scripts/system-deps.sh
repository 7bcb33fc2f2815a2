#!/usr/bin/env bash
# System packages the test suite's real services need, installed only when missing
# (a new machine has Python, git, Node/npm and apt). Safe to run repeatedly.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
[ -x /usr/bin/chromium ] || need+=(chromium)              # the dashboard's browser tests
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] || need+=(docker-registry)  # the image tests
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing ${need[*]}" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "system-deps: missing ${need[*]}; tests that need them will be skipped (fail under CI)" >&2
  fi
fi
# Azurite (Azure Blob emulator) for the blob-store tests, in the project (.ci/node_modules).
azurite=".ci/node_modules/.bin/azurite-blob"
if [ ! -x "$azurite" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "system-deps: installing azurite@3.35.0 into .ci/node_modules" >&2
    npm install --prefix .ci --no-save --no-audit --no-fund --loglevel=error azurite@3.35.0 >/dev/null \
      || echo "system-deps: npm could not install azurite; the Azure tests will be skipped (fail under CI)" >&2
  else
    echo "system-deps: npm is missing; the Azure tests will be skipped (fail under CI)" >&2
  fi
fi
