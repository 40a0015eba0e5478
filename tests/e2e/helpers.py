"""Run the ``conveyor`` CLI as real subprocesses, and wait on what they do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: No single CLI call in these tests should take longer; a hang fails fast.
COMMAND_TIMEOUT_S = 60.0
#: Test task modules, for ``--import``.
TASKS_FILE = Path(__file__).with_name("tasks_for_tests.py")


def conveyor_command(*args: str | Path) -> list[str]:
    """``python -m conveyor ARGS`` with the interpreter running the tests."""
    return [sys.executable, "-m", "conveyor", *map(str, args)]


def run(
    *args: str | Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    check: bool = True,
    input_text: str | None = None,
    timeout_s: float = COMMAND_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run one ``conveyor`` command to completion and capture its output.

    Raises:
        AssertionError: ``check`` and the exit code is not 0 (stdout and stderr shown).
    """
    done = subprocess.run(
        conveyor_command(*args),
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        input=input_text,
        timeout=timeout_s,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"conveyor {' '.join(map(str, args))} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
    return done


def run_json(*args: str | Path, env: Mapping[str, str], cwd: Path | None = None) -> Any:
    """Run a command with ``--json`` and decode what it prints."""
    return json.loads(run(*args, "--json", env=env, cwd=cwd).stdout)


class WorkerProcess:
    """A ``conveyor worker`` subprocess, its stderr kept in a file for post-mortems."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            conveyor_command("worker", *args),
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float = COMMAND_TIMEOUT_S) -> int:
        """Wait for the exit code (the log is shown if it takes too long)."""
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running after {timeout_s} s\n{self.log()}"
            ) from None

    def log(self) -> str:
        """Everything the worker wrote so far (its stdout and stderr)."""
        return self.log_path.read_text()

    def log_events(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines, decoded."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        """Kill it if it still runs (teardown) and close the log."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@contextmanager
def workers(env: Mapping[str, str], log_dir: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """A factory of worker subprocesses, every one of them killed at the end."""
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(list(args), env, log_dir / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


def wait_for(probe: Callable[[], T | None], timeout_s: float = 30.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def write_csv(path: Path, rows: int, *, start: int = 0) -> Path:
    """A valid ``ID,Value`` input of ``rows`` rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["ID,Value", *(f"{start + i},{(start + i) * 1.5 + 0.25}" for i in range(rows))]
    path.write_text("\n".join(lines) + "\n")
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
