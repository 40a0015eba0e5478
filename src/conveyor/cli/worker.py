"""``conveyor worker`` (one process, or a supervisor of N) and ``conveyor health``.

Every option comes from the settings table; running the workers is the library's
(:mod:`conveyor.supervisor`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.cli.shared_options import (
    base_settings,
    queue_options,
    setting_option,
    storage_option,
)
from conveyor.logs import configure_logging
from conveyor.settings import EXIT_FAILED
from conveyor.supervisor import run_worker, supervise

F = TypeVar("F", bound=Callable[..., Any])

#: The worker's own options, in the order ``--help`` lists them (after the queue's).
WORKER_FIELDS = (
    "visibility_timeout_s",
    "heartbeat_every_s",
    "wait_s",
    "batch_size",
    "grace_s",
    "processes",
    "until_empty",
    "empty_polls",
    "max_jobs",
    "max_idle_s",
    "max_receive_count",
    "retry_base_s",
    "retry_max_s",
    "imports",
    "health_file",
    "metrics_port",
    "metrics_host",
    "log_format",
    "log_level",
)


def worker_options(func: F) -> F:
    """Every option of ``conveyor worker`` from the settings table."""
    for field in reversed(WORKER_FIELDS):
        func = setting_option(field)(func)
    return func


@click.command()
@storage_option
@queue_options
@worker_options
def worker(storage: Path, queue_url: str | None, endpoint_url: str | None, **fields: Any) -> None:
    """Run jobs from the queue until stopped, drained (--until-empty) or done.

    Exit codes: 0 finished, 75 interrupted by SIGTERM/SIGINT, 78 broken configuration.
    """
    # ``fields`` are the WORKER_FIELDS, typed and checked by click as the table says.
    settings = base_settings(storage, queue_url, endpoint_url, **fields)
    configure_logging(settings.log_format, "DEBUG" if settings.debug else settings.log_level)
    if settings.processes > 1:
        sys.exit(supervise(settings))
    sys.exit(run_worker(settings))


# --- liveness ------------------------------------------------------------------------------


@click.command()
@click.option(
    "--file",
    "health_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The file the worker touches (its --health-file).",
    envvar="CONVEYOR_HEALTH_FILE",
    show_envvar=True,
)
@click.option(
    "--max-age-s",
    type=click.FloatRange(0),
    default=120.0,
    show_default=True,
    help="Oldest acceptable age of the file, in seconds.",
    envvar="CONVEYOR_HEALTH_MAX_AGE_S",
    show_envvar=True,
)
def health(health_file: Path, max_age_s: float) -> None:
    """Exit 0 if the worker touched its health file recently, 1 otherwise.

    For a Kubernetes liveness probe: exec: [conveyor, health] with CONVEYOR_HEALTH_FILE
    set. A worker touches the file every round and every heartbeat, so keep --max-age-s
    above the long-poll wait and the heartbeat interval.
    """
    try:
        age_s = time.time() - health_file.stat().st_mtime
    except OSError as exc:
        click.echo(f"conveyor: unhealthy: cannot read {health_file}: {exc.strerror}", err=True)
        sys.exit(EXIT_FAILED)
    if age_s > max_age_s:
        click.echo(
            f"conveyor: unhealthy: {health_file} is {age_s:.0f} s old (limit {max_age_s:g} s)",
            err=True,
        )
        sys.exit(EXIT_FAILED)
    click.echo(f"healthy: {health_file} is {age_s:.1f} s old")
