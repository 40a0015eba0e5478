"""``conveyor dlq list|redrive|purge``: the dead-letter queue, reconciled into the ledger."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import click

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
from conveyor.durations import parse_duration_s
from conveyor.errors import BadInput, ConveyorError
from conveyor.jobs import job_id_of
from conveyor.queues.base import Queue
from conveyor.queues.messages import DeadLetter
from conveyor.reconcile import reconcile_dead_letters, reconcile_queue
from conveyor.settings import Settings
from conveyor.storage import Storage

#: How many dead letters ``dlq redrive`` lists first, on a queue that cannot say which
#: messages it moved (SQS), to reopen their jobs.
_REDRIVE_LIST_LIMIT = 100_000
#: What the ledger records as the worker of the jobs these commands change.
_DLQ_WORKER = "conveyor-dlq"


def _printable(text: str) -> str:
    """``text`` safe to print on one terminal line: control characters (ANSI colours, a
    hostile message's bytes) shown escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _when(epoch_s: float | None) -> str:
    if not epoch_s:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def _duration_s(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--older-than``: ``90``, ``90s``, ``30m``, ``12h`` or ``14d``, in seconds."""
    if value is None:
        return None
    try:
        return parse_duration_s(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def dlq() -> None:
    """Inspect, redrive and purge the dead-letter queue."""


@dlq.command("list")
@storage_option
@queue_options
@command_option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    envvar="CONVEYOR_DLQ_LIMIT",
    help="List at most this many letters, newest first.",
)
@command_option(
    "--before",
    metavar="CURSOR",
    default=None,
    envvar="CONVEYOR_DLQ_BEFORE",
    help="List the letters older than this one (the cursor a previous page printed).",
)
@json_option
def dlq_list(
    storage: Path,
    queue_url: str | None,
    endpoint_url: str | None,
    *,
    limit: int,
    before: str | None,
    as_json: bool,
) -> None:
    """List dead-lettered messages, newest first, with their job id and reason, without
    consuming them.

    Jobs the queue dead-lettered by itself (their worker died on every attempt) are
    recorded as failed in the ledger on the way, with that reason: all of them, not only
    the listed ones (SQS: the listed ones).
    """
    settings = base_settings(storage, queue_url, endpoint_url)
    opened = existing_queue(settings)
    if opened is None:
        click.echo("[]" if as_json else nothing_yet(settings))
        return
    with contextlib.closing(opened):
        try:
            letters = opened.dead_letter_page(limit, before)
        except BadInput as exc:
            raise click.BadParameter(exc.message, param_hint="--before") from None
        reconciled = set(_reconcile(opened, letters, settings))
    if as_json:
        click.echo(json.dumps([_letter_dict(letter, reconciled) for letter in letters], indent=1))
        return
    if not letters:
        click.echo("the dead-letter queue is empty" if before is None else "no older letters")
    for letter in letters:
        job_id = job_id_of(letter.body) or "?"
        reason = _printable(letter.reason or "(no reason given)")
        click.echo(f"{job_id}  {_when(letter.dead_at)}  receives={letter.receive_count}  {reason}")
    if len(letters) == limit and letters[-1].cursor is not None:
        click.echo(f"older letters: conveyor dlq list --before {letters[-1].cursor}")
    if reconciled:
        click.echo(
            f"recorded {len(reconciled)} job(s) as failed in the ledger: the queue "
            "dead-lettered them after their worker died or lost its lease on every attempt"
        )


def _reconcile(opened: Queue, letters: list[DeadLetter], settings: Settings) -> list[str]:
    """Reconcile the dead-letter queue into the ledger (if there is one); a failure is
    reported on stderr and the listing goes on."""
    try:
        with existing_ledger(settings) as ledger:
            if ledger is None:
                return []
            storage = Storage(settings.storage)
            if opened.tracks_reconciliation:
                return reconcile_queue(opened, ledger, storage, worker=_DLQ_WORKER)
            return reconcile_dead_letters(letters, ledger, storage, worker=_DLQ_WORKER)
    except ConveyorError as exc:
        click.echo(f"conveyor: cannot update the ledger: {exc.message}", err=True)
        return []


@dlq.command("redrive")
@storage_option
@queue_options
@command_option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    envvar="CONVEYOR_DLQ_REDRIVE_LIMIT",
    help="Move at most this many.",
)
def dlq_redrive(
    storage: Path, queue_url: str | None, endpoint_url: str | None, limit: int | None
) -> None:
    """Move dead-lettered messages back to the queue (oldest first) and reopen their jobs
    as queued."""
    settings = base_settings(storage, queue_url, endpoint_url)
    opened = existing_queue_or_say(settings)
    if opened is None:
        return
    with contextlib.closing(opened), existing_ledger(settings) as ledger:
        listed: list[DeadLetter] = []
        if not opened.tracks_reconciliation:
            # SQS cannot say which messages it moved: reopen those listed just before.
            listed = opened.dead_letters(limit or _REDRIVE_LIST_LIMIT)
        removed = opened.redrive_jobs(limit)
        job_ids = removed.job_ids
        if job_ids is None:
            job_ids = [i for d in listed[: removed.count] if (i := job_id_of(d.body)) is not None]
        reopened = 0
        if ledger is not None:
            reopened = sum(1 for job_id in dict.fromkeys(job_ids) if ledger.redrive(job_id))
    click.echo(f"redrove {removed.count} message(s); reopened {reopened} job(s) as queued")


@dlq.command("purge")
@storage_option
@queue_options
@command_option(
    "--older-than",
    "older_than_s",
    envvar="CONVEYOR_DLQ_OLDER_THAN",
    callback=_duration_s,
    metavar="DURATION",
    default=None,
    help="Delete only letters dead-lettered longer ago than this (e.g. 14d) [default: all].",
)
@command_option(
    "--yes",
    is_flag=True,
    envvar="CONVEYOR_DLQ_PURGE_YES",
    help="Do not ask for confirmation.",
)
def dlq_purge(
    storage: Path,
    queue_url: str | None,
    endpoint_url: str | None,
    older_than_s: float | None,
    yes: bool,
) -> None:
    """Delete dead letters, all or those older than --older-than.

    The SQLite queue also deletes them by itself 14 days after they were dead-lettered
    (SQS: the dead-letter queue's retention period). Jobs the queue dead-lettered by itself
    are first recorded as failed in the ledger, as `dlq list` does.
    """
    settings = base_settings(storage, queue_url, endpoint_url)
    opened = existing_queue_or_say(settings)
    if opened is None:
        return
    with contextlib.closing(opened):
        if not yes:
            which = "every dead letter" if older_than_s is None else "dead letters older than"
            age = "" if older_than_s is None else f" {older_than_s:g} s"
            click.confirm(f"delete {which}{age} of {opened.url}?", abort=True, err=True)
        if opened.tracks_reconciliation:
            _reconcile(opened, [], settings)
        deleted = opened.purge_dead_letters(older_than_s)
    click.echo(
        "purged the dead-letter queue" if deleted < 0 else f"deleted {deleted} dead letter(s)"
    )


def _letter_dict(letter: DeadLetter, reconciled: set[str]) -> dict[str, object]:
    job_id = job_id_of(letter.body)
    return {
        "message_id": letter.message_id,
        "job_id": job_id,
        "receive_count": letter.receive_count,
        "reason": letter.reason,
        "dead_at": letter.dead_at,
        "cursor": letter.cursor,
        "body": letter.body,
        "reconciled": job_id in reconciled,
    }
