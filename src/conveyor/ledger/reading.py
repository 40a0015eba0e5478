"""The reading half of the Ledger contract: jobs by id or prefix, listings, counts,
summaries and history, each one indexed query whatever the ledger's size."""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable, Sequence

from conveyor.jobs import TERMINAL, JobState
from conveyor.ledger.checks import check_limit, check_prefix, parse_cursor
from conveyor.ledger.errors import AmbiguousJobId
from conveyor.ledger.groups import check_group_id
from conveyor.ledger.records import Failure, JobRecord, LedgerSummary, Transition
from conveyor.storage import check_job_id

#: How many recent failures a summary lists by default.
RECENT_FAILURES = 10


class LedgerReader(abc.ABC):
    """How jobs are read: the public readers check their arguments and assemble results;
    a backend implements the underscored queries (the rules: :class:`.base.Ledger`)."""

    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or with this case-insensitive unique id prefix; None if
        there is none.

        Raises:
            AmbiguousJobId: the prefix matches several jobs.
            BadInput: it could not be part of a job id.
        """
        check_job_id(job_id)
        found = self._get_many([job_id]).get(job_id)
        if found is not None:
            return found
        matches = self._find_prefix(check_prefix(job_id), 2)
        if len(matches) > 1:
            raise AmbiguousJobId(
                f"job id prefix {job_id} matches several jobs ({', '.join(matches)}, ...): "
                "give more characters"
            )
        return self._get_many(matches).get(matches[0]) if matches else None

    def get_many(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        """The records of these exact job ids that the ledger has, by id (one query)."""
        ids = list(dict.fromkeys(check_job_id(job_id) for job_id in job_ids))
        return self._get_many(ids) if ids else {}

    def counts(self, *, task: str | None = None) -> dict[JobState, int]:
        """Jobs per state (every state present), of one task if given. Constant time."""
        by_task = self.counts_by_task()
        totals = dict.fromkeys(JobState, 0)
        for name, counts in by_task.items():
            if task is None or name == task:
                for state, n in counts.items():
                    totals[state] += n
        return totals

    def open_jobs(self, job_ids: Iterable[str]) -> list[str]:
        """Which of these job ids are known and not terminal (what ``wait`` polls)."""
        records = self.get_many(job_ids)
        return [job_id for job_id, rec in records.items() if rec.state not in TERMINAL]

    def summary(
        self, now: float | None = None, *, failures: int = RECENT_FAILURES
    ) -> LedgerSummary:
        """Counts by state and task, finish rates, recent failures, queue age and request
        counts: a handful of indexed queries, whatever the ledger's size."""
        now = time.time() if now is None else now
        by_task = self.counts_by_task()
        counts = dict.fromkeys(JobState, 0)
        for per_state in by_task.values():
            for state, n in per_state.items():
                counts[state] += n
        finished = sum(n for state, n in counts.items() if state in TERMINAL)
        recent = self._finished_between(now - 60.0, now)
        first_submit, last_finish = self._span()
        span = None
        if first_submit is not None and last_finish is not None:
            span = last_finish - first_submit
        oldest = self._oldest_queued_at()
        failed = self.jobs(JobState.FAILED, limit=failures) if failures > 0 else []
        return LedgerSummary(
            generated_at=now,
            counts=counts,
            total=sum(counts.values()),
            finished_last_minute=recent,
            rate_last_minute_per_s=recent / 60.0,
            rate_overall_per_s=finished / span if finished and span and span > 0 else None,
            recent_failures=[
                Failure(r.job_id, r.updated_at, r.error, r.task, r.source) for r in failed
            ],
            oldest_queued_age_s=None if oldest is None else max(0.0, now - oldest),
            queue_requests=self.queue_requests(),
            by_task={task: c for task, c in by_task.items() if any(c.values())},
        )

    def jobs(
        self,
        state: JobState | None = None,
        *,
        task: str | None = None,
        group: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[JobRecord]:
        """Jobs (in ``state``, of ``task``, of ``group``, if given), most recently updated
        first. A group's listing includes its completion job once it is due.

        ``before`` is the :attr:`JobRecord.cursor` of the last record of the previous
        page; the next page starts after it.

        Raises:
            BadInput: ``limit`` is not 1 to 10,000, or the cursor or group id is malformed.
        """
        check_limit(limit)
        position = None if before is None else parse_cursor(before)
        if group is not None:
            check_group_id(group)
        return self._jobs(
            None if state is None else JobState(state), task, limit, position, group=group
        )

    # --- the backend's part ------------------------------------------------------------

    @abc.abstractmethod
    def _get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """Records of these exact ids."""

    @abc.abstractmethod
    def _find_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` job ids whose upper-cased form starts with ``prefix``."""

    @abc.abstractmethod
    def counts_by_task(self) -> dict[str, dict[JobState, int]]:
        """Jobs per task and state ("" for jobs with no task yet), from the maintained
        counters: constant time."""

    @abc.abstractmethod
    def _finished_between(self, start: float, end: float) -> int:
        """Jobs that finished in ``[start, end]`` (an index range)."""

    @abc.abstractmethod
    def _span(self) -> tuple[float | None, float | None]:
        """The first submit time and the last finish time (two index lookups)."""

    @abc.abstractmethod
    def _oldest_queued_at(self) -> float | None:
        """When the oldest job still queued was submitted (an index lookup)."""

    @abc.abstractmethod
    def _jobs(
        self,
        state: JobState | None,
        task: str | None,
        limit: int,
        before: tuple[float, str] | None,
        *,
        group: str | None = None,
    ) -> list[JobRecord]:
        """A page of jobs, newest update first, strictly after ``before``."""

    @abc.abstractmethod
    def history(self, job_id: str) -> list[Transition]:
        """The job's state changes, oldest first (empty for an unknown job)."""

    @abc.abstractmethod
    def transitions(
        self, since: float, until: float | None = None, *, limit: int = 10_000
    ) -> list[Transition]:
        """State changes recorded with ``since <= at < until``, oldest first, at most
        ``limit`` (the dashboard's chart reads a time window, not the whole ledger)."""

    @abc.abstractmethod
    def queue_requests(self) -> dict[str, int]:
        """Queue requests by kind, summed over every writer's latest report."""
