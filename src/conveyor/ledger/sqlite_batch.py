"""One batch of events on SQLite: the upserts decide every job's row, and the counts, the
groups' counts and the history follow from snapshots of the batch's jobs before and after."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from conveyor.jobs import JobState
from conveyor.ledger import job_sql
from conveyor.ledger.checks import EventRow
from conveyor.ledger.group_sql import Touch
from conveyor.ledger.schema import BUMP, STATES

#: Ids per ``IN (...)`` list (SQLite caps the number of parameters of one statement).
_IDS_PER_QUERY = 500


def in_lists(ids: Sequence[str]) -> Iterator[tuple[str, Sequence[str]]]:
    """The ids in chunks of at most ``_IDS_PER_QUERY``, each with its ``?,?,...`` marks."""
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY]
        yield ",".join("?" * len(chunk)), chunk


_SNAPSHOT = (
    "SELECT job_id, state, task, rank, attempts, worker, group_id, completes "
    "FROM conveyor_jobs WHERE job_id IN ({marks})"
)
_TIMES = "SELECT job_id, started_at, finished_at FROM conveyor_jobs WHERE job_id IN ({marks})"
_BUMP = (
    "INSERT INTO conveyor_counts (task, state, n) VALUES (?, ?, ?) "
    "ON CONFLICT (task, state) DO UPDATE SET n = n + excluded.n"
)


class _Seen(NamedTuple):
    """What a batch needs to know of a job: its state, what its history rows carry, and
    the group it counts in."""

    state: str
    task: str | None
    rank: int
    attempts: int
    worker: str | None
    group: str | None = None
    completes: int = 0

    @property
    def counted_in(self) -> str | None:
        """The group whose counts include this job (not a group's completion job)."""
        return None if self.completes else self.group


class SQLiteTx:
    """A write transaction on the connection (the database is locked: no row locks)."""

    lock = ""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, params)

    def apply(self, rows: Sequence[EventRow]) -> dict[str, Touch]:
        return _apply(self._conn, rows)

    def lock_group(self, group_id: str) -> None:
        """Nothing to do: the transaction holds the database's write lock."""


def _snapshot(conn: sqlite3.Connection, job_ids: Sequence[str]) -> dict[str, _Seen]:
    seen: dict[str, _Seen] = {}
    for marks, chunk in in_lists(job_ids):
        for job_id, *fields in conn.execute(_SNAPSHOT.format(marks=marks), chunk):
            seen[job_id] = _Seen(*fields)
    return seen


def _apply(conn: sqlite3.Connection, rows: Sequence[EventRow]) -> dict[str, Touch]:
    """Apply a batch inside a write transaction; return the groups whose jobs it changed.

    The upserts decide every job's row. Triggers would do the rest but make each upsert
    three times slower here, so the counts (and the groups' counts) are adjusted from the
    batch's jobs as read before and after (exact: the transaction holds the write lock),
    and the history rows follow the same rank rule over the batch (:func:`_history`).
    """
    job_ids = list(dict.fromkeys(row.job_id for row in rows))
    params = [
        job_sql.redrive_params(row.job_id, row.at, row.worker)
        if row.redrive
        else job_sql.event_params(row)
        for row in rows
    ]
    before = _snapshot(conn, job_ids)
    moves = _history(before, rows, params)
    start = 0
    for redrive, group in job_sql.runs(rows):
        end = start + len(group)
        conn.executemany(job_sql.REDRIVE if redrive else job_sql.UPSERT, params[start:end])
        start = end
    after = _snapshot(conn, job_ids)
    delta: Counter[tuple[str, str]] = Counter()
    for seen, sign in ((before, -1), (after, 1)):
        for job in seen.values():
            delta[(job.task or "", job.state)] += sign
    conn.executemany(_BUMP, [(task, state, n) for (task, state), n in delta.items() if n])
    conn.executemany(job_sql.INSERT_TRANSITION, moves)
    return _count_groups(conn, before, after)


def _count_groups(
    conn: sqlite3.Connection, before: dict[str, _Seen], after: dict[str, _Seen]
) -> dict[str, Touch]:
    """Move the batch's grouped jobs in their groups' counts; the groups touched (any
    change may decide: the database is locked, deciding costs no wait).

    A job without a group costs one comparison here. A job joining its group (or entering
    a state in it) passes its start and finish times to the group's first start and last
    finish.
    """
    touched: dict[str, Touch] = {}
    delta: dict[str, list[int]] = {}
    entering: dict[str, str] = {}
    for job_id, new in after.items():
        old = before.get(job_id)
        if new.group is None and (old is None or old.group is None):
            continue
        if old is not None and (old.state, old.group, old.completes) == (
            new.state,
            new.group,
            new.completes,
        ):
            continue
        if new.group is not None:
            touch = Touch.COMPLETION if new.completes else Touch.COUNTED | Touch.DECISIVE
            touched[new.group] = touched.get(new.group, Touch(0)) | touch
        for seen, sign in ((old, -1), (new, 1)):
            if seen is not None and seen.counted_in is not None:
                counts = delta.setdefault(seen.counted_in, [0] * len(STATES))
                counts[_STATE_INDEX[seen.state]] += sign
        if new.counted_in is not None:
            entering[job_id] = new.counted_in
    if not delta:
        return touched
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for job_id, (started, finished) in _times(conn, list(entering)).items():
        group = entering[job_id]
        if started is not None and (group not in first or started < first[group]):
            first[group] = started
        if finished is not None and (group not in last or finished > last[group]):
            last[group] = finished
    for group, counts in sorted(delta.items()):
        conn.execute(BUMP, (group, *counts, first.get(group), last.get(group)))
    return touched


_STATE_INDEX = {state.value: n for n, state in enumerate(STATES)}


def _times(conn: sqlite3.Connection, job_ids: Sequence[str]) -> dict[str, tuple[Any, Any]]:
    """(started_at, finished_at) of these jobs."""
    found: dict[str, tuple[Any, Any]] = {}
    for marks, chunk in in_lists(job_ids):
        for job_id, started, finished in conn.execute(_TIMES.format(marks=marks), chunk):
            found[job_id] = (started, finished)
    return found


def _history(
    before: dict[str, _Seen], rows: Sequence[EventRow], params: Sequence[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """The history rows of a batch: one per event that moved its job (a larger rank, or a
    redrive of a failed job), as the upsert's rules leave the job after it."""
    jobs = dict(before)
    moves: list[tuple[Any, ...]] = []
    for row, param in zip(rows, params, strict=True):
        old = jobs.get(row.job_id)
        if row.redrive:
            if old is None or old.state != JobState.FAILED.value:
                continue
            new, error = _Seen(JobState.QUEUED.value, old.task, 0, 0, row.worker), None
        elif old is None:
            new = _Seen(row.state.value, row.task, row.rank, row.attempt, row.worker)
            error = param[14]
        else:
            win = row.rank > old.rank
            new = _Seen(
                row.state.value if win else old.state,
                _coalesce(row.task, old.task) if win else _coalesce(old.task, row.task),
                max(row.rank, old.rank),
                max(row.attempt, old.attempts),
                _coalesce(row.worker, old.worker) if win else _coalesce(old.worker, row.worker),
            )
            jobs[row.job_id] = new
            if not win:
                continue
            error = param[14]
        jobs[row.job_id] = new
        moves.append((row.job_id, new.state, new.attempts, row.at, new.worker, error))
    return moves


def _coalesce(first: str | None, second: str | None) -> str | None:
    return second if first is None else first
