"""The task registry: named functions a worker can run, the `@task` decorator (which
returns a :class:`Task` that can submit itself), and `TaskContext`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from conveyor.errors import BadInput, ConfigError, UnknownTask
from conveyor.jobs import Job

if TYPE_CHECKING:
    import os

    from conveyor.client import Client
    from conveyor.storage import Storage

#: What a task returns: a small JSON object stored in the ledger as the job's result, or None.
TaskResult = Mapping[str, object] | None
#: A task: called with the job's context, writes ``ctx.write_path``, returns its result.
TaskFunction = Callable[["TaskContext"], TaskResult]
F = TypeVar("F", bound=TaskFunction)
#: What a given task returns.
R = TypeVar("R", bound=TaskResult)

#: The built-in tasks of a split CSV: one shard's rows, and the group's merge.
CSV_SHARD_TASK = "csv-shard"
CSV_MERGE_TASK = "csv-merge"
#: The built-in completion of a user task's split group: runs that task's ``merge``.
TASK_MERGE_TASK = "task-merge"
#: A task's split: ``split(input_path, rows)`` -> the params of each piece's job, in order.
SplitFunction = Callable[[Path, int], list[dict[str, Any]]]
#: A task's merge: ``merge(ctx, part_paths)`` writes ``ctx.write_path`` from the pieces'
#: outputs (in order; a tolerated failed piece's is left out) and returns the result.
MergeFunction = Callable[["TaskContext", list[Path]], TaskResult]

_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")


def _lease_always_held() -> None:
    """The lease check outside a worker (tests, ``conveyor run``): there is no lease to lose."""


@dataclass(frozen=True)
class TaskContext:
    """What a task gets: its job, safe resolved paths, and a way to check its lease.

    Attributes:
        job: the message envelope.
        input_path: the job's input, resolved under the storage root (None if it has none).
        output_path: where the output will be published, or None when the job has no
            output (``job.output`` is null): the worker then publishes nothing.
        write_path: a temporary file beside ``output_path``: the task writes there and the
            worker publishes it atomically once the task returns (the task never renames).
            None exactly when ``output_path`` is: such a job's task writes no file.
        storage: the worker's storage root, for the few tasks that read or write other
            files of it than their input and output (a group's merge); None outside a worker.
    """

    job: Job
    input_path: Path | None
    output_path: Path | None
    write_path: Path | None
    lease_check: Callable[[], None] = field(default=_lease_always_held, repr=False)
    storage: Storage | None = field(default=None, repr=False)

    @property
    def params(self) -> Mapping[str, Any]:
        """The job's parameters (a JSON object)."""
        return self.job.params

    @property
    def seed(self) -> int:
        """The job's seed: derive all randomness from it, so a rerun gives the same output."""
        return self.job.seed

    def check_lease(self) -> None:
        """Raise ``LeaseLost`` if the worker lost this job's lease; long tasks call it.

        Once the lease is lost another worker may run the job, so carrying on is wasted work.
        """
        self.lease_check()


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
        if not isinstance(name, str) or not _TASK_NAME.match(name):
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


@functools.cache
def default_registry() -> TaskRegistry:
    """The process-wide registry, created on first use with the built-in tasks in it.

    It is process-wide on purpose: the worker imports the user's module (``--import
    mymodule``), whose ``@conveyor.task`` decorators run at import time and cannot be handed
    a registry object, so they register here and the worker reads from here.
    """
    registry = TaskRegistry()
    registry.register("csv-process", csv_process)
    registry.register(CSV_SHARD_TASK, csv_shard)
    registry.register(CSV_MERGE_TASK, csv_merge)
    registry.register(TASK_MERGE_TASK, task_merge)
    return registry


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


def task(
    name: str | None = None,
    *,
    split: SplitFunction | None = None,
    merge: MergeFunction | None = None,
) -> Callable[[Callable[[TaskContext], R]], Task[R]]:
    """Register a function as a task in the default registry; returns a :class:`Task`
    (``split`` and ``merge``: see :meth:`TaskRegistry.task`).

    >>> @task("reverse-lines")
    ... def reverse_lines(ctx: TaskContext) -> dict[str, int]:
    ...     rows = ctx.input_path.read_text().splitlines()
    ...     ctx.write_path.write_text("\\n".join(reversed(rows)))
    ...     return {"rows": len(rows)}
    >>> job = reverse_lines.submit("notes.txt")
    """
    return default_registry().task(name, split=split, merge=merge)


def import_tasks(specs: Iterable[str]) -> list[str]:
    """Import the modules that define tasks, by module name or by ``.py`` file path.

    ``mypackage.tasks`` is imported as usual (from ``sys.path``); ``path/to/file.py`` is
    loaded from that file. Importing a module twice is harmless.

    Returns:
        The names of the imported modules.

    Raises:
        ConfigError: a module is missing or fails while importing; the message names it.
    """
    imported: list[str] = []
    for spec in specs:
        try:
            if spec.endswith(".py") or "/" in spec:
                imported.append(_import_file(Path(spec)))
            else:
                importlib.import_module(spec)
                imported.append(spec)
        except ConfigError:
            raise
        except ModuleNotFoundError as exc:
            raise ConfigError(f"cannot import task module {spec!r}: {exc}") from exc
        except Exception as exc:
            raise ConfigError(
                f"task module {spec!r} failed while importing: {type(exc).__name__}: {exc}"
            ) from exc
    return imported


def _import_file(path: Path) -> str:
    resolved = path.resolve()
    if not resolved.is_file():
        raise ConfigError(f"cannot import task module {str(path)!r}: no such file")
    # A name unique to the file, so two files called tasks.py do not clash.
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    name = f"conveyor_tasks_{re.sub(r'[^0-9A-Za-z_]', '_', resolved.stem)}_{digest}"
    if name in sys.modules:
        return name
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"cannot import task module {str(path)!r}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return name


def _qualname(func: Callable[..., object]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


# --- built-in tasks ------------------------------------------------------------------------------


def csv_process(ctx: TaskContext) -> dict[str, object]:
    """The tutorial's job: ``ID,Value`` in, ``ID,Value,ProcessedValue`` out, seeded.

    Raises:
        BadInput: the job has no input or no output, has params (this task takes none), or
            the CSV is malformed.
    """
    if ctx.input_path is None:
        raise BadInput("task csv-process needs an input CSV file")
    if ctx.write_path is None:
        raise BadInput("task csv-process needs an output path (the job's output is null)")
    if ctx.params:
        raise BadInput(f"task csv-process takes no params; got {', '.join(sorted(ctx.params))}")
    # Imported here: polars loads only in processes that run this task.
    from conveyor import csvjob as csvtask

    stats = csvtask.transform_csv(ctx.input_path, ctx.write_path, ctx.seed)
    return _as_dict(stats)


def csv_shard(ctx: TaskContext) -> dict[str, object]:
    """One shard of a split CSV (:mod:`conveyor.csvsplit`): the rows of a byte range of the
    whole input, processed as ``csv-process`` would process them in the whole file, into a
    part file that the group's ``csv-merge`` concatenates. Runs on the calling thread: the
    parallelism comes from the other workers running the other shards.

    Raises:
        BadInput: no input or output, bad shard params, or a malformed row (named by the
            file's real line number).
    """
    if ctx.input_path is None or ctx.write_path is None:
        raise BadInput("task csv-shard needs the whole input CSV and an output part path")
    from conveyor import csvjob as csvsplit

    shard = csvsplit.Shard.from_params(ctx.params)
    stats = csvsplit.run_shard(ctx.input_path, ctx.write_path, ctx.seed, shard)
    return _as_dict(stats)


def csv_merge(ctx: TaskContext) -> dict[str, object]:
    """A split CSV's completion: concatenate the shards' part files, in order, into the
    final output (published atomically by the merge itself), then remove the parts and
    their directory. Safe to run twice (see :func:`conveyor.csvsplit.merge_csv_parts`).

    Params: ``output`` (the final output, under the storage root) and ``parts`` (the part
    files, in order). The job itself has no output: the worker publishes nothing.

    Raises:
        BadInput: params missing, or run outside a worker (no storage to resolve them in).
    """
    storage = ctx.storage
    output, parts = ctx.params.get("output"), ctx.params.get("parts")
    if storage is None:
        raise BadInput("task csv-merge runs only in a worker (it needs the storage root)")
    if not isinstance(output, str) or not isinstance(parts, list) or not parts:
        raise BadInput("task csv-merge needs params output (a path) and parts (a list)")
    if not all(isinstance(part, str) for part in parts):
        raise BadInput("task csv-merge: every part must be a path")
    from conveyor import csvjob as csvsplit

    paths = [storage.resolve_output(part) for part in parts]
    final = storage.resolve_output(output)
    if not final.exists():
        # Before the first publication, a part missing is a shard the group tolerated as
        # failed (the completion runs only once every shard ended): merge the others.
        # After it, parts missing are those a merge already removed (see merge_csv_parts).
        if not paths[0].exists() and any(path.exists() for path in paths[1:]):
            _write_header_part(paths[0])  # the first shard's part carried the header
        paths = [path for path in paths if path.exists()] or paths
    stats = csvsplit.merge_csv_parts(paths, final, before_publish=ctx.check_lease)
    for directory in dict.fromkeys(path.parent for path in paths):
        if directory != storage.root:
            with contextlib.suppress(OSError):
                csvsplit.remove_parts_dir(directory)
    return _as_dict(stats)


def task_merge(ctx: TaskContext) -> TaskResult:
    """A user task's split group's completion: its ``merge`` over the pieces' outputs,
    published atomically as the final output, then the parts removed. A rerun after the
    parts were removed finds the output published and does nothing.

    Params: ``task`` (the split task), ``output`` (the final output), ``parts`` (the
    pieces' outputs, in order) and ``params`` (the submitted params).

    Raises:
        BadInput: params missing, run outside a worker, or a task without a merge.
        UnknownTask: the split task is not imported in this worker.
    """
    storage = ctx.storage
    name, output, parts = (ctx.params.get(key) for key in ("task", "output", "parts"))
    if storage is None:
        raise BadInput(f"task {TASK_MERGE_TASK} runs only in a worker (it needs the storage root)")
    if not isinstance(name, str) or not isinstance(output, str) or not isinstance(parts, list):
        raise BadInput(f"task {TASK_MERGE_TASK} needs params task, output and parts")
    split_task = default_registry().get(name)
    merge = getattr(split_task, "merge", None)
    if merge is None:
        raise BadInput(f"task {name!r} declares no merge")
    from conveyor.storage import atomic_output

    paths = [storage.resolve_output(str(part)) for part in parts]
    final = storage.resolve_output(output)
    present = [path for path in paths if path.exists()]
    if not present and final.exists():
        return {"merged": 0, "already_published": True}
    result: TaskResult = None
    with atomic_output(final, before_publish=ctx.check_lease) as temp:
        result = merge(dataclasses.replace(ctx, output_path=final, write_path=temp), present)
    for directory in dict.fromkeys(path.parent for path in paths):
        if directory != storage.root:
            shutil.rmtree(directory, ignore_errors=True)
    return result


def _write_header_part(path: Path) -> None:
    """Stand in for a failed first shard's part: the output header alone, published
    atomically (a merge killed here finds it whole or absent)."""
    from conveyor.csvjob import OUTPUT_HEADER
    from conveyor.storage import atomic_output, storage_error

    with atomic_output(path) as temp:
        try:
            temp.write_bytes(OUTPUT_HEADER)
        except OSError as exc:
            raise storage_error(exc, f"cannot write {path}") from exc


def _as_dict(stats: object) -> dict[str, object]:
    """A task's stats object as a JSON-ready dict (dataclass, NamedTuple or mapping)."""
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    as_dict = getattr(stats, "_asdict", None)
    if callable(as_dict):
        return dict(as_dict())
    if isinstance(stats, Mapping):
        return dict(stats)
    return {"value": stats}
