"""Options and helpers shared by ``worker``, ``submit``, ``status``, ``queue`` and ``dlq``.

The settings themselves (table, environment, defaults) and the opening of the configured
queue and ledger live in the library (:mod:`conveyor.settings`, :mod:`conveyor.client`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.cli.options import LEDGER_URL_KEY, setting_option
from conveyor.client import open_configured_ledger, open_configured_queue
from conveyor.errors import ConfigError
from conveyor.ledger import redact_url
from conveyor.settings import (
    SQLITE_WAIT_S,
    SQS_WAIT_S,
    Settings,
    check_heartbeat,
    default_wait_s,
)

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "SQLITE_WAIT_S",
    "SQS_WAIT_S",
    "base_settings",
    "default_wait_s",
    "import_option",
    "is_debug",
    "json_option",
    "open_configured_ledger",
    "open_configured_queue",
    "shown_ledger_url",
]


def import_option(func: F) -> F:
    """``--import`` / ``CONVEYOR_IMPORT``: modules or .py files that register tasks."""
    return setting_option("imports")(func)


def json_option(func: F) -> F:
    """``--json``: machine-readable output for scripts."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def base_settings(
    storage: Path, queue_url: str | None, endpoint_url: str | None, **fields: Any
) -> Settings:
    """Settings from the shared options, plus any fields a command adds.

    The ledger URL comes from ``--ledger`` / ``CONVEYOR_LEDGER_URL`` (kept in the click
    context by the queue options) unless ``fields`` gives one; ``debug`` from the root
    ``--debug``; ``wait_s``, when None or not given, defaults by queue as
    :func:`conveyor.settings.settings_from_env` does.

    Raises:
        click.UsageError: the heartbeat is not shorter than the visibility timeout.
    """
    ctx = click.get_current_context(silent=True)
    if "ledger_url" not in fields:
        fields["ledger_url"] = ctx.meta.get(LEDGER_URL_KEY) if ctx is not None else None
    fields.setdefault("debug", is_debug())
    if fields.get("wait_s") is None:
        fields["wait_s"] = default_wait_s(queue_url)
    settings = Settings(storage=storage, queue_url=queue_url, endpoint_url=endpoint_url, **fields)
    try:
        check_heartbeat(settings)
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None
    return settings


def shown_ledger_url(settings: Settings) -> str:
    """The ledger's URL with any password hidden: the only form ever printed or logged."""
    return redact_url(settings.resolved_ledger_url)


def is_debug() -> bool:
    """Whether the root ``--debug`` flag is on (for tracebacks and debug logs)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().meta.get("conveyor.debug"))
