"""Helpers of the fault suite: submit jobs straight to the queue, run and kill workers."""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.job_ids import new_job_id
from conveyor.jobs import Job, encode_for_queue
from conveyor.queues.messages import Outgoing
from conveyor.storage import Storage
from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import conveyor_command, wait_for
from tests.faults.checker import Expect

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The suite's tasks, by module name (the workers get the repository on PYTHONPATH).
TASKS_MODULE = "tests.faults.tasks_for_faults"
#: Exit status of a worker that crashed at a CONVEYOR_TEST_CRASH_AT point.
CRASHED = 86
EX_INTERRUPTED = 75


def worker_env(queue_env: QueueEnv, **extra: str) -> dict[str, str]:
    """The environment of the suite's workers: the e2e one, the suite's tasks, and more."""
    env = queue_env.with_env(CONVEYOR_IMPORT=TASKS_MODULE, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def with_max_receive_count(queue_env: QueueEnv, count: int) -> QueueEnv:
    """The same environment on a queue that dead-letters after ``count`` receives (on SQS
    a new queue and dead-letter queue: the receive count is the queue's redrive policy)."""
    settings = queue_env.settings.with_(max_receive_count=count)
    url = queue_env.queue_url
    if queue_env.backend == "sqs":
        from conveyor.queues.sqs_admin import create_queue

        url = create_queue(f"faults-mrc{count}", max_receive_count=count, settings=settings)
    return dataclasses.replace(
        queue_env,
        queue_url=url,
        settings=settings.with_(queue_url=url),
        env={
            **queue_env.env,
            "CONVEYOR_QUEUE_URL": url,
            "CONVEYOR_MAX_RECEIVE_COUNT": str(count),
        },
    )


def prepare(
    queue_env: QueueEnv,
    task: str,
    inputs: Sequence[bytes],
    expected: Callable[[bytes, int], bytes | None],
    *,
    params: Mapping[str, Any] | None = None,
    reason: str | None = None,
    first_seed: int = 1000,
) -> tuple[list[Expect], list[str]]:
    """Everything ``conveyor submit`` does but the send: inputs written straight into the
    storage, jobs recorded as queued.

    Returns:
        What each job should end as (``expected(input, seed)`` is its clean output, None
        for a job that must fail with ``reason`` in its ledger error), and the message
        bodies to send.
    """
    storage = Storage(queue_env.storage)
    jobs: list[Job] = []
    expects: list[Expect] = []
    for index, data in enumerate(inputs):
        job_id = new_job_id()
        job = Job(
            job_id=job_id,
            task=task,
            input=f"inputs/{job_id}/in.dat",
            output=f"outputs/{job_id}/out.dat",
            params=dict(params or {}),
            seed=first_seed + index,
        )
        path = queue_env.storage / str(job.input)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        jobs.append(job)
        expects.append(Expect(job_id, str(job.output), expected(data, job.seed), reason=reason))
    with queue_env.open_ledger() as ledger:
        ledger.record_queued(jobs, sources=[f"in-{index}.dat" for index in range(len(jobs))])
    return expects, [encode_for_queue(job, storage) for job in jobs]


def submit(
    queue_env: QueueEnv,
    task: str,
    inputs: Sequence[bytes],
    expected: Callable[[bytes, int], bytes | None],
    **options: Any,
) -> list[Expect]:
    """Submit one job per input (see :func:`prepare`); return what each should end as."""
    expects, bodies = prepare(queue_env, task, inputs, expected, **options)
    send_raw(queue_env, bodies)
    return expects


def send_raw(queue_env: QueueEnv, bodies: Sequence[str]) -> None:
    """Put hand-made message bodies on the queue, as is."""
    with queue_env.open_queue() as queue:
        queue.send_batch([Outgoing(body) for body in bodies])


@dataclass
class Worker:
    """A ``conveyor worker`` subprocess whose output goes to a log file."""

    process: subprocess.Popen[bytes]
    log_path: Path
    _log: Any = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self, signum: signal.Signals = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout_s: float = 60.0) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running after {timeout_s} s\n{self.log()}"
            ) from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def actions(self) -> list[str]:
        """The ``action`` of every JSON log line, in order."""
        import json

        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    found.append(str(json.loads(line).get("action")))
                except ValueError:
                    continue
        return found


@contextmanager
def worker_pool(env: Mapping[str, str], log_dir: Path) -> Iterator[Callable[..., Worker]]:
    """A factory of worker subprocesses; every one still running is killed at the end."""
    started: list[Worker] = []

    def start(*args: str, address_space_bytes: int | None = None, **extra: str) -> Worker:
        log_path = log_dir / f"worker-{len(started)}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            conveyor_command("worker", *args),
            env={**env, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if address_space_bytes is not None:
            # A memory limit like a container's, set from outside (no preexec_fn: this
            # process has threads). The worker needs far less until its first job.
            limit = (address_space_bytes, address_space_bytes)
            resource.prlimit(process.pid, resource.RLIMIT_AS, limit)
        worker = Worker(process, log_path, log)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(10)
            worker._log.close()


def drained(queue_env: QueueEnv) -> bool:
    """Whether the queue holds nothing visible, delayed or in flight."""
    return queue_env.stats().pending == 0


def wait_drained(queue_env: QueueEnv, timeout_s: float, poll_s: float = 0.2) -> None:
    """Wait until the queue holds nothing visible, delayed or in flight."""
    deadline = time.monotonic() + timeout_s
    while not drained(queue_env):
        if time.monotonic() > deadline:
            raise AssertionError(f"queue not drained after {timeout_s} s: {queue_env.stats()}")
        time.sleep(poll_s)


def dead_letter_ids(queue_env: QueueEnv) -> set[str]:
    return {job_id for job_id in queue_env.dead_letters() if job_id is not None}


def run_command(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a system command (mount, umount), capturing its output."""
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)


def remount_writable(directory: Path) -> None:
    """Make a read-only bind mount (the ``mounts`` fixture) writable again: the fault is
    repaired."""
    done = run_command("mount", "-o", "remount,bind,rw", str(directory))
    assert done.returncode == 0, done.stderr


__all__ = [
    "CRASHED",
    "EX_INTERRUPTED",
    "TASKS_MODULE",
    "Worker",
    "dead_letter_ids",
    "drained",
    "prepare",
    "send_raw",
    "submit",
    "wait_drained",
    "wait_for",
    "worker_env",
    "worker_pool",
]
