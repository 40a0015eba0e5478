"""The jobs' statements, the same on both databases: the forward-only UPSERT (the rank rule,
once), the redrive, the prune, and every reader's SQL.

Statements use ``?`` placeholders; the PostgreSQL backend turns them into ``%s``.
"""

# The SQL is built from constants (column lists, placeholders), never from input.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.jobs import TERMINAL, JobState
from conveyor.ledger.checks import EventRow

_TERMINAL = ", ".join(f"'{state.value}'" for state in sorted(TERMINAL))
#: States whose event's error the job keeps (a reason to show); others clear it.
_ERROR_STATES = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.RETRYING})

# --- writing ----------------------------------------------------------------------------

# One event, applied by the rank rule in the database. The VALUES row is the job as if this
# were its first event; on conflict it merges: the larger rank wins the state and what goes
# with it, fields the job lacks are filled from any event, the earliest queued time is the
# submit time, and the start is the winning run's.
_WIN = "excluded.rank > j.rank"


def _fill(column: str) -> str:
    """The winner's value if it carries one; else the job's; else this event's."""
    return (
        f"{column} = CASE WHEN {_WIN} THEN coalesce(excluded.{column}, j.{column}) "
        f"ELSE coalesce(j.{column}, excluded.{column}) END"
    )


def _winner(column: str) -> str:
    return f"{column} = CASE WHEN {_WIN} THEN excluded.{column} ELSE j.{column} END"


UPSERT = f"""
INSERT INTO conveyor_jobs AS j (job_id, state, rank, attempts, task, input, output, seed,
    worker, source, submitted_at, started_at, finished_at, updated_at, error, result,
    group_id, completes)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    {_winner("state")}, {_winner("rank")},
    attempts = CASE WHEN excluded.attempts > j.attempts THEN excluded.attempts
        ELSE j.attempts END,
    {_fill("task")}, {_fill("input")}, {_fill("output")}, {_fill("seed")},
    {_fill("worker")}, {_fill("source")},
    submitted_at = CASE WHEN j.submitted_at IS NULL OR excluded.submitted_at < j.submitted_at
        THEN excluded.submitted_at ELSE j.submitted_at END,
    started_at = CASE WHEN excluded.started_at IS NOT NULL AND ({_WIN}
            OR (j.started_at IS NULL AND excluded.attempts >= j.attempts))
        THEN excluded.started_at ELSE j.started_at END,
    {_winner("finished_at")}, {_winner("updated_at")}, {_winner("error")}, {_winner("result")},
    group_id = coalesce(j.group_id, excluded.group_id),
    completes = CASE WHEN excluded.completes > j.completes THEN excluded.completes
        ELSE j.completes END
"""

REDRIVE = """
UPDATE conveyor_jobs SET state = 'queued', rank = 0, attempts = 0, redrives = redrives + 1,
    error = NULL, result = NULL, started_at = NULL, finished_at = NULL, updated_at = ?,
    worker = ?
WHERE job_id = ? AND state = 'failed'
"""


def event_params(row: EventRow) -> tuple[Any, ...]:
    """The :data:`UPSERT` parameters of one event: the job as if it were its first."""
    state, at = row.state, row.at
    return (
        row.job_id,
        state.value,
        row.rank,
        row.attempt,
        row.task,
        row.input,
        row.output,
        row.seed,
        row.worker,
        row.source,
        at if state is JobState.QUEUED else None,
        at if state is JobState.RUNNING else None,
        at if state in TERMINAL else None,
        at,
        row.error if state in _ERROR_STATES else None,
        row.result_json if state is JobState.SUCCEEDED else None,
        row.group,
        1 if row.completes else 0,
    )


def redrive_params(job_id: str, at: float, worker: str | None = None) -> tuple[Any, ...]:
    """The :data:`REDRIVE` parameters."""
    return (at, worker, job_id)


def runs(rows: Sequence[EventRow]) -> list[tuple[bool, list[EventRow]]]:
    """Split a batch into runs of ordinary events and of redrives, keeping its order
    (ordinary ones go to the database in one ``executemany`` per run)."""
    out: list[tuple[bool, list[EventRow]]] = []
    for row in rows:
        if out and out[-1][0] == row.redrive:
            out[-1][1].append(row)
        else:
            out.append((row.redrive, [row]))
    return out


