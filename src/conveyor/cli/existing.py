"""The configured queue and ledger as the ``queue`` and ``dlq`` commands open them: never
created. A missing one is an error when its URL was given, and "nothing submitted yet"
(exit 0) when it is the default one in the storage root."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from conveyor.client_base import open_configured_ledger, open_configured_queue
from conveyor.errors import QueueNotFound
from conveyor.ledger import Ledger, LedgerNotFound
from conveyor.queues.base import Queue
from conveyor.settings import Settings


def nothing_yet(settings: Settings) -> str:
    """What the commands say when nothing was submitted to the default queue yet."""
    return f"nothing submitted yet under {settings.storage}"


def existing_queue(settings: Settings) -> Queue | None:
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
def existing_ledger(settings: Settings) -> Iterator[Ledger | None]:
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


def existing_queue_or_say(settings: Settings) -> Queue | None:
    """:func:`existing_queue`; when there is none, says "nothing submitted yet" first."""
    opened = existing_queue(settings)
    if opened is None:
        click.echo(nothing_yet(settings))
    return opened
