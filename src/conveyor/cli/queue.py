"""``conveyor queue stats|purge|create|delete`` and ``conveyor dlq list|redrive``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from conveyor.cli.options import queue_options, storage_option
from conveyor.cli.settings_options import base_settings, json_option, open_configured_queue
from conveyor.errors import ConfigError, ConveyorError
from conveyor.ledger import Ledger
from conveyor.queues.base import MAX_VISIBILITY_TIMEOUT_S, DeadLetter
from conveyor.reconcile import reconcile_listed
from conveyor.settings import Settings
from conveyor.storage import Storage
from conveyor.worker import job_id_of

#: How many dead letters ``dlq redrive`` reopens in the ledger when no --limit is given.
_REDRIVE_LIST_LIMIT = 100_000


def _settings(storage: Path, queue_url: str | None, endpoint_url: str | None) -> Settings:
    return base_settings(storage, queue_url, endpoint_url)


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
    with contextlib.closing(open_configured_queue(settings)) as opened:
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
    """Delete every message in the queue (not the dead-letter queue)."""
    settings = _settings(storage, queue_url, endpoint_url)
    with contextlib.closing(open_configured_queue(settings)) as opened:
        if not yes:
            click.confirm(f"delete every message in {opened.url}?", abort=True, err=True)
        count = opened.purge()
    click.echo("purged" if count < 0 else f"purged {count} message(s)")


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


@click.group()
def dlq() -> None:
    """Inspect and redrive the dead-letter queue."""


@dlq.command("list")
@storage_option
@queue_options
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@json_option
def dlq_list(
    storage: Path, queue_url: str | None, endpoint_url: str | None, limit: int, as_json: bool
) -> None:
    """List dead-lettered messages with their job id and reason, without consuming them.

    Jobs the queue dead-lettered by itself (their worker died on every attempt) are
    recorded as failed in the ledger on the way, with that reason.
    """
    settings = _settings(storage, queue_url, endpoint_url)
    with contextlib.closing(open_configured_queue(settings)) as opened:
        letters = opened.dead_letters(limit)
    try:
        reconciled = set(reconcile_listed(settings.storage, letters))
    except ConveyorError as exc:
        click.echo(f"conveyor: cannot update the ledger: {exc.message}", err=True)
        reconciled = set()
    if as_json:
        click.echo(json.dumps([_letter_dict(letter, reconciled) for letter in letters], indent=1))
        return
    if not letters:
        click.echo("the dead-letter queue is empty")
    for letter in letters:
        job_id = job_id_of(letter.body) or "?"
        click.echo(
            f"{job_id}  receives={letter.receive_count}  {letter.reason or '(no reason given)'}"
        )
    if reconciled:
        click.echo(
            f"recorded {len(reconciled)} job(s) as failed in the ledger: the queue "
            "dead-lettered them after their worker died or lost its lease on every attempt"
        )


@dlq.command("redrive")
@storage_option
@queue_options
@click.option("--limit", type=click.IntRange(1), default=None, help="Move at most this many.")
def dlq_redrive(
    storage: Path, queue_url: str | None, endpoint_url: str | None, limit: int | None
) -> None:
    """Move dead-lettered messages back to the queue and reopen their jobs as queued."""
    settings = _settings(storage, queue_url, endpoint_url)
    with contextlib.closing(open_configured_queue(settings)) as opened:
        letters = opened.dead_letters(limit or _REDRIVE_LIST_LIMIT)
        moved = opened.redrive(limit)
    reopened = 0
    if settings.storage.is_dir():
        with Ledger(Storage(settings.storage)) as ledger:
            for letter in letters[:moved]:
                job_id = job_id_of(letter.body)
                if job_id is not None and ledger.redrive(job_id):
                    reopened += 1
    click.echo(f"redrove {moved} message(s); reopened {reopened} job(s) as queued")


def _letter_dict(letter: DeadLetter, reconciled: set[str]) -> dict[str, object]:
    job_id = job_id_of(letter.body)
    return {
        "message_id": letter.message_id,
        "job_id": job_id,
        "receive_count": letter.receive_count,
        "reason": letter.reason,
        "body": letter.body,
        "reconciled": job_id in reconciled,
    }