INSERT_TRANSITION = (
    "INSERT INTO conveyor_transitions (job_id, state, attempt, at, worker, error) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
DELETE_WORKER_STATS = "DELETE FROM conveyor_worker_stats WHERE writer = ?"
INSERT_WORKER_STAT = (
    "INSERT INTO conveyor_worker_stats (writer, kind, n, updated_at) VALUES (?, ?, ?, ?)"
)
PRUNE_WRITERS = "DELETE FROM conveyor_worker_stats WHERE updated_at < ?"
#: A terminal job's update time is its finish time; the delete trigger takes its history
#: and its share of the counts. A group's jobs go with their group (group_sql); those of a
#: group never created go as plain jobs.
PRUNE_JOBS = f"""
DELETE FROM conveyor_jobs WHERE job_id IN (
    SELECT job_id FROM conveyor_jobs WHERE state IN ({_TERMINAL}) AND updated_at < ?
        AND (group_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM conveyor_groups g WHERE g.group_id = conveyor_jobs.group_id))
    LIMIT ?{{lock}})
RETURNING group_id
"""

# --- reading ----------------------------------------------------------------------------

_RECORD_COLUMNS = (
    "job_id, state, attempts, updated_at, task, input, output, seed, worker, source, "
    "submitted_at, started_at, finished_at, error, result, redrives, group_id, completes"
)
_TRANSITION_COLUMNS = "job_id, state, attempt, at, worker, error"

#: Records by id: the backend appends ``IN (?, ...)`` or ``= ANY(%s)``.
SELECT_JOBS = f"SELECT {_RECORD_COLUMNS} FROM conveyor_jobs WHERE job_id "
FIND_PREFIX = """
SELECT job_id FROM conveyor_jobs WHERE upper(job_id) >= ? AND upper(job_id) < ?
ORDER BY upper(job_id) LIMIT ?
"""
COUNTS = "SELECT task, state, sum(n) FROM conveyor_counts GROUP BY task, state"
FINISHED_BETWEEN = (
    f"SELECT count(*) FROM conveyor_jobs WHERE state IN ({_TERMINAL}) "
    "AND updated_at >= ? AND updated_at <= ?"
)
# The first submit is the oldest history row (a job's first transition is its submit, but
# for a job whose worker wrote first); the last finish is the newest of three index ends.
SPAN = (
    "SELECT (SELECT min(at) FROM conveyor_transitions), (SELECT max(last) FROM ("
    + " UNION ALL ".join(
        f"SELECT (SELECT max(updated_at) FROM conveyor_jobs WHERE state = '{state.value}') AS last"
        for state in sorted(TERMINAL)
    )
    + ") AS ends)"
)
# A queued job's update time is when it was queued (submitted, or reopened by a redrive).
OLDEST_QUEUED = "SELECT min(updated_at) FROM conveyor_jobs WHERE state = 'queued'"
HISTORY = f"SELECT {_TRANSITION_COLUMNS} FROM conveyor_transitions WHERE job_id = ? ORDER BY id"
QUEUE_REQUESTS = "SELECT kind, sum(n) FROM conveyor_worker_stats GROUP BY kind"


def transitions_query(until: float | None) -> str:
    """State changes in a time window, oldest first (an index range on ``at``)."""
    upper = "" if until is None else " AND at < ?"
    return (
        f"SELECT {_TRANSITION_COLUMNS} FROM conveyor_transitions "
        f"WHERE at >= ?{upper} ORDER BY at, id LIMIT ?"
    )


def jobs_query(
    state: JobState | None,
    task: str | None,
    limit: int,
    before: tuple[float, str] | None,
    group: str | None = None,
) -> tuple[str, list[Any]]:
    """A page of jobs, newest update first: a walk of the (task,|group,) state index, or
    without a state, a merge of one such walk per state (each at most ``limit`` rows)."""
    if state is not None:
        return _state_page(state, task, limit, before, group)
    parts: list[str] = []
    params: list[Any] = []
    for each in JobState:
        sql, args = _state_page(each, task, limit, before, group)
        parts.append(f"SELECT * FROM ({sql}) AS {each.value}")
        params.extend(args)
    params.append(limit)
    return " UNION ALL ".join(parts) + f" {_NEWEST_FIRST} LIMIT ?", params


_NEWEST_FIRST = "ORDER BY updated_at DESC, job_id DESC"


def _state_page(
    state: JobState,
    task: str | None,
    limit: int,
    before: tuple[float, str] | None,
    group: str | None,
) -> tuple[str, list[Any]]:
    where = ["state = ?"]
    params: list[Any] = [state.value]
    if group is not None:
        where.append("group_id = ?")
        params.append(group)
    if task is not None:
        where.append("task = ?")
        params.append(task)
    if before is not None:
        where.append("(updated_at, job_id) < (?, ?)")
        params.extend(before)
    params.append(limit)
    sql = (
        f"SELECT {_RECORD_COLUMNS} FROM conveyor_jobs WHERE {' AND '.join(where)} "
        f"{_NEWEST_FIRST} LIMIT ?"
    )
    return sql, params


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """``[prefix, next)``: the range of upper-cased ids that start with ``prefix``."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)
