"""The public API: ``conveyor.__all__`` is sorted, matches ``_EXPORTS``, and every name imports."""

from __future__ import annotations

import importlib

import pytest

import conveyor


def test_all_is_sorted_and_matches_the_export_table() -> None:
    assert conveyor.__all__ == sorted(conveyor.__all__)
    assert set(conveyor.__all__) == set(conveyor._EXPORTS)
    assert list(conveyor._EXPORTS) == sorted(conveyor._EXPORTS)


@pytest.mark.parametrize("name", sorted(conveyor._EXPORTS))
def test_every_exported_name_resolves(name: str) -> None:
    module = importlib.import_module(conveyor._EXPORTS[name])

    value = getattr(conveyor, name)

    assert value is getattr(module, name)
    assert name in dir(conveyor)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = conveyor.nope
