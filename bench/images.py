"""Benchmark of images as code storage, against a real ``docker-registry`` on 127.0.0.1.

The 200-file / 5 MiB tree of `bench/cache.py`, on the small seeded base image of the tests:

- **daemonless build + push**: bundle the tree into a code layer, write config and manifest to
  the image layout, push to a new repository (the base layer is mounted, not uploaded); the
  median of several runs, each into a repository of its own;
- **unchanged redeploy**: the same tree built and pushed again from the same machine (its image
  layout remembers the layer of a bundle version, so nothing is compressed again): blobs and
  bytes uploaded (target: none), and its time;
- **cold code-ready**: an empty `CodeCache` filling the version (fetch + verify + seal), from the
  image (manifest by digest, one layer, streamed and unpacked) and from a bundle in the local
  bundle store (the same tree), with the ratio.

Run: ``.venv/bin/python bench/images.py [--runs N]``. Needs ``docker-registry`` (apt). Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from cache import make_tree  # noqa: E402

from conveyor.cache import CodeCache  # noqa: E402
from conveyor.docker import DockerImage, ImageContext  # noqa: E402
from conveyor.sources.oci import ImageSource  # noqa: E402
from conveyor.sources.store import BundleStore  # noqa: E402
from fixtures.registry import BASE_REPOSITORY, BASE_TAG, seed_base_image, start_registry  # noqa: E402


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-images-"))
    registry = start_registry(work / "registry")
    try:
        seed_base_image(registry)
        base = f"{registry.host}/{BASE_REPOSITORY}:{BASE_TAG}"
        tree = work / "tree"
        size = make_tree(tree)
        env = {"HOME": str(work)}
        ctx = ImageContext(layout_dir=work / "images", environ=env)

        build_only: list[float] = []
        build_push: list[float] = []
        pushed_bytes = 0
        for i in range(args.runs):  # each run: a new layout (the layer is compressed) and repo
            image = DockerImage(f"{registry.host}/bench/run{i}", tag="v1", base_image=base)
            fresh = ctx if i == 0 else ImageContext(layout_dir=work / f"images{i}", environ=env)
            start = time.perf_counter()
            built = image.build(tree, fresh)
            middle = time.perf_counter()
            pushed = image.push(built, fresh)
            build_push.append(time.perf_counter() - start)
            build_only.append(middle - start)
            pushed_bytes = pushed.bytes_uploaded

        again: list[float] = []
        unchanged = (0, 0)
        image = DockerImage(f"{registry.host}/bench/run0", tag="v1", base_image=base)
        for _ in range(args.runs):
            start = time.perf_counter()
            redo = image.push(image.build(tree, ctx), ctx)
            again.append(time.perf_counter() - start)
            unchanged = (redo.blobs_uploaded, redo.bytes_uploaded)
        assert redo.digest is not None

        source = ImageSource(redo.image)
        store = BundleStore(work / "store")
        bundle_version = store.push(tree)

        def cold(src: object, version: str) -> list[float]:
            out = []
            for n in range(args.runs):
                cache_dir = work / f"cache-{id(src)}-{n}"
                cache = CodeCache(cache_dir, max_bytes=10**10)
                start = time.perf_counter()
                cache.ensure(src, version)  # type: ignore[arg-type]
                out.append(time.perf_counter() - start)
                shutil.rmtree(cache_dir, ignore_errors=True)
            return out

        from_image = cold(source, redo.digest)
        from_bundle = cold(store, bundle_version)
        ratio = statistics.median(from_image) / statistics.median(from_bundle)

        print(f"tree: {size / 1e6:.1f} MB, 200 files; {args.runs} runs; medians")
        print()
        print("| measure | median |")
        print("|---|---:|")
        print(f"| daemonless build + push, new repository | {_ms(build_push)} |")
        print(f"| of which the build (code layer, config, manifest) | {_ms(build_only)} |")
        print(
            f"| bytes uploaded by that push (code layer + config + manifest) | {pushed_bytes:,} |"
        )
        print(f"| unchanged redeploy: build + push | {_ms(again)} |")
        print(f"| unchanged redeploy: blobs / bytes uploaded | {unchanged[0]} / {unchanged[1]} |")
        print(f"| cold code-ready from the image (registry) | {_ms(from_image)} |")
        print(f"| cold code-ready from a bundle (local store) | {_ms(from_bundle)} |")
        print(f"| image / bundle | {ratio:.2f}x |")
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
