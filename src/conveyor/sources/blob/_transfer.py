"""Plain-file transfers between a folder and a blob prefix (the ``push_to_*`` / ``pull_from_*``
steps, and the storage blocks' ``put_directory`` / ``get_directory``).

`upload_folder` uploads the files of a folder as plain objects ``<prefix>/<relative path>``: the
files a bundle of the folder would hold (``.git``, virtual environments, caches and whatever
``.gitignore`` / ``.conveyorignore`` exclude are left out), less what ``ignore_file`` (Prefect's
``.prefectignore``, gitignore syntax) excludes; symlinks are uploaded as the file they point to
(objects have no links); empty directories are not uploaded. Uploads run with bounded
parallelism on the backend's own session, and report progress.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from conveyor._transfers import start
from conveyor.errors import ConfigError
from conveyor.sources.blob._errors import translate
from conveyor.sources.blob._fs import BlobUrl

__all__ = ["folder_files", "upload_folder"]

PARALLEL = 16


def folder_files(folder: Path, ignore_file: str | None = ".prefectignore") -> list[str]:
    """The relative paths ``upload_folder`` would upload, sorted."""
    from pathspec import GitIgnoreSpec

    from conveyor.bundles import build_manifest

    if not folder.is_dir():
        raise ConfigError(f"folder {folder} does not exist or is not a directory")
    paths = [entry.path for entry in build_manifest(folder).entries]
    if ignore_file:
        rules_file = folder / ignore_file
        if rules_file.is_file():
            spec = GitIgnoreSpec.from_lines(rules_file.read_text().splitlines())
            paths = [p for p in paths if not spec.match_file(p)]
    return sorted(p for p in paths if (folder / p).is_file())


def upload_folder(
    fs: Any, location: BlobUrl, folder: Path, *, ignore_file: str | None = ".prefectignore"
) -> tuple[int, int]:
    """Upload ``folder``'s files under ``location``; returns (files, bytes) uploaded."""
    paths = folder_files(folder, ignore_file)
    sizes = {p: (folder / p).stat().st_size for p in paths}
    progress = start(f"pushing to {location.url}", len(paths), sum(sizes.values()))
    done = [0, 0]

    def finished(rel: str) -> None:
        done[0] += 1
        done[1] += sizes[rel]
        if progress is not None:
            progress(done[0], done[1])

    if hasattr(fs, "loop") and hasattr(fs, "_pipe_file"):
        from fsspec.asyn import sync

        async def all_of() -> None:
            gate = asyncio.Semaphore(PARALLEL)

            async def one(rel: str) -> None:
                data = (folder / rel).read_bytes()
                async with gate:
                    try:
                        await fs._pipe_file(location.join(rel), data)
                    except Exception as exc:
                        raise translate(exc, where=location.url_of(rel)) from None
                finished(rel)

            await asyncio.gather(*(one(rel) for rel in paths))

        sync(fs.loop, all_of)
    else:
        for rel in paths:
            try:
                fs.pipe_file(location.join(rel), (folder / rel).read_bytes())
            except Exception as exc:
                raise translate(exc, where=location.url_of(rel)) from None
            finished(rel)
    return done[0], done[1]
