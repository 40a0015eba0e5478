"""Prometheus metrics of a worker: a job observer, and the HTTP endpoint that serves them.

Every metric lives in the worker's own registry (no process-wide default), so two workers
in one process, or a test, never share counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.errors import ConfigError
from conveyor.events import Action, WorkerEvent
from conveyor.queues.base import Queue

#: Seconds a task may run: from no-op jobs to the hours a large CSV can take.
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 14400)
#: Seconds from submit to start: from an idle worker to a backlog of hours.
WAIT_BUCKETS_S = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600)
#: The label value of a job whose message was too malformed to name its task.
UNKNOWN_TASK = "unknown"

#: Outcomes that end a started job's attempt in this worker.
_ENDS = frozenset(
    {
        Action.SUCCEEDED,
        Action.RETRYING,
        Action.FAILED,
        Action.LEASE_LOST,
        Action.RELEASED,
        Action.CANCELLED,
    }
)
#: Actions counted in ``conveyor_jobs_total`` as an outcome.
_OUTCOMES = _ENDS | {Action.SKIPPED}


class QueueRequestCollector(Collector):
    """``conveyor_queue_requests_total{kind}``: the queue's own request counts, read at
    scrape time (for SQS these are the billed API calls, retries included)."""

    def __init__(self, request_counts: Callable[[], dict[str, int]]) -> None:
        self._request_counts = request_counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "conveyor_queue_requests",
            "Requests this worker made to the queue, by kind (SQS: by API action).",
            labels=["kind"],
        )
        for kind, count in sorted(self._request_counts().items()):
            family.add_metric([kind], count)
        yield family


class WorkerMetrics:
    """A job observer that keeps a worker's Prometheus metrics.

    Register it with the worker beside the log observer; serve it with :meth:`serve`.

    Args:
        queue: the worker's queue, whose request counts are exported; None for none.
        clock: epoch seconds, to measure the wait from submit to start.
        process_metrics: also export the process's CPU, memory and file descriptors.
    """

    def __init__(
        self,
        queue: Queue | None = None,
        *,
        clock: Callable[[], float] = time.time,
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._running: set[str] = set()
        reg = self.registry
        self.jobs = Counter(
            "conveyor_jobs",
            "Jobs handled by this worker, by task and outcome "
            "(succeeded, skipped, retrying, failed, lease_lost, released, cancelled).",
            ["task", "outcome"],
            registry=reg,
        )
        self.duration = Histogram(
            "conveyor_job_duration_seconds",
            "Seconds a task ran, for attempts that report it.",
            ["task", "outcome"],
            buckets=DURATION_BUCKETS_S,
            registry=reg,
        )
        self.queue_wait = Histogram(
            "conveyor_job_queue_wait_seconds",
            "Seconds from a job's submit to the start of its attempt.",
            ["task"],
            buckets=WAIT_BUCKETS_S,
            registry=reg,
        )
        self.received = Counter(
            "conveyor_messages_received", "Messages received from the queue.", registry=reg
        )
        self.redeliveries = Counter(
            "conveyor_redeliveries",
            "Messages received again (receive count above 1): retries, expired leases, "
            "crashed workers, duplicate deliveries.",
            registry=reg,
        )
        self.lease_extensions = Counter(
            "conveyor_lease_extensions",
            "Leases extended by the heartbeat (SQS: ChangeMessageVisibility entries).",
            registry=reg,
        )
        self.dead_letters = Counter(
            "conveyor_dead_letters",
            "Jobs this worker moved to the dead-letter queue (permanent failure or out of "
            "attempts).",
            ["task"],
            registry=reg,
        )
        self.rows = Counter(
            "conveyor_rows_processed",
            "Rows processed by tasks that report them (the CSV task's result `rows`).",
            ["task"],
            registry=reg,
        )
        self.in_progress = Gauge(
            "conveyor_jobs_in_progress", "Jobs started and not yet finished.", registry=reg
        )
        if queue is not None:
            reg.register(QueueRequestCollector(queue.request_counts))
        if process_metrics:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)

    def worker_event(self, event: WorkerEvent) -> None:
        """Update the metrics for one worker event. Never raises for a well-formed event."""
        task = event.task or UNKNOWN_TASK
        action = event.action
        if action is Action.RECEIVED:
            self.received.inc()
            if event.attempt > 1:
                self.redeliveries.inc()
        elif action is Action.LEASE_EXTENDED:
            self.lease_extensions.inc()
        elif action is Action.STARTED:
            self._started(event, task)
        if action in _OUTCOMES:
            self.jobs.labels(task, action.value).inc()
        if action in _ENDS:
            self._ended(event)
        if event.duration_s is not None and action in _OUTCOMES:
            self.duration.labels(task, action.value).observe(max(0.0, event.duration_s))
        if action is Action.FAILED:
            self.dead_letters.labels(task).inc()
        if action is Action.SUCCEEDED and event.result is not None:
            rows = event.result.get("rows")
            if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0:
                self.rows.labels(task).inc(rows)

    def render(self) -> bytes:
        """The metrics in Prometheus's text format (what ``/metrics`` returns)."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve ``/metrics`` on ``host:port`` (port 0: a free one) in a daemon thread.

        Raises:
            ConfigError: the address cannot be bound (port in use, unknown host).
        """
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except (OSError, OverflowError) as exc:  # OverflowError: a port above 65535
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {getattr(exc, 'strerror', None) or exc} "
                "(set --metrics-port / CONVEYOR_METRICS_PORT to a free port)"
            ) from exc
        return MetricsServer(server, thread)

    def _started(self, event: WorkerEvent, task: str) -> None:
        if event.submitted_at is not None:
            # Another machine's clock stamped the submit: a small skew must not go negative.
            wait_s = max(0.0, self._clock() - event.submitted_at)
            self.queue_wait.labels(task).observe(wait_s)
        if event.job_id is not None:
            with self._lock:
                self._running.add(event.job_id)
                self.in_progress.set(len(self._running))

    def _ended(self, event: WorkerEvent) -> None:
        if event.job_id is None:
            return
        with self._lock:
            self._running.discard(event.job_id)
            self.in_progress.set(len(self._running))


class MetricsServer:
    """The running ``/metrics`` endpoint; :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen when asked for port 0)."""
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """The address it listens on."""
        return str(self._server.server_address[0])

    def close(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
