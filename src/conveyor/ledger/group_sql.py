"""Job groups in SQL, shared by the SQLite and PostgreSQL backends: the statements, and the
one place where a group's fate is decided (:func:`settle_group`). The group tables are in
:mod:`conveyor.ledger.schema`; statements use ``?`` placeholders (no ``?`` or ``%`` in literals)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from conveyor.jobs import JobState
from conveyor.ledger.checks import EventRow, check_event
from conveyor.ledger.decode import counts_of
from conveyor.ledger.groups import Completion, GroupConflict, GroupSpec, GroupState
from conveyor.ledger.records import LedgerEvent
from conveyor.ledger.schema import SUMS

#: Rounds of settling in one transaction: a decision's follow-up events (cancels, the
#: completion job) are applied and settled again; the second round changes nothing.
_MAX_ROUNDS = 5


# A group's counts are kept by the backend in the transaction that moves its jobs (SQLite
# from the batch's before/after snapshots, PostgreSQL in the jobs table's triggers), in
# counter rows sharded by writer like the per-task counts, so that writers finishing jobs
# of one group never wait on one another to count. Deciding needs exact totals, so a
# transaction that may decide (it ended a job of the group, or added jobs to it) first
# takes the group's lock (a transaction-scoped advisory lock on PostgreSQL, held to
# commit; the database lock on SQLite), then reads the summed counts: the last such
# transaction sees every other's count. Locks are taken in group id order, after every
# job row of the batch.


class Touch(enum.IntFlag):
    """What a batch did to a group, and so what settling it needs."""

    #: A counted job of the group changed (or may have).
    COUNTED = 1
    #: The change may decide the group: a job of it ended, or jobs joined it.
    DECISIVE = 2
    #: Its completion job changed.
    COMPLETION = 4


# --- deciding -----------------------------------------------------------------------------------

_STATE = """SELECT state, total, tolerate_failures, completion_job_id, completion_due_at
FROM conveyor_groups WHERE group_id = ?"""
_COUNTS = f"SELECT {SUMS} FROM conveyor_group_counts WHERE group_id = ?"
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
_FAIL = """UPDATE conveyor_groups SET state = 'failed', finished_at = ?, reason = ?
WHERE group_id = ? AND state = 'running' RETURNING group_id"""
_SUCCEED = """UPDATE conveyor_groups SET state = 'succeeded', finished_at = ?
WHERE group_id = ? AND state = 'running' AND completion_job_id IS NULL RETURNING group_id"""
_MAKE_DUE = """UPDATE conveyor_groups SET state = 'completing', completion_due_at = ?
WHERE group_id = ? AND state = 'running' AND completion_job_id IS NOT NULL
RETURNING completion, completion_due_at, source"""
_OPEN_JOBS = """SELECT job_id, attempts, state FROM conveyor_jobs
WHERE group_id = ? AND state IN ({states}) AND completes = 0 ORDER BY job_id{lock}"""
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

    #: Appended to a SELECT whose rows must stay as read until commit (" FOR UPDATE"; ""
    #: where the whole database is locked, as SQLite's writer is).
    lock: str

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement (``?`` placeholders); its rows (none for a plain write)."""

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per parameter row (``executemany``)."""

    def apply(self, rows: Sequence[EventRow]) -> dict[str, Touch]:
        """Apply events by the rank rule, with their counts and history; what they did to
        the groups of their jobs (more than they did will do)."""

    def lock_group(self, group_id: str) -> None:
        """Hold the group's lock until commit (deciding transactions serialise on it)."""


def record_settled(tx: Tx, rows: Sequence[EventRow], now: float) -> list[Completion]:
    """Apply a batch and settle the groups it touched; the completions it made due."""
    return settle_all(tx, tx.apply(rows), now)


def settle_all(tx: Tx, touched: Mapping[str, Touch], now: float) -> list[Completion]:
    """Settle these groups (in id order), apply what that entails, and settle again until
    nothing more happens; the completions made due."""
    due: list[Completion] = []
    groups = dict(touched)
    for _ in range(_MAX_ROUNDS):
        if not groups:
            return due
        follow: list[EventRow] = []
        for group_id in sorted(groups):
            events, made = settle_group(tx, group_id, groups[group_id], now)
            follow.extend(events)
            due.extend(made)
        groups = tx.apply(follow) if follow else {}
    raise AssertionError(f"groups {sorted(groups)} did not settle")


