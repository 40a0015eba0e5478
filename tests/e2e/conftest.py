"""The worker environment every end-to-end test runs in, once per queue and ledger backend."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.jobs import job_id_of
from conveyor.ledger import Ledger, default_ledger_url, open_ledger
from conveyor.queues import DeadLetter, Queue, QueueStats, open_queue
from conveyor.settings import Settings
from tests.fixtures.sqs import fake_aws_env

#: (queue, ledger) backends the end-to-end tests run against: the embedded queue and
#: ledger (one machine), the embedded queue with a real PostgreSQL ledger, and SQS as
#: served by moto on loopback with PostgreSQL (a cluster). Queue and ledger do not talk to
#: each other, so every backend of each is covered without their whole product (SQS with
#: the embedded ledger adds only time); tests/fixtures/postgres.py starts one server per
#: session and gives each test a fresh database.
E2E_BACKENDS = [
    ("sqlite", "sqlite"),
    ("sqlite", "postgresql"),
    ("sqs", "postgresql"),
]


@dataclass
class QueueEnv:
    """What a test needs to run conveyor subprocesses against one queue and storage.

    Attributes:
        backend: the queue backend's name.
        storage: the storage root.
        queue_url: the queue's URL.
        env: the environment for every ``conveyor`` subprocess (storage, queue, ledger,
            fast polls).
        work: a scratch directory outside the storage (local input files, logs).
        settings: the same configuration as ``env``, for the test process.
        ledger_backend: ``sqlite`` (the default ledger in the storage root: no
            ``CONVEYOR_LEDGER_URL``) or ``postgresql`` (a fresh database per test).
        ledger_url: the ledger's URL.
    """

    backend: str
    storage: Path
    queue_url: str
    env: dict[str, str]
    work: Path
    settings: Settings = field(default_factory=Settings)
    ledger_backend: str = "sqlite"
    ledger_url: str = ""

    def __post_init__(self) -> None:
        if not self.ledger_url:
            self.ledger_url = default_ledger_url(self.storage)

    @property
    def label(self) -> str:
        """``queue/ledger`` backends, for reports and messages."""
        return f"{self.backend}/{self.ledger_backend}"

    def open_ledger(self, *, create: bool = True) -> Ledger:
        """The scenario's ledger, opened in the test process (close it: ``with``)."""
        return open_ledger(self.ledger_url, create=create)

    def open_queue(self) -> Queue:
        """A queue handle in the test process (to inspect, or to send hand-made messages)."""
        return open_queue(self.queue_url, self.settings)

    def with_env(self, **extra: str) -> dict[str, str]:
        """The environment plus some variables."""
        return {**self.env, **extra}

    # Checks read the ledger and the queue in the test process: a subprocess per check
    # would cost a second each. test_submit_status.py tests those commands themselves.

    def record(self, job_id: str) -> dict[str, Any]:
        """A job's ledger record, as ``conveyor status JOB_ID --json`` prints it."""
        with self.open_ledger(create=False) as ledger:
            record = ledger.get(job_id)
        assert record is not None, f"no job {job_id} in the ledger"
        return record.to_dict()

    def counts(self) -> dict[str, int]:
        """Jobs per state in the ledger."""
        with self.open_ledger(create=False) as ledger:
            return {state.value: n for state, n in ledger.counts().items()}

    def dead_letters(self) -> dict[str | None, DeadLetter]:
        """The dead-letter queue, by job id."""
        with self.open_queue() as queue:
            return {job_id_of(letter.body): letter for letter in queue.dead_letters()}

    def stats(self) -> QueueStats:
        with self.open_queue() as queue:
            return queue.stats()


@pytest.fixture(params=E2E_BACKENDS, ids=["/".join(pair) for pair in E2E_BACKENDS])
def queue_env(request: pytest.FixtureRequest, tmp_path: Path) -> QueueEnv:
    """A fresh storage root, queue and ledger, and the environment pointing workers at them.

    Polls are short (0.2 s waits, 2 empty polls to drain) so that ``--until-empty``
    workers exit within a second of the queue emptying.
    """
    queue, ledger = request.param
    return make_queue_env(request, tmp_path, queue, ledger)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_env(request: pytest.FixtureRequest, tmp_path: Path) -> QueueEnv:
    """The embedded queue with each ledger: for tests of what the ledger changes in the
    command line (status, submit), which the queue backend does not."""
    return make_queue_env(request, tmp_path, "sqlite", str(request.param))


@pytest.fixture
def local_env(request: pytest.FixtureRequest, tmp_path: Path) -> QueueEnv:
    """Like ``queue_env`` on the embedded queue and ledger only: for tests of the command
    line itself (argument checks, configuration errors), which no backend changes."""
    return make_queue_env(request, tmp_path, "sqlite", "sqlite")


def make_queue_env(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, ledger_backend: str
) -> QueueEnv:
    """Storage, queue, ledger and subprocess environment for these backends."""
    storage = tmp_path / "storage"
    storage.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CONVEYOR_", "AWS_", "SQS_"))
    }
    settings = Settings(storage=storage, max_receive_count=3)
    if backend == "sqs":
        # A queue and its dead-letter queue on the test server; fake credentials.
        queue_url, settings = request.getfixturevalue("create_sqs_queue")("e2e", settings)
        env.update(fake_aws_env(request.getfixturevalue("sqs_endpoint"), tmp_path))
    else:
        queue_url = f"sqlite:///{tmp_path / 'queue.db'}"
    ledger_url = default_ledger_url(storage)
    if ledger_backend == "postgresql":
        ledger_url = request.getfixturevalue("make_postgres_url")()
        env["CONVEYOR_LEDGER_URL"] = ledger_url
        settings = settings.with_(ledger_url=ledger_url)
    settings = settings.with_(queue_url=queue_url)
    env.update(
        {
            "CONVEYOR_STORAGE": str(storage),
            "CONVEYOR_QUEUE_URL": queue_url,
            "CONVEYOR_WAIT_S": "0.2",
            "CONVEYOR_EMPTY_POLLS": "2",
            "CONVEYOR_MAX_RECEIVE_COUNT": "3",
            "CONVEYOR_RETRY_BASE_S": "0.2",
            "CONVEYOR_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return QueueEnv(backend, storage, queue_url, env, work, settings, ledger_backend, ledger_url)
