"""`check_listing`: a git deploy refuses a tree a worker could never check out (names over 255
bytes, paths over 1,024 bytes), counting bytes, not characters."""

from __future__ import annotations

import pytest

from conveyor._deploy_tree import MAX_NAME_LENGTH, MAX_PATH_LENGTH, check_listing
from conveyor.errors import ConfigError


def test_ordinary_paths_pass() -> None:
    check_listing(["flow.py", "lib/util.py", "pkg000/mod_0001.py", "a" * MAX_NAME_LENGTH])


def test_a_name_over_the_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"names of at most 255"):
        check_listing(["ok.py", "dir/" + "n" * (MAX_NAME_LENGTH + 1)])


def test_a_path_over_the_limit_is_refused_though_each_name_fits() -> None:
    deep = "/".join(["d" * 200] * 6)  # 1,205 bytes, every name 200
    assert len(deep) > MAX_PATH_LENGTH
    with pytest.raises(ConfigError, match=r"1205 bytes long"):
        check_listing([deep])


def test_bytes_count_not_characters() -> None:
    name = "é" * 130  # 130 characters, 260 bytes in UTF-8 (265 with "data/")
    with pytest.raises(ConfigError, match=r"265 bytes long"):
        check_listing([f"data/{name}"])
    check_listing(["data/" + "é" * 127])  # 254 bytes: fits