def settle_group(
    tx: Tx, group_id: str, touch: Touch, now: float
) -> tuple[list[EventRow], list[Completion]]:
    """Decide what the group's counts and completion job entail, once: fail it (and cancel
    its open jobs), succeed it, make its completion due, or follow its completion job.

    Returns:
        The events to apply next (cancels, the completion job as queued) and the
        completion made due, if it was.
    """
    if touch & Touch.DECISIVE:
        tx.lock_group(group_id)
    found = tx.rows(_STATE, (group_id,))
    if not found:
        return [], []  # jobs recorded before their group: counted, nothing to decide yet
    state, total, tolerate, completion_id, due_at = found[0]
    if state == GroupState.RUNNING and touch & Touch.DECISIVE:
        return _decide(
            tx, group_id, now, total=int(total), tolerate=int(tolerate), completion_id=completion_id
        )
    events: list[EventRow] = []
    if state == GroupState.FAILED and touch & Touch.COUNTED:
        events = _cancels(tx, group_id, now, ("queued", "retrying"))
    if due_at is not None and completion_id is not None and touch & Touch.COMPLETION:
        _follow_completion(tx, group_id, str(state), completion_id)
    return events, []


def _decide(
    tx: Tx, group_id: str, now: float, *, total: int, tolerate: int, completion_id: str | None
) -> tuple[list[EventRow], list[Completion]]:
    """Under the group's lock, from its exact counts: fail it, succeed it, or make its
    completion due (each a conditional UPDATE, so it happens once)."""
    n = counts_of(tx.rows(_COUNTS, (group_id,))[0])
    failures = n[JobState.FAILED] + n[JobState.CANCELLED]
    if failures > tolerate:
        reason = (
            f"{failures} of {total} jobs failed, {tolerate} tolerated; "
            f"first: {_first_failure(tx, group_id)}"
        )
        if not tx.rows(_FAIL, (now, reason, group_id)):
            return [], []
        # Running jobs too are read, and locked, so that one going back to retrying in a
        # transaction not yet committed is seen, and cancelled, here.
        return _cancels(tx, group_id, now, ("queued", "running", "retrying")), []
    if n[JobState.SUCCEEDED] + failures < total:
        return [], []
    if completion_id is None:
        tx.rows(_SUCCEED, (now, group_id))
        return [], []
    made = tx.rows(_MAKE_DUE, (now, group_id))
    if not made:
        return [], []
    envelope, due_at, source = made[0]
    completion = Completion.from_stored(group_id, envelope, due_at)
    return [_completion_event(completion, source)], [completion]


def _first_failure(tx: Tx, group_id: str) -> str:
    found = tx.rows(_FIRST_FAILURE, (group_id, group_id))
    if not found:
        return "none recorded"
    job_id, state, error = found[0]
    return f"{job_id}: {error or state}"


