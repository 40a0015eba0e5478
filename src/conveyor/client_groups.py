"""Job groups from the client's side: :class:`Group`, the failures a group tolerates, a split
submit (one input cut into a group's jobs and a completion that merges them), and the
:class:`ClientGroups` methods that submit, read and wait for groups."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.client_base import ClientBase, make_root
from conveyor.default_tasks import CSV_MERGE_TASK, CSV_SHARD_TASK, TASK_MERGE_TASK
from conveyor.errors import BadInput
from conveyor.job_ids import new_job_id, new_seed
from conveyor.jobs import Job
from conveyor.ledger import GroupRecord, JobNotFound
from conveyor.storage import Storage, check_job_id, check_relative_path
from conveyor.submit_plan import Item, Planner
from conveyor.waiting import FIRST_POLL_S, MAX_POLL_S, Polling, wait_for_group


@dataclass(frozen=True)
class Group:
    """A submitted job group: its id, its jobs, and its completion job's id (or None)."""

    group_id: str
    jobs: list[Job]
    completion_job_id: str | None


def tolerated_failures(tolerate: int | str, total: int) -> int:
    """How many of ``total`` jobs may fail: ``tolerate`` as a count, or ``"N%"`` of the
    total (rounded down).

    Raises:
        BadInput: not a count >= 0 nor a percentage from 0 to 100.
    """
    if isinstance(tolerate, int) and not isinstance(tolerate, bool):
        if tolerate < 0:
            raise BadInput(f"bad tolerated failures {tolerate}: a count >= 0 or N%")
        return tolerate
    text = str(tolerate).strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not (math.isfinite(percent) and 0 <= percent <= 100):
                raise ValueError(text)
            return math.floor(total * percent / 100 + 1e-9)
        count = int(text)
        if count < 0:
            raise ValueError(text)
        return count
    except ValueError:
        raise BadInput(
            f"bad tolerated failures {text!r}: a count >= 0 or a percentage (10%)"
        ) from None


@dataclass(frozen=True)
class Split:
    """One input split into a group: a job per piece, each writing a part file, and the
    completion job that merges the parts, in order, into the final output."""

    task: str
    items: list[Item]
    merge_task: str
    merge_params: dict[str, Any]

    def completion(self, group_id: str) -> dict[str, Any]:
        """The group's completion job (see ``Client.submit_group``)."""
        return {
            "job_id": f"{group_id}-merge",
            "task": self.merge_task,
            "output": None,
            "params": self.merge_params,
        }


def check_split(
    user_task: object,
    task: str,
    params: Mapping[str, Any] | None,
    input: object,
    split_rows: object,
) -> None:
    """Refuse a split submit that cannot work: a task that does not split (``user_task`` is
    the task registered as ``task``, or None for ``csv-process``), no input, bad rows.

    Raises:
        BadInput: what is wrong.
    """
    if user_task is not None:
        if getattr(user_task, "split", None) is None:
            raise BadInput(
                f"split_rows splits csv-process jobs and tasks that declare split= and "
                f"merge=, not {task!r}"
            )
    elif params:
        raise BadInput("task csv-process takes no params")
    if input is None:
        raise BadInput("split_rows needs an input CSV file")
    if isinstance(split_rows, bool) or not isinstance(split_rows, int) or split_rows < 1:
        raise BadInput(f"bad split_rows {split_rows!r}: a number of rows >= 1")


def csv_split(storage: Storage, rel: str, final: str, group_id: str, split_rows: int) -> Split:
    """A stored CSV as ``csv-shard`` jobs of ``split_rows`` rows each (byte ranges on line
    starts) and a ``csv-merge`` completion into ``final``."""
    from conveyor.csvjob import split_csv  # numpy loads only for a split

    shards = split_csv(storage.resolve_input(rel), split_rows)
    parts = [f"{final}.parts-{group_id}/{shard.index:06d}.csv" for shard in shards]
    items: list[Item] = [
        {"input": rel, "output": part, "params": shard.to_params()}
        for shard, part in zip(shards, parts, strict=True)
    ]
    return Split(CSV_SHARD_TASK, items, CSV_MERGE_TASK, {"output": final, "parts": parts})


def task_split(
    storage: Storage,
    user_task: Any,
    rel: str,
    final: str,
    *,
    group_id: str,
    params: Mapping[str, Any] | None,
    split_rows: int,
) -> Split:
    """A user task's split: its ``split`` gives each piece's params, one job each over the
    same stored input, and a ``task-merge`` completion that runs its ``merge`` into
    ``final``.

    Raises:
        BadInput: ``split`` returned no pieces, or something else than a list of dicts.
    """
    pieces = user_task.split(storage.resolve_input(rel), split_rows)
    if not isinstance(pieces, list) or not pieces:
        raise BadInput(f"task {user_task.name!r}: split returned no pieces")
    if not all(isinstance(piece, Mapping) for piece in pieces):
        raise BadInput(f"task {user_task.name!r}: split must return a list of dicts")
    suffix = Path(final).suffix
    parts = [f"{final}.parts-{group_id}/{index:06d}{suffix}" for index in range(len(pieces))]
    base = dict(params or {})
    items: list[Item] = [
        {"input": rel, "output": part, "params": {**base, **piece}}
        for piece, part in zip(pieces, parts, strict=True)
    ]
    merge_params = {"task": user_task.name, "output": final, "parts": parts, "params": base}
    return Split(user_task.name, items, TASK_MERGE_TASK, merge_params)


