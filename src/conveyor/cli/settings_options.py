"""Options and helpers shared by ``worker``, ``submit``, ``status``, ``queue`` and ``dlq``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from conveyor.errors import ConfigError
from conveyor.queues import Queue, open_queue
from conveyor.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

#: The embedded queue's long-poll wait when ``--wait-s`` is not given. SQS bills per
#: request, so 20 s waits pay off there; a local SQLite poll costs nothing, and a short
#: wait keeps ``--until-empty`` and Ctrl-C snappy at a terminal.
SQLITE_WAIT_S = 2.0
SQS_WAIT_S = 20.0


def import_option(func: F) -> F:
    """``--import`` / ``CONVEYOR_IMPORT``: modules or .py files that register tasks."""
    return click.option(
        "--import",
        "imports",
        multiple=True,
        envvar="CONVEYOR_IMPORT",
        show_envvar=True,
        metavar="MODULE_OR_FILE",
        help="Import a module (or .py file) that registers tasks; repeatable "
        "(the env var takes a space-separated list).",
    )(func)


def json_option(func: F) -> F:
    """``--json``: machine-readable output for scripts."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def default_wait_s(queue_url: str) -> float:
    """The long-poll wait for a queue when none is configured (see ``SQLITE_WAIT_S``)."""
    return SQLITE_WAIT_S if urlsplit(queue_url).scheme == "sqlite" else SQS_WAIT_S


def base_settings(
    storage: Path, queue_url: str | None, endpoint_url: str | None, **fields: Any
) -> Settings:
    """Settings from the shared options, plus any worker fields a command adds."""
    return Settings(storage=storage, queue_url=queue_url, endpoint_url=endpoint_url, **fields)


def open_configured_queue(settings: Settings) -> Queue:
    """Open the configured queue.

    Raises:
        ConfigError: the URL names no backend, or the embedded queue's storage root is
            missing (for SQLite, the queue lives inside it).
    """
    if settings.queue_url is None and not settings.storage.is_dir():
        raise ConfigError(
            f"storage root {settings.storage} does not exist: create it, or point "
            "--storage (CONVEYOR_STORAGE) at it"
        )
    return open_queue(settings.resolved_queue_url, settings)


def is_debug() -> bool:
    """Whether the root ``--debug`` flag is on (for tracebacks and debug logs)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().meta.get("conveyor.debug"))
