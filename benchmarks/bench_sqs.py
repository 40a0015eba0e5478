"""SQS cost and speed: conveyor beside Celery's SQS transport, both against one local moto
server, with every request counted at the wire by a small proxy in front of it.

Why a proxy: Celery's transport (kombu) sends its receives and deletes through its own
pycurl/urllib3 client, not botocore, so botocore event hooks would miss them; a proxy
counts both clients the same way, by the SQS action each request names.

Phases, per system: start the workers (long-polling an empty queue), submit N no-op jobs,
wait until the queue holds nothing visible or in flight, stop the workers. Then an idle
phase: one worker of each on an empty queue for ``--idle-s`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"
FAKE_KEY = "testing"
ROOT = Path(__file__).resolve().parent.parent
#: Every wait below is bounded by this.
DRAIN_TIMEOUT_S = 300.0
WORKER_WAIT_S = 20
VISIBILITY_ACTIONS = ("ChangeMessageVisibilityBatch", "ChangeMessageVisibility")
OTHER_ACTIONS = ("GetQueueAttributes", "GetQueueUrl", "other")


# --- the counting proxy ------------------------------------------------------------------


class CountingProxy:
    """A reverse proxy on 127.0.0.1 that forwards every request to ``upstream`` and counts
    SQS requests by action (``X-Amz-Target`` for the JSON protocol, ``Action`` for query).

    The Host header is forwarded unchanged, so the server writes queue URLs that point at
    the proxy and clients keep coming through it.
    """

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                proxy._forward_quietly(self)

            def do_GET(self) -> None:
                proxy._forward_quietly(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._local = threading.local()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def _forward_quietly(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        # A worker stopped in the middle of a long poll hangs up: nothing to answer then.
        with contextlib.suppress(ConnectionError):
            self._forward(handler)

    def _forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self._counts[_action_of(handler, body)] += 1
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
        try:
            conn.request(handler.command, handler.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            handler.send_error(502)
            return
        handler.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _action_of(handler: http.server.BaseHTTPRequestHandler, body: bytes) -> str:
    target = handler.headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    query = urllib.parse.urlsplit(handler.path).query
    for text in (body.decode(errors="replace"), query):
        action = urllib.parse.parse_qs(text).get("Action")
        if action:
            return action[0]
    return "other"


# --- servers and processes ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server process on a free loopback port; its URL. Stopped on exit."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def aws_env() -> dict[str, str]:
    """The environment of worker processes: fake credentials, no real AWS reachable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONVEYOR_"))}
    env.update(
        AWS_ACCESS_KEY_ID=FAKE_KEY,
        AWS_SECRET_ACCESS_KEY=FAKE_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(ROOT),
    )
    return env


def spawn(entry: str, *args: str) -> subprocess.Popen[bytes]:
    """``python -c`` calling ``benchmarks.bench_sqs.<entry>(*args)`` in a new process."""
    code = f"import sys; from benchmarks.bench_sqs import {entry}; {entry}(*sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=aws_env(), cwd=ROOT, stdout=subprocess.DEVNULL
    )


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the two systems ---------------------------------------------------------------------


def conveyor_worker(queue_url: str, endpoint: str, storage: str) -> None:
    """A conveyor worker process running no-op jobs until SIGTERM."""
    from conveyor.queues import open_queue
    from conveyor.settings import Settings
    from conveyor.stop import RunForever, Shutdown
    from conveyor.task_registry import TaskRegistry
    from conveyor.worker import Worker

    settings = Settings(
        storage=Path(storage),
        queue_url=queue_url,
        endpoint_url=endpoint,
        region=REGION,
        wait_s=WORKER_WAIT_S,
    )
    registry = TaskRegistry()
    registry.register("noop", _noop)
    with open_queue(queue_url, settings) as queue, Shutdown().installed() as shutdown:
        Worker(queue, settings, registry=registry, observers=[], shutdown=shutdown).run(
            RunForever()
        )


def _noop(ctx: Any) -> None:
    ctx.write_path.write_bytes(b"")


