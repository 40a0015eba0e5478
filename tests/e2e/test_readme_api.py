"""The README's Python example, run exactly as printed against real worker processes."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import COMMAND_TIMEOUT_S, workers

PROJECT = Path(__file__).parents[2]
README = PROJECT / "README.md"
EXAMPLE_TASK = PROJECT / "examples" / "wordcount_task.py"


def readme_example(heading: str = "### Python API") -> str:
    """The first Python code block of the README's section under ``heading`` (up to the
    next heading), as printed."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1]
    section = re.split(r"^#{2,4} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    match = re.search(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert match is not None, f"no ```python block in the README's {heading} section"
    return match.group(1)


def example_project(tmp_path: Path, files: dict[str, str]) -> Path:
    """A project as the README describes it: ``examples/wordcount_task.py`` and ``files``
    (name: text) in a new directory."""
    project = tmp_path / "project"
    (project / "examples").mkdir(parents=True)
    shutil.copy(EXAMPLE_TASK, project / "examples" / "wordcount_task.py")
    for name, text in files.items():
        (project / name).write_text(text)
    return project


def run_script(project: Path, queue_env: QueueEnv, script: str) -> list[str]:
    """Run ``script`` in the project, in the queue's environment, as a user would; the
    lines it printed (it must succeed)."""
    done = subprocess.run(
        [sys.executable, script],
        cwd=project,
        env=queue_env.env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_readme_names_only_what_the_api_has() -> None:
    code = readme_example()
    ast.parse(code)  # it is Python
    assert "conveyor.connect(" in code
    assert ".submit_many(" in code
    assert ".wait(" in code


def test_the_readme_python_example_runs_as_printed(queue_env: QueueEnv, tmp_path: Path) -> None:
    # Given a project as the README describes it: the example task, two text files, and
    # the example saved beside examples/ as example.py
    project = example_project(
        tmp_path,
        {
            "notes.txt": "The quick brown fox jumps over the lazy dog.\nThe END\n",
            "todo.txt": "buy milk, buy bread, call mum, buy milk\n",
            "example.py": readme_example(),
        },
    )
    with workers(queue_env.env, queue_env.work) as start:
        # And two worker processes running (started in the project, as a user would)
        for _ in range(2):
            start("--import", str(project / "examples" / "wordcount_task.py"))
        # When the user runs the example in the same environment
        printed = run_script(project, queue_env, "example.py")
    # Then it prints each job's source, state and result
    assert printed == [
        "notes.txt succeeded {'words': 11, 'distinct': 9, 'rows': 9}",
        "todo.txt succeeded {'words': 8, 'distinct': 5, 'rows': 2}",
        "notes.txt succeeded {'words': 5, 'distinct': 5, 'rows': 5}",
    ]
