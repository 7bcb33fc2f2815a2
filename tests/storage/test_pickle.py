"""Pickle mode: the flow is a cloudpickle inside a signed envelope. A tampered, unsigned or
foreign pickle is refused before anything is unpickled — by ``get_flow`` and by the worker —
and a version mismatch is an error naming both sides.

The payloads that must never be unpickled create a marker file when they are: its absence
proves the refusal came first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from conveyor._version import __version__
from conveyor.client import ConveyorClient
from conveyor.errors import FlowLoadError, IntegrityError
from conveyor.schemas import DeploymentCreate, RunState
from conveyor.settings import Settings
from conveyor.sources.flowfile import file_version
from conveyor.sources.pickled import KEY_SECRET, signing_key
from storage.conftest import run_and_wait, run_logs

FLOW_CODE = """
from conveyor import Flow, task
from conveyor.storage import Local

@task
def answer() -> int:
    return 42

with Flow("pickled", storage=Local(directory=DIRECTORY)) as flow:
    answer()
"""


def define(code: str, **values: Any) -> dict[str, Any]:
    """Run flow code in a namespace no module owns (so cloudpickle keeps it by value)."""
    namespace: dict[str, Any] = {"__name__": "flow_definitions", **values}
    exec(code, namespace)
    return namespace


class _Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


def poison(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when it is unpickled."""
    return pickle.dumps(_Boom(marker))


def envelope(
    payload: bytes, *, key_id: str, key: str, versions: dict[str, str] | None = None
) -> bytes:
    """An envelope written from the documented format (not with Conveyor's own code)."""
    header = {
        "format": "conveyor-flow-pickle/1",
        "flow_name": "pickled",
        "versions": versions
        or {
            "python": ".".join(map(str, sys.version_info[:3])),
            "cloudpickle": cloudpickle.__version__,
            "conveyor": __version__,
        },
        "key_id": key_id,
    }
    signed = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + payload
    signature = hmac.new(key.encode(), signed, hashlib.sha256).hexdigest()
    document = {**header, "signature": signature, "flow": base64.b64encode(payload).decode()}
    return json.dumps(document).encode()


@pytest.fixture
def built(tmp_path: Path, settings: Settings, client: ConveyorClient) -> Any:
    flow = define(FLOW_CODE, DIRECTORY=str(tmp_path / "flows"))["flow"]
    flow.storage.build(settings=settings, client=client)
    return flow


def test_the_envelope_records_versions_and_is_signed_with_the_servers_key(
    built: Any, client: ConveyorClient
) -> None:
    data = Path(built.storage.flows["pickled"]).read_bytes()
    document = json.loads(data)
    assert document["versions"] == {
        "python": ".".join(map(str, sys.version_info[:3])),
        "cloudpickle": cloudpickle.__version__,
        "conveyor": __version__,
    }
    # The key lives in the server's secret store, named by the envelope; the signature checks
    key_id = client.get_secret(KEY_SECRET)
    assert key_id == document["key_id"]
    key = client.get_secret(f"{KEY_SECRET}.{key_id}")
    assert key is not None
    payload = base64.b64decode(document["flow"])
    mine = json.loads(envelope(payload, key_id=key_id, key=key, versions=document["versions"]))
    assert mine["signature"] == document["signature"]
    # ...and a second signer reuses the key instead of making another
    assert signing_key(client).key_id == key_id


