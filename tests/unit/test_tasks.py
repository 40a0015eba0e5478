"""``conveyor.tasks``: importing the user's task modules (``--import``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conveyor.default_tasks import default_registry
from conveyor.errors import ConfigError
from conveyor.tasks import import_tasks
from tests.unit.task_helpers import context, noop

MODULE = """
import conveyor
from conveyor import csvjob as csvtask

@conveyor.task("{name}")
def run(ctx):
    return {{"from": __name__}}
"""


def test_import_by_module_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_tasks: list[str]
) -> None:
    forget_tasks.append("by-name")
    (tmp_path / "mytasks_by_name.py").write_text(MODULE.format(name="by-name"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mytasks_by_name", raising=False)
    assert import_tasks(["mytasks_by_name"]) == ["mytasks_by_name"]
    assert default_registry().get("by-name")(context(tmp_path)) == {"from": "mytasks_by_name"}
    monkeypatch.delitem(sys.modules, "mytasks_by_name")


def test_import_by_file_path_twice(tmp_path: Path, forget_tasks: list[str]) -> None:
    forget_tasks.append("by-path")
    path = tmp_path / "sub" / "tasks.py"
    path.parent.mkdir()
    path.write_text(MODULE.format(name="by-path"))
    try:
        [name] = import_tasks([str(path)])
        assert import_tasks([str(path)]) == [name]
        assert "by-path" in default_registry()
        assert name.startswith("conveyor_tasks_tasks_")
    finally:
        sys.modules.pop(name, None)


def test_two_files_with_the_same_name_do_not_clash(tmp_path: Path, forget_tasks: list[str]) -> None:
    forget_tasks.extend(["one", "two"])
    for sub, task_name in (("a", "one"), ("b", "two")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "tasks.py").write_text(MODULE.format(name=task_name))
    names = import_tasks([str(tmp_path / "a" / "tasks.py"), str(tmp_path / "b" / "tasks.py")])
    try:
        assert len(set(names)) == 2
        assert {"one", "two"} <= set(default_registry().names())
    finally:
        for name in names:
            sys.modules.pop(name, None)


def test_missing_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot import task module 'no_such_module_xyz'"):
        import_tasks(["no_such_module_xyz"])


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        import_tasks([str(tmp_path / "absent.py")])


def test_module_that_raises_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(
        ConfigError, match=r"'.*broken.py' failed while importing: RuntimeError: boom"
    ):
        import_tasks([str(path)])
    assert not any(name.startswith("conveyor_tasks_broken_") for name in sys.modules)


def test_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad_syntax.py"
    path.write_text("def (:\n")
    with pytest.raises(ConfigError, match="SyntaxError"):
        import_tasks([str(path)])


def test_duplicate_registration_in_a_module_is_reported(
    tmp_path: Path, forget_tasks: list[str]
) -> None:
    forget_tasks.append("clash")
    default_registry().register("clash", noop)
    path = tmp_path / "clashing.py"
    path.write_text(MODULE.format(name="clash"))
    with pytest.raises(ConfigError, match="registered twice"):
        import_tasks([str(path)])
