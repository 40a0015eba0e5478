"""A real ``conveyor worker`` with ``--metrics-port``: its /metrics endpoint and its
structured log lines, one JSON object per event."""

from __future__ import annotations

import random
import re
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.errors import ConfigError
from conveyor.metrics import WorkerMetrics
from conveyor.settings import EXIT_CONFIG, EXIT_INTERRUPTED
from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import TASKS_FILE, WorkerProcess, run, run_json, wait_for, workers, write_csv

ROWS = 40


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at ``url``, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metrics_url(worker: WorkerProcess) -> str | None:
    """The URL the worker logged for its metrics endpoint, once it has."""
    for line in worker.log_events():
        if line.get("action") == "metrics":
            match = re.search(r"http://127\.0\.0\.1:\d+/metrics", line["msg"])
            return match.group(0) if match else None
    return None


def test_worker_serves_metrics_and_logs_every_event(local_env: QueueEnv, tmp_path: Path) -> None:
    inputs = [write_csv(local_env.work / f"in-{i}.csv", ROWS) for i in range(2)]
    bad = local_env.work / "bad.csv"
    bad.write_text("ID,Value\n1,nope\n")
    good_ids = run("submit", *inputs, env=local_env.env).stdout.split()
    (bad_id,) = run("submit", bad, env=local_env.env).stdout.split()
    marker_dir = local_env.work / "markers"
    marker_dir.mkdir()
    (slow_id,) = run(
        "submit",
        "--task=slow-first",
        "--import",
        TASKS_FILE,
        f"--param=marker_dir={marker_dir}",
        "--param=first_run_s=0.6",
        inputs[0],
        env=local_env.env,
    ).stdout.split()

    with workers(local_env.env, tmp_path) as start:
        worker = start(
            "--metrics-port=0",
            "--import",
            str(TASKS_FILE),
            "--heartbeat-s=0.1",
            "--max-idle-s=60",
            "--log-level=DEBUG",  # receives and lease extensions are debug lines
        )
        url = wait_for(lambda: metrics_url(worker), what="the metrics URL in the log")
        summary = wait_for(
            lambda: (
                (s := run_json("status", env=local_env.env))["counts"]["succeeded"] == 3
                and s["counts"]["failed"] == 1
                and s
            ),
            what="the jobs to finish",
        )
        samples = scrape(url)
        worker.signal(signal.SIGTERM)
        assert worker.wait() == EXIT_INTERRUPTED
        events = worker.log_events()

    def sample(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert summary["counts"]["succeeded"] == 3
    assert sample("conveyor_jobs_total", task="csv-process", outcome="succeeded") == 2
    assert sample("conveyor_jobs_total", task="slow-first", outcome="succeeded") == 1
    assert sample("conveyor_jobs_total", task="csv-process", outcome="failed") == 1
    assert sample("conveyor_dead_letters_total", task="csv-process") == 1
    assert sample("conveyor_rows_processed_total", task="csv-process") == 2 * ROWS
    assert sample("conveyor_messages_received_total") == 4
    assert sample("conveyor_lease_extensions_total") >= 1
    assert sample("conveyor_job_queue_wait_seconds_count", task="csv-process") == 3  # bad too
    assert sample("conveyor_queue_requests_total", kind="receive") >= 1
    assert sample("conveyor_queue_requests_total", kind="ack") >= 1

    # One JSON object per event, with the job's id, task, attempt (and duration when done).
    by_job: dict[str, list[str]] = {}
    for line in events:
        if line.get("job_id"):
            by_job.setdefault(line["job_id"], []).append(line["action"])

    def outcomes(job_id: str) -> list[str]:  # a job held while another runs is extended too
        return [action for action in by_job[job_id] if action != "lease_extended"]

    for job_id in good_ids:
        assert outcomes(job_id) == ["received", "started", "succeeded"], by_job[job_id]
    assert outcomes(bad_id) == ["received", "started", "failed"]
    assert "lease_extended" in by_job[slow_id]
    done = next(e for e in events if e.get("action") == "succeeded")
    assert done["task"] == "csv-process"
    assert done["attempt"] == 1
    assert done["duration_s"] >= 0
    failed = next(e for e in events if e.get("action") == "failed")
    assert "nope" in failed["reason"]
    assert any(e.get("action") == "shutdown" for e in events)


def test_a_taken_metrics_port_is_a_configuration_error(local_env: QueueEnv) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run(
            "worker", f"--metrics-port={port}", "--max-idle-s=1", env=local_env.env, check=False
        )
    assert done.returncode == EXIT_CONFIG
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr


def test_metrics_server_binds_loopback_and_stops_on_close() -> None:
    metrics = WorkerMetrics(process_metrics=False)
    server = metrics.serve("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        assert server.host == "127.0.0.1"
        assert ("conveyor_messages_received_total", ()) in scrape(url)
    finally:
        server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    with pytest.raises(ConfigError, match="cannot serve metrics"):
        metrics.serve("256.0.0.1", 0)


def _two_free_ports() -> int:
    """A port P such that P and P+1 are both free right now.

    Drawn below Linux's ephemeral range (32768 and up), so that no client socket of this
    test (its own scrapes) can be given one of them before the workers bind it.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 30_000)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no two adjacent free ports")


def test_each_worker_process_serves_metrics_on_its_own_port(
    local_env: QueueEnv, tmp_path: Path
) -> None:
    port = _two_free_ports()
    with workers(local_env.env, tmp_path) as start:
        supervisor = start("--processes=2", f"--metrics-port={port}", "--max-idle-s=60")
        for child_port in (port, port + 1):
            url = f"http://127.0.0.1:{child_port}/metrics"

            def up(url: str = url) -> bool:
                try:
                    return ("conveyor_messages_received_total", ()) in scrape(url)
                except OSError:
                    return False

            try:
                wait_for(up, timeout_s=60.0, what=f"metrics on port {child_port}")
            except AssertionError as exc:  # say why: the workers' log has it
                raise AssertionError(f"{exc}; workers' log:\n{supervisor.log()[-4000:]}") from None
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait() == EXIT_INTERRUPTED
