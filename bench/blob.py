"""Benchmark of blob stores: code-ready time and requests per run, bundle and folder mode, on
moto's S3 server (127.0.0.1), with the 200-file / 5 MB tree of ``bench/bundles.py``.

For each mode, medians of ``--runs`` runs (default 7) of:

- **cold**: a fresh code cache ensures the deployed version (`CodeCache.ensure` of a source
  rebuilt from its stored spec): fetch, verify, seal, rename;
- **warm**: the same cache ensures it again;

with the requests each made, counted at the server (moto's request log). Beside them, same run:

- **raw baseline**: one ``GetObject`` of the archive with boto3 plus a local `unpack` of it;
- **naive folder copy**: ``fs.get(prefix, recursive=True)`` with s3fs, what Prefect's
  ``pull_from_remote_storage`` does on every run.

Run: ``.venv/bin/python bench/blob.py [--runs N]``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]
os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench-secret",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)

from bundles import make_tree  # noqa: E402

from conveyor.bundles import unpack  # noqa: E402
from conveyor.cache import CodeCache  # noqa: E402
from conveyor.sources import source_from_spec  # noqa: E402
from conveyor.sources.base import FetchContext  # noqa: E402
from conveyor.sources.blob import BlobStorage  # noqa: E402
from conveyor.sources.blob._transfer import upload_folder  # noqa: E402
from fixtures.blob_servers import MotoServer  # noqa: E402


def _requests(server: MotoServer) -> int:
    time.sleep(0.05)  # let the server's log catch up
    return len(server.requests())


def measure(server: MotoServer, runs: int, fn: Callable[[int], None]) -> tuple[float, float]:
    """Median seconds and median request count of ``fn(i)`` over ``runs`` runs."""
    times, counts = [], []
    for i in range(runs):
        before = _requests(server)
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
        counts.append(_requests(server) - before)
    return statistics.median(times), statistics.median(counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-blob-"))
    tree = work / "tree"
    size = make_tree(tree)
    server = MotoServer(work).start()
    try:
        bucket = server.new_bucket()
        ctx = FetchContext(environ=dict(os.environ))
        options = {"endpoint_url": server.endpoint}
        bundle = BlobStorage(f"s3://{bucket}/bundles", **options)
        version = bundle.push(tree, ctx)
        folder = BlobStorage(f"s3://{bucket}/flows", **options)
        upload_folder(folder.filesystem(ctx), folder.location, tree)
        pins = folder.resolve(ctx)
        specs = {"bundle": (bundle.to_spec(), version), "folder": (folder.to_spec(), pins)}
        rows = []
        client = server.client()

        def raw(i: int) -> None:
            reply = client.get_object(Bucket=bucket, Key=f"bundles/{version}.tar.zst")
            data = reply["Body"].read()
            unpack(io.BytesIO(data), work / f"raw-{i}", expected_version=version)

        raw_t, raw_n = measure(server, args.runs, raw)
        rows.append(("raw: one GET + local unpack", raw_t, raw_n, 1.0))
        for mode, (spec, ver) in specs.items():
            caches: list[CodeCache] = []

            def cold(i: int, spec: dict = spec, ver: str = ver) -> None:
                cache = CodeCache(work / f"cache-{mode}-{i}", max_bytes=10**9, context=ctx)
                caches.append(cache)
                cache.ensure(source_from_spec(spec), ver)

            cold_t, cold_n = measure(server, args.runs, cold)

            def warm(i: int, spec: dict = spec, ver: str = ver) -> None:
                caches[i].ensure(source_from_spec(spec), ver)

            warm_t, warm_n = measure(server, args.runs, warm)
            rows.append((f"{mode} mode, cold", cold_t, cold_n, cold_t / raw_t))
            rows.append((f"{mode} mode, warm", warm_t, warm_n, warm_t / raw_t))

        def naive(i: int) -> None:
            fs = folder.filesystem(ctx)
            fs.get(f"{bucket}/flows/", str(work / f"naive-{i}") + "/", recursive=True)

        naive_t, naive_n = measure(server, args.runs, naive)
        rows.append(("naive folder copy (fs.get recursive)", naive_t, naive_n, naive_t / raw_t))
    finally:
        server.stop()
    print(f"tree: 200 files, {size / 1e6:.1f} MB; runs: {args.runs}; moto on 127.0.0.1\n")
    print("| what | median | requests per run | ratio to raw |")
    print("|---|---|---|---|")
    for what, seconds, count, ratio in rows:
        shown = f"{seconds * 1000:.1f} ms"
        print(f"| {what} | {shown} | {count:g} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