def test_a_tampered_pickle_is_refused_before_unpickling(
    built: Any, tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    marker = tmp_path / "unpickled"
    location = Path(built.storage.flows["pickled"])
    document = json.loads(location.read_bytes())
    document["flow"] = base64.b64encode(poison(marker)).decode()  # the signature kept
    location.write_text(json.dumps(document))

    with pytest.raises(IntegrityError, match=r"signature of .* does not match"):
        built.storage.get_flow("pickled", settings=settings, client=client)
    assert not marker.exists()


def test_an_unsigned_pickle_is_refused_before_unpickling(
    built: Any, tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    marker = tmp_path / "unpickled"
    location = Path(built.storage.flows["pickled"])
    # A raw pickle (what the first generation's oldest versions wrote)
    location.write_bytes(poison(marker))
    with pytest.raises(IntegrityError, match="not a signed Conveyor flow pickle"):
        built.storage.get_flow("pickled", settings=settings, client=client)
    # An envelope whose signature was taken out
    document = json.loads(envelope(poison(marker), key_id="abc", key="k"))
    del document["signature"]
    location.write_text(json.dumps(document))
    with pytest.raises(IntegrityError, match="unsigned flow pickle"):
        built.storage.get_flow("pickled", settings=settings, client=client)
    assert not marker.exists()


def test_a_foreign_pickle_is_refused_by_get_flow_and_by_the_worker(
    built: Any, tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    # Given a pickle signed with another server's key, at a location a deployment pins by digest
    marker = tmp_path / "unpickled"
    foreign = envelope(poison(marker), key_id="0badc0de", key="another-servers-key")
    location = tmp_path / "foreign" / "flow-file"
    location.parent.mkdir()
    location.write_bytes(foreign)
    from conveyor.storage._serialize import flow_from_pickle

    with pytest.raises(IntegrityError, match="which this Conveyor server does not have"):
        flow_from_pickle(foreign, store=client, where=str(location))
    client.put_deployment(
        DeploymentCreate(
            flow_name="pickled",
            name="foreign",
            entrypoint="flow.pickle",
            source={
                "kind": "flow-file",
                "location": {"path": str(location)},
                "filename": "flow.pickle",
                "signed": True,
            },
            version=file_version("flow.pickle", foreign),
        )
    )
    # When a worker takes a run of it: refused at fetch, nothing unpickled, nothing cached
    run = run_and_wait(settings, client, "pickled", "foreign")
    assert run.state == RunState.FAILED
    assert "which this Conveyor server does not have" in (run.error or "")
    assert not marker.exists()
    assert not any(settings.cache_dir.rglob("flow.pickle"))


def test_a_version_mismatch_is_an_error_naming_both_sides(
    built: Any, tmp_path: Path, settings: Settings, client: ConveyorClient
) -> None:
    # Given a pickle signed with this server's key, but made by other versions
    key = signing_key(client)
    payload = base64.b64decode(
        json.loads(Path(built.storage.flows["pickled"]).read_bytes())["flow"]
    )
    old = {"python": "3.7.16", "cloudpickle": "1.6.0", "conveyor": "0.0.1"}
    data = envelope(payload, key_id=key.key_id, key=key.key.reveal(), versions=old)
    location = tmp_path / "old" / "flow-file"
    location.parent.mkdir()
    location.write_bytes(data)
    here = f"Python {sys.version_info.major}.{sys.version_info.minor}"

    from conveyor.storage._serialize import flow_from_pickle

    with pytest.raises(FlowLoadError) as error:
        flow_from_pickle(data, store=client, where=str(location))
    message = str(error.value)
    assert "Python 3.7, cloudpickle 1.6.0, Conveyor 0.0.1" in message
    assert f"{here}, cloudpickle {cloudpickle.__version__}, Conveyor {__version__}" in message

    # ...and a worker's run of it fails with the same sentence
    client.put_deployment(
        DeploymentCreate(
            flow_name="pickled",
            name="old",
            entrypoint="flow.pickle",
            source={
                "kind": "flow-file",
                "location": {"path": str(location)},
                "filename": "flow.pickle",
                "signed": True,
            },
            version=file_version("flow.pickle", data),
        )
    )
    run = run_and_wait(settings, client, "pickled", "old")
    assert run.state == RunState.FAILED
    assert "Python 3.7, cloudpickle 1.6.0, Conveyor 0.0.1" in (run.error or ""), run_logs(
        client, run.id
    )


def test_the_pickle_entrypoint_form(built: Any, tmp_path: Path) -> None:
    from conveyor._loading import Entrypoint, load_flow

    entry = Entrypoint.parse("sub/flow.pickle")
    assert (entry.pickled, entry.path, str(entry)) == (True, "sub/flow.pickle", "sub/flow.pickle")
    assert not Entrypoint.parse("flows.py:pickle").pickled
    # a verified tree's copy loads (the child's path), an unsigned file does not
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "flow.pickle").write_bytes(Path(built.storage.flows["pickled"]).read_bytes())
    assert load_flow("sub/flow.pickle", root=tree).run().result == {"answer": 42}
    marker = tmp_path / "unpickled"
    (tree / "sub" / "flow.pickle").write_bytes(poison(marker))
    with pytest.raises(IntegrityError, match="not a signed Conveyor flow pickle"):
        load_flow("sub/flow.pickle", root=tree)
    assert not marker.exists()
