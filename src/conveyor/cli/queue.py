"""``conveyor queue stats|purge|create|delete``; ``conveyor dlq`` is in ``cli/dlq.py``.

Commands that only look (``queue stats``) or that remove (``purge``) never create a queue
(see :mod:`conveyor.cli.existing`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from conveyor.claims import release_claims_of
from conveyor.cli.existing import (
    existing_ledger,
    existing_queue,
    existing_queue_or_say,
    nothing_yet,
)
from conveyor.cli.shared_options import (
    base_settings,
    command_option,
    json_option,
    queue_options,
    storage_option,
)
from conveyor.jobs import TERMINAL, JobState
from conveyor.ledger import Ledger, LedgerEvent
from conveyor.queues import create_queue, delete_queue
from conveyor.queues.base import MAX_VISIBILITY_TIMEOUT_S
from conveyor.queues.messages import QueueStats
from conveyor.storage import Storage

#: The reason recorded for jobs whose messages ``queue purge`` deleted.
PURGED_REASON = "purged from the queue"
#: What the ledger records as the worker of the jobs a purge cancels.
_PURGE_WORKER = "conveyor-purge"
#: Jobs read and written per ledger call when a purge cancels them.
_LEDGER_BATCH = 1000


@click.group()
def queue() -> None:
    """Inspect and manage the job queue."""


@queue.command("stats")
@storage_option
@queue_options
@json_option
def queue_stats(
    storage: Path, queue_url: str | None, endpoint_url: str | None, as_json: bool
) -> None:
    """Count visible, in-flight, delayed and dead-lettered messages."""
    settings = base_settings(storage, queue_url, endpoint_url)
    opened = existing_queue(settings)
    if opened is None:
        data: dict[str, Any] = {
            "url": settings.resolved_queue_url,
            **QueueStats(0, 0, 0, 0).counts(),
        }
        if as_json:
            click.echo(json.dumps({**data, "note": nothing_yet(settings)}, indent=1))
        else:
            click.echo(nothing_yet(settings))
        return
    with contextlib.closing(opened):
        stats = opened.stats()
        url = opened.url
    data = {"url": url, **stats.counts()}
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    for key, value in data.items():
        click.echo(f"{key + ':':<15}{value}")


@queue.command("purge")
@storage_option
@queue_options
@command_option(
    "--yes",
    is_flag=True,
    envvar="CONVEYOR_QUEUE_PURGE_YES",
    help="Do not ask for confirmation.",
)
def queue_purge(storage: Path, queue_url: str | None, endpoint_url: str | None, yes: bool) -> None:
    """Delete every message in the queue (not the dead-letter queue).

    Their jobs are recorded as cancelled in the ledger ("purged from the queue"), so
    `status` stops counting them as waiting; SQS does not say which messages it deleted,
    so there their jobs are left as they were.
    """
    settings = base_settings(storage, queue_url, endpoint_url)
    opened = existing_queue_or_say(settings)
    if opened is None:
        return
    with contextlib.closing(opened), existing_ledger(settings) as ledger:
        if not yes:
            click.confirm(f"delete every message in {opened.url}?", abort=True, err=True)
        removed = opened.purge_jobs()
        cancelled = 0
        if ledger is not None and removed.job_ids:
            cancelled = cancel_purged(ledger, removed.job_ids)
        if removed.job_ids:
            release_claims_of(Storage(settings.storage), removed.job_ids)
    if removed.job_ids is None:
        click.echo(
            "purged; the queue does not say which messages it deleted (SQS), so their jobs "
            "are unchanged in the ledger: `conveyor status` still counts them as waiting"
        )
        return
    click.echo(
        f"purged {removed.count} message(s); recorded {cancelled} job(s) as cancelled "
        f"in the ledger ({PURGED_REASON})"
    )


def cancel_purged(ledger: Ledger, job_ids: Sequence[str]) -> int:
    """Record the jobs of purged messages as ``cancelled`` ("purged from the queue"),
    unless they already finished; a thousand per ledger call. Returns how many.

    Cancelled rather than failed: nothing went wrong with the jobs; someone chose to drop
    them, and a purge is not a reason to look for a bug.
    """
    cancelled = 0
    for start in range(0, len(job_ids), _LEDGER_BATCH):
        records = ledger.get_many(job_ids[start : start + _LEDGER_BATCH])
        events = [
            LedgerEvent(
                job_id,
                JobState.CANCELLED,
                record.attempts,
                worker=_PURGE_WORKER,
                error=PURGED_REASON,
            )
            for job_id, record in records.items()
            if record.state not in TERMINAL
        ]
        if events:
            ledger.record_many(events)
            cancelled += len(events)
    return cancelled


@queue.command("create")
@storage_option
@queue_options
@click.argument("name")
@command_option(
    "--fifo",
    is_flag=True,
    envvar="CONVEYOR_QUEUE_FIFO",
    help="A FIFO queue (SQS; the name gets '.fifo').",
)
@click.option(
    "--max-receive-count",
    type=click.IntRange(2),  # 1 would dead-letter a job on its first worker crash
    default=5,
    show_default=True,
    envvar="CONVEYOR_MAX_RECEIVE_COUNT",
    show_envvar=True,
    help="Receives before a message moves to the dead-letter queue.",
)
@click.option(
    "--visibility-timeout-s",
    type=click.IntRange(1, MAX_VISIBILITY_TIMEOUT_S),
    default=60,
    show_default=True,
    envvar="CONVEYOR_VISIBILITY_TIMEOUT_S",
    show_envvar=True,
    help="The queue's default visibility timeout.",
)
def queue_create(
    storage: Path,
    queue_url: str | None,
    endpoint_url: str | None,
    name: str,
    *,
    fifo: bool,
    max_receive_count: int,
    visibility_timeout_s: int,
) -> None:
    """Create queue NAME (and its dead-letter queue) and print its URL.

    NAME is an SQS queue name, or a sqlite:///path/queue.db URL (or a path ending in .db)
    for the embedded queue, whose database is created.
    """
    settings = base_settings(storage, queue_url, endpoint_url)
    try:
        url = create_queue(
            name,
            fifo=fifo,
            max_receive_count=max_receive_count,
            visibility_timeout_s=visibility_timeout_s,
            settings=settings,
        )
    except ValueError as exc:  # --fifo for a SQLite queue
        raise click.UsageError(str(exc)) from None
    click.echo(url)


@queue.command("delete")
@storage_option
@queue_options
@command_option(
    "--yes",
    is_flag=True,
    envvar="CONVEYOR_QUEUE_DELETE_YES",
    help="Do not ask for confirmation.",
)
def queue_delete(storage: Path, queue_url: str | None, endpoint_url: str | None, yes: bool) -> None:
    """Delete the queue (--queue) and its dead-letter queue, messages and all."""
    settings = base_settings(storage, queue_url, endpoint_url)
    url = settings.resolved_queue_url
    if not yes:
        click.confirm(f"delete the queue {url} and its messages?", abort=True, err=True)
    for deleted in delete_queue(url, settings):
        click.echo(f"deleted {deleted}")