def _cancels(tx: Tx, group_id: str, now: float, states: Sequence[str]) -> list[EventRow]:
    """Cancel events for the group's queued and retrying jobs."""
    sql = _OPEN_JOBS.format(states=", ".join(f"'{s}'" for s in states), lock=tx.lock)
    reason = f"group {group_id} failed"
    return [
        check_event(
            LedgerEvent(job_id, JobState.CANCELLED, int(attempts), at=now, error=reason), now
        )
        for job_id, attempts, state in tx.rows(sql, (group_id,))
        if state in (JobState.QUEUED, JobState.RETRYING)
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

_CREATE = """INSERT INTO conveyor_groups (group_id, state, total, tolerate_failures,
    completion_job_id, completion, source, created_at) VALUES (?, 'running', ?, ?, ?, ?, ?, ?)
ON CONFLICT (group_id) DO NOTHING"""
_SPEC = "SELECT total, tolerate_failures, completion_job_id FROM conveyor_groups WHERE group_id = ?"


def create_group(tx: Tx, spec: GroupSpec) -> list[Completion]:
    """Create the group (jobs recorded before it are counted already), check an existing
    one against ``spec``, and settle it.

    Raises:
        GroupConflict: it exists with other settings.
    """
    tx.lock_group(spec.group_id)
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
    return settle_all(tx, {spec.group_id: Touch.COUNTED | Touch.DECISIVE}, spec.created_at)


MARK_SENT = """UPDATE conveyor_groups SET completion_sent_at = ?
WHERE group_id = ? AND completion_due_at IS NOT NULL AND completion_sent_at IS NULL
RETURNING group_id"""

_PRUNABLE = """SELECT group_id FROM conveyor_groups WHERE finished_at IS NOT NULL
    AND finished_at < ? AND state IN ('succeeded', 'failed') ORDER BY finished_at LIMIT 1"""
_PRUNE_JOBS = """DELETE FROM conveyor_jobs WHERE job_id IN (
    SELECT job_id FROM conveyor_jobs WHERE group_id = ? LIMIT ?) RETURNING job_id"""
_PRUNE_COUNTS = "DELETE FROM conveyor_group_counts WHERE group_id = ?"
_PRUNE_GROUP = """DELETE FROM conveyor_groups WHERE group_id = ?
    AND NOT EXISTS (SELECT 1 FROM conveyor_jobs WHERE group_id = ?) RETURNING group_id"""
#: The counter rows of a group never created, once its last job is gone (its jobs are
#: pruned as plain jobs).
PRUNE_ORPHAN_COUNTS = """DELETE FROM conveyor_group_counts WHERE group_id = ?
    AND NOT EXISTS (SELECT 1 FROM conveyor_groups WHERE group_id = ?)
    AND NOT EXISTS (SELECT 1 FROM conveyor_jobs WHERE group_id = ?)"""


def prune_group_batch(tx: Tx, cutoff: float, limit: int) -> tuple[int, bool]:
    """Delete up to ``limit`` jobs of one group finished before ``cutoff``, and the group
    once it has none; (jobs deleted, whether to go on)."""
    found = tx.rows(_PRUNABLE, (cutoff,))
    if not found:
        return 0, False
    group_id = found[0][0]
    deleted = len(tx.rows(_PRUNE_JOBS, (group_id, limit)))
    if deleted < limit and tx.rows(_PRUNE_GROUP, (group_id, group_id)):
        tx.rows(_PRUNE_COUNTS, (group_id,))
        return deleted, True
    return deleted, deleted > 0


# --- reading ------------------------------------------------------------------------------------

_GROUP_COLUMNS = (
    "group_id, state, total, tolerate_failures, completion_job_id, reason, source, "
    "created_at, finished_at, completion_due_at, completion_sent_at"
)
SELECT_GROUP = f"SELECT {_GROUP_COLUMNS} FROM conveyor_groups WHERE group_id = ?"
FIND_GROUP_PREFIX = """SELECT group_id FROM conveyor_groups
WHERE upper(group_id) >= ? AND upper(group_id) < ? ORDER BY upper(group_id) LIMIT ?"""
_DUE = """SELECT group_id, completion, completion_due_at FROM conveyor_groups{hint}
WHERE state = 'completing' AND completion_sent_at IS NULL
ORDER BY completion_due_at, group_id LIMIT ?"""
#: Due completions: a walk of the partial index of those alone.
DUE = _DUE.format(hint="")
#: The same for SQLite, whose planner takes an empty partial index for a large one once
#: the database was analysed, and would scan every group instead.
SQLITE_DUE = _DUE.format(hint=" INDEXED BY conveyor_groups_due")


def counts_query(count: int) -> str:
    """The summed counts of ``count`` groups (an index range per group)."""
    marks = ", ".join("?" * count)
    return (
        f"SELECT group_id, {SUMS} FROM conveyor_group_counts "
        f"WHERE group_id IN ({marks}) GROUP BY group_id"
    )


def groups_query(limit: int, before: tuple[float, str] | None) -> tuple[str, list[Any]]:
    """A page of groups, newest first (a walk of the creation index)."""
    where = ""
    params: list[Any] = []
    if before is not None:
        where = " WHERE (created_at, group_id) < (?, ?)"
        params.extend(before)
    params.append(limit)
    sql = (
        f"SELECT {_GROUP_COLUMNS} FROM conveyor_groups{where} "
        "ORDER BY created_at DESC, group_id DESC LIMIT ?"
    )
    return sql, params
