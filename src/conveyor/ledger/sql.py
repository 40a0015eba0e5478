"""What the SQL backends share above their connections: every reader, as the statements of
:mod:`.job_sql` and :mod:`.group_sql` run through the backend's ``_query``, and every write
but the schema's, over the backend's ``_transaction``."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from conveyor.jobs import JobState
from conveyor.ledger import group_sql, job_sql
from conveyor.ledger.base import Ledger
from conveyor.ledger.checks import EventRow, check_event
from conveyor.ledger.decode import (
    as_float,
    decode_completion,
    decode_counts,
    decode_group,
    decode_record,
    decode_transition,
)
from conveyor.ledger.group_sql import Tx
from conveyor.ledger.groups import Completion, GroupRecord, GroupSpec
from conveyor.ledger.records import JobRecord, LedgerEvent, Transition

T = TypeVar("T")

_FAILED_JOB = "SELECT state FROM conveyor_jobs WHERE job_id = ?{lock}"


class SQLLedger(Ledger):
    """A ledger in a SQL database: the readers over one abstract query method, and the
    group-settling writes over one abstract transaction."""

    #: The statement listing due completions (SQLite names its index).
    _DUE_SQL = group_sql.DUE
    #: How a prune locks the jobs it picks ("" where the whole database is locked).
    _PRUNE_LOCK = ""

    @abc.abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read-only statement (``?`` placeholders)."""

    @abc.abstractmethod
    def _transaction(self, work: Callable[[Tx], T]) -> T:
        """Run ``work`` in one write transaction (retried whole on a lock conflict, so it
        must not act outside the database)."""

    # --- writing ------------------------------------------------------------------------------

    def _record_rows(self, rows: Sequence[EventRow], now: float) -> list[Completion]:
        return self._transaction(lambda tx: group_sql.record_settled(tx, rows, now))

    def _redrive(self, job_id: str, at: float) -> bool:
        row = check_event(LedgerEvent(job_id, JobState.QUEUED, at=at, redrive=True), at)

        def reopen(tx: Tx) -> bool:
            found = tx.rows(_FAILED_JOB.format(lock=tx.lock), (job_id,))
            if not found or found[0][0] != JobState.FAILED:
                return False
            group_sql.record_settled(tx, [row], at)
            return True

        return self._transaction(reopen)

    def _create_group(self, spec: GroupSpec) -> list[Completion]:
        return self._transaction(lambda tx: group_sql.create_group(tx, spec))

    def _mark_completion_sent(self, group_id: str, at: float) -> bool:
        return self._transaction(lambda tx: bool(tx.rows(group_sql.MARK_SENT, (at, group_id))))

    def _prune_batch(self, cutoff: float, limit: int) -> int:
        sql = job_sql.PRUNE_JOBS.format(lock=self._PRUNE_LOCK)

        def delete(tx: Tx) -> int:
            groups = [group for (group,) in tx.rows(sql, (cutoff, limit))]
            for group in {group for group in groups if group is not None}:
                tx.rows(group_sql.PRUNE_ORPHAN_COUNTS, (group, group, group))
            return len(groups)

        return self._transaction(delete)

    def _record_worker_stats(self, writer: str, counts: dict[str, int], at: float) -> None:
        rows = [(writer, kind, n, at) for kind, n in counts.items()]

        def replace(tx: Tx) -> None:
            tx.rows(job_sql.DELETE_WORKER_STATS, (writer,))
            tx.many(job_sql.INSERT_WORKER_STAT, rows)

        self._transaction(replace)

    def _prune_writers(self, cutoff: float) -> None:
        self._transaction(lambda tx: tx.rows(job_sql.PRUNE_WRITERS, (cutoff,)))

    def _prune_group_batch(self, cutoff: float, limit: int) -> tuple[int, bool]:
        return self._transaction(lambda tx: group_sql.prune_group_batch(tx, cutoff, limit))

    # --- reading ------------------------------------------------------------------------------

    def _get_group(self, group_id: str) -> GroupRecord | None:
        rows = self._query(group_sql.SELECT_GROUP, (group_id,))
        return self._with_counts(rows)[0] if rows else None

    def _find_group_prefix(self, prefix: str, limit: int) -> list[str]:
        low, high = job_sql.prefix_bounds(prefix)
        rows = self._query(group_sql.FIND_GROUP_PREFIX, (low, high, limit))
        return [str(row[0]) for row in rows]

    def _groups(self, limit: int, before: tuple[float, str] | None) -> list[GroupRecord]:
        sql, params = group_sql.groups_query(limit, before)
        return self._with_counts(self._query(sql, params))

    def _with_counts(self, rows: Sequence[Any]) -> list[GroupRecord]:
        """Records of these group rows, with their summed counts (one more query)."""
        if not rows:
            return []
        ids = [row[0] for row in rows]
        sums = {row[0]: row[1:] for row in self._query(group_sql.counts_query(len(ids)), ids)}
        return [decode_group(row, sums.get(row[0])) for row in rows]

    def _due_completions(self, limit: int) -> list[Completion]:
        rows = self._query(self._DUE_SQL, (limit,))
        return [decode_completion(row) for row in rows]

    def _find_prefix(self, prefix: str, limit: int) -> list[str]:
        low, high = job_sql.prefix_bounds(prefix)
        return [str(row[0]) for row in self._query(job_sql.FIND_PREFIX, (low, high, limit))]

    def counts_by_task(self) -> dict[str, dict[JobState, int]]:
        return decode_counts(self._query(job_sql.COUNTS))

    def _finished_between(self, start: float, end: float) -> int:
        return int(self._query(job_sql.FINISHED_BETWEEN, (start, end))[0][0])

    def _span(self) -> tuple[float | None, float | None]:
        first, last = self._query(job_sql.SPAN)[0]
        return as_float(first), as_float(last)

    def _oldest_queued_at(self) -> float | None:
        return as_float(self._query(job_sql.OLDEST_QUEUED)[0][0])

    def _jobs(
        self,
        state: JobState | None,
        task: str | None,
        limit: int,
        before: tuple[float, str] | None,
        *,
        group: str | None = None,
    ) -> list[JobRecord]:
        sql, params = job_sql.jobs_query(state, task, limit, before, group)
        return [decode_record(row) for row in self._query(sql, params)]

    def history(self, job_id: str) -> list[Transition]:
        return [decode_transition(row) for row in self._query(job_sql.HISTORY, (job_id,))]

    def transitions(
        self, since: float, until: float | None = None, *, limit: int = 10_000
    ) -> list[Transition]:
        params = (since, limit) if until is None else (since, until, limit)
        rows = self._query(job_sql.transitions_query(until), params)
        return [decode_transition(row) for row in rows]

    def queue_requests(self) -> dict[str, int]:
        return {kind: int(n) for kind, n in self._query(job_sql.QUEUE_REQUESTS)}
