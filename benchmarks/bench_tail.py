"""The ``--until-empty`` tail: how long ``conveyor worker --until-empty`` stays up after its
last job, the time a work-queue Kubernetes Job pays on every pod, on SQLite and on SQS
(moto on 127.0.0.1).

Per scenario: N no-op jobs are sent and recorded queued (as ``conveyor submit`` does), one
real ``conveyor worker --until-empty`` process runs them, and the tail is the time from the
last job's ``finished_at`` in the ledger to the worker's exit 0; the worker's log says when
it decided the queue was drained, and on which evidence (docs/architecture.md, "When
--until-empty exits"). The last SQS scenario leaves a job open in the ledger with no
message (a stale record), so the ledger cannot vouch for the queue: the fallback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixtures.sqs import fake_aws_env

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
#: No worker of this benchmark may run longer (a hang ends the run, not the machine).
WORKER_TIMEOUT_S = 300.0
#: The task every job runs: nothing, so the tail is all that is left to measure.
NOOP_TASKS = """
import conveyor


@conveyor.task("noop")
def noop(ctx):
    return None
"""


@dataclass(frozen=True)
class Scenario:
    """One row: a queue backend, the worker's poll settings, and whether the ledger has
    an open job that the queue does not hold."""

    backend: str  # "sqlite" or "sqs"
    wait_s: float
    empty_polls: int = 3
    stale_ledger: bool = False
    repeat: int | None = None  # None: the runner's --repeat


@dataclass(frozen=True)
class Tail:
    """One measured run: seconds from the last success to the drained decision and to the
    exit, and the evidence the worker named."""

    decided_s: float
    exit_s: float
    evidence: str


def scenarios(quick: bool) -> list[Scenario]:
    """The table's rows: each backend with its default wait, SQS with a shorter one, and
    SQS's fallback when the ledger cannot vouch for the queue (measured once: it is
    ``empty_polls`` waits by construction)."""
    sqs_wait_s = 2.0 if quick else 20.0
    return [
        Scenario("sqlite", 2.0),
        Scenario("sqs", sqs_wait_s),
        Scenario("sqs", 1.0 if quick else 5.0),
        Scenario("sqs", sqs_wait_s, stale_ledger=True, repeat=1),
    ]


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port, in this process; its URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """These environment variables set while the block runs (this process talks to moto
    too), then put back as they were."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def prepare(scenario: Scenario, work: Path, endpoint: str | None, jobs: int) -> dict[str, str]:
    """A fresh storage root and queue holding ``jobs`` no-op jobs, recorded queued; the
    environment of a worker pointed at them."""
    from conveyor.jobs import Job
    from conveyor.ledger import open_ledger
    from conveyor.queues import Outgoing, open_queue
    from conveyor.queues.sqs_admin import create_queue
    from conveyor.settings import Settings

    storage = work / "storage"
    storage.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "AWS_"))}
    settings = Settings(storage=storage)
    if scenario.backend == "sqs":
        assert endpoint is not None
        env.update(fake_aws_env(endpoint, work))
        settings = settings.with_(endpoint_url=endpoint, region=REGION)
    sent = [Job(task="noop") for _ in range(jobs)]
    with patched_environ({k: v for k, v in env.items() if k.startswith("AWS_")}):
        if scenario.backend == "sqs":
            queue_url = create_queue(f"tail-{work.name}", settings=settings)
        else:
            queue_url = f"sqlite:///{work / 'queue.db'}"
        settings = settings.with_(queue_url=queue_url)
        with open_queue(queue_url, settings) as queue:
            queue.send_batch([Outgoing(job.to_json()) for job in sent])
    with open_ledger(settings.resolved_ledger_url) as ledger:
        ledger.record_queued(sent)
        if scenario.stale_ledger:
            ledger.record_queued([Job(task="noop")])  # its message was lost long ago
    (work / "noop_tasks.py").write_text(NOOP_TASKS)
    env.update(
        CONVEYOR_STORAGE=str(storage),
        CONVEYOR_QUEUE_URL=queue_url,
        CONVEYOR_LOG_FORMAT="json",
    )
    return env


