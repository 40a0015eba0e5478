"""The library's front door: ``conveyor.connect()`` gives a :class:`Client` that submits jobs,
reads them, waits for them and cancels them. The ``conveyor`` command line is a thin layer
over it; nothing here prints or exits.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from conveyor.errors import BadInput, ConfigError, ConveyorError
from conveyor.jobs import Job, new_job_id, new_seed
from conveyor.ledger import (
    GroupRecord,
    GroupState,
    JobNotFound,
    JobRecord,
    Ledger,
    LedgerNotFound,
    open_ledger,
)
from conveyor.queues import Queue, open_queue
from conveyor.settings import EXIT_TIMEOUT, Settings, settings_from_env
from conveyor.storage import Storage, check_job_id, check_relative_path
from conveyor.submission import Item, OnSent, StopSignals, Submission, SubmitInterrupted
from conveyor.tasks import TaskRegistry, default_registry, import_tasks

#: ``wait`` polls the ledger first after this long, then backs off by ``_POLL_GROWTH`` up
#: to ``MAX_POLL_S``: quick for short jobs, a query every few seconds for long ones.
FIRST_POLL_S = 0.05
MAX_POLL_S = 2.0
_POLL_GROWTH = 1.5
_GROUP_PAGE = 10_000
_GROUP_DONE = (GroupState.SUCCEEDED, GroupState.FAILED)
#: Open jobs a ``WaitTimeout`` message names (all of them are in ``open_jobs``).
_NAMED_OPEN = 10

__all__ = [
    "Client",
    "Group",
    "JobRecord",
    "SubmitInterrupted",
    "WaitTimeout",
    "connect",
    "open_configured_ledger",
    "open_configured_queue",
]


class WaitTimeout(ConveyorError, TimeoutError):
    """Jobs were still open when ``wait`` ran out of time."""

    exit_code = EXIT_TIMEOUT

    def __init__(self, message: str, open_jobs: Sequence[str] = ()) -> None:
        super().__init__(message)
        #: The ids of the jobs not finished yet.
        self.open_jobs: list[str] = list(open_jobs)


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


def connect(
    storage: str | os.PathLike[str] | None = None,
    queue: str | None = None,
    **settings: Any,
) -> Client:
    """A client configured exactly as the ``conveyor`` command line is.

    Every keyword is a command-line flag spelt with underscores (``queue``, ``ledger``,
    ``endpoint_url``, ``visibility_timeout_s``, ``imports``...); what is not given comes
    from the same environment variables (``CONVEYOR_STORAGE``, ``CONVEYOR_QUEUE_URL`` or
    ``SQS_QUEUE_URL``, ``CONVEYOR_LEDGER_URL``...), then the same defaults. So a script and
    a ``conveyor worker`` started in the same shell use the same queue, storage and ledger.
    Nothing is opened until it is needed. Use it as a context manager, or ``close()`` it.

    >>> with conveyor.connect() as client:
    ...     job = client.submit("notes.txt", task="wordcount")
    ...     record, = client.wait([job.job_id], timeout_s=60)

    Raises:
        ConfigError: an unknown keyword, or a value (given or from the environment) that is
            not valid.
    """
    return Client(settings_from_env(storage=storage, queue=queue, **settings))


def open_configured_queue(settings: Settings, *, create: bool = True) -> Queue:
    """Open the configured queue (the embedded SQLite one in the storage root by default).

    Args:
        settings: the configuration.
        create: create the embedded queue if it is missing; False for read-only uses,
            which must never create anything.

    Raises:
        ConfigError: the URL names no backend, or the embedded queue's storage root is
            missing (for SQLite, the queue lives inside it).
        QueueNotFound: ``create`` is False and there is no SQLite queue file at the URL.
    """
    if settings.queue_url is None and not settings.storage.is_dir():
        raise ConfigError(
            f"storage root {settings.storage} does not exist: create it, or point "
            "--storage (CONVEYOR_STORAGE) at it"
        )
    return open_queue(settings.resolved_queue_url, settings, create=create)


def open_configured_ledger(settings: Settings, *, create: bool = True) -> Ledger:
    """Open the configured ledger (the embedded SQLite one by default).

    Args:
        settings: the configuration.
        create: create the ledger if missing; False for read-only uses.

    Raises:
        ConfigError: a bad URL, or an embedded ledger on a network filesystem.
        LedgerNotFound: ``create`` is False and there is no ledger yet.
        SchemaMismatch: the ledger was written by a newer conveyor, or needs a migrate.
    """
    return open_ledger(settings.resolved_ledger_url, create=create)


class Client:
    """Submits jobs to the configured queue and reads them from the ledger.

    Safe to share between threads. The queue and the ledger are opened on first use (a
    client that only reads never creates a ledger or a queue) and closed by :meth:`close`.

    Args:
        settings: the configuration (``connect()`` builds it from keywords and the
            environment).
        registry: the tasks jobs may name (default: the process-wide registry, with the
            modules of ``settings.imports`` imported into it on the first submit).
        queue, ledger: use these, already open, instead of opening the configured ones
            (tests and tools); the caller closes them.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: TaskRegistry | None = None,
        queue: Queue | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.settings = settings
        self.storage = Storage(settings.storage)
        self._registry = registry
        self._queue = queue
        self._ledger = ledger
        self._owned: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False

    # --- submitting ------------------------------------------------------------------------

    @overload
    def submit(
        self,
        input: str | os.PathLike[str] | None = None,
        *,
        task: str = "csv-process",
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        output: str | None = None,
        in_storage: bool = False,
        split_rows: None = None,
        tolerate_failures: int | str = 0,
    ) -> Job: ...

    @overload
    def submit(
        self,
        input: str | os.PathLike[str] | None = None,
        *,
        task: str = "csv-process",
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        output: str | None = None,
        in_storage: bool = False,
        split_rows: int,
        tolerate_failures: int | str = 0,
    ) -> Group: ...

    def submit(
        self,
        input: str | os.PathLike[str] | None = None,
        *,
        task: str = "csv-process",
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        output: str | None = None,
        in_storage: bool = False,
        split_rows: int | None = None,
        tolerate_failures: int | str = 0,
    ) -> Job | Group:
        """Submit one job and return it (queued, and recorded in the ledger); or, with
        ``split_rows``, split the CSV into a group of jobs and return the :class:`Group`.

        Args:
            input: a local file (copied into the storage under ``inputs/<job_id>/``), a
                path already under the storage root (``in_storage=True``), or None for a
                job that carries only parameters.
            task: the registered task to run.
            params: the task's parameters (a JSON object).
            seed: the job's seed (default: a new random one, recorded).
            output: where the output is published, under the storage root (default:
                ``outputs/<job_id>/<input's name>``; a job without input publishes no
                file unless it is given).
            in_storage: ``input`` is already under the storage root.
            split_rows: for the ``csv-process`` task: one ``csv-shard`` job per this many
                rows, in a group whose ``csv-merge`` completion writes the one output,
                byte-identical to the unsplit job's with the same seed. For a task that
                declares ``split=`` and ``merge=`` (see :meth:`TaskRegistry.task`): one
                job per piece its ``split(input_path, split_rows)`` returns, and a
                completion running its ``merge`` into the output.
            tolerate_failures: with ``split_rows``: shards that may fail (a count or
                ``"N%"``) with the group still merging the others.

        Raises:
            UnknownTask: the task is not registered (import its module: ``imports=``).
            BadInput: a missing or unsafe input, params that are not JSON, a bad seed, or
                an output that is the input.
            QueueError, StorageError: the input could not be copied or the job sent.
        """
        if split_rows is not None:
            return self._submit_split(
                input,
                task=task,
                params=params,
                seed=seed,
                output=output,
                in_storage=in_storage,
                split_rows=split_rows,
                tolerate_failures=tolerate_failures,
            )
        item = {"input": input, "output": output}
        (job,) = self.submit_many(
            [item], task=task, params=params, seed=seed, in_storage=in_storage
        )
        return job

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
        Submission(self.storage, task=task, params=params, seed=seed, in_storage=in_storage).plan(
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
        """The split submit: the CSV on the storage once, one ``csv-shard`` job per range of
        ``split_rows`` rows, and a ``csv-merge`` completion into the output."""
        from conveyor.csvjob import split_csv
        from conveyor.tasks import CSV_MERGE_TASK, CSV_SHARD_TASK, TASK_MERGE_TASK

        user_task = None
        if task != "csv-process":
            user_task = self._tasks().get(task)
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
        group_id = new_job_id()
        if in_storage:
            planned = Submission(self.storage, task=task, in_storage=True).plan([input])
            rel = planned[0].job.input
            assert rel is not None
            copied = False
        else:
            _make_root(self.storage)
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
            if user_task is not None:
                return self._submit_task_split(
                    user_task,
                    rel,
                    final,
                    group_id=group_id,
                    params=params,
                    seed=seed,
                    split_rows=split_rows,
                    tolerate_failures=tolerate_failures,
                    source=os.fspath(input),
                    merge_task=TASK_MERGE_TASK,
                )
            shards = split_csv(self.storage.resolve_input(rel), split_rows)
            parts = [f"{final}.parts-{group_id}/{shard.index:06d}.csv" for shard in shards]
            items: list[Item] = [
                {"input": rel, "output": part, "params": shard.to_params()}
                for shard, part in zip(shards, parts, strict=True)
            ]
            return self.submit_group(
                items,
                task=CSV_SHARD_TASK,
                seed=new_seed() if seed is None else seed,
                in_storage=True,
                tolerate_failures=tolerate_failures,
                completion={
                    "job_id": f"{group_id}-merge",
                    "task": CSV_MERGE_TASK,
                    "output": None,
                    "params": {"output": final, "parts": parts},
                },
                group_id=group_id,
                source=os.fspath(input),
            )
        except BaseException:
            if copied:
                shutil.rmtree(self.storage.root / "inputs" / group_id, ignore_errors=True)
            raise

    def _submit_task_split(
        self,
        user_task: Any,
        rel: str,
        final: str,
        *,
        group_id: str,
        params: Mapping[str, Any] | None,
        seed: int | None,
        split_rows: int,
        tolerate_failures: int | str,
        source: str,
        merge_task: str,
    ) -> Group:
        """A user task's split: its ``split`` gives each piece's params, one job each over
        the same stored input, and a completion that runs its ``merge`` into ``final``."""
        pieces = user_task.split(self.storage.resolve_input(rel), split_rows)
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
        return self.submit_group(
            items,
            task=user_task.name,
            seed=new_seed() if seed is None else seed,
            in_storage=True,
            tolerate_failures=tolerate_failures,
            completion={
                "job_id": f"{group_id}-merge",
                "task": merge_task,
                "output": None,
                "params": {"task": user_task.name, "output": final, "parts": parts, "params": base},
            },
            group_id=group_id,
            source=source,
        )

    def submit_many(
        self,
        items: Iterable[Item],
        *,
        task: str = "csv-process",
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        in_storage: bool = False,
        on_sent: OnSent | None = None,
    ) -> list[Job]:
        """Submit many jobs, in batches, and return them in the order of ``items``.

        Each item is an input path, None (a job with parameters only), or a mapping with
        any of ``input``, ``params`` (merged over the shared ``params``), ``seed`` and
        ``output``. Every item is checked before anything is copied or sent. If sending
        fails part way, or SIGINT/SIGTERM arrives (it stops the submit before its next
        batch), the inputs copied for jobs not sent are removed and every job sent is in
        the ledger: the ledger never lacks a job that is in the queue, and no input is
        left without a job.

        Args:
            on_sent: called with each batch of jobs once sent (progress, printing ids).

        Raises:
            SubmitInterrupted: stopped by SIGINT/SIGTERM; ``exc.sent`` lists the jobs sent.
            UnknownTask, BadInput: see :meth:`submit` (nothing was copied or sent).
            QueueError, StorageError: copying or sending failed part way.
        """
        return self._submit_many(
            items, task=task, params=params, seed=seed, in_storage=in_storage, on_sent=on_sent
        )

    def _submit_many(
        self,
        items: Iterable[Item],
        *,
        task: str,
        params: Mapping[str, Any] | None,
        seed: int | None,
        in_storage: bool,
        on_sent: OnSent | None = None,
        group: str | None = None,
    ) -> list[Job]:
        """:meth:`submit_many`, the jobs joining ``group`` if given."""
        with StopSignals() as stop:
            registry = self._tasks()
            registry.check(task)
            submission = Submission(
                self.storage,
                task=task,
                params=params,
                seed=seed,
                in_storage=in_storage,
                group=group,
            )
            planned = submission.plan(items)
            if not planned:
                return []
            if not in_storage:
                _make_root(self.storage)
            queue = self.queue
            ledger = self._open_ledger(create=True)
            return submission.send(queue, ledger, planned, on_sent=on_sent, stop=stop)

    # --- reading ---------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        """The job's record: state, attempts, timings, error, output, result.

        ``job_id`` may be given in any case, or as any unique prefix of the id.

        Raises:
            JobNotFound: no such job. AmbiguousJobId: the prefix matches several jobs.
        """
        ledger = self._ledger_for_reading(job_id)
        record = ledger.get(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id} in the ledger")
        return record

    def wait(
        self,
        job_ids: Iterable[str],
        timeout_s: float | None = None,
        *,
        poll_s: float = FIRST_POLL_S,
        max_poll_s: float = MAX_POLL_S,
    ) -> list[JobRecord]:
        """Wait until every job is terminal (succeeded, failed or cancelled) and every
        group has finished (succeeded or failed); their jobs' records, in the order given.

        An id that names no job but a group (see :meth:`submit_group`) waits for the group
        to finish, as :meth:`wait_group` does, then stands for the records of all its jobs,
        oldest submitted first, followed by its completion job's record when the group has
        one that was started: so ``client.wait([group_id])[-1]`` is the completion job of a
        group that succeeded. Records are as they are when the group finished: a job of a
        failed group that was running then may still be open. A job named twice (itself
        and in a group) appears once, where it first comes.

        Each poll is one indexed query for the jobs still open plus one constant-time read
        per group still running, with a growing pause between polls (``poll_s`` up to
        ``max_poll_s``): never a scan of the ledger. A group's jobs are listed once, at the end.

        Raises:
            WaitTimeout: (a ``TimeoutError``) jobs or groups were still open after
                ``timeout_s``; ``exc.open_jobs`` lists them.
            JobNotFound, AmbiguousJobId: an id names no job nor group, or several.
        """
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s >= 0):
            raise BadInput(f"bad timeout {timeout_s!r}: seconds >= 0")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        wanted = list(job_ids)
        waited = self._resolve(wanted)
        if not waited:
            return []
        ledger = self._ledger_for_reading(wanted[0])
        open_jobs = [r.job_id for r in waited if isinstance(r, JobRecord) and not r.state.terminal]
        open_groups = [
            r.group_id for r in waited if isinstance(r, GroupRecord) and r.state not in _GROUP_DONE
        ]
        pause_s = poll_s
        while open_jobs or open_groups:
            left_s = None if deadline is None else deadline - time.monotonic()
            if left_s is not None and left_s <= 0:
                raise _timeout(open_jobs + open_groups, len(waited), timeout_s)
            time.sleep(pause_s if left_s is None else min(pause_s, left_s))
            pause_s = min(pause_s * _POLL_GROWTH, max_poll_s)
            if open_jobs:
                open_jobs = ledger.open_jobs(open_jobs)
            open_groups = [
                group_id for group_id in open_groups if not self._group_done(ledger, group_id)
            ]
        ids = [r.job_id for r in waited if isinstance(r, JobRecord)]
        finished = ledger.get_many(ids) if ids else {}
        missing = [job_id for job_id in ids if job_id not in finished]
        if missing:
            raise JobNotFound(f"job(s) {', '.join(missing)} left the ledger (pruned) while waited")
        records: dict[str, JobRecord] = {}
        for entry in waited:
            if isinstance(entry, JobRecord):
                records.setdefault(entry.job_id, finished[entry.job_id])
            else:
                for record in _group_jobs(ledger, entry.group_id):
                    records.setdefault(record.job_id, record)
        return list(records.values())

    @staticmethod
    def _group_done(ledger: Ledger, group_id: str) -> bool:
        """Whether the group has succeeded or failed (one constant-time read).

        Raises:
            JobNotFound: it left the ledger (pruned).
        """
        found = ledger.group(group_id)
        if found is None:
            raise JobNotFound(f"group {group_id} left the ledger (pruned) while waited")
        return found.state in _GROUP_DONE

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
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s >= 0):
            raise BadInput(f"bad timeout {timeout_s!r}: seconds >= 0")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        record = self.group(group_id)
        ledger = self._ledger_for_reading(group_id)
        pause_s = poll_s
        while record.state not in (GroupState.SUCCEEDED, GroupState.FAILED):
            left_s = None if deadline is None else deadline - time.monotonic()
            if left_s is not None and left_s <= 0:
                raise WaitTimeout(
                    f"group {record.group_id} still {record.state.value} after {timeout_s:g} s: "
                    f"{record.done} of {record.total} job(s) done",
                    [record.group_id],
                )
            time.sleep(pause_s if left_s is None else min(pause_s, left_s))
            pause_s = min(pause_s * _POLL_GROWTH, max_poll_s)
            found = ledger.group(record.group_id)
            if found is None:
                raise JobNotFound(f"group {record.group_id} left the ledger (pruned) while waited")
            record = found
        return record

    def cancel(self, job_id: str, *, reason: str | None = None) -> JobRecord:
        """Cancel a job that has not finished; return its record (state ``cancelled``).

        A queued or retrying job is never run: the worker that receives it acks it without
        running. A running job is not published: its worker removes the output it was
        writing and acks the message. Cancelling a job already cancelled changes nothing.

        Raises:
            JobNotFound: no such job. AmbiguousJobId: the prefix matches several jobs.
            JobFinished: the job already succeeded or failed.
        """
        ledger = self._ledger_for_reading(job_id)
        return ledger.cancel(job_id, reason=reason)

    # --- resources -------------------------------------------------------------------------

    @property
    def queue(self) -> Queue:
        """The configured queue, opened (created, if embedded) on first use."""
        with self._lock:
            self._check_open()
            if self._queue is None:
                self._queue = open_configured_queue(self.settings)
                self._owned.add("queue")
            return self._queue

    @property
    def ledger(self) -> Ledger:
        """The configured ledger, opened (created if missing) on first use."""
        return self._open_ledger(create=True)

    def close(self) -> None:
        """Store the queue requests of this client's submits in the ledger (``conveyor
        status`` counts them), then close the queue and the ledger it opened. Idempotent."""
        with self._lock:
            queue, ledger = self._queue, self._ledger
            owned, self._owned = self._owned, set()
            self._queue = self._ledger = None
            self._closed = True
        try:
            if queue is not None and ledger is not None and "queue" in owned:
                counts = queue.request_counts()
                if counts:
                    with contextlib.suppress(ConveyorError):
                        ledger.record_worker_stats(ledger.writer, counts)
        finally:
            if queue is not None and "queue" in owned:
                queue.close()
            if ledger is not None and "ledger" in owned:
                ledger.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(storage={str(self.settings.storage)!r})"

    # --- helpers ---------------------------------------------------------------------------

    def _tasks(self) -> TaskRegistry:
        if self._registry is None:
            import_tasks(self.settings.imports)
            self._registry = default_registry()
        return self._registry

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this conveyor client is closed: connect() again")

    def _open_ledger(self, *, create: bool) -> Ledger:
        """The ledger, opened once; read-only uses do not create it.

        Raises:
            LedgerNotFound: ``create`` is False and there is no ledger yet.
        """
        with self._lock:
            self._check_open()
            if self._ledger is None:
                self._ledger = open_configured_ledger(self.settings, create=create)
                self._owned.add("ledger")
            return self._ledger

    def _ledger_for_reading(self, job_id: str) -> Ledger:
        """The ledger, for a read or a cancel of ``job_id``.

        Raises:
            JobNotFound: there is no ledger yet (nothing was ever submitted there).
        """
        try:
            return self._open_ledger(create=False)
        except LedgerNotFound:
            raise JobNotFound(
                f"no job {job_id}: nothing submitted yet (no ledger at "
                f"{self.settings.storage if self.settings.ledger_url is None else 'the URL'})"
            ) from None

    def _resolve(self, job_ids: list[str]) -> list[JobRecord | GroupRecord]:
        """The records of these ids (exact, any case, or unique prefixes), in the order
        given, repeats dropped: a job's, or a group's for an id that names no job. One
        query for the exact ids, one lookup per other.

        Raises:
            JobNotFound, AmbiguousJobId: an id names no job nor group, or several.
            BadInput: a string that cannot be part of a job id.
        """
        if not job_ids:
            return []
        for job_id in job_ids:
            check_job_id(job_id)
        ledger = self._ledger_for_reading(job_ids[0])
        exact = ledger.get_many(job_ids)
        records: dict[tuple[str, str], JobRecord | GroupRecord] = {}
        for job_id in job_ids:
            record = exact.get(job_id)
            if record is None:
                record = ledger.get(job_id)
            if record is not None:
                records.setdefault(("job", record.job_id), record)
                continue
            group = ledger.group(job_id)
            if group is None:
                raise JobNotFound(f"no job {job_id} in the ledger (nor a group)")
            records.setdefault(("group", group.group_id), group)
        return list(records.values())


def _group_jobs(ledger: Ledger, group_id: str) -> list[JobRecord]:
    """All the group's jobs, oldest submitted first, then its completion job if started."""
    found: dict[str, JobRecord] = {}
    before: str | None = None
    while True:
        page = ledger.jobs(group=group_id, limit=_GROUP_PAGE, before=before)
        for record in page:
            found.setdefault(record.job_id, record)
        if len(page) < _GROUP_PAGE:
            break
        before = page[-1].cursor
    return sorted(
        found.values(),
        key=lambda r: (r.group_completion, r.submitted_at or 0.0, r.job_id),
    )


def _timeout(still_open: list[str], total: int, timeout_s: float | None) -> WaitTimeout:
    named = ", ".join(still_open[:_NAMED_OPEN])
    more = f" and {len(still_open) - _NAMED_OPEN} more" if len(still_open) > _NAMED_OPEN else ""
    return WaitTimeout(
        f"{len(still_open)} of {total} job(s) still open after {timeout_s:g} s: {named}{more}",
        still_open,
    )


def _make_root(storage: Storage) -> None:
    """Create the storage root before copying inputs into it.

    Raises:
        ConfigError: it cannot be created (a read-only mount, a file in the way).
    """
    try:
        storage.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the storage root {storage.root}: {exc.strerror}") from exc