class ClientGroups(ClientBase):
    """Job groups, for :class:`~conveyor.client.Client`."""

    def submit_group(
        self,
        items: Iterable[Item],
        *,
        task: str = "csv-process",
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        in_storage: bool = False,
        tolerate_failures: int | str = 0,
        completion: Mapping[str, Any] | None = None,
        group_id: str | None = None,
        source: str | None = None,
    ) -> Group:
        """Submit jobs as one group (see :meth:`submit_many` for ``items``): the group is
        created in the ledger first, then its jobs are sent and recorded in it.

        Args:
            tolerate_failures: jobs that may fail or be cancelled with the group still
                succeeding (a count, or ``"N%"`` of the jobs). Past it the group fails, its
                queued jobs are cancelled and its completion never runs.
            completion: the job to run once, after every job ended with no more failures
                than tolerated: ``task`` (required), ``input``, ``output``, ``params``,
                ``seed``; its id is ``<group_id>-done`` unless ``job_id`` is given.
            group_id: the group's id (default: a new one).
            source: the name ``status`` shows for the group.

        Raises:
            UnknownTask, BadInput, QueueError, StorageError: see :meth:`submit_many`.
        """
        items = list(items)
        group_id = check_job_id(group_id) if group_id is not None else new_job_id()
        registry = self._tasks()
        registry.check(task)
        done: dict[str, Any] | None = None
        if completion is not None:
            done = {"job_id": f"{group_id}-done", **completion}
            registry.check(str(done.get("task")))
        tolerated = tolerated_failures(tolerate_failures, len(items))
        Planner(self.storage, task=task, params=params, seed=seed, in_storage=in_storage).plan(
            items
        )  # every item checked before the group exists
        ledger = self._open_ledger(create=True)
        due = ledger.create_group(
            group_id, total=len(items), tolerate_failures=tolerated, completion=done, source=source
        )
        if due:
            from conveyor.completions import send_completions

            send_completions(self.queue, ledger, self.storage, due)
        jobs = self._submit_many(
            items, task=task, params=params, seed=seed, in_storage=in_storage, group=group_id
        )
        return Group(group_id, jobs, None if done is None else str(done["job_id"]))

    def _submit_split(
        self,
        input: str | os.PathLike[str] | None,
        *,
        task: str,
        params: Mapping[str, Any] | None,
        seed: int | None,
        output: str | None,
        in_storage: bool,
        split_rows: int,
        tolerate_failures: int | str,
    ) -> Group:
        """The split submit: the input on the storage once, one job per piece (``csv-shard``
        row ranges, or what the task's ``split`` returns), and a completion that merges
        their parts into the output."""
        user_task = self._tasks().get(task) if task != "csv-process" else None
        check_split(user_task, task, params, input, split_rows)
        assert input is not None
        group_id = new_job_id()
        if in_storage:
            planned = Planner(self.storage, task=task, in_storage=True).plan([input])
            rel = planned[0].job.input
            assert rel is not None
            copied = False
        else:
            make_root(self.storage)
            rel = self.storage.ingest(Path(input), group_id)
            copied = True
        try:
            final = (
                check_relative_path(os.fspath(output))
                if output is not None
                else self.storage.default_output(group_id, rel)
            )
            if final == rel:
                raise BadInput(f"output {final} is the input: choose another output path")
            if user_task is None:
                split = csv_split(self.storage, rel, final, group_id, split_rows)
            else:
                split = task_split(
                    self.storage,
                    user_task,
                    rel,
                    final,
                    group_id=group_id,
                    params=params,
                    split_rows=split_rows,
                )
            return self.submit_group(
                split.items,
                task=split.task,
                seed=new_seed() if seed is None else seed,
                in_storage=True,
                tolerate_failures=tolerate_failures,
                completion=split.completion(group_id),
                group_id=group_id,
                source=os.fspath(input),
            )
        except BaseException:
            if copied:
                shutil.rmtree(self.storage.root / "inputs" / group_id, ignore_errors=True)
            raise

    def group(self, group_id: str) -> GroupRecord:
        """The group's record: state, counts, throughput, time left, reason if failed.

        Raises:
            JobNotFound: no such group (or no ledger yet).
        """
        ledger = self._ledger_for_reading(group_id)
        record = ledger.group(group_id)
        if record is None:
            raise JobNotFound(f"no group {group_id} in the ledger")
        return record

    def wait_group(
        self,
        group_id: str,
        timeout_s: float | None = None,
        *,
        poll_s: float = FIRST_POLL_S,
        max_poll_s: float = MAX_POLL_S,
    ) -> GroupRecord:
        """Wait until the group has succeeded (its completion too) or failed; its record.

        Raises:
            WaitTimeout: still running after ``timeout_s``.
            JobNotFound: no such group.
        """
        polling = Polling(timeout_s, poll_s, max_poll_s)
        record = self.group(group_id)
        return wait_for_group(self._ledger_for_reading(group_id), record, polling)