def run_worker(scenario: Scenario, work: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run one ``conveyor worker --until-empty`` to its exit; its exit time and its log."""
    command = [
        sys.executable,
        "-m",
        "conveyor",
        "worker",
        "--until-empty",
        "--import",
        str(work / "noop_tasks.py"),
        "--wait-s",
        str(scenario.wait_s),
        "--empty-polls",
        str(scenario.empty_polls),
    ]
    log_path = work / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        code = process.wait(WORKER_TIMEOUT_S)
        exited_at = time.time()
    text = log_path.read_text()
    if code != 0:
        raise RuntimeError(f"the worker exited {code}:\n{text[-2000:]}")
    return exited_at, text


def last_success_at(storage: Path) -> float:
    """When the ledger's last job succeeded (wall clock)."""
    from conveyor.jobs import JobState
    from conveyor.ledger import default_ledger_url, open_ledger

    with open_ledger(default_ledger_url(storage), create=False) as ledger:
        done = ledger.jobs(state=JobState.SUCCEEDED, limit=1000)
    finished = [job.finished_at for job in done if job.finished_at is not None]
    if not finished:
        raise RuntimeError("no job succeeded")
    return max(finished)


def drained_line(log: str) -> tuple[float, str]:
    """The worker's "the queue is drained: EVIDENCE" log line: its time and evidence."""
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            entry: dict[str, Any] = json.loads(line)
            message = str(entry.get("msg", ""))
            if message.startswith("the queue is drained: "):
                return float(entry["ts"]), message.removeprefix("the queue is drained: ")
    raise RuntimeError(f"the worker never said why it stopped:\n{log[-2000:]}")


def measure_once(scenario: Scenario, endpoint: str | None, jobs: int) -> Tail:
    """One fresh queue, one worker run, its tail."""
    with tempfile.TemporaryDirectory(prefix="conveyor-tail-") as tmp:
        work = Path(tmp)
        env = prepare(scenario, work, endpoint, jobs)
        exited_at, log = run_worker(scenario, work, env)
        last = last_success_at(work / "storage")
        decided_at, evidence = drained_line(log)
    return Tail(decided_at - last, exited_at - last, evidence)


def measure(scenario: Scenario, endpoint: str | None, jobs: int, repeat: int) -> Tail:
    """The best (shortest) tail of ``repeat`` runs."""
    runs = [measure_once(scenario, endpoint, jobs) for _ in range(max(1, repeat))]
    return min(runs, key=lambda tail: tail.exit_s)


def run(args: argparse.Namespace | None = None) -> list[Any]:
    """The benchmark runner's entry point: one table of tails.

    Options read from ``args``: ``quick`` and ``repeat`` (the runner's), ``tail_jobs``.
    """
    from benchmarks._table import Table

    quick = bool(getattr(args, "quick", False))
    repeat = int(getattr(args, "repeat", None) or 1)
    jobs = int(getattr(args, "tail_jobs", None) or 20)
    rows: list[Sequence[object]] = []
    with moto_endpoint() as endpoint:
        for scenario in scenarios(quick):
            tail = measure(scenario, endpoint, jobs, scenario.repeat or repeat)
            rows.append(
                [
                    "SQLite" if scenario.backend == "sqlite" else "SQS (moto)",
                    f"{scenario.wait_s:g}",
                    scenario.empty_polls,
                    "1 stale open job" if scenario.stale_ledger else "agrees",
                    tail.evidence,
                    f"{tail.decided_s:.1f}",
                    f"{tail.exit_s:.1f}",
                ]
            )
    return [
        Table(
            title="`worker --until-empty` tail: last job succeeded → worker exit 0 (seconds)",
            columns=[
                "queue",
                "--wait-s",
                "--empty-polls",
                "ledger",
                "evidence the worker exited on",
                "drained decided",
                "exit 0",
            ],
            rows=rows,
            notes=[
                f"{jobs} no-op jobs, one worker process, the embedded SQLite ledger; best of "
                f"{repeat} run(s) (the stale-ledger row: one). Wait 20 s and 2 s are the "
                "defaults for SQS and SQLite.",
                "moto's counts are exact; on AWS the approximate counts can lag the last "
                "delete, adding a poll of --wait-s while they settle.",
            ],
        )
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for table in run(argparse.Namespace(quick="--quick" in sys.argv, repeat=1)):
        print(table.markdown())
