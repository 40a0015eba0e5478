"""Tasks by name: the :class:`TaskRegistry` a worker runs from, and :class:`Task`, the
function its decorator returns, which can submit jobs that run it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic

from conveyor.errors import ConfigError, UnknownTask
from conveyor.job_checks import TASK_NAME
from conveyor.jobs import Job
from conveyor.task_context import (
    MergeFunction,
    R,
    SplitFunction,
    TaskContext,
    TaskFunction,
)

if TYPE_CHECKING:
    import os

    from conveyor.client import Client


class TaskRegistry:
    """Task names to functions. A worker runs only what its registry holds."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskFunction] = {}

    def register(self, name: str, func: TaskFunction) -> None:
        """Register ``func`` as task ``name``.

        Registering the same function again (a module imported twice, once by name and once
        by path) replaces it; a different function under a taken name is a mistake.

        Raises:
            ConfigError: the name is malformed or taken by another function.
        """
        if not isinstance(name, str) or not TASK_NAME.match(name):
            raise ConfigError(
                f"bad task name {name!r}: use 1 to 128 of [A-Za-z0-9_.:-], "
                "starting with a letter or digit"
            )
        existing = self._tasks.get(name)
        if existing is not None and _qualname(existing) != _qualname(func):
            raise ConfigError(
                f"task {name!r} is registered twice: {_qualname(existing)} and {_qualname(func)}"
            )
        self._tasks[name] = func

    def unregister(self, name: str) -> None:
        """Forget task ``name`` if registered (tests, and hot reloads of a task module)."""
        self._tasks.pop(name, None)

    def task(
        self,
        name: str | None = None,
        *,
        split: SplitFunction | None = None,
        merge: MergeFunction | None = None,
    ) -> Callable[[Callable[[TaskContext], R]], Task[R]]:
        """Decorator registering a function as a task (default name: the function's, with
        ``_`` as ``-``). Returns a :class:`Task`, which calls the function when called, so
        it can still be called directly, and submits jobs that run it.

        ``split`` and ``merge`` (both or neither) let ``Client.submit(input, task=name,
        split_rows=N)`` cut one input into a group of jobs: ``split(input_path, N)``
        returns each piece's params (added over the job's params; every piece reads the
        same input), and the group's completion calls ``merge(ctx, part_paths)`` with the
        pieces' outputs, in order, to write ``ctx.write_path`` (published atomically as
        the final output) and return the group's result. ``ctx.params`` there holds the
        submitted params under ``"params"``.
        """
        if callable(name):
            raise ConfigError("use @conveyor.task('name') or @conveyor.task(), not @conveyor.task")
        if (split is None) != (merge is None):
            raise ConfigError("a task that splits needs both split= and merge=")

        def decorate(func: Callable[[TaskContext], R]) -> Task[R]:
            registered = Task(
                name or func.__name__.replace("_", "-"), func, split=split, merge=merge
            )
            self.register(registered.name, registered)
            return registered

        return decorate

    def get(self, name: str) -> TaskFunction:
        """The task registered as ``name``.

        Raises:
            UnknownTask: no imported module registered it (a permanent error for a job).
        """
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTask(
                f"unknown task {name!r} (registered: {known}); "
                "import the module that defines it with --import"
            ) from None

    def check(self, name: str) -> None:
        """Raise ``UnknownTask`` unless ``name`` is registered (a submitter's early check)."""
        self.get(name)

    def names(self) -> list[str]:
        """The registered task names, sorted."""
        return sorted(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)


class Task(Generic[R]):
    """A registered task: called like the function it wraps, and able to submit jobs that
    run it (like Dramatiq's ``actor.send``).

    >>> @conveyor.task("wordcount")
    ... def wordcount(ctx: TaskContext) -> dict[str, int]: ...
    >>> job = wordcount.submit("notes.txt")

    Attributes:
        name: the name jobs give to run it.
        func: the function.
        split, merge: how to cut an input into pieces and combine their outputs, or None
            (see :meth:`TaskRegistry.task`).
    """

    def __init__(
        self,
        name: str,
        func: Callable[[TaskContext], R],
        *,
        split: SplitFunction | None = None,
        merge: MergeFunction | None = None,
    ) -> None:
        self.name = name
        self.func = func
        self.split = split
        self.merge = merge
        functools.update_wrapper(self, func)

    def __call__(self, ctx: TaskContext) -> R:
        return self.func(ctx)

    def submit(
        self,
        input: str | os.PathLike[str] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        output: str | None = None,
        in_storage: bool = False,
        client: Client | None = None,
    ) -> Job:
        """Submit one job of this task (see ``Client.submit``) through ``client``, or
        through a client configured from the environment (``conveyor.connect()``), opened
        and closed for this call."""
        from contextlib import nullcontext

        from conveyor.client import connect

        with nullcontext(client) if client is not None else connect() as chosen:
            return chosen.submit(
                input,
                task=self.name,
                params=params,
                seed=seed,
                output=output,
                in_storage=in_storage,
            )

    def __repr__(self) -> str:
        return f"<conveyor task {self.name!r}: {_qualname(self.func)}>"


def _qualname(func: Callable[..., object]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"
