"""The result store: JSON round trips stay on the run; everything else is pickled by reference."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from conveyor.errors import ConfigError
from conveyor.results import is_json_result
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

    ref = store.put("run-1", {"when": datetime.date(2024, 1, 1)})

    assert ref == "local:run-1/result.pickle"
    assert store.load(ref) == {"when": datetime.date(2024, 1, 1)}
    assert [p.name for p in (tmp_path / "results" / "run-1").iterdir()] == ["result.pickle"]


def test_put_file_moves_a_pickle_in(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results")
    source = tmp_path / "result.pickle"
    other = ResultStore(tmp_path / "elsewhere")
    source.write_bytes(other.path_for(other.put("x", [1, 2])).read_bytes())

    ref = store.put_file("run-2", source)

    assert store.load(ref) == [1, 2]
    assert not source.exists()


@pytest.mark.parametrize("ref", ["local:../x/result.pickle", "s3://b/k", "local:a/other.bin"])
def test_refs_outside_the_store_are_refused(tmp_path: Path, ref: str) -> None:
    with pytest.raises(ConfigError):
        ResultStore(tmp_path).load(ref)


def test_missing_result_says_where_results_live(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not on this machine"):
        ResultStore(tmp_path).load("local:run-3/result.pickle")
