"""Job groups in SQL, shared by the SQLite and PostgreSQL backends: the group table, the
statements, and the one place where a group's fate is decided (:func:`settle_group`).

A group's counts are kept by the backend in the transaction that moves its jobs (SQLite
from the batch's before/after snapshots, PostgreSQL in the jobs table's triggers). Every
decision is then a conditional UPDATE of the group row whose WHERE holds the whole rule
(``state = 'running' AND every job done AND failures <= tolerated``), so it happens once
however many transactions race to it: on PostgreSQL the counts' UPDATE holds the group
row's lock to commit, so the last transaction to count a job sees every other's count.

Statements use ``?`` placeholders (and no ``?`` or ``%`` in literals).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from conveyor.jobs import TERMINAL, JobState
from conveyor.ledger.base import EventRow, LedgerEvent, check_event
from conveyor.ledger.groups import (
    Completion,
    GroupConflict,
    GroupRecord,
    GroupSpec,
    GroupState,
)

#: The job states, in the order of the group table's count columns.
STATES = tuple(JobState)
COUNT_COLUMNS = tuple(f"n_{state.value}" for state in STATES)
_TERMINAL = ", ".join(f"'{state.value}'" for state in sorted(TERMINAL))
_FAILURES = "(n_failed + n_cancelled)"
_DONE = "(n_succeeded + n_failed + n_cancelled)"
#: Rounds of settling in one transaction: a decision's follow-up events (cancels, the
#: completion job) are applied and settled again; the second round changes nothing.
_MAX_ROUNDS = 5

# --- the tables ------------------------------------------------------------------------------


def _groups_table(text: str, real: str, job_id: str) -> str:
    counts = ",\n        ".join(f"{column} bigint NOT NULL DEFAULT 0" for column in COUNT_COLUMNS)
    return f"""CREATE TABLE conveyor_groups (
        group_id {job_id} PRIMARY KEY NOT NULL,
        state {text} NOT NULL DEFAULT 'running',
        total bigint,
        tolerate_failures bigint NOT NULL DEFAULT 0,
        completion_job_id {text},
        completion {text},
        source {text},
        created_at {real},
        finished_at {real},
        reason {text},
        first_started_at {real},
        last_finished_at {real},
        completion_due_at {real},
        completion_sent_at {real},
        {counts})"""


# A group's row exists from its first counted job or its creation, whichever comes first:
# ``created_at`` (and ``total``) stay NULL until create_group, and nothing is decided
# before. Few indexes, none on the counts, so that PostgreSQL updates the hot row in place.
_INDEXES = [
    "CREATE INDEX conveyor_groups_created ON conveyor_groups (created_at, group_id)",
    "CREATE INDEX conveyor_groups_upper_id ON conveyor_groups (upper(group_id))",
    """CREATE INDEX conveyor_groups_due ON conveyor_groups (completion_due_at, group_id)
        WHERE state = 'completing' AND completion_sent_at IS NULL""",
    """CREATE INDEX conveyor_groups_finished ON conveyor_groups (finished_at)
        WHERE finished_at IS NOT NULL""",
    # Jobs without a group are not in it: their writes never touch it.
    """CREATE INDEX conveyor_jobs_group ON conveyor_jobs (group_id, state, updated_at, job_id)
        WHERE group_id IS NOT NULL""",
]

SQLITE_TABLES = [_groups_table("TEXT", "REAL", "TEXT")]
POSTGRES_TABLES = [_groups_table("text", "double precision", 'text COLLATE "C"')]
INDEXES = _INDEXES


def uncount_deleted(cast: str) -> str:
    """The statement a jobs delete trigger runs: the deleted job leaves its group's counts
    (``cast`` turns a boolean into 0/1: "" on SQLite, "::int" on PostgreSQL)."""
    sets = ", ".join(
        f"{column} = {column} - (old.state = '{state.value}'){cast}"
        for column, state in zip(COUNT_COLUMNS, STATES, strict=True)
    )
    return f"UPDATE conveyor_groups SET {sets} WHERE group_id = old.group_id"


def bump(values: Sequence[str]) -> str:
    """Add to a group's counts (creating its row if need be): ``values`` are the group id,
    one delta per state (:data:`STATES`' order), a start time and a finish time (or
    NULL), as placeholders or expressions."""
    columns = ", ".join(COUNT_COLUMNS)
    sets = ", ".join(f"{column} = g.{column} + excluded.{column}" for column in COUNT_COLUMNS)
    return f"""INSERT INTO conveyor_groups AS g (group_id, {columns}, first_started_at,
        last_finished_at) VALUES ({", ".join(values)})
    ON CONFLICT (group_id) DO UPDATE SET {sets},
        first_started_at = CASE WHEN g.first_started_at IS NULL
            OR excluded.first_started_at < g.first_started_at
            THEN excluded.first_started_at ELSE g.first_started_at END,
        last_finished_at = CASE WHEN g.last_finished_at IS NULL
            OR excluded.last_finished_at > g.last_finished_at
            THEN excluded.last_finished_at ELSE g.last_finished_at END"""


#: SQLite's bump, with its values as parameters.
BUMP = bump(["?"] * (len(STATES) + 3))

# --- deciding -----------------------------------------------------------------------------------

_SETTLE_READ = f"""SELECT state, total, tolerate_failures, created_at, completion_due_at,
    completion_job_id, {", ".join(COUNT_COLUMNS)} FROM conveyor_groups WHERE group_id = ?"""
# The oldest failure of the group (two index seeks), named in its reason.
_FIRST_FAILURE = f"""SELECT job_id, state, error FROM (
    {
    " UNION ALL ".join(
        f"SELECT * FROM (SELECT job_id, state, error, updated_at FROM conveyor_jobs "
        f"WHERE group_id = ? AND state = '{state}' AND completes = 0 "
        f"ORDER BY updated_at, job_id LIMIT 1) AS {state}"
        for state in ("failed", "cancelled")
    )
}) AS firsts ORDER BY updated_at, job_id LIMIT 1"""
_FAIL = f"""UPDATE conveyor_groups SET state = 'failed', finished_at = ?,
    reason = {_FAILURES} || ' of ' || total || ' jobs failed, ' || tolerate_failures
        || ' tolerated; first: ' || ?
