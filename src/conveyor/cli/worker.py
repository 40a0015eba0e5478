"""``conveyor worker`` (one process, or a supervisor of N) and ``conveyor health``."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from conveyor.cli.options import queue_options, storage_option
from conveyor.cli.settings_options import (
    base_settings,
    default_wait_s,
    import_option,
    is_debug,
    open_configured_queue,
)
from conveyor.errors import ConfigError
from conveyor.events import JobObserver, LogObserver
from conveyor.logs import configure_logging
from conveyor.queues.base import MAX_BATCH, MAX_VISIBILITY_TIMEOUT_S, MAX_WAIT_S
from conveyor.settings import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Settings,
    default_queue_url,
)
from conveyor.stop import Shutdown
from conveyor.tasks import import_tasks

log = logging.getLogger("conveyor.worker")

#: How often the supervisor checks its children and forwards signals.
_SUPERVISE_TICK_S = 0.1


@click.command()
@storage_option
@queue_options
@click.option(
    "--visibility-timeout-s",
    type=click.IntRange(1, MAX_VISIBILITY_TIMEOUT_S),
    default=60,
    show_default=True,
    help="Seconds a received job stays invisible to others; the heartbeat renews it.",
    envvar="CONVEYOR_VISIBILITY_TIMEOUT_S",
    show_envvar=True,
)
@click.option(
    "--heartbeat-s",
    type=click.FloatRange(0.05, min_open=False),
    default=None,
    help="Seconds between lease renewals [default: a third of the visibility timeout].",
    envvar="CONVEYOR_HEARTBEAT_S",
    show_envvar=True,
)
@click.option(
    "--wait-s",
    type=click.FloatRange(0, MAX_WAIT_S),
    default=None,
    help=f"Long-poll wait per receive [default: {default_wait_s('sqlite:')} s for SQLite, "
    f"{default_wait_s('https:')} s for SQS].",
    envvar="CONVEYOR_WAIT_S",
    show_envvar=True,
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH),
    default=10,
    show_default=True,
    help="Messages per receive (use 1 for long jobs, so others are not held back).",
    envvar="CONVEYOR_BATCH_SIZE",
    show_envvar=True,
)
@click.option(
    "--grace-s",
    type=click.FloatRange(0),
    default=25.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds the running job gets to finish before its message is "
    "released (keep below the pod's terminationGracePeriodSeconds).",
    envvar="CONVEYOR_GRACE_S",
    show_envvar=True,
)
@click.option(
    "--processes",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Worker processes to run (each takes one job at a time).",
    envvar="CONVEYOR_PROCESSES",
    show_envvar=True,
)
@click.option(
    "--until-empty",
    is_flag=True,
    help="Exit 0 once the queue has nothing visible, delayed or in flight.",
    envvar="CONVEYOR_UNTIL_EMPTY",
    show_envvar=True,
)
@click.option(
    "--empty-polls",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Consecutive empty receives before --until-empty exits.",
    envvar="CONVEYOR_EMPTY_POLLS",
    show_envvar=True,
)
@click.option(
    "--max-jobs",
    type=click.IntRange(1),
    default=None,
    help="Exit 0 after this many jobs.",
    envvar="CONVEYOR_MAX_JOBS",
    show_envvar=True,
)
@click.option(
    "--max-idle-s",
    type=click.FloatRange(0),
    default=None,
    help="Exit 0 after this many seconds without a job.",
    envvar="CONVEYOR_MAX_IDLE_S",
    show_envvar=True,
)
@click.option(
    "--max-receive-count",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Attempts before a job is dead-lettered (SQS: the queue's redrive policy decides).",
    envvar="CONVEYOR_MAX_RECEIVE_COUNT",
    show_envvar=True,
)
@click.option(
    "--retry-base-s",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="First retry delay after a transient failure; doubles per attempt, with jitter.",
    envvar="CONVEYOR_RETRY_BASE_S",
    show_envvar=True,
)
@click.option(
    "--retry-max-s",
    type=click.FloatRange(0, 900),
    default=900.0,
    show_default=True,
    help="Longest retry delay (SQS caps delays at 900 s).",
    envvar="CONVEYOR_RETRY_MAX_S",
    show_envvar=True,
)
@import_option
@click.option(
    "--health-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Touch this file every round and heartbeat (see `conveyor health`).",
    envvar="CONVEYOR_HEALTH_FILE",
    show_envvar=True,
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port at /metrics [default: off]. With "
    "--processes N, worker i uses PORT+i.",
    envvar="CONVEYOR_METRICS_PORT",
    show_envvar=True,
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics endpoint listens on (0.0.0.0 in a pod, for the scraper).",
    envvar="CONVEYOR_METRICS_HOST",
    show_envvar=True,
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "text"]),
    default="auto",
    show_default=True,
    help="Log lines as JSON, as text, or auto (text on a terminal, JSON otherwise).",
    envvar="CONVEYOR_LOG_FORMAT",
    show_envvar=True,
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    envvar="CONVEYOR_LOG_LEVEL",
    show_envvar=True,
)
def worker(storage: Path, queue_url: str | None, endpoint_url: str | None, **options: Any) -> None:
    """Run jobs from the queue until stopped, drained (--until-empty) or done.

    Exit codes: 0 finished, 75 interrupted by SIGTERM/SIGINT, 78 broken configuration.
    """
    debug = is_debug()
    wait_s = options.pop("wait_s")
    settings = base_settings(
        storage,
        queue_url,
        endpoint_url,
        heartbeat_every_s=options.pop("heartbeat_s"),
        wait_s=wait_s if wait_s is not None else default_wait_s(queue_url or "sqlite:"),
        imports=tuple(options.pop("imports")),
        debug=debug,
        log_level=str(options.pop("log_level")).upper(),
        **options,
    )
    if settings.heartbeat_every_s is not None and (
        settings.heartbeat_every_s >= settings.visibility_timeout_s
    ):
        raise click.UsageError("--heartbeat-s must be shorter than --visibility-timeout-s")
    configure_logging(settings.log_format, "DEBUG" if debug else settings.log_level)
    if settings.processes > 1:
        sys.exit(supervise(settings))
    sys.exit(run_worker(settings))


def run_worker(settings: Settings) -> int:
    """Run one worker process until it stops; return its exit code.

    Raises:
        ConfigError, QueueNotFound, AccessDenied: broken configuration (exit 78).
    """
    from conveyor.worker import Worker  # the worker's imports load only for this command

    if not settings.storage.is_dir():
        raise ConfigError(
            f"storage root {settings.storage} does not exist (is the volume mounted?); "
            "set --storage / CONVEYOR_STORAGE"
        )
    import_tasks(settings.imports)
    queue = open_configured_queue(settings)
    shutdown = Shutdown()
    observers: list[JobObserver] = [LogObserver()]
    metrics_server = None
    if settings.metrics_port is not None:
        from conveyor.metrics import WorkerMetrics

        metrics = WorkerMetrics(queue)
        metrics_server = metrics.serve(settings.metrics_host, settings.metrics_port)
        observers.append(metrics)
        log.info(
            "metrics on http://%s:%d/metrics",
            metrics_server.host,
            metrics_server.port,
            extra={"action": "metrics"},
        )
    worker = Worker(queue, settings, shutdown=shutdown, observers=observers)
    log.info(
        "worker %s started on %s",
        worker.name,
        _shown_url(settings),
        extra={"action": "start", "worker": worker.name},
    )
    try:
        with shutdown.installed():
            code = worker.run()
    finally:
        queue.close()
        worker.ledger.close()
        if metrics_server is not None:
            metrics_server.close()
    log.info("worker %s exits %d", worker.name, code, extra={"action": "exit"})
    return code


def _shown_url(settings: Settings) -> str:
    return settings.queue_url or default_queue_url(settings.storage)


# --- several processes ---------------------------------------------------------------------


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment that makes a child ``conveyor worker`` run with these settings.

    Children get their configuration through the ``CONVEYOR_*`` variables (each option's
    env twin), so nothing has to be re-parsed from the command line.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    values: dict[str, object | None] = {
        "STORAGE": settings.storage,
        "QUEUE_URL": settings.queue_url,
        "ENDPOINT_URL": settings.endpoint_url,
        "VISIBILITY_TIMEOUT_S": settings.visibility_timeout_s,
        "HEARTBEAT_S": settings.heartbeat_every_s,
        "WAIT_S": settings.wait_s,
        "BATCH_SIZE": settings.batch_size,
        "GRACE_S": settings.grace_s,
        "PROCESSES": 1,
        "UNTIL_EMPTY": "1" if settings.until_empty else "0",
        "EMPTY_POLLS": settings.empty_polls,
        "MAX_JOBS": settings.max_jobs,
        "MAX_IDLE_S": settings.max_idle_s,
        "MAX_RECEIVE_COUNT": settings.max_receive_count,
        "RETRY_BASE_S": settings.retry_base_s,
        "RETRY_MAX_S": settings.retry_max_s,
        "IMPORT": " ".join(settings.imports) or None,
        "HEALTH_FILE": settings.health_file,
        "METRICS_PORT": settings.metrics_port,
        "METRICS_HOST": settings.metrics_host,
        "LOG_FORMAT": settings.log_format,
        "LOG_LEVEL": settings.log_level,
        "DEBUG": "1" if settings.debug else None,
    }
    env.update(
        {f"CONVEYOR_{key}": str(value) for key, value in values.items() if value is not None}
    )
    return env


def supervise(settings: Settings) -> int:
    """Run ``settings.processes`` worker processes and wait for them (like N pods).

    SIGTERM/SIGINT are forwarded to every child (a second one too, which makes them exit at
    once). The children run in their own process group, so a Ctrl-C at the terminal reaches
    them once, through the supervisor, not twice.

    Returns:
        78 if any child found the configuration broken; else 75 if interrupted; else 0 if
        every child finished; else 1.
    """
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # forwarded by the loop below, not from the handler

    command = [sys.executable, "-m", "conveyor", "worker"]
    env = child_environment(settings)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    children: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(settings.processes):
            child_env = env
            if settings.metrics_port:  # one port per child: they cannot share one
                child_env = {**env, "CONVEYOR_METRICS_PORT": str(settings.metrics_port + index)}
            children.append(subprocess.Popen(command, env=child_env, process_group=0))
        log.info("started %d worker processes", len(children), extra={"action": "start"})
        forwarded = 0
        while any(child.poll() is None for child in children):
            for signum in received[forwarded:]:
                for child in children:
                    if child.poll() is None:
                        child.send_signal(signum)
            forwarded = len(received)
            time.sleep(_SUPERVISE_TICK_S)
    finally:
        for child in children:
            if child.poll() is None:  # the supervisor itself failed: do not orphan them
                child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    codes = [child.returncode for child in children]
    log.info("worker processes exited with %s", codes, extra={"action": "exit"})
    return _combined_exit_code(codes, interrupted=bool(received))


def _combined_exit_code(codes: list[int], *, interrupted: bool) -> int:
    if EXIT_CONFIG in codes:
        return EXIT_CONFIG
    if all(code == EXIT_OK for code in codes):
        return EXIT_OK
    if interrupted or EXIT_INTERRUPTED in codes:
        return EXIT_INTERRUPTED
    return EXIT_FAILED


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

    For a Kubernetes liveness probe: ``exec: [conveyor, health]`` with
    CONVEYOR_HEALTH_FILE set. A worker touches the file every round and every heartbeat,
    so keep --max-age-s above the long-poll wait and the heartbeat interval.
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
