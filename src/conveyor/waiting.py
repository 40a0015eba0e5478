"""Waiting for jobs and groups to finish: ledger polls with a growing pause up to an optional
deadline (:class:`Polling`), and :class:`WaitTimeout` when it runs out."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from conveyor.errors import BadInput, ConveyorError
from conveyor.ledger import GroupRecord, GroupState, JobNotFound, JobRecord, Ledger
from conveyor.settings import EXIT_TIMEOUT

#: ``wait`` polls the ledger first after this long, then backs off by ``_POLL_GROWTH`` up
#: to ``MAX_POLL_S``: quick for short jobs, a query every few seconds for long ones.
FIRST_POLL_S = 0.05
MAX_POLL_S = 2.0
_POLL_GROWTH = 1.5
_GROUP_PAGE = 10_000
_GROUP_DONE = (GroupState.SUCCEEDED, GroupState.FAILED)
#: Open jobs a ``WaitTimeout`` message names (all of them are in ``open_jobs``).
_NAMED_OPEN = 10


class WaitTimeout(ConveyorError, TimeoutError):
    """Jobs were still open when ``wait`` ran out of time."""

    exit_code = EXIT_TIMEOUT

    def __init__(self, message: str, open_jobs: Sequence[str] = ()) -> None:
        super().__init__(message)
        #: The ids of the jobs not finished yet.
        self.open_jobs: list[str] = list(open_jobs)


class Polling:
    """The pauses between polls: ``poll_s`` first, growing by half each time up to
    ``max_poll_s``, and never past the deadline ``timeout_s`` from now (None: no deadline).

    Raises:
        BadInput: ``timeout_s`` is not a number of seconds >= 0.
    """

    def __init__(self, timeout_s: float | None, poll_s: float, max_poll_s: float) -> None:
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s >= 0):
            raise BadInput(f"bad timeout {timeout_s!r}: seconds >= 0")
        self.timeout_s = timeout_s
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._pause_s = poll_s
        self._max_poll_s = max_poll_s

    def pause(self) -> bool:
        """Sleep until the next poll; False, at once, if the deadline has passed."""
        left_s = None if self._deadline is None else self._deadline - time.monotonic()
        if left_s is not None and left_s <= 0:
            return False
        time.sleep(self._pause_s if left_s is None else min(self._pause_s, left_s))
        self._pause_s = min(self._pause_s * _POLL_GROWTH, self._max_poll_s)
        return True


def resolve(ledger: Ledger, job_ids: list[str]) -> list[JobRecord | GroupRecord]:
    """The records of these ids (exact, any case, or unique prefixes), in the order given,
    repeats dropped: a job's, or a group's for an id that names no job. One query for the
    exact ids, one lookup per other.

    Raises:
        JobNotFound, AmbiguousJobId: an id names no job nor group, or several.
    """
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


def wait_for(
    ledger: Ledger, waited: list[JobRecord | GroupRecord], polling: Polling
) -> list[JobRecord]:
    """Poll until every job of ``waited`` is terminal and every group finished; the jobs'
    records, a group's jobs in its place (see ``Client.wait``).

    Raises:
        WaitTimeout: jobs or groups were still open at the deadline.
        JobNotFound: a job or group left the ledger (pruned) while waited.
    """
    open_jobs = [r.job_id for r in waited if isinstance(r, JobRecord) and not r.state.terminal]
    open_groups = [
        r.group_id for r in waited if isinstance(r, GroupRecord) and r.state not in _GROUP_DONE
    ]
    while open_jobs or open_groups:
        if not polling.pause():
            raise _timeout(open_jobs + open_groups, len(waited), polling.timeout_s)
        if open_jobs:
            open_jobs = ledger.open_jobs(open_jobs)
        open_groups = [group_id for group_id in open_groups if not _group_done(ledger, group_id)]
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


def wait_for_group(ledger: Ledger, record: GroupRecord, polling: Polling) -> GroupRecord:
    """Poll until the group has succeeded or failed; its record then.

    Raises:
        WaitTimeout: still running at the deadline.
        JobNotFound: it left the ledger (pruned) while waited.
    """
    while record.state not in _GROUP_DONE:
        if not polling.pause():
            raise WaitTimeout(
                f"group {record.group_id} still {record.state.value} after "
                f"{polling.timeout_s:g} s: {record.done} of {record.total} job(s) done",
                [record.group_id],
            )
        record = _read_group(ledger, record.group_id)
    return record


def _read_group(ledger: Ledger, group_id: str) -> GroupRecord:
    """The group's record (one constant-time read).

    Raises:
        JobNotFound: it left the ledger (pruned) while waited.
    """
    found = ledger.group(group_id)
    if found is None:
        raise JobNotFound(f"group {group_id} left the ledger (pruned) while waited")
    return found


def _group_done(ledger: Ledger, group_id: str) -> bool:
    """Whether the group has succeeded or failed."""
    return _read_group(ledger, group_id).state in _GROUP_DONE


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
