"""The process-wide default registry: the built-in tasks it starts with (csv-process, and
the split CSV's and split tasks' shard and merge tasks), and ``@task``, which registers there."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from conveyor.errors import BadInput
from conveyor.task_context import MergeFunction, R, SplitFunction, TaskContext, TaskResult
from conveyor.task_registry import Task, TaskRegistry

#: The built-in tasks of a split CSV: one shard's rows, and the group's merge.
CSV_SHARD_TASK = "csv-shard"
CSV_MERGE_TASK = "csv-merge"
#: The built-in completion of a user task's split group: runs that task's ``merge``.
TASK_MERGE_TASK = "task-merge"


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
    from conveyor import csvjob

    stats = csvjob.transform_csv(ctx.input_path, ctx.write_path, ctx.seed)
    return _as_dict(stats)


def csv_shard(ctx: TaskContext) -> dict[str, object]:
    """One shard of a split CSV (:mod:`conveyor.csvjob`): the rows of a byte range of the
    whole input, processed as ``csv-process`` would process them in the whole file, into a
    part file that the group's ``csv-merge`` concatenates. Runs on the calling thread: the
    parallelism comes from the other workers running the other shards.

    Raises:
        BadInput: no input or output, bad shard params, or a malformed row (named by the
            file's real line number).
    """
    if ctx.input_path is None or ctx.write_path is None:
        raise BadInput("task csv-shard needs the whole input CSV and an output part path")
    from conveyor import csvjob

    shard = csvjob.Shard.from_params(ctx.params)
    stats = csvjob.run_shard(ctx.input_path, ctx.write_path, ctx.seed, shard)
    return _as_dict(stats)


def csv_merge(ctx: TaskContext) -> dict[str, object]:
    """A split CSV's completion: concatenate the shards' part files, in order, into the
    final output (published atomically by the merge itself), then remove the parts and
    their directory. Safe to run twice (see :func:`conveyor.csvjob.merge_csv_parts`).

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
    from conveyor import csvjob

    paths = [storage.resolve_output(part) for part in parts]
    final = storage.resolve_output(output)
    if not final.exists():
        # Before the first publication, a part missing is a shard the group tolerated as
        # failed (the completion runs only once every shard ended): merge the others.
        # After it, parts missing are those a merge already removed (see merge_csv_parts).
        if not paths[0].exists() and any(path.exists() for path in paths[1:]):
            _write_header_part(paths[0])  # the first shard's part carried the header
        paths = [path for path in paths if path.exists()] or paths
    stats = csvjob.merge_csv_parts(paths, final, before_publish=ctx.check_lease)
    for directory in dict.fromkeys(path.parent for path in paths):
        if directory != storage.root:
            with contextlib.suppress(OSError):
                csvjob.remove_parts_dir(directory)
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
    from conveyor.atomic import atomic_output

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
    from conveyor.atomic import atomic_output
    from conveyor.csvjob import OUTPUT_HEADER
    from conveyor.statefiles import storage_error

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
