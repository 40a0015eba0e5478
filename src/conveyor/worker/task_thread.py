"""The task thread: a long-lived daemon thread that runs the worker's tasks, one at a time."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from queue import SimpleQueue

from conveyor.errors import PermanentTaskError
from conveyor.task_context import TaskContext, TaskFunction, TaskResult


class TaskCall:
    """One task call handed to the task thread: its outcome, and an event set when done."""

    __slots__ = ("ctx", "done", "error", "func", "result")

    def __init__(self, func: TaskFunction, ctx: TaskContext) -> None:
        self.func = func
        self.ctx = ctx
        self.done = threading.Event()
        self.result: TaskResult = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.func(self.ctx)
        except BaseException as exc:  # a task's SystemExit too: it must not end the worker
            self.error = exc
        finally:
            self.done.set()


def _serve(inbox: SimpleQueue[TaskCall | None]) -> None:
    """The task thread's loop: run calls one after another until told to stop (None)."""
    while (call := inbox.get()) is not None:
        call.run()


class TaskThread:
    """A long-lived daemon thread that runs the worker's tasks, one at a time.

    A thread per job cost more than a short job itself. A daemon, so a task still running
    at exit cannot hold the process up; a task abandoned at the grace deadline keeps its
    thread, and the next call gets a fresh one.
    """

    def __init__(self) -> None:
        self._inbox: SimpleQueue[TaskCall | None] | None = None
        self._current: TaskCall | None = None

    def submit(self, func: TaskFunction, ctx: TaskContext) -> TaskCall:
        """Start ``func(ctx)`` on the task thread; wait on the returned call's ``done``."""
        busy = self._current is not None and not self._current.done.is_set()
        if self._inbox is None or busy:
            self.close()  # an abandoned task's thread exits once its task returns
            self._inbox = SimpleQueue()
            thread = threading.Thread(
                target=_serve, args=(self._inbox,), name="conveyor-task", daemon=True
            )
            thread.start()
        call = self._current = TaskCall(func, ctx)
        assert self._inbox is not None
        self._inbox.put(call)
        return call

    def close(self) -> None:
        """Let the task thread exit after its current task; a later submit starts another."""
        if self._inbox is not None:
            self._inbox.put(None)
            self._inbox = None


def checked_result(result: object) -> TaskResult:
    """A task's return value, checked to be a JSON object (or None) for the ledger."""
    if result is None:
        return None
    if not isinstance(result, Mapping):
        raise PermanentTaskError(
            f"task returned {type(result).__name__}; return a dict of JSON values or None"
        )
    try:
        json.dumps(dict(result), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PermanentTaskError(f"task result is not JSON: {exc}") from None
    return result
