"""A child process for the SIGKILL tests of the object store (`tests/test_cache_kill.py`).

``python tests/objects_helpers.py MODE ROOT STORE VERSION MARKERS [BASE]`` works on the code
cache at ROOT with the local bundle store STORE, writes ``MARKERS/<phase>`` when it reaches a
phase, and is slowed down there (each step sleeps a little) so the test can kill it mid-way:

- ``fill``: fills VERSION (phases ``unpacking``: writing files, ``storing``: linking them into
  the store, ``recording``: before their stamps are recorded, ``renaming``: before the
  checkout is renamed into place), then exits;
- ``evict``: evicts every version not leased (phases ``removing``, ``collecting``), then exits;
- ``mount`` / ``links``: makes a workspace of VERSION under a worker directory in BASE (an
  overlay mount, or hard links), writes ``ready``, then sleeps until killed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

SLOW = 0.005


def mark(markers: Path, phase: str) -> None:
    path = markers / phase
    if not path.exists():
        tmp = markers / f".{phase}.{threading.get_ident()}.part"  # writers are threads
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, path)


def slowed(markers: Path, phase: str, func: Any, pause: float = SLOW) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(markers, phase)
        time.sleep(pause)
        return func(*args, **kwargs)

    return wrapper


def main(argv: list[str]) -> int:
    mode, root, store_dir, version, markers_dir, *rest = argv
    markers = Path(markers_dir)
    from conveyor import _cachefs, _objects, _target
    from conveyor.cache import CodeCache
    from conveyor.sources.store import LocalStoreSource

    cache = CodeCache(Path(root), max_bytes=10**12)
    store = LocalStoreSource(Path(store_dir))
    if mode == "fill":
        from conveyor import _cachefill, _stamps

        _target.Target.write_new = slowed(markers, "unpacking", _target.Target.write_new)  # type: ignore[method-assign]
        _objects.Fill.adopt = slowed(markers, "storing", _objects.Fill.adopt)  # type: ignore[method-assign]
        _stamps.StampBook.record = slowed(markers, "recording", _stamps.StampBook.record, 1.0)  # type: ignore[method-assign]
        _cachefill.write_meta = slowed(markers, "renaming", _cachefill.write_meta, 1.0)
        cache.ensure(store, version)
        return 0
    if mode == "evict":
        real_remove = _cachefs.remove_tree

        def remove_slowly(path: Path) -> None:
            mark(markers, "removing")
            for top, _dirs, files in os.walk(path):
                os.chmod(top, 0o700)
                for name in files:
                    os.unlink(os.path.join(top, name))
                    time.sleep(SLOW)
            real_remove(path)

        _cachefs.remove_tree = remove_slowly  # type: ignore[assignment]
        _objects.ObjectStore.collect = slowed(markers, "collecting", _objects.ObjectStore.collect)  # type: ignore[method-assign]
        cache.prune(max_bytes=0)
        return 0
    from conveyor.worker.executors.workspace import Workspace, worker_dir

    own = worker_dir(Path(rest[0]))
    workspace = Workspace.create(own / "runs", "run-1")
    with cache.checkout(store, version) as checkout:
        if mode == "mount":
            workspace.overlay(checkout)
        else:
            cache.link_out(checkout, workspace.code)
        mark(markers, "ready")
        time.sleep(120)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    raise SystemExit(main(sys.argv[1:]))
