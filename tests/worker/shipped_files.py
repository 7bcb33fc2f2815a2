"""A flow project whose flows change shipped files in their working directory (`mutate`), hold
one open while another run changes it (`hold`), or report what they see (`look`: each file's
sha256), for the workspace tests of every mode and of a worker that is not root."""

from __future__ import annotations

import os

FLOWS = """
import hashlib, os, pathlib, time
from conveyor import flow


def digests() -> dict:
    found = {}
    for top, dirs, files in os.walk("."):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = os.path.join(top, name)[2:]
            found[path] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


def attempt(results: dict, name: str, action) -> None:
    try:
        action()
        results[name] = "ok"
    except OSError as exc:
        results[name] = exc.strerror


def replace() -> None:
    pathlib.Path("swap.new").write_text("replaced")
    os.replace("swap.new", "swap.txt")


@flow
def mutate() -> dict:
    done = {}
    attempt(done, "rewrite", lambda: pathlib.Path("data.txt").write_text("rewritten"))
    attempt(done, "append", lambda: open("helpers.py", "a").write("# appended"))
    attempt(done, "truncate", lambda: os.truncate("big.bin", 0))
    attempt(done, "chmod", lambda: os.chmod("tool.sh", 0o666))
    attempt(done, "delete", lambda: os.unlink("gone.txt"))
    attempt(done, "replace", replace)
    attempt(done, "create", lambda: pathlib.Path("pkg/made.txt").write_text("new"))
    return done


@flow
def hold(marker: str, started: str) -> dict:
    pathlib.Path(started).write_text("holding")
    deadline = time.time() + 60
    while not os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.02)
    return digests()


@flow
def look() -> dict:
    return digests()
"""

PROJECT = {
    "flows.py": FLOWS.encode(),
    "data.txt": b"pristine data\n",
    "helpers.py": b"VALUE = 1\n",
    "big.bin": os.urandom(64 * 1024),
    "tool.sh": b"#!/bin/sh\necho tool\n",
    "gone.txt": b"to be deleted\n",
    "swap.txt": b"to be replaced\n",
    "pkg/__init__.py": b"",
}
