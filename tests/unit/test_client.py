"""``conveyor.connect()`` and the Client: configuration, submit, get, wait, cancel."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from click.testing import CliRunner

import conveyor
from conveyor.client import Client, connect
from conveyor.default_tasks import TASK_MERGE_TASK, default_registry, task_merge
from conveyor.errors import BadInput, ConfigError, ConveyorError, TransientQueueError, UnknownTask
from conveyor.jobs import Job, JobState
from conveyor.ledger import AmbiguousJobId, JobFinished, JobNotFound, JobRecord, default_ledger_url
from conveyor.queues.base import Queue
from conveyor.queues.messages import Outgoing
from conveyor.settings import Settings, settings_from_env
from conveyor.settings_table import OPTIONS
from conveyor.submission import SubmitInterrupted
from conveyor.task_context import TaskContext
from conveyor.task_registry import Task, TaskRegistry
from conveyor.waiting import WaitTimeout

# --- configuration ------------------------------------------------------------------------


def test_keywords_win_over_the_environment_which_wins_over_defaults() -> None:
    env = {
        "CONVEYOR_STORAGE": "/data",
        "SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/jobs",
        "CONVEYOR_BATCH_SIZE": "3",
        "CONVEYOR_UNTIL_EMPTY": "yes",
        "CONVEYOR_IMPORT": "a.b c.py",
    }

    settings = settings_from_env(env, visibility_timeout_s=90, batch_size="4")

    assert settings.storage == Path("/data")
    assert settings.queue_url == "https://sqs.eu-west-1.amazonaws.com/1/jobs"
    assert settings.wait_s == 20.0  # SQS's default wait
    assert (settings.visibility_timeout_s, settings.batch_size) == (90, 4)
    assert settings.until_empty is True
    assert settings.imports == ("a.b", "c.py")
    assert settings.grace_s == Settings().grace_s


def test_flag_spellings_and_field_names_are_both_keywords() -> None:
    by_flag = settings_from_env({}, queue="sqlite:///q.db", ledger="sqlite:///l.db", heartbeat_s=2)
    by_field = settings_from_env(
        {}, queue_url="sqlite:///q.db", ledger_url="sqlite:///l.db", heartbeat_every_s=2
    )

    assert by_flag == by_field
    assert by_flag.wait_s == 2.0  # SQLite's default wait
    assert by_flag.heartbeat_every_s == 2


def test_a_list_keyword_given_one_string_takes_it_whole() -> None:
    assert settings_from_env({}, imports="my tasks/a b.py").imports == ("my tasks/a b.py",)
    assert settings_from_env({}, imports=["a", Path("b.py")]).imports == ("a", "b.py")
    assert settings_from_env({"CONVEYOR_IMPORT": "a b"}).imports == ("a", "b")


def test_conveyor_queue_url_wins_over_sqs_queue_url_and_empty_values_are_unset() -> None:
    env = {"CONVEYOR_QUEUE_URL": "", "SQS_QUEUE_URL": "https://sqs.x/1/q", "CONVEYOR_WAIT_S": ""}
    assert settings_from_env(env).queue_url == "https://sqs.x/1/q"
    env["CONVEYOR_QUEUE_URL"] = "sqlite:///q.db"
    assert settings_from_env(env).queue_url == "sqlite:///q.db"


@pytest.mark.parametrize(
    ("env", "keywords", "message"),
    [
        ({"CONVEYOR_BATCH_SIZE": "11"}, {}, "CONVEYOR_BATCH_SIZE (--batch-size)"),
        ({"CONVEYOR_VISIBILITY_TIMEOUT_S": "ten"}, {}, "an integer from 1 to 43200"),
        ({"CONVEYOR_UNTIL_EMPTY": "maybe"}, {}, "a boolean"),
        ({}, {"log_format": "yaml"}, "one of auto, json, text"),
        ({}, {"batch_size": 2.5}, "batch_size="),
        ({}, {"no_such_setting": 1}, "unknown setting 'no_such_setting'"),
        ({}, {"queue": "a", "queue_url": "b"}, "given twice"),
        ({}, {"heartbeat_s": 60, "visibility_timeout_s": 60}, "--heartbeat-s must be shorter"),
    ],
)
def test_bad_settings_are_one_clear_config_error(
    env: dict[str, str], keywords: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_from_env(env, **keywords)


def test_the_command_line_and_connect_read_the_environment_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a value in the environment for every option of `conveyor worker`
    import conveyor.cli.worker as cli_worker
    from conveyor.cli import cli

    env = {
        "CONVEYOR_STORAGE": str(tmp_path),
        "CONVEYOR_QUEUE_URL": "sqlite:///q.db",
        "CONVEYOR_ENDPOINT_URL": "http://127.0.0.1:9",
        "CONVEYOR_LEDGER_URL": "sqlite:///l.db",
        "CONVEYOR_VISIBILITY_TIMEOUT_S": "91",
        "CONVEYOR_HEARTBEAT_S": "7.5",
        "CONVEYOR_WAIT_S": "1.5",
        "CONVEYOR_BATCH_SIZE": "3",
        "CONVEYOR_GRACE_S": "12",
        "CONVEYOR_PROCESSES": "1",
        "CONVEYOR_UNTIL_EMPTY": "true",
        "CONVEYOR_EMPTY_POLLS": "4",
        "CONVEYOR_MAX_JOBS": "9",
        "CONVEYOR_MAX_IDLE_S": "30",
        "CONVEYOR_MAX_RECEIVE_COUNT": "6",
        "CONVEYOR_RETRY_BASE_S": "2",
        "CONVEYOR_RETRY_MAX_S": "60",
        "CONVEYOR_IMPORT": "a.b c.py",
        "CONVEYOR_HEALTH_FILE": str(tmp_path / "alive"),
        "CONVEYOR_METRICS_PORT": "9100",
        "CONVEYOR_METRICS_HOST": "0.0.0.0",
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_LOG_LEVEL": "debug",
        "CONVEYOR_DEBUG": "1",
    }
    assert {option.env[0] for option in OPTIONS.values()} == set(env)  # every option
    seen: list[Settings] = []
    monkeypatch.setattr(cli_worker, "run_worker", lambda s: seen.append(s) or 0)
    monkeypatch.setattr(cli_worker, "configure_logging", lambda *a: None)
    # When the command line and the library each build their settings from it
    done = CliRunner().invoke(cli, ["worker"], env=env)
    # Then they are the same settings
    assert done.exit_code == 0, done.output
    assert seen == [settings_from_env(env)]


# --- a client on the embedded queue -------------------------------------------------------


@pytest.fixture
def registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("noop")
    def noop(ctx: TaskContext) -> None:
        return None

    return registry


@pytest.fixture
def client(tmp_path: Path, registry: TaskRegistry) -> Iterator[Client]:
    (tmp_path / "storage").mkdir()
    settings = settings_from_env({}, storage=tmp_path / "storage")
    with Client(settings, registry=registry) as client:
        yield client


def files(directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for index in range(count):
        path = directory / f"in-{index}.txt"
        path.write_text(f"file {index}\n")
        made.append(path)
    return made


def queued(queue: Queue) -> list[Job]:
    """Every message in the queue, received once (and left in flight)."""
    jobs: list[Job] = []
    while batch := queue.receive(10, 0, 600):
        jobs.extend(Job.from_json(message.body) for message in batch)
    return jobs


def input_dirs(client: Client) -> set[str]:
    inputs = client.storage.root / "inputs"
    if not inputs.is_dir():
        return set()
    return {path.name for path in inputs.iterdir() if not path.name.startswith(".")}


def test_submit_copies_the_input_queues_and_records_the_job(client: Client, tmp_path: Path) -> None:
    (source,) = files(tmp_path / "work", 1)

    job = client.submit(source, task="noop", params={"n": 5}, seed=42)

    assert (job.task, job.params, job.seed) == ("noop", {"n": 5}, 42)
    assert job.input == f"inputs/{job.job_id}/in-0.txt"
    assert job.output == f"outputs/{job.job_id}/in-0.txt"
    assert (client.storage.root / job.input).read_text() == "file 0\n"
    assert [sent.job_id for sent in queued(client.queue)] == [job.job_id]
    record = client.get(job.job_id)
    assert (record.state, record.source, record.seed) == (JobState.QUEUED, str(source), 42)


def test_a_job_without_input_carries_only_parameters(client: Client) -> None:
    plain = client.submit(task="noop", params={"url": "https://example.com"})
    named = client.submit(task="noop", output="reports/one.txt")

    assert (plain.input, plain.output, plain.params) == (None, None, {"url": "https://example.com"})
    assert (named.input, named.output) == (None, "reports/one.txt")
    assert client.get(plain.job_id).source is None


def test_submit_many_takes_paths_none_and_mappings(client: Client, tmp_path: Path) -> None:
    a, b = files(tmp_path / "work", 2)
    items: list[Any] = [
        a,
        None,
        {"input": str(b), "params": {"top": 3}, "seed": 7, "output": "out/b.csv"},
    ]

    jobs = client.submit_many(items, task="noop", params={"top": 1, "x": True})

    assert [job.params for job in jobs] == [{"top": 1, "x": True}] * 2 + [{"top": 3, "x": True}]
    assert jobs[1].input is None
    assert (jobs[2].seed, jobs[2].output) == (7, "out/b.csv")
    assert len({job.seed for job in jobs}) == 3
    assert [job.job_id for job in queued(client.queue)] == [job.job_id for job in jobs]


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ("{work}/missing.txt", BadInput, "input file not found"),
        ({"input": "{first}", "color": "red"}, BadInput, "unknown key(s) 'color'"),
        ({"params": {"s": {1, 2}}}, BadInput, "is not a JSON value"),
        ({"seed": -1}, BadInput, "seed"),
        ({"output": "../out"}, BadInput, "'..' is not allowed"),
        ({"output": "same.txt"}, BadInput, "both publish to same.txt"),
        (42, BadInput, "not int"),
    ],
)
def test_nothing_is_copied_or_sent_unless_every_item_is_valid(
    client: Client, tmp_path: Path, bad: Any, error: type[Exception], message: str
) -> None:
    good = files(tmp_path / "work", 12)
    if isinstance(bad, str):
        bad = bad.format(work=tmp_path / "work")
    elif isinstance(bad, dict) and "input" in bad:
        bad = {**bad, "input": str(good[0])}
    items: list[Any] = [*good, {"output": "same.txt"}, bad]

    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        client.submit_many(items, task="noop")

    assert "13" in str(caught.value)  # the bad item is named
    assert input_dirs(client) == set()
    assert queued(client.queue) == []


def test_an_unknown_task_is_refused_before_anything(client: Client, tmp_path: Path) -> None:
    with pytest.raises(UnknownTask, match="unknown task 'nope'"):
        client.submit_many(files(tmp_path / "work", 2), task="nope")
    assert input_dirs(client) == set()


def test_submit_refuses_an_output_that_is_its_input(client: Client) -> None:
    (client.storage.root / "data").mkdir(parents=True)
    (client.storage.root / "data" / "a.csv").write_text("x\n")
    (client.storage.root / "data" / "link.csv").symlink_to("a.csv")

    with pytest.raises(BadInput, match="would overwrite its own input"):
        client.submit("data/a.csv", task="noop", in_storage=True, output="data/a.csv")
    with pytest.raises(BadInput, match="would overwrite its own input"):
        client.submit("data/a.csv", task="noop", in_storage=True, output="data/link.csv")

    job = client.submit(client.storage.root / "data" / "a.csv", task="noop", in_storage=True)
    assert job.input == "data/a.csv"  # an absolute path under the root is taken as relative


def test_params_over_the_queues_limit_are_claim_checked(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a queue that carries less than the claim-check threshold
    monkeypatch.setattr(client.queue, "max_message_bytes", 2000)
    # When a job's params would make its message larger, and another's would not
    big = client.submit(task="noop", params={"blob": "x" * 3000})
    small = client.submit(task="noop", params={"blob": "x" * 100})
    # Then only the first message carries a claim check instead of its params
    sent = {job.job_id: job for job in queued(client.queue)}
    assert sent[big.job_id].params_ref is not None
    assert sent[big.job_id].params == {}
    assert sent[small.job_id].params_ref is None


# --- stopping part way ----------------------------------------------------------------------


def test_sigint_stops_the_submit_before_its_next_batch(client: Client, tmp_path: Path) -> None:
    # Given 95 files, and a SIGINT that arrives while the third batch is being sent
    sources = files(tmp_path / "work", 95)
    batches: list[int] = []

    def on_sent(jobs: Sequence[Job]) -> None:
        batches.append(len(jobs))
        if len(batches) == 3:
            signal.raise_signal(signal.SIGINT)

    # When they are submitted
    with pytest.raises(SubmitInterrupted, match="SIGINT: submit stopped after 30 of 95") as caught:
        client.submit_many(sources, task="noop", on_sent=on_sent)
    # Then the three batches sent are queued and in the ledger, and nothing else is left
    sent = caught.value.sent
    assert len(sent) == 30
    assert caught.value.exit_code == 75
    ids = {job.job_id for job in sent}
    assert {job.job_id for job in queued(client.queue)} == ids
    assert set(client.ledger.get_many([*ids, "NOT-SENT"])) == ids
    assert client.ledger.counts()[JobState.QUEUED] == 30
    assert input_dirs(client) == ids
    assert list((client.storage.root / "inputs" / ".conveyor-staging").iterdir()) == []
    # And SIGINT is Python's own again
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_after_the_last_batch_goes_to_its_handler_once_all_is_recorded(
    client: Client, tmp_path: Path
) -> None:
    got: list[tuple[int, int]] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        got.append((signum, client.ledger.counts()[JobState.QUEUED]))

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        jobs = client.submit_many(
            files(tmp_path / "work", 5),
            task="noop",
            on_sent=lambda jobs: signal.raise_signal(signal.SIGTERM),
        )
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert len(jobs) == 5
    assert got == [(signal.SIGTERM, 5)]


class FailingQueue:
    """Wraps a queue so that its ``fail_at``-th ``send_batch`` sends one message, then fails."""

    def __init__(self, queue: Queue, fail_at: int) -> None:
        self._queue = queue
        self._fail_at = fail_at
        self.calls = 0

    def send_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        self.calls += 1
        if self.calls == self._fail_at:
            self._queue.send_batch(messages[:1])
            raise TransientQueueError("throttled")
        return self._queue.send_batch(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def test_a_send_that_fails_part_way_leaves_the_ledger_covering_the_queue(
    tmp_path: Path, registry: TaskRegistry
) -> None:
    # Given a queue whose third send gets one message through, then fails
    settings = settings_from_env({}, storage=tmp_path / "storage")
    (tmp_path / "storage").mkdir()
    with Client(settings) as opener:
        real = opener.queue
        failing = FailingQueue(real, fail_at=3)
        client = Client(settings, registry=registry, queue=failing)  # type: ignore[arg-type]
        # When 50 files are submitted
        with pytest.raises(TransientQueueError, match="throttled") as caught:
            client.submit_many(files(tmp_path / "work", 50), task="noop")
        # Then the error says how far it got
        assert "20 of 50 job(s) were sent first" in caught.value.__notes__
        # And every job in the queue is in the ledger: the two batches sent as queued, the
        # third one's as cancelled (one of its messages got through: it will not run)
        in_queue = queued(real)
        ledger = client.ledger
        records = ledger.get_many(job.job_id for job in in_queue)
        assert len(in_queue) == 21 and len(records) == 21
        assert ledger.counts()[JobState.QUEUED] == 20
        assert ledger.counts()[JobState.CANCELLED] == 10
        # And the inputs of the failed batch are gone, those of later ones never copied
        assert input_dirs(client) == {job.job_id for job in in_queue[:20]}
        client.close()
        ledger.close()


# --- reading, waiting, cancelling -----------------------------------------------------------


def test_get_accepts_any_case_and_unique_prefixes(client: Client) -> None:
    job = client.submit(task="noop")

    assert client.get(job.job_id.lower()).job_id == job.job_id
    assert client.get(job.job_id[:20].lower()).job_id == job.job_id
    with pytest.raises(JobNotFound):
        client.get("ZZZZZZ")
    client.submit(task="noop")
    with pytest.raises(AmbiguousJobId):
        client.get(job.job_id[:2])


def test_reading_before_anything_was_submitted_creates_nothing(tmp_path: Path) -> None:
    with connect(tmp_path / "never") as client:
        with pytest.raises(JobNotFound, match="nothing submitted yet"):
            client.get("01ABC")
        with pytest.raises(JobNotFound):
            client.wait(["01ABC"], timeout_s=0)
    assert not (tmp_path / "never").exists()


def test_wait_returns_the_records_in_the_order_given(client: Client) -> None:
    jobs = [client.submit(task="noop") for _ in range(3)]
    for job in jobs:
        client.ledger.record(job.job_id, JobState.SUCCEEDED, attempt=1, result={"n": 1})

    records = client.wait([jobs[2].job_id, jobs[0].job_id.lower(), jobs[1].job_id[:22]])

    assert [r.job_id for r in records] == [jobs[2].job_id, jobs[0].job_id, jobs[1].job_id]
    assert all(isinstance(r, JobRecord) and r.result == {"n": 1} for r in records)


def test_wait_polls_only_the_open_jobs_with_one_query_each_time(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [client.submit(task="noop") for _ in range(3)]
    ledger = client.ledger
    ledger.record(jobs[0].job_id, JobState.FAILED, attempt=1, error="bad")
    polls: list[list[str]] = []
    real = ledger.open_jobs

    def open_jobs(job_ids: Any) -> list[str]:
        ids = list(job_ids)
        polls.append(ids)
        if len(polls) == 2:
            ledger.record(jobs[1].job_id, JobState.SUCCEEDED, attempt=1)
        if len(polls) == 3:
            ledger.cancel(jobs[2].job_id)
        return real(ids)

    monkeypatch.setattr(ledger, "open_jobs", open_jobs)

    records = client.wait([job.job_id for job in jobs], poll_s=0.001)

    assert [r.state for r in records] == [JobState.FAILED, JobState.SUCCEEDED, JobState.CANCELLED]
    open_ids = {jobs[1].job_id, jobs[2].job_id}
    assert [set(poll) for poll in polls] == [open_ids, open_ids, {jobs[2].job_id}]


def test_wait_gives_up_with_a_timeout_error_naming_the_open_jobs(client: Client) -> None:
    done = client.submit(task="noop")
    client.ledger.record(done.job_id, JobState.SUCCEEDED, attempt=1)
    waiting = client.submit(task="noop")

    with pytest.raises(TimeoutError) as caught:
        client.wait([done.job_id, waiting.job_id], timeout_s=0.2, poll_s=0.01)

    error = caught.value
    assert isinstance(error, WaitTimeout) and isinstance(error, ConveyorError)
    assert error.open_jobs == [waiting.job_id]
    assert error.exit_code == 124
    assert f"1 of 2 job(s) still open after 0.2 s: {waiting.job_id}" in str(error)


def test_cancel_a_queued_job_and_refuse_a_finished_one(client: Client) -> None:
    queued_job = client.submit(task="noop")
    finished = client.submit(task="noop")
    client.ledger.record(finished.job_id, JobState.SUCCEEDED, attempt=1)

    record = client.cancel(queued_job.job_id.lower(), reason="changed my mind")

    assert (record.state, record.error) == (JobState.CANCELLED, "changed my mind")
    assert client.cancel(queued_job.job_id).state is JobState.CANCELLED  # idempotent
    with pytest.raises(JobFinished, match="already succeeded"):
        client.cancel(finished.job_id)


def test_a_closed_client_says_so(tmp_path: Path) -> None:
    client = connect(tmp_path)
    client.close()
    client.close()
    with pytest.raises(ConfigError, match="closed"):
        client.submit(task="csv-process", params={})


# --- the package and its tasks ---------------------------------------------------------------


def test_the_package_exports_the_api() -> None:
    assert conveyor.connect is connect
    assert conveyor.Client is Client
    assert conveyor.JobRecord is JobRecord
    assert conveyor.Task is Task
    assert callable(conveyor.open_queue)
    assert set(conveyor.__all__) <= set(dir(conveyor))


def test_a_task_submits_itself_through_a_client_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @conveyor.task("self-submitting")
    def self_submitting(ctx: TaskContext) -> dict[str, object]:
        return {"n": ctx.params["n"]}

    try:
        assert isinstance(self_submitting, Task)
        assert default_registry().get("self-submitting") is self_submitting
        assert self_submitting.__name__ == "self_submitting"
        monkeypatch.setenv("CONVEYOR_STORAGE", str(tmp_path / "from-env"))

        job = self_submitting.submit(params={"n": 3})

        assert job.task == "self-submitting"
        with connect() as client:
            assert client.get(job.job_id).state is JobState.QUEUED
            again = self_submitting.submit(params={"n": 4}, client=client)
            assert client.get(again.job_id).task == "self-submitting"
        assert (tmp_path / "from-env" / "_conveyor" / "queue.db").exists()
        assert default_ledger_url(tmp_path / "from-env").endswith("ledger.db")
    finally:
        default_registry().unregister("self-submitting")


def test_job_records_are_json_ready(client: Client) -> None:
    job = client.submit(task="noop", params={"k": "v"})
    data = client.get(job.job_id).to_dict()
    assert json.loads(json.dumps(data))["job_id"] == job.job_id


def test_wait_takes_a_group_id_and_returns_its_jobs_then_its_completion(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a group of two jobs with a completion, and a plain job already done
    group = client.submit_group([None, None], task="noop", completion={"task": "noop"})
    plain = client.submit(task="noop")
    ledger = client.ledger
    ledger.record(plain.job_id, JobState.SUCCEEDED, attempt=1)
    first, second = (job.job_id for job in group.jobs)
    assert group.completion_job_id is not None
    polls: list[str] = []
    real = ledger.group

    def read_group(group_id: str) -> Any:
        # Each poll reads the group once; the jobs and then the completion finish meanwhile
        polls.append(group_id)
        if len(polls) == 2:
            ledger.record(first, JobState.SUCCEEDED, attempt=1)
            ledger.record(second, JobState.SUCCEEDED, attempt=1)
        if len(polls) == 3:
            ledger.record(group.completion_job_id, JobState.SUCCEEDED, attempt=1)
        return real(group_id)

    monkeypatch.setattr(ledger, "group", read_group)
    opened: list[list[str]] = []
    real_open = ledger.open_jobs
    monkeypatch.setattr(ledger, "open_jobs", lambda ids: opened.append(list(ids)) or real_open(ids))

    # When the group is waited for by its id (a prefix, any case), after the plain job
    records = client.wait([plain.job_id, group.group_id[:20].lower()], poll_s=0.001)

    # Then it stands for its jobs, oldest first, then its completion; all succeeded
    assert [r.job_id for r in records] == [plain.job_id, first, second, group.completion_job_id]
    assert all(r.state is JobState.SUCCEEDED for r in records)
    assert records[-1].group_completion
    # And each poll was one group read, with no job query (the plain job was done)
    assert polls[1:] == [group.group_id] * (len(polls) - 1)
    assert opened == []


def test_wait_on_a_group_times_out_naming_it_and_an_unknown_id_names_neither(
    client: Client,
) -> None:
    group = client.submit_group([None], task="noop")

    with pytest.raises(WaitTimeout) as caught:
        client.wait([group.group_id], timeout_s=0.05, poll_s=0.01)
    assert caught.value.open_jobs == [group.group_id]

    client.ledger.record(group.jobs[0].job_id, JobState.FAILED, attempt=1, error="bad")
    records = client.wait([group.group_id])
    assert [(r.job_id, r.state) for r in records] == [(group.jobs[0].job_id, JobState.FAILED)]
    assert client.group(group.group_id).state.value == "failed"

    with pytest.raises(JobNotFound, match="nor a group"):
        client.wait(["NOSUCHJOB"])


def test_a_task_that_declares_split_and_merge_is_submitted_as_a_group(
    client: Client, registry: TaskRegistry, tmp_path: Path
) -> None:
    # Given a task that splits its input into pieces of two lines, and one that does not
    def halves(input_path: Path, rows: int) -> list[dict[str, Any]]:
        total = len(input_path.read_text().splitlines())
        return [{"first": first} for first in range(0, total, rows)]

    def merge(ctx: TaskContext, parts: list[Path]) -> dict[str, object]:
        return {"parts": len(parts)}

    @registry.task("lines", split=halves, merge=merge)
    def lines(ctx: TaskContext) -> None:
        return None

    registry.register(TASK_MERGE_TASK, task_merge)

    source = tmp_path / "five.txt"
    source.write_text("a\nb\nc\nd\ne\n")

    # When it is submitted with split_rows
    group = client.submit(source, task="lines", params={"x": 1}, split_rows=2)

    # Then one job per piece, each with its params over the job's, and a task-merge completion
    assert [job.params for job in group.jobs] == [{"x": 1, "first": n} for n in (0, 2, 4)]
    assert len({job.input for job in group.jobs}) == 1
    assert group.completion_job_id == f"{group.group_id}-merge"
    record = client.group(group.group_id)
    assert record.total == 3 and record.completion_job_id == group.completion_job_id

    # And a task without split is refused, and split needs merge
    with pytest.raises(BadInput, match="declare split"):
        client.submit(source, task="noop", split_rows=2)
    with pytest.raises(ConfigError, match="both split= and merge="):
        registry.task("half", split=halves)
