"""What the SQL backends share above their connections: every reader, as the statements of
:mod:`conveyor.ledger.schema` run through the backend's ``_query``; the writes that
settle groups, over the backend's ``_transaction``; and the row decoding."""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from conveyor.jobs import JobState
from conveyor.ledger import group_sql, schema
from conveyor.ledger.base import EventRow, JobRecord, Ledger, LedgerEvent, Transition, check_event
from conveyor.ledger.group_sql import Tx
from conveyor.ledger.groups import Completion, GroupRecord, GroupSpec

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
        sql = schema.PRUNE_JOBS.format(lock=self._PRUNE_LOCK)

        def delete(tx: Tx) -> int:
            groups = [group for (group,) in tx.rows(sql, (cutoff, limit))]
            for group in {group for group in groups if group is not None}:
                tx.rows(group_sql.PRUNE_ORPHAN_COUNTS, (group, group, group))
            return len(groups)

        return self._transaction(delete)

    def _prune_group_batch(self, cutoff: float, limit: int) -> tuple[int, bool]:
        return self._transaction(lambda tx: group_sql.prune_group_batch(tx, cutoff, limit))

    # --- reading ------------------------------------------------------------------------------

    def _get_group(self, group_id: str) -> GroupRecord | None:
        rows = self._query(group_sql.SELECT_GROUP, (group_id,))
        return self._with_counts(rows)[0] if rows else None

    def _find_group_prefix(self, prefix: str, limit: int) -> list[str]:
        low, high = schema.prefix_bounds(prefix)
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
        return [group_sql.decode_group(row, sums.get(row[0])) for row in rows]

    def _due_completions(self, limit: int) -> list[Completion]:
        rows = self._query(self._DUE_SQL, (limit,))
        return [group_sql.decode_completion(row) for row in rows]

    def _find_prefix(self, prefix: str, limit: int) -> list[str]:
        low, high = schema.prefix_bounds(prefix)
        return [str(row[0]) for row in self._query(schema.FIND_PREFIX, (low, high, limit))]

    def counts_by_task(self) -> dict[str, dict[JobState, int]]:
        return decode_counts(self._query(schema.COUNTS))

    def _finished_between(self, start: float, end: float) -> int:
        return int(self._query(schema.FINISHED_BETWEEN, (start, end))[0][0])

    def _span(self) -> tuple[float | None, float | None]:
        first, last = self._query(schema.SPAN)[0]
        return _float(first), _float(last)

    def _oldest_queued_at(self) -> float | None:
        return _float(self._query(schema.OLDEST_QUEUED)[0][0])

    def _jobs(
        self,
        state: JobState | None,
        task: str | None,
        limit: int,
        before: tuple[float, str] | None,
        *,
        group: str | None = None,
    ) -> list[JobRecord]:
        sql, params = schema.jobs_query(state, task, limit, before, group)
        return [decode_record(row) for row in self._query(sql, params)]

    def history(self, job_id: str) -> list[Transition]:
        return [decode_transition(row) for row in self._query(schema.HISTORY, (job_id,))]

    def transitions(
        self, since: float, until: float | None = None, *, limit: int = 10_000
    ) -> list[Transition]:
        params = (since, limit) if until is None else (since, until, limit)
        rows = self._query(schema.transitions_query(until), params)
        return [decode_transition(row) for row in rows]

    def queue_requests(self) -> dict[str, int]:
        return {kind: int(n) for kind, n in self._query(schema.QUEUE_REQUESTS)}


# --- rows to records -----------------------------------------------------------------------


def decode_record(row: Sequence[Any]) -> JobRecord:
    """A :class:`JobRecord` from a row of the record columns."""
    result = row[14]
    return JobRecord(
        job_id=row[0],
        state=JobState(row[1]),
        attempts=row[2],
        updated_at=row[3],
        task=row[4],
        input=row[5],
        output=row[6],
        seed=row[7],
        worker=row[8],
        source=row[9],
        submitted_at=row[10],
        started_at=row[11],
        finished_at=row[12],
        error=row[13],
        result=None if result is None else _decode_result(result),
        redrives=row[15],
        group=row[16],
        group_completion=bool(row[17]),
    )


def _decode_result(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def decode_transition(row: Sequence[Any]) -> Transition:
    """A :class:`Transition` from a row of the transition columns."""
    job_id, state, attempt, at, worker, error = row
    return Transition(job_id, JobState(state), attempt, at, worker, error)


def decode_counts(rows: Sequence[Sequence[Any]]) -> dict[str, dict[JobState, int]]:
    """Counts by task and state (every state present; tasks with no jobs left out) from
    ``(task, state, n)`` rows."""
    out: dict[str, dict[JobState, int]] = {}
    for task, state, n in rows:
        out.setdefault(task, dict.fromkeys(JobState, 0))[JobState(state)] += int(n)
    return {task: counts for task, counts in out.items() if any(counts.values())}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