WHERE group_id = ? AND state = 'running' AND created_at IS NOT NULL
    AND {_FAILURES} > tolerate_failures
RETURNING group_id"""
_ALL_DONE = (
    f"state = 'running' AND created_at IS NOT NULL AND {_DONE} >= total "
    f"AND {_FAILURES} <= tolerate_failures"
)
_SUCCEED = f"""UPDATE conveyor_groups SET state = 'succeeded', finished_at = ?
WHERE group_id = ? AND {_ALL_DONE} AND completion_job_id IS NULL RETURNING group_id"""
_MAKE_DUE = f"""UPDATE conveyor_groups SET state = 'completing', completion_due_at = ?
WHERE group_id = ? AND {_ALL_DONE} AND completion_job_id IS NOT NULL
RETURNING completion, completion_due_at, source"""
_OPEN_JOBS = """SELECT job_id, attempts FROM conveyor_jobs
WHERE group_id = ? AND state IN ('queued', 'retrying') AND completes = 0 ORDER BY job_id"""
_COMPLETION_JOB = "SELECT state, error, finished_at FROM conveyor_jobs WHERE job_id = ?{lock}"
_COMPLETION_SUCCEEDED = """UPDATE conveyor_groups SET state = 'succeeded', reason = NULL,
    finished_at = ?
WHERE group_id = ? AND completion_due_at IS NOT NULL AND state <> 'succeeded'
RETURNING group_id"""
_COMPLETION_FAILED = """UPDATE conveyor_groups SET state = 'failed', reason = ?, finished_at = ?
WHERE group_id = ? AND state = 'completing' RETURNING group_id"""
_COMPLETION_REOPENED = """UPDATE conveyor_groups SET state = 'completing', reason = NULL,
    finished_at = NULL
