"""``conveyor ledger migrate`` (create or upgrade the schema) and ``conveyor ledger prune``
(delete finished jobs past the retention)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.cli.shared_options import setting_option, storage_option
from conveyor.durations import format_duration, parse_duration_s
from conveyor.errors import ConfigError
from conveyor.ledger import DEFAULT_RETENTION_S, LedgerNotFound, open_ledger, redact_url
from conveyor.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _duration_callback(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """Turn ``--older-than`` into seconds (a click callback: errors become usage errors)."""
    try:
        return parse_duration_s(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def ledger_option(func: F) -> F:
    """``--ledger`` / ``CONVEYOR_LEDGER_URL``: where the ledger is (from the settings table)."""
    return setting_option("ledger_url")(func)


def _ledger_url(storage: Path, ledger_url: str | None) -> str:
    """The configured ledger's URL; the embedded one needs an existing storage root.

    Raises:
        ConfigError: the storage root is missing (and no ``--ledger`` was given).
    """
    if ledger_url is None and not storage.is_dir():
        raise ConfigError(
            f"storage root {storage} does not exist: create it, or point --storage "
            "(CONVEYOR_STORAGE) or --ledger (CONVEYOR_LEDGER_URL) at the ledger"
        )
    return Settings(storage=storage, ledger_url=ledger_url).resolved_ledger_url


@click.group()
def ledger() -> None:
    """Manage the job ledger: upgrade its schema, delete old finished jobs."""


@ledger.command("migrate")
@storage_option
@ledger_option
def ledger_migrate(storage: Path, ledger_url: str | None) -> None:
    """Create the ledger's schema, or upgrade it to this conveyor's version.

    Safe to run while workers write, and to run again (it then changes nothing).
    """
    url = _ledger_url(storage, ledger_url)
    before: int | None = None
    try:
        opened = open_ledger(url, create=False, check_schema=False)
    except LedgerNotFound:
        opened = open_ledger(url)  # opening creates it: the migration from nothing
        before = 0
    with opened:
        first, after = opened.migrate()
        before = first if before is None else before
    note = " (already current)" if before == after else ""
    click.echo(f"ledger schema: v{before} -> v{after}{note} at {redact_url(url)}")


@ledger.command("prune")
@storage_option
@ledger_option
@click.option(
    "--older-than",
    "older_than_s",
    callback=_duration_callback,
    default=format_duration(DEFAULT_RETENTION_S),
    envvar="CONVEYOR_LEDGER_RETENTION",
    show_envvar=True,
    show_default=True,
    metavar="DURATION",
    help="Delete jobs that finished longer ago than this (s, m, h or d: 45m, 12h, 30d).",
)
def ledger_prune(storage: Path, ledger_url: str | None, older_than_s: float) -> None:
    """Delete finished jobs (succeeded, failed, cancelled) and their history once they are
    older than the retention, a bounded batch per transaction so that workers keep writing.
    Jobs still queued or running are never deleted."""
    url = _ledger_url(storage, ledger_url)
    with open_ledger(url, create=False) as opened:
        deleted = opened.prune(older_than_s)
    click.echo(
        f"pruned {deleted} finished job(s) older than {format_duration(older_than_s)} "
        f"from {redact_url(url)}"
    )