def conveyor_submit(queue_url: str, endpoint: str, storage: Path, jobs: int) -> None:
    """Submit no-op jobs the way ``conveyor submit`` does: one message per job, batched."""
    from conveyor.job_ids import new_job_id
    from conveyor.jobs import Job, encode_for_queue
    from conveyor.queues import Outgoing, open_queue
    from conveyor.settings import Settings
    from conveyor.storage import Storage

    settings = Settings(storage=storage, endpoint_url=endpoint, region=REGION)
    store = Storage(storage)
    with open_queue(queue_url, settings) as queue:
        messages = []
        for _ in range(jobs):
            job_id = new_job_id()
            job = Job(task="noop", output=f"outputs/{job_id}/out.txt", job_id=job_id)
            messages.append(Outgoing(encode_for_queue(job, store), dedup_id=job.dedup_id))
        queue.send_batch(messages)


def celery_app(broker: str, queue_name: str, queue_url: str) -> Any:
    """A Celery app on the SQS transport with one no-op task, configured for its best case
    here: a predefined queue (no lookups), 20 s long polls, batches of 10 (prefetch),
    late acks (at-least-once, as conveyor), no results, no remote control."""
    from celery import Celery

    app = Celery("bench", broker=broker)
    app.conf.update(
        broker_transport_options={
            "region": REGION,
            "is_secure": False,
            "wait_time_seconds": WORKER_WAIT_S,
            "visibility_timeout": 60,
            "predefined_queues": {
                queue_name: {
                    "url": queue_url,
                    "access_key_id": FAKE_KEY,
                    "secret_access_key": FAKE_KEY,
                }
            },
        },
        task_default_queue=queue_name,
        task_acks_late=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=10,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    app.task(name="noop")(_celery_noop)
    return app


def _celery_noop() -> None:
    return None


def celery_worker(broker: str, queue_name: str, queue_url: str) -> None:
    """A Celery worker process (solo pool, one at a time like conveyor's) until SIGTERM."""
    app = celery_app(broker, queue_name, queue_url)
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=ERROR",
        ]
    )


def celery_submit(broker: str, queue_name: str, queue_url: str, jobs: int) -> None:
    """Submit no-op tasks the usual Celery way: one publish per task."""
    app = celery_app(broker, queue_name, queue_url)
    with app.producer_or_acquire() as producer:
        for _ in range(jobs):
            app.send_task("noop", producer=producer)


# --- measuring ---------------------------------------------------------------------------


@dataclass
class Result:
    """One system's pipeline run."""

    system: str
    jobs: int
    workers: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(self.counts.values())


def _queue_empty(sqs: Any, url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"])
        + int(attributes["ApproximateNumberOfMessagesNotVisible"])
        == 0
    )


def _wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def measure(
    system: str, proxy: CountingProxy, sqs: Any, queue_url: str, jobs: int, workers: int, work: Path
) -> Result:
    """Start workers, wait until they poll, submit, wait until drained; count everything."""
    name = queue_url.rsplit("/", 1)[-1]
    broker = f"sqs://{FAKE_KEY}:{FAKE_KEY}@{proxy.url.removeprefix('http://')}"
    storage = work / system
    proxy.reset()
    if system == "conveyor":
        processes = [
            spawn("conveyor_worker", queue_url, proxy.url, str(storage)) for _ in range(workers)
        ]
    else:
        processes = [spawn("celery_worker", broker, name, queue_url) for _ in range(workers)]
    try:
        _wait_for(
            lambda: proxy.counts().get("ReceiveMessage", 0) >= workers, 60, f"{system} workers"
        )
        proxy.reset()
        started = time.monotonic()
        if system == "conveyor":
            conveyor_submit(queue_url, proxy.url, storage, jobs)
        else:
            celery_submit(broker, name, queue_url, jobs)
        _wait_for(lambda: _queue_empty(sqs, queue_url), DRAIN_TIMEOUT_S, f"{system} to drain")
        seconds = time.monotonic() - started
        counts = proxy.counts()
    finally:
        stop_all(processes)
    return Result(system, jobs, workers, seconds, counts)


