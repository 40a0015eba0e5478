"""``conveyor status``: the ledger's view of the jobs, read through indexed queries only.

A summary (counts by state and task, rates, failures, the queue's counts), one job with its
history (``status JOB``, a unique id prefix will do), or a page of jobs by state and task.
Read-only: it never creates a ledger or a queue.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import click

from conveyor.cli.shared_options import (
    base_settings,
    command_option,
    json_option,
    queue_options,
    storage_option,
)
from conveyor.client_base import open_configured_ledger, open_configured_queue
from conveyor.errors import ConveyorError
from conveyor.jobs import JobState
from conveyor.ledger import (
    GroupRecord,
    JobRecord,
    Ledger,
    LedgerNotFound,
    LedgerSummary,
    Transition,
)
from conveyor.queues.messages import QueueStats
from conveyor.settings import Settings

#: Most jobs one page lists (the ledger's own limit).
MAX_PAGE = 10_000


@click.command()
@storage_option
@queue_options
@click.argument("job_id", required=False)
@command_option(
    "--state",
    envvar="CONVEYOR_STATUS_STATE",
    type=click.Choice([state.value for state in JobState]),
    default=None,
    help="List the jobs in this state, most recently updated first.",
)
@command_option(
    "--task",
    envvar="CONVEYOR_STATUS_TASK",
    default=None,
    help="List the jobs of this task (with --state: both).",
)
@command_option(
    "--groups",
    "list_groups",
    envvar="CONVEYOR_STATUS_GROUPS",
    is_flag=True,
    help="List the job groups, newest first (a page at a time, as jobs are).",
)
@command_option(
    "--before",
    envvar="CONVEYOR_STATUS_BEFORE",
    metavar="CURSOR",
    default=None,
    help="List the page after this cursor (printed at the end of a full page).",
)
@command_option(
    "--limit",
    envvar="CONVEYOR_STATUS_LIMIT",
    type=click.IntRange(1, MAX_PAGE),
    default=20,
    show_default=True,
    help="Jobs per page, and failures shown in the summary.",
)
@json_option
def status(
    storage: Path,
    queue_url: str | None,
    endpoint_url: str | None,
    job_id: str | None,
    *,
    state: str | None,
    task: str | None,
    list_groups: bool,
    before: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show the summary of all jobs, one job or job group (JOB_ID or a unique prefix of
    it), the jobs in a --state and/or of a --task, or the --groups, a page at a time."""
    if list_groups and (state is not None or task is not None or job_id is not None):
        raise click.UsageError("--groups lists groups: give no JOB_ID, --state or --task")
    listing = state is not None or task is not None or before is not None or list_groups
    if job_id is not None and listing:
        raise click.UsageError("give a JOB_ID or --state/--task/--before, not both")
    settings = base_settings(storage, queue_url, endpoint_url)
    try:
        ledger = open_configured_ledger(settings, create=False)
    except LedgerNotFound:
        if settings.ledger_url is not None:
            raise  # a ledger named explicitly must exist: a mistyped URL is an error
        _nothing_submitted(settings, job_id, listing=listing, as_json=as_json)
        return
    with ledger:
        if job_id is not None:
            _show_job(ledger, job_id, settings, as_json)
        elif list_groups:
            _show_groups(ledger, before=before, limit=limit, as_json=as_json)
        elif listing:
            _show_page(ledger, state, task=task, before=before, limit=limit, as_json=as_json)
        else:
            summary = ledger.summary(failures=limit)
            stats, queue_error = _queue_stats(settings)
            _show_summary(summary, stats, queue_error, as_json)


def _nothing_submitted(
    settings: Settings, job_id: str | None, *, listing: bool, as_json: bool
) -> None:
    """What status says before the first submit: there is no ledger yet, and that is fine."""
    where = f"nothing submitted yet under {settings.storage}"
    if job_id is not None:
        raise click.ClickException(f"no job {job_id}: {where}")
    if not as_json:
        click.echo(where)
    elif listing:
        click.echo("[]")
    else:
        counts = {state.value: 0 for state in JobState}
        click.echo(json.dumps({"total": 0, "counts": counts, "note": where}, indent=1))


def _show_job(ledger: Ledger, job_id: str, settings: Settings, as_json: bool) -> None:
    """One job's record and its history of state changes.

    Raises:
        click.ClickException: no such job. AmbiguousJobId: the prefix matches several.
    """
    group = ledger.group(job_id)
    if group is not None:
        _show_group(group, as_json)
        return
    record = ledger.get(job_id)
    if record is None:
        raise click.ClickException(f"no job {job_id} in the ledger under {settings.storage}")
    history = ledger.history(record.job_id)
    if as_json:
        data = {**record.to_dict(), "history": [t.to_dict() for t in history]}
        click.echo(json.dumps(data, indent=1))
        return
    for key, value in record.to_dict().items():
        if value is None:
            continue
        shown = value
        if key.endswith("_at") and isinstance(value, float):
            shown = _when(value)
        elif isinstance(value, dict):
            shown = json.dumps(value)
        click.echo(f"{key + ':':<14}{shown}")
    if history:
        click.echo("history:")
        for transition in history:
            click.echo(f"  {_transition_line(transition)}")


