"""``conveyor queue stats|purge|create|delete`` and ``conveyor dlq list|redrive|purge``.

Commands that only look (``queue stats``, ``dlq list``) or that remove (``purge``,
``redrive``) never create a queue: a missing one is an error when its URL was given, and
"nothing submitted yet" (exit 0) when it is the default queue in the storage root.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from conveyor.cli.shared_options import base_settings, json_option, queue_options, storage_option
from conveyor.client import open_configured_ledger, open_configured_queue
from conveyor.errors import BadInput, ConfigError, ConveyorError, QueueNotFound
from conveyor.jobs import TERMINAL, JobState, job_id_of, release_claims_of
from conveyor.ledger import Ledger, LedgerEvent, LedgerNotFound
from conveyor.queues.base import MAX_VISIBILITY_TIMEOUT_S, DeadLetter, Queue
from conveyor.reconcile import reconcile_dead_letters, reconcile_queue
from conveyor.settings import Settings
from conveyor.storage import Storage

#: How many dead letters ``dlq redrive`` lists first, on a queue that cannot say which
#: messages it moved (SQS), to reopen their jobs.
_REDRIVE_LIST_LIMIT = 100_000
#: The reason recorded for jobs whose messages ``queue purge`` deleted.
PURGED_REASON = "purged from the queue"
#: What the ledger records as the worker of the jobs these commands change.
_PURGE_WORKER = "conveyor-purge"
_DLQ_WORKER = "conveyor-dlq"
#: Jobs read and written per ledger call when a purge cancels them.
_LEDGER_BATCH = 1000
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)\Z")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _settings(storage: Path, queue_url: str | None, endpoint_url: str | None) -> Settings:
    return base_settings(storage, queue_url, endpoint_url)


def _nothing_yet(settings: Settings) -> str:
    return f"nothing submitted yet under {settings.storage}"


def _existing_queue(settings: Settings) -> Queue | None:
    """The configured queue, never created. None when it is the default queue and nothing
    was submitted yet (no storage root, or no queue file in it).

    Raises:
        QueueNotFound: a queue URL was given and there is no queue there (exit 78).
    """
    if settings.queue_url is None and not settings.storage.is_dir():
        return None
    try:
        return open_configured_queue(settings, create=False)
    except QueueNotFound:
        if settings.queue_url is None:
            return None
        raise


@contextlib.contextmanager
def _existing_ledger(settings: Settings) -> Iterator[Ledger | None]:
    """The configured ledger, never created; None when it is the default one and nothing
    was submitted yet.

    Raises:
        LedgerNotFound: a ledger URL was given and there is no ledger there.
    """
    try:
        ledger = open_configured_ledger(settings, create=False)
    except LedgerNotFound:
        if settings.ledger_url is not None:
            raise
        yield None
        return
    with ledger:
        yield ledger


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
    settings = _settings(storage, queue_url, endpoint_url)
    opened = _existing_queue(settings)
    if opened is None:
        data: dict[str, Any] = {"url": settings.resolved_queue_url}
        data.update(dict.fromkeys(("visible", "in_flight", "delayed", "dead_lettered"), 0))
        if as_json:
            click.echo(json.dumps({**data, "note": _nothing_yet(settings)}, indent=1))
        else:
            click.echo(_nothing_yet(settings))
        return
    with contextlib.closing(opened):
        stats = opened.stats()
        url = opened.url
    data = {
        "url": url,
        "visible": stats.visible,
        "in_flight": stats.in_flight,
        "delayed": stats.delayed,
        "dead_lettered": stats.dead_lettered,
    }
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    for key, value in data.items():
        click.echo(f"{key + ':':<15}{value}")


@queue.command("purge")
@storage_option
@queue_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def queue_purge(storage: Path, queue_url: str | None, endpoint_url: str | None, yes: bool) -> None:
    """Delete every message in the queue (not the dead-letter queue).

    Their jobs are recorded as cancelled in the ledger ("purged from the queue"), so
    ``status`` stops counting them as waiting; SQS does not say which messages it deleted,
    so there their jobs are left as they were.
    """
    settings = _settings(storage, queue_url, endpoint_url)
    opened = _existing_queue(settings)
    if opened is None:
        click.echo(_nothing_yet(settings))
        return
    with contextlib.closing(opened), _existing_ledger(settings) as ledger:
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
@click.option("--fifo", is_flag=True, help="A FIFO queue (SQS; the name gets '.fifo').")
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
    **options: Any,
) -> None:
    """Create queue NAME (and its dead-letter queue) and print its URL.

    NAME is an SQS queue name, or a sqlite:///path/queue.db URL (or a path ending in .db)
    for the embedded queue, whose database is created.
    """
    settings = _settings(storage, queue_url, endpoint_url).with_(
        max_receive_count=options["max_receive_count"],
        visibility_timeout_s=options["visibility_timeout_s"],
    )
    sqlite_url = _as_sqlite_url(name)
    if sqlite_url is not None:
        if options["fifo"]:
            raise click.UsageError(
                "--fifo is for SQS queues; the SQLite queue is first-in first-out"
            )
        from conveyor.queues import open_queue

        open_queue(sqlite_url, settings).close()
        click.echo(sqlite_url)
        return
    from conveyor.queues.sqs import create_queue

    click.echo(
        create_queue(
            name,
            fifo=options["fifo"],
            max_receive_count=options["max_receive_count"],
            visibility_timeout_s=options["visibility_timeout_s"],
            settings=settings,
        )
    )


def _as_sqlite_url(name: str) -> str | None:
    """``sqlite:///...`` for a SQLite URL or a ``.db`` path; None for an SQS queue name."""
    if urlsplit(name).scheme == "sqlite":
        return name
    if name.endswith(".db"):
        return f"sqlite:///{Path(name).resolve()}"
    return None


