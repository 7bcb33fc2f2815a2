"""`conveyor._logging`: the one logging policy of the command line and the worker, applied in a
fresh interpreter (as each entry point does) and fed the records the cloud libraries emit.
The end-to-end cases against Azurite, moto and an unreachable GCS endpoint are in
``tests/e2e/test_log_noise.py``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conveyor._logging import THIRD_PARTY, is_third_party

EMIT = """
import logging

def fail():
    raise ConnectionError("Cannot connect to host 127.0.0.1:9\\nsecond line")

try:
    fail()
except ConnectionError:
    logging.getLogger("gcsfs").exception("_request out of retries on exception: boom")
    logging.getLogger("azure.storage.blob").error("gave up", exc_info=True)
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info(
    "Request URL: 'http://127.0.0.1/x'\\nRequest method: 'GET'"
)
logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
logging.getLogger("urllib3.connectionpool").warning("Retrying (Retry(total=2)) after a reset")
logging.getLogger("gcsfs").debug("GET: b/{}/o")
logging.getLogger("conveyor.worker.loop").info("claimed run=r1")
logging.getLogger("conveyor._tree").warning("skipping special file path=fifo")
logging.getLogger("conveyor.cache").debug("conveyor detail")
"""

SETUPS = {
    "worker": "from conveyor._logging import configure\n"
    "configure(debug={debug}, worker=True, fmt='%(levelname)s %(name)s: %(message)s')\n",
    # the command line's own callback, as `conveyor [--debug] COMMAND` runs it
    "cli": "from conveyor.cli import _root\n_root(debug={debug}, version=False)\n",
}


def printed(process: str, *, debug: bool) -> str:
    """What a fresh interpreter set up as ``process`` writes to stderr for `EMIT`."""
    code = SETUPS[process].format(debug=debug) + textwrap.dedent(EMIT)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == ""
    return result.stderr


def test_the_worker_prints_library_warnings_and_errors_in_one_line_each() -> None:
    lines = printed("worker", debug=False).splitlines()
    assert lines == [
        "ERROR gcsfs: _request out of retries on exception: boom"
        " (ConnectionError: Cannot connect to host 127.0.0.1:9)",
        "ERROR azure.storage.blob: gave up (ConnectionError: Cannot connect to host 127.0.0.1:9)",
        "WARNING urllib3.connectionpool: Retrying (Retry(total=2)) after a reset",
        "INFO conveyor.worker.loop: claimed run=r1",
        "WARNING conveyor._tree: skipping special file path=fifo",
    ]


def test_the_command_line_prints_conveyors_own_warnings_only() -> None:
    err = printed("cli", debug=False)
    assert [line.split(" ", 2)[2] for line in err.splitlines()] == [
        "WARNING conveyor._tree: skipping special file path=fifo"
    ]


@pytest.mark.parametrize("process", ["worker", "cli"])
def test_debug_prints_everything_with_tracebacks(process: str) -> None:
    err = printed(process, debug=True)
    assert err.count("Traceback (most recent call last):") == 2
    for expected in (
        "_request out of retries",
        "second line",
        "Request method: 'GET'",
        "Found credentials",
        "GET: b/{}/o",
        "claimed run=r1",
        "skipping special file",
        "conveyor detail",
    ):
        assert expected in err


@pytest.mark.parametrize(
    ("name", "third"),
    [
        ("gcsfs", True),
        ("google.auth.transport.requests", True),
        ("azure.core.pipeline.policies.http_logging_policy", True),
        ("botocore.credentials", True),
        ("googleapis", False),
        ("conveyor.sources.blob", False),
        ("user", False),
        ("root", False),
    ],
)
def test_third_party_is_a_logger_of_a_listed_library_or_below(name: str, third: bool) -> None:
    assert is_third_party(name) is third


def test_the_storage_and_cluster_libraries_are_listed() -> None:
    expected = {"gcsfs", "google", "azure", "botocore", "boto3", "s3fs", "aiobotocore"}
    expected |= {"urllib3", "fsspec", "docker", "kubernetes"}
    assert expected <= set(THIRD_PARTY)
