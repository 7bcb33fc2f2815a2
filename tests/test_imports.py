"""`conveyor._imports.needed_files`: the files loading a flow needs, found statically, or None
when only the whole tree will do. Fast logic tests over in-memory trees (the real git path is
`tests/test_deploy_cost.py`)."""

from __future__ import annotations

import pytest

from conveyor._imports import needed_files

Tree = dict[str, str]


def needed(tree: Tree, entrypoint: str, *, workdir: str = "", links: Tree | None = None):
    rounds: list[list[str]] = []
    everything = {**tree, **(links or {})}

    def load(paths: list[str]) -> dict[str, bytes]:
        rounds.append(paths)
        return {p: everything[p].encode() for p in paths if p in everything}

    found = needed_files(everything, entrypoint, workdir=workdir, load=load, links=links or {})
    return found, rounds


BASE: Tree = {
    "flows/etl.py": "import helpers\nfrom pkg.sub import thing\nimport os, json\n",
    "flows/helpers.py": "X = 1\n",
    "pkg/__init__.py": "",
    "pkg/sub/__init__.py": "from . import inner\nfrom ..other import y\n",
    "pkg/sub/inner.py": "I = 1\n",
    "pkg/sub/thing.py": "T = 1\n",
    "pkg/other.py": "y = 2\n",
    "pkg/unused.py": "U = 1\n",
    "data/big.bin": "x" * 100,
    "README.md": "# readme\n",
}


def test_a_file_entrypoint_brings_its_imports_transitively():
    found, rounds = needed(BASE, "flows/etl.py:main")
    assert found == {
        "flows/etl.py",
        "flows/helpers.py",  # the flow file's directory is on sys.path first
        "pkg/__init__.py",
        "pkg/sub/__init__.py",
        "pkg/sub/thing.py",
        "pkg/sub/inner.py",  # relative imports of a package
        "pkg/other.py",
    }
    assert rounds[0] == ["flows/etl.py"]
    assert len(rounds) == 3  # one fetch per level of the import graph


def test_a_module_entrypoint_from_a_working_directory():
    tree = {
        "app/pkg/__init__.py": "",
        "app/pkg/flows.py": "from .util import f\nfrom pkg import consts\n",
        "app/pkg/util.py": "def f(): pass\n",
        "app/pkg/consts.py": "C = 1\n",
        "pkg/__init__.py": "raise SystemExit('not this one')\n",
    }
    found, _ = needed(tree, "pkg.flows:main", workdir="app")
    assert found == {
        "app/pkg/__init__.py",
        "app/pkg/flows.py",
        "app/pkg/util.py",
        "app/pkg/consts.py",
    }


def test_names_the_tree_does_not_have_are_left_to_the_interpreter():
    tree = {
        "flow.py": "import json, logging\nimport requests\nfrom conveyor import flow\n",
        "logging/__init__.py": "shadowing the standard library never happens\n",
    }
    found, _ = needed(tree, "flow.py:main")
    assert found == {"flow.py"}


def test_star_imports_take_the_whole_package_and_strings_naming_files_come_along():
    tree = {
        "flow.py": "from plugins import *\nCONF = open('conf/settings.yaml').read()\n",
        "plugins/__init__.py": "",
        "plugins/a.py": "",
        "plugins/b.py": "",
        "plugins/deep/c.py": "",
        "conf/settings.yaml": "x: 1\n",
    }
    found, _ = needed(tree, "flow.py:main")
    assert found == {
        "flow.py",
        "plugins/__init__.py",
        "plugins/a.py",
        "plugins/b.py",
        "conf/settings.yaml",
    }


def test_namespace_packages_compiled_modules_and_symlinks():
    tree = {
        "flow.py": "import ns.mod\nimport fast\nimport alias\n",
        "ns/mod.py": "",
        "fast.cpython-311-x86_64-linux-gnu.so": "ELF",
        "real/target.py": "",
    }
    found, _ = needed(tree, "flow.py:main", links={"alias.py": "real/target.py"})
    assert found == {
        "flow.py",
        "ns/mod.py",
        "fast.cpython-311-x86_64-linux-gnu.so",
        "alias.py",
        "real/target.py",
    }


@pytest.mark.parametrize(
    "source",
    [
        "import importlib\nmod = importlib.import_module('pkg.x')\n",
        "mod = __import__('pkg.x')\n",
        "from importlib.util import spec_from_file_location\n",
        "import runpy\nrunpy.run_path('other.py')\n",
        "import pkgutil\n__path__ = pkgutil.extend_path(__path__, __name__)\n",
        "exec(open('other.py').read())\n",
        "def broken(:\n",
    ],
)
def test_what_cannot_be_followed_statically_asks_for_the_whole_tree(source):
    found, _ = needed({"flow.py": "import helper\n", "helper.py": source}, "flow.py:main")
    assert found is None


def test_entrypoints_that_need_the_whole_tree():
    assert needed(BASE, "missing.py:main")[0] is None
    assert needed(BASE, "nosuch.module:main")[0] is None
    assert needed({"flow.pickle": "x"}, "flow.pickle")[0] is None
