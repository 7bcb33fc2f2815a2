"""load_flow: every entrypoint form, every loading error, and two versions in one process."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from conveyor import Flow, FlowLoadError, load_flow
from conveyor._loading import Entrypoint


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


HELLO = """
from conveyor import flow

@flow
def hello(name: str = "world") -> str:
    return f"hello {name}"
"""


# --- entrypoint forms -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "module", "attribute"),
    [
        ("flows.py:hello", "flows.py", None, "hello"),
        ("path/to/flows.py:hello", "path/to/flows.py", None, "hello"),
        ("/abs/flows.py:Pipeline.run", "/abs/flows.py", None, "Pipeline.run"),
        ("C:/work/flows.py:hello", "C:/work/flows.py", None, "hello"),
        ("package.module:hello", None, "package.module", "hello"),
        ("mod:Class.attr", None, "mod", "Class.attr"),
        ("  flows.py:hello  ", "flows.py", None, "hello"),
    ],
)
def test_entrypoint_forms_parse(
    text: str, path: str | None, module: str | None, attribute: str
) -> None:
    entry = Entrypoint.parse(text)
    assert (entry.path, entry.module, entry.attribute) == (path, module, attribute)


@pytest.mark.parametrize(
    "text",
    ["flows.py", "flows.py:", ":hello", "flows.py:hello-world", "my-pkg.mod:f", "a.b:c..d", ""],
)
def test_malformed_entrypoint_names_the_accepted_forms(tmp_path: Path, text: str) -> None:
    with pytest.raises(FlowLoadError) as caught:
        load_flow(text, root=tmp_path)
    assert str(caught.value) == f"entrypoint {text!r} is not valid"
    assert caught.value.hint is not None
    assert "path/to/file.py:function" in caught.value.hint
    assert "package.module:function" in caught.value.hint


def test_file_entrypoint_relative_to_root(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flows.py": HELLO})

    loaded = load_flow("flows.py:hello", root=tmp_path)

    assert isinstance(loaded, Flow)
    assert loaded.name == "hello"
    assert loaded(name="you") == "hello you"


def test_file_entrypoint_in_a_subfolder_imports_siblings_and_root_modules(tmp_path: Path) -> None:
    # Given a flow file in a subfolder importing a sibling module and a module at the root
    write_tree(
        tmp_path,
        {
            "common.py": "PREFIX = 'root-level'\n",
            "pipelines/nightly/helpers.py": "def shout(s):\n    return s.upper()\n",
            "pipelines/nightly/flows.py": """
                from common import PREFIX
                from helpers import shout
                from conveyor import flow

                @flow
                def nightly() -> str:
                    return shout(PREFIX)
            """,
        },
    )

    # When it is loaded and called, then both imports resolved
    assert load_flow("pipelines/nightly/flows.py:nightly", root=tmp_path)() == "ROOT-LEVEL"


def test_absolute_path_and_default_root_is_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tree(tmp_path, {"flows.py": HELLO})
    monkeypatch.chdir(tmp_path)

    assert load_flow("flows.py:hello")() == "hello world"
    assert load_flow(f"{tmp_path / 'flows.py'}:hello", root="/")() == "hello world"


def test_class_method_and_attribute_entrypoints(tmp_path: Path) -> None:
    # Given flows defined on a class as an attribute, a staticmethod and a classmethod
    write_tree(
        tmp_path,
        {
            "flows.py": """
                from conveyor import flow

                def plain(x: int) -> int:
                    return x * 3

                class Pipelines:
                    tripled = flow(plain, name="tripled")

                    @staticmethod
                    @flow
                    def static(x: int) -> int:
                        return x + 1

                    @classmethod
                    @flow
                    def owner(cls) -> str:
                        return cls.__name__
            """
        },
    )

    # When each is loaded as file.py:Class.name and called, then each runs
    assert load_flow("flows.py:Pipelines.static", root=tmp_path)(1) == 2
    assert load_flow("flows.py:Pipelines.tripled", root=tmp_path)(2) == 6
    assert load_flow("flows.py:Pipelines.owner", root=tmp_path)() == "Pipelines"


def test_an_instance_method_flow_is_refused_and_not_listed(tmp_path: Path) -> None:
    # Given a class with a flow defined as an instance method, and one that is not
    write_tree(
        tmp_path,
        {
            "flows.py": """
                from conveyor import flow

                class Pipeline:
                    @flow
                    def method_flow(self, x: int = 1) -> int:
                        return x

                    @staticmethod
                    @flow
                    def static(x: int) -> int:
                        return x + 1

                pipeline = Pipeline()
            """
        },
    )

    # When the instance method is loaded from the class, then it is refused in one line
    error = load_error("flows.py:Pipeline.method_flow", tmp_path)
    assert str(error) == (
        "flows.py:Pipeline.method_flow is an instance method: a flow must be a function, "
        "a staticmethod or a classmethod"
    )
    # ...and the flows the file is said to define leave it out
    assert load_error("flows.py:Pipeline.nope", tmp_path).hint == "it defines: Pipeline.static"
    # ...while through an instance it is bound, and runs
    assert load_flow("flows.py:pipeline.method_flow", root=tmp_path)(2) == 2


def test_package_module_entrypoint_with_relative_imports(tmp_path: Path) -> None:
    # Given a package with a flow module that uses relative imports
    write_tree(
        tmp_path,
        {
            "myproj/__init__.py": "",
            "myproj/util.py": "VALUE = 41\n",
            "myproj/flows/__init__.py": "",
            "myproj/flows/main.py": """
                from ..util import VALUE
                from conveyor import flow

                @flow
                def answer() -> int:
                    return VALUE + 1
            """,
        },
    )

    # When it is loaded as package.module:function
    loaded = load_flow("myproj.flows.main:answer", root=tmp_path)

    # Then it runs, and the package is not left in sys.modules or sys.path
    assert loaded() == 42
    assert "myproj" not in sys.modules
    assert str(tmp_path) not in sys.path


def test_a_file_entrypoint_with_relative_imports_is_told_the_module_form_that_works(
    tmp_path: Path,
) -> None:
    # Given a package module that imports relatively, named by its file (as Prefect takes it)
    write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/helpers.py": "VALUE = 7\n",
            "pkg/flows.py": """
                from conveyor import flow
                from .helpers import VALUE

                @flow
                def seven() -> int:
                    return VALUE
            """,
        },
    )

    # When it is loaded, then the one-line error's hint names the module form...
    error = load_error("pkg/flows.py:seven", tmp_path)
    assert "attempted relative import with no known parent package" in str(error)
    assert error.hint == (
        "a relative import needs its package: name the flow by module, pkg.flows:seven"
    )

    # ...which loads and runs
    assert load_flow(error.hint.rpartition(", ")[2], root=tmp_path)() == 7


def test_loading_leaves_sys_path_and_sys_modules_as_they_were(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "helpers.py": "VALUE = 1\n",
            "flows.py": "from helpers import VALUE\n" + HELLO,
        },
    )
    path_before = list(sys.path)
    modules_before = set(sys.modules)

    loaded = load_flow("flows.py:hello", root=tmp_path)

    # only the uniquely named entry module stays (so its classes pickle); siblings do not
    assert sys.path == path_before
    assert set(sys.modules) - modules_before == {loaded.fn.__module__}
    assert loaded.fn.__module__.startswith("conveyor_flow_")


def test_without_isolation_the_tree_stays_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    write_tree(tmp_path, {"helpers.py": "VALUE = 1\n", "flows.py": "import helpers\n" + HELLO})

    try:
        loaded = load_flow("flows.py:hello", root=tmp_path, isolate=False)

        assert loaded() == "hello world"
        assert sys.path[0] == str(tmp_path.resolve())
        assert sys.modules["helpers"].VALUE == 1
    finally:
        sys.modules.pop("helpers", None)


def test_sibling_types_and_results_work_after_loading(tmp_path: Path) -> None:
    # Given a flow whose parameter type lives in a sibling module and whose result type lives
    # in the flow file itself
    write_tree(
        tmp_path,
        {
            "shapes.py": """
                from __future__ import annotations
                import dataclasses

                @dataclasses.dataclass
                class Box:
                    width: int
                    label: str = "box"
            """,
            "flows.py": """
                from __future__ import annotations
                import dataclasses
                from shapes import Box
                from conveyor import flow

                @dataclasses.dataclass
                class Area:
                    value: int

                @flow
                def area(box: Box) -> Area:
                    return Area(box.width * box.width)
            """,
        },
    )
    loaded = load_flow("flows.py:area", root=tmp_path)

    # When it is called with JSON parameters, and its result is pickled
    result = loaded.call_with_parameters({"box": {"width": "3"}})

    # Then the sibling type was found for the conversion, and the result round-trips
    import pickle

    assert result == pickle.loads(pickle.dumps(result))
    assert result.value == 9
    assert loaded.parameter_schema()["required"] == ["box"]
    assert "shapes" not in sys.modules


# --- two versions in one process ------------------------------------------------------------------


def two_checkouts(tmp_path: Path) -> tuple[Path, Path]:
    flows = """
        import helpers
        from conveyor import flow, task

        @task
        def label() -> str:
            return helpers.VERSION

        @flow
        def which() -> str:
            import helpers as late   # imported at call time, after loading
            import lib.extra
            return f"{label()}/{late.VERSION}/{lib.extra.VERSION}"
    """
    roots = []
    for version in ("v1", "v2"):
        root = tmp_path / "cache" / version / "checkout"
        write_tree(
            root,
            {
                "project/flows.py": flows,
                "project/helpers.py": f"VERSION = {version!r}\n",
                "project/lib/__init__.py": "",
                "project/lib/extra.py": f"VERSION = {version!r}\n",
            },
        )
        roots.append(root)
    return roots[0], roots[1]


def test_two_versions_of_the_same_file_do_not_mix(tmp_path: Path) -> None:
    # Given two checkouts with the same relative paths and the same sibling module names
    v1_root, v2_root = two_checkouts(tmp_path)

    # When both are loaded in one process, then called in turn (and again)
    v1 = load_flow("project/flows.py:which", root=v1_root)
    v2 = load_flow("project/flows.py:which", root=v2_root)

    # Then each flow sees only its own helpers, at load time and at call time
    assert v1() == "v1/v1/v1"
    assert v2() == "v2/v2/v2"
    assert v1() == "v1/v1/v1"
    assert v1.fn.__module__ != v2.fn.__module__
    assert "helpers" not in sys.modules
    assert "lib" not in sys.modules


def test_a_module_of_the_same_name_already_imported_is_shadowed_then_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an unrelated module called `helpers` already imported in this process
    import types

    other = types.ModuleType("helpers")
    other.VERSION = "someone else's"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "helpers", other)
    v1_root, _ = two_checkouts(tmp_path)

    # When a flow that imports its own sibling `helpers` is loaded and called
    loaded = load_flow("project/flows.py:which", root=v1_root)

    # Then it uses its sibling, and the process's `helpers` is put back
    assert loaded() == "v1/v1/v1"
    assert sys.modules["helpers"] is other


# --- loading errors -------------------------------------------------------------------------------


def load_error(entrypoint: str, root: Path) -> FlowLoadError:
    with pytest.raises(FlowLoadError) as caught:
        load_flow(entrypoint, root=root)
    return caught.value


def test_missing_file_shows_the_resolved_path(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flow.py": HELLO})

    error = load_error("sub/../flows.py:hello", tmp_path)

    assert str(error) == f"flow file {tmp_path.resolve() / 'flows.py'} does not exist"
    assert error.hint == "did you mean flow.py?"
    error = load_error("nowhere/flows.py:hello", tmp_path)
    assert error.hint == f"the path is relative to {tmp_path}"


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flows.py": "from conveyor import flow\n\ndef broken(:\n    pass\n"})

    error = load_error("flows.py:broken", tmp_path)

    assert str(error).startswith("syntax error in flows.py, line 3: ")


def test_syntax_error_in_a_sibling_module_names_that_file(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flows.py": "import helpers\n", "helpers.py": "x = 1\ny = (\n"})

    error = load_error("flows.py:hello", tmp_path)

    assert str(error).startswith("could not import flows.py: syntax error in helpers.py, line 2")


def test_import_error_names_the_missing_module_and_the_file(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flows.py": "import os\n\nimport not_installed_anywhere\n"})

    error = load_error("flows.py:hello", tmp_path)

    assert str(error) == (
        "could not import flows.py: no module named 'not_installed_anywhere' (flows.py, line 3)"
    )
    assert error.hint is not None
    assert "install it where the flow runs" in error.hint


def test_import_error_inside_a_sibling_points_at_the_sibling_line(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "flows.py": "from helpers import greet\n",
            "helpers.py": "def greet():\n    pass\n\nfrom missing_dep import thing\n",
        },
    )

    error = load_error("flows.py:hello", tmp_path)

    assert (
        str(error)
        == "could not import flows.py: no module named 'missing_dep' (helpers.py, line 4)"
    )


def test_cannot_import_name_is_reported(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flows.py": "from helpers import nope\n", "helpers.py": "yes = 1\n"})

    error = load_error("flows.py:hello", tmp_path)

    assert str(error).startswith(
        "could not import flows.py: cannot import name 'nope' from 'helpers'"
    )
    assert str(error).endswith("(flows.py, line 1)")


def test_exception_at_import_time_is_reported_with_its_line(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flows.py": "X = 1\nY = X / 0\n"})

    error = load_error("flows.py:hello", tmp_path)

    assert str(error) == (
        "could not import flows.py: ZeroDivisionError: division by zero (flows.py, line 2)"
    )


def test_sys_exit_at_import_time_is_a_load_error(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flows.py": "import sys\nsys.exit(2)\n"})

    error = load_error("flows.py:hello", tmp_path)

    assert str(error).startswith("could not import flows.py: it called sys.exit()")
    assert error.hint is not None
    assert "__main__" in error.hint


def test_missing_name_lists_the_flows_the_file_defines(tmp_path: Path) -> None:
    # Given a file with module-level flows, a task and a flow on a class
    write_tree(
        tmp_path,
        {
            "flows.py": """
                from conveyor import flow, task

                @flow
                def hello() -> None: ...

                @flow(name="custom")
                def other() -> None: ...

                @task
                def not_listed() -> None: ...

                class Pipelines:
                    @staticmethod
                    @flow
                    def nightly() -> None: ...
            """
        },
    )

    # When the entrypoint names something it does not define
    error = load_error("flows.py:helo", tmp_path)

    # Then the error lists the flows it does define (not the task)
    assert str(error) == "flows.py does not define 'helo'"
    assert error.hint == "it defines: Pipelines.nightly, hello, other"
    assert str(load_error("flows.py:Pipelines.weekly", tmp_path)) == (
        "flows.py does not define 'Pipelines.weekly'"
    )


def test_missing_name_when_the_file_defines_no_flows(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flows.py": "def hello():\n    pass\n"})

    error = load_error("flows.py:main", tmp_path)

    assert str(error) == "flows.py does not define 'main'"
    assert error.hint == (
        "it defines no flows; decorate a function with @flow (from conveyor import flow)"
    )


@pytest.mark.parametrize(
    ("attribute", "message", "hint"),
    [
        ("plain", "'plain' in flows.py is a function, not a flow", "decorate it with @flow"),
        ("Thing", "'Thing' in flows.py is a class, not a flow", "decorate it with @flow"),
        ("NUMBER", "'NUMBER' in flows.py is an int, not a flow", "decorate it with @flow"),
        ("step", "'step' in flows.py is a task, not a flow", "call the task from a @flow"),
    ],
)
def test_object_that_is_not_a_flow(tmp_path: Path, attribute: str, message: str, hint: str) -> None:
    # Given a file with a constant, a function, a class and a task
    write_tree(
        tmp_path,
        {
            "flows.py": """
                from conveyor import task

                NUMBER = 3

                def plain():
                    pass

                class Thing:
                    pass

                @task
                def step():
                    pass
            """
        },
    )

    # When the entrypoint names one of them
    error = load_error(f"flows.py:{attribute}", tmp_path)

    # Then the error says what it is and how to make it a flow
    assert str(error) == message
    assert error.hint is not None
    assert error.hint.startswith(hint)


def test_module_entrypoint_that_does_not_exist(tmp_path: Path) -> None:
    error = load_error("no_such_package.flows:hello", tmp_path)

    assert str(error) == (
        f"module 'no_such_package.flows' was not found in {tmp_path} or in the installed packages"
    )


def test_module_entrypoint_with_an_import_error_inside(tmp_path: Path) -> None:
    write_tree(tmp_path, {"pkg/__init__.py": "", "pkg/flows.py": "import absent_module\n"})

    error = load_error("pkg.flows:hello", tmp_path)

    assert str(error) == (
        "could not import pkg.flows: no module named 'absent_module' (pkg/flows.py, line 1)"
    )