@queue.command("delete")
@storage_option
@queue_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def queue_delete(storage: Path, queue_url: str | None, endpoint_url: str | None, yes: bool) -> None:
    """Delete the queue (--queue) and its dead-letter queue, messages and all."""
    settings = _settings(storage, queue_url, endpoint_url)
    url = settings.resolved_queue_url
    if not yes:
        click.confirm(f"delete the queue {url} and its messages?", abort=True, err=True)
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from conveyor.queues.sqlite import path_from_url

        path = path_from_url(url)
        if not path.exists():
            raise ConfigError(f"no queue at {url}")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        click.echo(f"deleted {url}")
    elif scheme in ("http", "https"):
        from conveyor.queues.sqs import delete_queue

        for deleted in delete_queue(url, settings):
            click.echo(f"deleted {deleted}")
    else:
        raise ConfigError(f"cannot delete a queue at {url!r}")


# --- the dead-letter queue -----------------------------------------------------------------------


def _duration_s(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--older-than``: ``90``, ``90s``, ``30m``, ``12h`` or ``14d``, in seconds."""
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration: use e.g. 90s, 30m, 12h or 14d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@click.group()
def dlq() -> None:
    """Inspect, redrive and purge the dead-letter queue."""


@dlq.command("list")
@storage_option
@queue_options
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option(
    "--before",
    metavar="CURSOR",
    default=None,
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
    settings = _settings(storage, queue_url, endpoint_url)
    opened = _existing_queue(settings)
    if opened is None:
        click.echo("[]" if as_json else _nothing_yet(settings))
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
        with _existing_ledger(settings) as ledger:
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
@click.option("--limit", type=click.IntRange(1), default=None, help="Move at most this many.")
def dlq_redrive(
    storage: Path, queue_url: str | None, endpoint_url: str | None, limit: int | None
) -> None:
    """Move dead-lettered messages back to the queue (oldest first) and reopen their jobs
    as queued."""
    settings = _settings(storage, queue_url, endpoint_url)
    opened = _existing_queue(settings)
    if opened is None:
        click.echo(_nothing_yet(settings))
        return
    with contextlib.closing(opened), _existing_ledger(settings) as ledger:
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
@click.option(
    "--older-than",
    "older_than_s",
    callback=_duration_s,
    metavar="DURATION",
    default=None,
    help="Delete only letters dead-lettered longer ago than this (e.g. 14d) [default: all].",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
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
    are first recorded as failed in the ledger, as ``dlq list`` does.
    """
    settings = _settings(storage, queue_url, endpoint_url)
    opened = _existing_queue(settings)
    if opened is None:
        click.echo(_nothing_yet(settings))
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