WHERE group_id = ? AND state = 'failed' AND completion_due_at IS NOT NULL RETURNING group_id"""


class Tx(Protocol):
    """One open write transaction of a backend."""

    #: Appended to a SELECT that must lock its row (" FOR UPDATE"; "" where the whole
    #: database is locked, as SQLite's writer is).
    lock: str

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement (``?`` placeholders); its rows (none for a plain write)."""

    def apply(self, rows: Sequence[EventRow]) -> set[str]:
        """Apply events by the rank rule, with their counts and history; the groups of
        the jobs they touched (a superset will do)."""


def record_settled(tx: Tx, rows: Sequence[EventRow], now: float) -> list[Completion]:
    """Apply a batch and settle the groups it touched; the completions it made due."""
    return settle_all(tx, tx.apply(rows), now)


def settle_all(tx: Tx, touched: Iterable[str], now: float) -> list[Completion]:
    """Settle these groups (in id order), apply what that entails, and settle again until
    nothing more happens; the completions made due."""
    due: list[Completion] = []
    groups = set(touched)
    for _ in range(_MAX_ROUNDS):
        if not groups:
            return due
        follow: list[EventRow] = []
        for group_id in sorted(groups):
            events, made = settle_group(tx, group_id, now)
            follow.extend(events)
            due.extend(made)
        groups = tx.apply(follow) if follow else set()
    raise AssertionError(f"groups {sorted(groups)} did not settle")


def settle_group(tx: Tx, group_id: str, now: float) -> tuple[list[EventRow], list[Completion]]:
    """Decide what the group's counts and completion job entail, once: fail it (and cancel
    its open jobs), succeed it, make its completion due, or follow its completion job.

    Returns:
        The events to apply next (cancels, the completion job as queued) and the
        completion made due, if it was.
    """
    found = tx.rows(_SETTLE_READ, (group_id,))
    if not found:
        return [], []
    state, total, tolerate, created_at, due_at, completion_id, *counts = found[0]
    if created_at is None:
        return [], []  # jobs recorded before their group: nothing to decide yet
    n = dict(zip(STATES, (int(c) for c in counts), strict=True))
    failures = n[JobState.FAILED] + n[JobState.CANCELLED]
    if state == GroupState.RUNNING:
        if failures > tolerate:
            if tx.rows(_FAIL, (now, _first_failure(tx, group_id), group_id)):
                state = GroupState.FAILED
        elif n[JobState.SUCCEEDED] + failures >= total:
            if completion_id is None:
                tx.rows(_SUCCEED, (now, group_id))
                return [], []
            made = tx.rows(_MAKE_DUE, (now, group_id))
            if made:
                envelope, made_due_at, source = made[0]
                completion = Completion.from_stored(group_id, envelope, made_due_at)
                return [_completion_event(completion, source)], [completion]
    events: list[EventRow] = []
    if state == GroupState.FAILED and n[JobState.QUEUED] + n[JobState.RETRYING] > 0:
        events.extend(_cancels(tx, group_id, now))
    if due_at is not None and completion_id is not None:
        _follow_completion(tx, group_id, str(state), completion_id)
    return events, []


def _first_failure(tx: Tx, group_id: str) -> str:
    found = tx.rows(_FIRST_FAILURE, (group_id, group_id))
    if not found:
        return "none recorded"
    job_id, state, error = found[0]
    return f"{job_id}: {error or state}"


def _cancels(tx: Tx, group_id: str, now: float) -> list[EventRow]:
    reason = f"group {group_id} failed"
    return [
        check_event(
            LedgerEvent(job_id, JobState.CANCELLED, int(attempts), at=now, error=reason), now
        )
        for job_id, attempts in tx.rows(_OPEN_JOBS, (group_id,))
    ]


