"""The result store: JSON round trips stay on the run; everything else is pickled by reference."""

from __future__ import annotations

import datetime
import pickle
from pathlib import Path

import pytest

from conveyor.errors import ConfigError, IntegrityError
from conveyor.results import StoredResult, is_json_result
from conveyor.results.local import ResultStore


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": [1, 2.5, "x", None, True]}, True),
        ("text", True),
        (None, True),
        ((1, 2), False),  # would come back as a list
        ({1: "a"}, False),  # would come back with a string key
        ([1.0, 1], True),
        (float("nan"), False),
        (datetime.date(2024, 1, 1), False),
        ({"nested": {"t": (1,)}}, False),
    ],
)
def test_is_json_result(value: object, expected: bool) -> None:
    assert is_json_result(value) is expected


def test_put_and_load_round_trip_atomically(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")

    stored = store.put("run-1", {"when": datetime.date(2024, 1, 1)})

    assert stored.ref == "local:run-1/result.pickle"
    data = (tmp_path / "results" / "run-1" / "result.pickle").read_bytes()
    assert stored == StoredResult.of_bytes(stored.ref, data)
    assert store.load(stored) == {"when": datetime.date(2024, 1, 1)}
    assert [p.name for p in (tmp_path / "results" / "run-1").iterdir()] == ["result.pickle"]


def test_put_file_moves_a_pickle_in(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    source = tmp_path / "result.pickle"
    other = ResultStore(tmp_path / "elsewhere")
    source.write_bytes(other.path_for(other.put("x", [1, 2]).ref).read_bytes())
    size = source.stat().st_size

    stored = store.put_file("run-2", source)

    assert stored.size == size
    assert store.load(stored) == [1, 2]
    assert not source.exists()


def test_load_checks_the_bytes_against_the_record_before_unpickling(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    stored = store.put("run-4", [1, 2])
    path = store.path_for(stored.ref)
    path.write_bytes(pickle.dumps([1, 3]))

    with pytest.raises(IntegrityError, match="does not match the digest") as raised:
        store.load(stored)
    assert raised.value.path == stored.ref
    with pytest.raises(IntegrityError, match="no recorded digest"):
        store.load(StoredResult(stored.ref))
    assert store.load(StoredResult(stored.ref), trust_unverified=True) == [1, 3]


@pytest.mark.parametrize("ref", ["local:../x/result.pickle", "s3://b/k", "local:a/other.bin"])
def test_refs_outside_the_store_are_refused(tmp_path: Path, ref: str) -> None:
    with pytest.raises(ConfigError):
        ResultStore(tmp_path).load(StoredResult(ref))


def test_missing_result_says_where_results_live(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not on this machine"):
        ResultStore(tmp_path).load(StoredResult("local:run-3/result.pickle"))