def _show_group(group: GroupRecord, as_json: bool) -> None:
    """A group: its state, its jobs' counts of the total, throughput, time left, reason."""
    now = time.time()
    if as_json:
        click.echo(json.dumps(group.to_dict(now), indent=1))
        return
    click.echo(group_line(group))
    if group.source:
        click.echo(f"source:     {group.source}")
    rate, left_s = group.throughput_per_s(now), group.time_left_s(now)
    if rate is not None:
        left = "" if left_s is None or group.remaining == 0 else f", about {_duration(left_s)} left"
        click.echo(f"throughput: {rate:,.2f} jobs/s{left}")
    if group.tolerate_failures:
        click.echo(f"tolerates:  {group.tolerate_failures} failed job(s)")
    if group.completion_job_id:
        click.echo(f"completion: {group.completion_job_id}")
    if group.reason:
        click.echo(f"reason:     {group.reason}")


def _show_groups(ledger: Ledger, *, before: str | None, limit: int, as_json: bool) -> None:
    """A page of groups, newest first; a full page ends with the next page's cursor."""
    groups = ledger.groups(limit=limit, before=before)
    if as_json:
        now = time.time()
        rows = [{**group.to_dict(now), "cursor": group.cursor} for group in groups]
        click.echo(json.dumps(rows, indent=1))
        return
    for group in groups:
        source = f"  {group.source}" if group.source else ""
        click.echo(group_line(group) + source)
    if len(groups) == limit:
        click.echo(f"next page: --before {groups[-1].cursor}")


def group_line(group: GroupRecord) -> str:
    """A group on one line: id, state, and its jobs done/failed/running/queued of K."""
    counts = group.counts
    queued = counts[JobState.QUEUED] + counts[JobState.RETRYING]
    return (
        f"group {group.group_id}  {group.state.value}  "
        f"{counts[JobState.SUCCEEDED]} done, {group.failures} failed, "
        f"{counts[JobState.RUNNING]} running, {queued} queued of {group.total}"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _transition_line(transition: Transition) -> str:
    parts = [_when(transition.at), f"{transition.state.value:<9}", f"attempt {transition.attempt}"]
    if transition.worker:
        parts.append(transition.worker)
    if transition.error:
        parts.append(transition.error)
    return "  ".join(parts)


def _show_page(
    ledger: Ledger,
    state: str | None,
    *,
    task: str | None,
    before: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """A page of jobs, newest update first; a full page ends with the next page's cursor.

    Raises:
        BadInput: the cursor is malformed.
    """
    records = ledger.jobs(
        None if state is None else JobState(state), task=task, limit=limit, before=before
    )
    if as_json:
        rows = [{**record.to_dict(), "cursor": record.cursor} for record in records]
        click.echo(json.dumps(rows, indent=1))
        return
    for record in records:
        click.echo(record_line(record))
    if len(records) == limit:
        click.echo(f"next page: --before {records[-1].cursor}")


def record_line(record: JobRecord) -> str:
    """One job on one line: id, state, attempts, task, source file name, error."""
    error = f"  {record.error}" if record.error else ""
    return (
        f"{record.job_id}  {record.state.value:<9}  attempts={record.attempts}  "
        f"{record.task or '?'}  {record.source or '-'}{error}"
    )


def _queue_stats(settings: Settings) -> tuple[QueueStats | None, str | None]:
    """The queue's counts, or why they are unavailable (status still shows the ledger).
    The queue is never created here."""
    try:
        with contextlib.closing(open_configured_queue(settings, create=False)) as queue:
            return queue.stats(), None
    except ConveyorError as exc:
        return None, exc.message


def _show_summary(
    summary: LedgerSummary, stats: QueueStats | None, queue_error: str | None, as_json: bool
) -> None:
    if as_json:
        data = summary.to_dict()
        data["queue"] = stats.counts() if stats is not None else {"error": queue_error}
        click.echo(json.dumps(data, indent=1))
        return
    counts = "  ".join(f"{state.value} {n:,}" for state, n in summary.counts.items())
    click.echo(f"jobs:      {summary.total:,} total  {counts}")
    if len(summary.by_task) > 1:
        for task, by_state in sorted(summary.by_task.items()):
            shown = "  ".join(f"{state.value} {n:,}" for state, n in by_state.items() if n)
            click.echo(f"  {task or '(no task)'}:  {sum(by_state.values()):,} total  {shown}")
    overall = summary.rate_overall_per_s
    click.echo(
        f"rate:      {summary.rate_last_minute_per_s:.2f} jobs/s over the last minute"
        + (f", {overall:.2f} jobs/s overall" if overall is not None else "")
    )
    if summary.oldest_queued_age_s is not None:
        age_s = summary.oldest_queued_age_s
        click.echo(f"waiting:   the oldest queued job was submitted {age_s:,.0f} s ago")
    if stats is not None:
        click.echo(
            f"queue:     {stats.visible:,} visible  {stats.in_flight:,} in flight  "
            f"{stats.delayed:,} delayed  {stats.dead_lettered:,} dead-lettered"
        )
    else:
        click.echo(f"queue:     unavailable ({queue_error})")
    if summary.queue_requests:
        requests = "  ".join(f"{k} {v:,}" for k, v in sorted(summary.queue_requests.items()))
        click.echo(f"requests:  {requests}  (queue requests by kind: workers and submits)")
    if summary.recent_failures:
        click.echo("failures:")
        for failure in summary.recent_failures:
            click.echo(
                f"  {failure.job_id}  {failure.task or '?'}  {failure.source or '-'}  "
                f"{failure.error or ''}"
            )


def _when(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s)) + f" ({epoch_s:.3f})"