def _completion_event(completion: Completion, source: str | None) -> EventRow:
    job = completion.job
    event = LedgerEvent.for_job(
        job, JobState.QUEUED, at=completion.due_at, source=source, group=completion.group_id
    )
    return replace(check_event(event, completion.due_at), completes=True)


def _follow_completion(tx: Tx, group_id: str, state: str, completion_id: str) -> None:
    """Once the completion is due, the group's state follows its completion job's: it
    succeeds with it, fails with it, and is completing again if it is redriven."""
    found = tx.rows(_COMPLETION_JOB.format(lock=tx.lock), (completion_id,))
    if not found:
        return
    job_state, error, finished_at = found[0]
    if job_state == JobState.SUCCEEDED:
        if state != GroupState.SUCCEEDED:
            tx.rows(_COMPLETION_SUCCEEDED, (finished_at, group_id))
    elif job_state in (JobState.FAILED, JobState.CANCELLED):
        if state == GroupState.COMPLETING:
            reason = f"completion {completion_id} {job_state}: {error or job_state}"
            tx.rows(_COMPLETION_FAILED, (reason, finished_at, group_id))
    elif state == GroupState.FAILED:
        tx.rows(_COMPLETION_REOPENED, (group_id,))


# --- creating, marking, pruning -------------------------------------------------------------

_CREATE = """INSERT INTO conveyor_groups AS g (group_id, state, total, tolerate_failures,
    completion_job_id, completion, source, created_at) VALUES (?, 'running', ?, ?, ?, ?, ?, ?)
ON CONFLICT (group_id) DO UPDATE SET total = excluded.total,
    tolerate_failures = excluded.tolerate_failures,
    completion_job_id = excluded.completion_job_id, completion = excluded.completion,
    source = excluded.source, created_at = excluded.created_at
WHERE g.created_at IS NULL"""
_SPEC = "SELECT total, tolerate_failures, completion_job_id FROM conveyor_groups WHERE group_id = ?"


def create_group(tx: Tx, spec: GroupSpec) -> list[Completion]:
    """Create the group (or fill in the row its early jobs made), check an existing one
    against ``spec``, and settle it.

    Raises:
        GroupConflict: it exists with other settings.
    """
    tx.rows(
        _CREATE,
        (
            spec.group_id,
            spec.total,
            spec.tolerate_failures,
            spec.completion_job_id,
            spec.completion_json,
            spec.source,
            spec.created_at,
        ),
    )
    total, tolerate, completion_id = tx.rows(_SPEC, (spec.group_id,))[0]
    wanted = (spec.total, spec.tolerate_failures, spec.completion_job_id)
    if (int(total), int(tolerate), completion_id) != wanted:
        raise GroupConflict(
            f"group {spec.group_id} exists with {total} jobs, {tolerate} tolerated failures "
            f"and completion {completion_id or 'none'}: not recreated with other settings"
        )
    return settle_all(tx, [spec.group_id], spec.created_at)


MARK_SENT = """UPDATE conveyor_groups SET completion_sent_at = ?
WHERE group_id = ? AND completion_due_at IS NOT NULL AND completion_sent_at IS NULL
RETURNING group_id"""

# A group goes once finished before the cutoff; so does the row its jobs made for a group
# never created, once they all ended before it.
_PRUNABLE = """SELECT group_id FROM conveyor_groups WHERE finished_at IS NOT NULL
    AND finished_at < ? AND state IN ('succeeded', 'failed') ORDER BY finished_at LIMIT 1"""
_PRUNABLE_UNCREATED = """SELECT group_id FROM conveyor_groups WHERE created_at IS NULL
    AND n_queued + n_running + n_retrying = 0 AND coalesce(last_finished_at, 0) < ?
    ORDER BY created_at, group_id LIMIT 1"""