def measure_idle(
    system: str, proxy: CountingProxy, queue_url: str, idle_s: float, work: Path
) -> float:
    """Requests per minute of one worker on an empty queue, counted from just after its
    first receive (a window of three 20 s polls is exact to within one request)."""
    name = queue_url.rsplit("/", 1)[-1]
    broker = f"sqs://{FAKE_KEY}:{FAKE_KEY}@{proxy.url.removeprefix('http://')}"
    proxy.reset()
    if system == "conveyor":
        process = spawn("conveyor_worker", queue_url, proxy.url, str(work / "idle"))
    else:
        process = spawn("celery_worker", broker, name, queue_url)
    try:
        _wait_for(lambda: proxy.counts().get("ReceiveMessage", 0) >= 1, 60, f"{system} worker")
        proxy.reset()
        time.sleep(idle_s)  # the thing measured is what happens over time
        counts = proxy.counts()
    finally:
        stop_all([process])
    return sum(counts.values()) * 60 / idle_s


def run_all(jobs: int, workers: int, idle_s: float) -> tuple[list[Result], dict[str, float]]:
    """Both systems' pipeline and idle runs against one moto server behind one proxy."""
    os.environ.update({k: v for k, v in aws_env().items() if k.startswith("AWS_")})
    from conveyor.queues.sqs_admin import create_queue
    from conveyor.settings import Settings

    with moto_server() as moto, tempfile.TemporaryDirectory(prefix="bench-sqs-") as tmp:
        proxy = CountingProxy(moto).start()
        sqs = boto3.client("sqs", endpoint_url=moto, region_name=REGION)
        try:
            settings = Settings(endpoint_url=proxy.url, region=REGION)
            results = []
            idle = {}
            for system in ("conveyor", "celery"):
                url = create_queue(f"{system}-jobs", settings=settings)
                results.append(measure(system, proxy, sqs, url, jobs, workers, Path(tmp)))
                if idle_s > 0:
                    idle_url = create_queue(f"{system}-idle", settings=settings)
                    idle[system] = measure_idle(system, proxy, idle_url, idle_s, Path(tmp))
        finally:
            sqs.close()
            proxy.stop()
    return results, idle


def _per_job(counts: Mapping[str, int], jobs: int, *actions: str) -> float:
    return sum(counts.get(action, 0) for action in actions) / jobs


def run(args: argparse.Namespace | None = None) -> list[Any]:
    """The benchmark runner's entry point: the tables of :func:`run_all`."""
    from benchmarks._table import Table

    jobs = int(getattr(args, "sqs_jobs", None) or 200)
    workers = int(getattr(args, "sqs_workers", None) or 2)
    idle_s = float(getattr(args, "sqs_idle_s", None) or 63.0)
    results, idle = run_all(jobs, workers, idle_s)
    rows = []
    for result in results:
        counts = result.counts
        rows.append(
            [
                result.system,
                result.jobs,
                result.workers,
                f"{result.jobs / result.seconds:.0f}",
                f"{result.requests / result.jobs:.2f}",
                f"{_per_job(counts, result.jobs, 'SendMessageBatch', 'SendMessage'):.2f}",
                f"{_per_job(counts, result.jobs, 'ReceiveMessage'):.2f}",
                f"{_per_job(counts, result.jobs, 'DeleteMessageBatch', 'DeleteMessage'):.2f}",
                f"{_per_job(counts, result.jobs, *VISIBILITY_ACTIONS):.2f}",
                f"{_per_job(counts, result.jobs, *OTHER_ACTIONS):.2f}",
                f"{idle.get(result.system, float('nan')):.1f}",
            ]
        )
    return [
        Table(
            title=f"SQS through moto on loopback, requests counted at a proxy: {jobs} no-op "
            f"jobs, {workers} workers each",
            columns=[
                "system",
                "jobs",
                "workers",
                "jobs/s",
                "requests/job",
                "send/job",
                "receive/job",
                "delete/job",
                "visibility/job",
                "other/job",
                "idle req/min",
            ],
            rows=rows,
        )
    ]


def main() -> None:
    """Run standalone: ``python -m benchmarks.bench_sqs [--jobs N] [--workers W]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle-s", type=float, default=63.0)
    args = parser.parse_args()
    results, idle = run_all(args.jobs, args.workers, args.idle_s)
    for result in results:
        print(
            json.dumps(
                {
                    "system": result.system,
                    "jobs_per_s": round(result.jobs / result.seconds, 1),
                    "requests_per_job": round(result.requests / result.jobs, 3),
                    "idle_requests_per_min": round(idle.get(result.system, float("nan")), 2),
                    "counts": result.counts,
                }
            )
        )


if __name__ == "__main__":
    main()
