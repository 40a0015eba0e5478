"""The library's front door: ``conveyor.connect()`` gives a :class:`Client` that submits jobs,
reads them, waits for them and cancels them. The ``conveyor`` command line is a thin layer
over it; nothing here prints or exits.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, overload

from conveyor.client_groups import ClientGroups, Group
from conveyor.jobs import Job
from conveyor.ledger import GroupRecord, JobNotFound, JobRecord
from conveyor.settings import settings_from_env
from conveyor.storage import check_job_id
from conveyor.submission import OnSent
from conveyor.submit_plan import Item
from conveyor.waiting import FIRST_POLL_S, MAX_POLL_S, Polling, resolve, wait_for


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


class Client(ClientGroups):
    """Submits jobs to the configured queue and reads them from the ledger; job groups'
    methods come from :class:`~conveyor.client_groups.ClientGroups`, the queue, the ledger
    and :meth:`close` from :class:`~conveyor.client_base.ClientBase`.

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
        polling = Polling(timeout_s, poll_s, max_poll_s)
        wanted = list(job_ids)
        waited = self._resolve(wanted)
        if not waited:
            return []
        return wait_for(self._ledger_for_reading(wanted[0]), waited, polling)

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

    def _resolve(self, job_ids: list[str]) -> list[JobRecord | GroupRecord]:
        """The records of these ids (see :func:`~conveyor.waiting.resolve`), each id
        checked first.

        Raises:
            JobNotFound, AmbiguousJobId: an id names no job nor group, or several.
            BadInput: a string that cannot be part of a job id.
        """
        if not job_ids:
            return []
        for job_id in job_ids:
            check_job_id(job_id)
        return resolve(self._ledger_for_reading(job_ids[0]), job_ids)