_PRUNE_JOBS = """DELETE FROM conveyor_jobs WHERE job_id IN (
    SELECT job_id FROM conveyor_jobs WHERE group_id = ? LIMIT ?) RETURNING job_id"""
_PRUNE_GROUP = """DELETE FROM conveyor_groups WHERE group_id = ?
    AND NOT EXISTS (SELECT 1 FROM conveyor_jobs WHERE group_id = ?) RETURNING group_id"""


def prune_group_batch(tx: Tx, cutoff: float, limit: int) -> tuple[int, bool]:
    """Delete up to ``limit`` jobs of one prunable group, and the group once it has none;
    (jobs deleted, whether to go on)."""
    found = tx.rows(_PRUNABLE, (cutoff,)) or tx.rows(_PRUNABLE_UNCREATED, (cutoff,))
    if not found:
        return 0, False
    group_id = found[0][0]
    deleted = len(tx.rows(_PRUNE_JOBS, (group_id, limit)))
    gone = bool(tx.rows(_PRUNE_GROUP, (group_id, group_id))) if deleted < limit else False
    return deleted, bool(deleted or gone)


# --- reading ------------------------------------------------------------------------------------

_GROUP_COLUMNS = (
    "group_id, state, total, tolerate_failures, completion_job_id, reason, source, "
    "created_at, finished_at, first_started_at, last_finished_at, completion_due_at, "
    f"completion_sent_at, {', '.join(COUNT_COLUMNS)}"
)
SELECT_GROUP = (
    f"SELECT {_GROUP_COLUMNS} FROM conveyor_groups WHERE group_id = ? AND created_at IS NOT NULL"
)
FIND_GROUP_PREFIX = """SELECT group_id FROM conveyor_groups
WHERE upper(group_id) >= ? AND upper(group_id) < ? AND created_at IS NOT NULL
ORDER BY upper(group_id) LIMIT ?"""
_DUE = """SELECT group_id, completion, completion_due_at FROM conveyor_groups{hint}
WHERE state = 'completing' AND completion_sent_at IS NULL
ORDER BY completion_due_at, group_id LIMIT ?"""
#: Due completions: a walk of the partial index of those alone.
DUE = _DUE.format(hint="")
#: The same for SQLite, whose planner takes an empty partial index for a large one once
#: the database was analysed, and would scan every group instead.
SQLITE_DUE = _DUE.format(hint=" INDEXED BY conveyor_groups_due")


def groups_query(limit: int, before: tuple[float, str] | None) -> tuple[str, list[Any]]:
    """A page of created groups, newest first (a walk of the creation index)."""
    where = "created_at IS NOT NULL"
    params: list[Any] = []
    if before is not None:
        where += " AND (created_at, group_id) < (?, ?)"
        params.extend(before)
    params.append(limit)
    sql = (
        f"SELECT {_GROUP_COLUMNS} FROM conveyor_groups WHERE {where} "
        "ORDER BY created_at DESC, group_id DESC LIMIT ?"
    )
    return sql, params


def decode_group(row: Sequence[Any]) -> GroupRecord:
    """A :class:`GroupRecord` from a row of the group columns."""
    counts = {state: int(n) for state, n in zip(STATES, row[13:], strict=True)}
    return GroupRecord(
        group_id=row[0],
        state=GroupState(row[1]),
        total=int(row[2]),
        counts=counts,
        tolerate_failures=int(row[3]),
        completion_job_id=row[4],
        reason=row[5],
        source=row[6],
        created_at=float(row[7]),
        finished_at=_float(row[8]),
        first_started_at=_float(row[9]),
        last_finished_at=_float(row[10]),
        completion_due_at=_float(row[11]),
        completion_sent_at=_float(row[12]),
    )


def decode_completion(row: Sequence[Any]) -> Completion:
    """A :class:`Completion` from a ``(group_id, completion, completion_due_at)`` row."""
    group_id, envelope, due_at = row
    return Completion.from_stored(group_id, envelope, float(due_at))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
