"""Running workers: one in this process (:func:`run_worker`), or N child processes like N
pods (:func:`supervise`). ``conveyor worker`` calls one or the other; so can a script."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from conveyor.client_base import open_configured_queue
from conveyor.errors import ConfigError
from conveyor.events import LogObserver, WorkerObserver
from conveyor.ledger import redact_url
from conveyor.settings import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Settings, env_for
from conveyor.stop import Shutdown
from conveyor.tasks import import_tasks

log = logging.getLogger("conveyor.worker")

#: How often the supervisor checks its children and forwards signals.
SUPERVISE_TICK_S = 0.1


def run_worker(settings: Settings) -> int:
    """Run one worker in this process until it stops; return its exit code.

    SIGTERM and SIGINT stop it gracefully while it runs (main thread only); the storage
    root is created if missing, the task modules of ``settings.imports`` imported, and the
    metrics endpoint served if ``settings.metrics_port`` is set.

    Raises:
        ConfigError, QueueNotFound, AccessDenied: broken configuration (exit 78).
    """
    # The worker's imports load only for this command.
    from conveyor.worker import Worker
    from conveyor.worker.hooks import CrashPoints
    from conveyor.worker.placement import check_ledger_placement

    check_ledger_placement(settings)
    hooks = CrashPoints.from_env(os.environ)  # test-only; read once, at start-up
    # Started before anything was submitted (the usual order on Kubernetes): make the
    # storage root, then wait for jobs.
    make_storage_root(settings.storage)
    import_tasks(settings.imports)
    queue = open_configured_queue(settings)
    shutdown = Shutdown()
    observers: list[WorkerObserver] = [LogObserver()]
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
    try:
        worker = Worker(queue, settings, shutdown=shutdown, observers=observers, hooks=hooks)
    except BaseException:
        queue.close()
        if metrics_server is not None:
            metrics_server.close()
        raise
    log.info(
        "worker %s started on %s, ledger %s",
        worker.name,
        settings.resolved_queue_url,
        redact_url(settings.resolved_ledger_url),
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


def make_storage_root(root: Path) -> None:
    """Create the storage root if it is missing (a fresh volume, an empty directory).

    Raises:
        ConfigError: it cannot be created (a read-only mount, a file in the way).
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the storage root {root}: {exc.strerror} (is the volume mounted?); "
            "set --storage / CONVEYOR_STORAGE"
        ) from exc


# --- several processes ---------------------------------------------------------------------


def child_command(settings: Settings) -> list[str]:
    """The command line of a child ``conveyor worker``: its task imports as repeated
    ``--import`` arguments, one path or module each (an env var would split paths with
    spaces in them); everything else comes through :func:`child_environment`."""
    imports = [arg for spec in settings.imports for arg in ("--import", spec)]
    return [sys.executable, "-m", "conveyor", "worker", *imports]


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment that makes a child ``conveyor worker`` run with these settings.

    Children get their configuration through the ``CONVEYOR_*`` variables (each option's
    env twin, from the settings table), so nothing has to be re-parsed from the command
    line; the task imports go on the command line (:func:`child_command`).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(env_for(settings.with_(processes=1), skip=frozenset({"imports"})))
    if not settings.debug:
        env.pop("CONVEYOR_DEBUG", None)
    return env


def supervise(settings: Settings) -> int:
    """Run ``settings.processes`` worker processes and wait for them (like N pods).

    SIGTERM/SIGINT are forwarded to every child (a second one too, which makes them exit at
    once). The children run in their own process group, so a Ctrl-C at the terminal reaches
    them once, through the supervisor, not twice. Call it from the main thread (it
    installs signal handlers).

    Returns:
        78 if any child found the configuration broken; else 75 if interrupted; else 0 if
        every child finished; else 1.
    """
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # forwarded by the loop below, not from the handler

    command = child_command(settings)
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
            time.sleep(SUPERVISE_TICK_S)
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
    return combined_exit_code(codes, interrupted=bool(received))


def combined_exit_code(codes: list[int], *, interrupted: bool) -> int:
    """The supervisor's exit code from its children's (see :func:`supervise`)."""
    if EXIT_CONFIG in codes:
        return EXIT_CONFIG
    if all(code == EXIT_OK for code in codes):
        return EXIT_OK
    if interrupted or EXIT_INTERRUPTED in codes:
        return EXIT_INTERRUPTED
    return EXIT_FAILED
