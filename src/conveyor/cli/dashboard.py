"""``conveyor dashboard``: serve the read-only web dashboard of the ledger and the queue."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from conveyor.cli.shared_options import (
    base_settings,
    queue_options,
    shown_ledger_url,
    storage_option,
)
from conveyor.client_base import open_configured_ledger, open_configured_queue
from conveyor.errors import ConfigError, QueueNotFound
from conveyor.queues import Queue
from conveyor.settings import Settings


@click.command()
@storage_option
@queue_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="CONVEYOR_DASHBOARD_HOST",
    show_envvar=True,
    help="Address to listen on. The dashboard has no login: keep it on loopback and use "
    "an SSH tunnel or `kubectl port-forward` to reach it from elsewhere.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    envvar="CONVEYOR_DASHBOARD_PORT",
    show_envvar=True,
    help="Port to listen on (0: any free port; the URL is printed).",
)
@click.option(
    "--window-s",
    type=click.FloatRange(60, 30 * 86400),
    default=3600.0,
    show_default=True,
    envvar="CONVEYOR_DASHBOARD_WINDOW_S",
    show_envvar=True,
    help="History the jobs-over-time chart covers, in seconds.",
)
def dashboard(
    storage: Path,
    queue_url: str | None,
    endpoint_url: str | None,
    *,
    host: str,
    port: int,
    window_s: float,
) -> None:
    """Serve a live web page of queue depth, jobs by state over time, throughput, recent
    failures, jobs by state and the dead-letter queue. Read-only: it changes nothing.

    On a loopback address (127.0.0.0/8, ::1, localhost) it answers only requests naming
    that address or localhost (a guard against DNS rebinding)."""
    import uvicorn  # the web stack loads only for this command

    from conveyor.dashboard import DashboardData, create_app
    from conveyor.dashboard.app import loopback_hosts

    settings = base_settings(storage, queue_url, endpoint_url)
    data = DashboardData(
        # Read-only: a ledger or queue that does not exist yet is shown as zeros.
        lambda: open_configured_ledger(settings, create=False),
        lambda: _open_queue(settings),
        queue_url=settings.resolved_queue_url,
        ledger_url=shown_ledger_url(settings),
        window_s=window_s,
    )
    allowed = loopback_hosts(host)
    app = create_app(data, allowed_hosts=allowed)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(f"conveyor dashboard: http://{shown_host}:{bound_port}/  (Ctrl-C to stop)")
    if allowed is None:
        click.echo(
            f"conveyor: warning: listening on {host} without a login: anyone who can reach "
            "this port can read job names, paths and errors",
            err=True,
        )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        data.close()


def _open_queue(settings: Settings) -> Queue:
    """The configured queue, never created. The default embedded queue missing means
    nothing was submitted yet (:class:`QueueNotFound`, shown as zeros); a queue named by
    ``--queue`` that does not exist is a mistake the page shows as an error."""
    if settings.queue_url is None and not settings.storage.is_dir():
        raise QueueNotFound(f"nothing submitted yet under {settings.storage}")
    try:
        return open_configured_queue(settings, create=False)
    except QueueNotFound as exc:
        if settings.queue_url is None:
            raise
        raise ConfigError(exc.message) from exc


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(choose another --port, or 0 for any free one)"
        ) from exc
    return sock
