"""Options shared by several commands; each has its environment twin, shown in --help."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.settings import DEFAULT_STORAGE

F = TypeVar("F", bound=Callable[..., Any])


def storage_option(func: F) -> F:
    """``--storage`` / ``CONVEYOR_STORAGE``: the storage root."""
    return click.option(
        "--storage",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_STORAGE,
        envvar="CONVEYOR_STORAGE",
        show_envvar=True,
        show_default=True,
        help="Storage root holding inputs, outputs and the job ledger (/efs on Kubernetes).",
    )(func)


def queue_options(func: F) -> F:
    """``--queue`` (``CONVEYOR_QUEUE_URL`` or ``SQS_QUEUE_URL``) and ``--endpoint-url``."""
    func = click.option(
        "--endpoint-url",
        envvar=["CONVEYOR_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"],
        show_envvar=True,
        default=None,
        help="SQS-compatible endpoint (e.g. a local test server).",
    )(func)
    return click.option(
        "--queue",
        "queue_url",
        envvar=["CONVEYOR_QUEUE_URL", "SQS_QUEUE_URL"],
        show_envvar=True,
        default=None,
        help="Queue URL: sqlite:///path/queue.db or an SQS URL "
        "[default: SQLite in the storage root].",
    )(func)
