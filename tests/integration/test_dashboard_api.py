"""The dashboard's HTTP API over a real ledger (SQLite and PostgreSQL) and a real queue
(SQLite and SQS on moto) holding jobs in every state, made by the real worker."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from conveyor.cli import cli
from conveyor.dashboard import DashboardData, create_app
from conveyor.dashboard.app import STATIC_DIR, canonical_host, host_of, loopback_hosts
from conveyor.dashboard.data import NOTHING_YET, chart_transitions
from conveyor.errors import BadInput, ConfigError
from conveyor.job_ids import new_job_id
from conveyor.jobs import Job, JobState, encode_for_queue
from conveyor.ledger import Ledger, LedgerEvent, default_ledger_url, open_ledger
from conveyor.queues import Queue, open_queue
from conveyor.queues.messages import Outgoing
from conveyor.settings import Settings
from conveyor.storage import Storage
from conveyor.task_context import TaskContext
from conveyor.task_registry import TaskRegistry
from conveyor.worker import Worker

#: The scenario below leaves exactly these many jobs in each state.
EXPECTED = {
    "queued": 2,
    "running": 1,
    "retrying": 1,
    "succeeded": 3,
    "failed": 1,
    "cancelled": 0,
}
BAD_REASON = "row 2: Value 'abc' is not a number"


@dataclass
class Scenario:
    """A storage root, queue and ledger with jobs in every state, and the notable ids."""

    storage: Path
    queue_url: str
    ledger_url: str
    settings: Settings
    bad_job: str = ""
    flaky_job: str = ""
    running_job: str = ""
    succeeded: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)

    def open_queue(self) -> Queue:
        return open_queue(self.queue_url, self.settings)

    def open_ledger(self) -> Ledger:
        return open_ledger(self.ledger_url, create=False)

    def data(self, **options: Any) -> DashboardData:
        """The dashboard's data as the command builds it: the ledger opened on demand."""
        return DashboardData(self.open_ledger, self.open_queue, queue_url=self.queue_url, **options)


def _tasks() -> TaskRegistry:
    registry = TaskRegistry()

    def ok(ctx: TaskContext) -> dict[str, object]:
        assert ctx.write_path is not None
        ctx.write_path.write_text("ID,Value\n1,2\n")
        return {"rows": 1}

    def bad(ctx: TaskContext) -> None:
        raise BadInput(BAD_REASON)

    def flaky(ctx: TaskContext) -> None:
        raise RuntimeError("the storage blinked")

    for name, func in (("ok", ok), ("bad", bad), ("flaky", flaky)):
        registry.register(name, func)
    return registry


def submit(queue: Queue, ledger: Ledger, storage: Storage, task: str, count: int = 1) -> list[str]:
    """Send ``count`` jobs of ``task`` and record them as queued, as `conveyor submit` does
    (with the file name the user gave)."""
    jobs = []
    for _ in range(count):
        job_id = new_job_id()
        jobs.append(Job(task=task, output=storage.default_output(job_id, None), job_id=job_id))
    queue.send_batch([Outgoing(encode_for_queue(job, storage)) for job in jobs])
    ledger.record_queued(jobs, sources=[f"{task}-{job.job_id[-4:]}.csv" for job in jobs])
    return [job.job_id for job in jobs]


def make_scenario(root: Path, ledger_url: str, sqs: tuple[str, Settings] | None = None) -> Scenario:
    """Jobs in every state, through the real worker wherever a worker makes the state.

    3 succeeded; 1 failed for good (bad input: dead-lettered at once); 1 retrying (a
    transient error, released with a long backoff); 1 running (received and recorded as
    running, as by a worker in the middle of it); 2 queued. On SQLite unless ``sqs`` gives
    the URL and settings of an SQS queue.
    """
    storage_dir = root / "storage"
    storage_dir.mkdir()
    url, base = sqs or (f"sqlite:///{root / 'queue.db'}", Settings())
    settings = base.with_(
        storage=storage_dir, queue_url=url, ledger_url=ledger_url, wait_s=0.0, retry_base_s=600.0
    )
    scenario = Scenario(storage_dir, url, ledger_url, settings)
    storage = Storage(storage_dir)
    queue = scenario.open_queue()
    ledger = open_ledger(ledger_url, writer="scenario")
    try:
        scenario.succeeded = submit(queue, ledger, storage, "ok", 3)
        (scenario.bad_job,) = submit(queue, ledger, storage, "bad")
        (scenario.flaky_job,) = submit(queue, ledger, storage, "flaky")
        worker = Worker(queue, settings, ledger=ledger, registry=_tasks(), observers=[])
        while worker.run_once().received:
            pass
        (scenario.running_job,) = submit(queue, ledger, storage, "ok")
        (held,) = queue.receive(1, 0)
        ledger.record(
            scenario.running_job, JobState.RUNNING, attempt=held.receive_count, worker="w-9"
        )
        scenario.queued = submit(queue, ledger, storage, "ok", 2)
    finally:
        queue.close()
        ledger.close()
    return scenario


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return make_scenario(tmp_path, default_ledger_url(tmp_path / "storage"))


@pytest.fixture(params=["sqlite", "sqs"])
def any_scenario(request: pytest.FixtureRequest, tmp_path: Path, ledger_url: str) -> Scenario:
    """The scenario on each queue backend (SQS as served by moto on loopback) and each
    ledger backend (SQLite, and a real PostgreSQL on loopback)."""
    if request.param == "sqlite":
        return make_scenario(tmp_path, ledger_url)
    create = request.getfixturevalue("create_sqs_queue")
    return make_scenario(tmp_path, ledger_url, create("dash", Settings(max_receive_count=3)))


@pytest.fixture
def client(scenario: Scenario) -> Iterator[TestClient]:
    data = scenario.data()
    with TestClient(create_app(data)) as test_client:
        yield test_client
    data.close()


def overview(client: TestClient) -> dict[str, Any]:
    response = client.get("/api/overview")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# --- the numbers -----------------------------------------------------------------------------


def test_overview_matches_the_ledger_and_the_queue_on_every_backend(
    any_scenario: Scenario,
) -> None:
    data = any_scenario.data()
    with TestClient(create_app(data)) as client:
        body = overview(client)
        jobs = client.get("/api/jobs", params={"state": "failed"}).json()
        record = client.get(f"/api/jobs/{any_scenario.bad_job}").json()
    data.close()
    with contextlib.closing(any_scenario.open_queue()) as queue:
        stats = queue.stats()
    with any_scenario.open_ledger() as ledger:
        counts = {state.value: n for state, n in ledger.counts().items()}

    assert body["summary"]["counts"] == EXPECTED == counts
    assert body["note"] is None
    assert body["queue"]["pending"] == stats.pending == 4  # 2 queued, running, retrying
    assert body["queue"]["dead_lettered"] == stats.dead_lettered == 1
    (dead,) = body["dead_letters"]["messages"]
    assert BAD_REASON in dead["reason"]
    assert dead["task"] == "bad"
    assert {state: series[-1] for state, series in body["timeline"]["states"].items()} == counts
    assert [job["job_id"] for job in jobs["jobs"]] == [any_scenario.bad_job]
    assert [change["state"] for change in record["history"]][-1] == "failed"


def test_overview_counts_match_the_scenario_and_the_queue(
    client: TestClient, scenario: Scenario
) -> None:
    data = overview(client)

    assert data["summary"]["counts"] == EXPECTED
    assert data["summary"]["total"] == sum(EXPECTED.values())
    # 2 queued visible, 1 held by the "running" worker, the flaky one delayed by its backoff.
    assert {k: data["queue"][k] for k in ("visible", "in_flight", "delayed", "dead_lettered")} == {
        "visible": 2,
        "in_flight": 1,
        "delayed": 1,
        "dead_lettered": 1,
    }
    assert data["queue"]["error"] is None
    assert data["ledger_url"] == scenario.ledger_url


def test_recent_failures_and_dead_letters_name_the_bad_job_its_source_and_reason(
    client: TestClient, scenario: Scenario
) -> None:
    data = overview(client)

    (failure,) = data["summary"]["recent_failures"]
    assert failure["job_id"] == scenario.bad_job
    assert failure["source"] == f"bad-{scenario.bad_job[-4:]}.csv"
    assert BAD_REASON in failure["error"]
    (dead,) = data["dead_letters"]["messages"]
    assert dead["job_id"] == scenario.bad_job
    assert dead["task"] == "bad"
    assert BAD_REASON in dead["reason"]
    assert data["dead_letters"]["error"] is None
    assert data["dead_letters"]["next"] is None


def test_timeline_ends_at_the_current_counts_and_counts_every_finish(client: TestClient) -> None:
    timeline = overview(client)["timeline"]

    last = {state: series[-1] for state, series in timeline["states"].items()}
    assert last == EXPECTED
    assert sum(timeline["finished"]["succeeded"]) == EXPECTED["succeeded"]
    assert sum(timeline["finished"]["failed"]) == EXPECTED["failed"]
    assert (
        len(timeline["times"])
        == len(timeline["states"]["queued"])
        == len(timeline["finished"]["failed"]) + 1
    )
    assert timeline["times"] == sorted(timeline["times"])
    assert timeline["narrowed"] is False
    # Before anything was submitted, nothing was in any state.
    assert all(series[0] == 0 for series in timeline["states"].values())


def test_a_failure_redriven_later_stays_on_the_chart(scenario: Scenario) -> None:
    redriven_at = time.time() + 5
    with contextlib.closing(open_ledger(scenario.ledger_url)) as ledger:
        assert ledger.redrive(scenario.bad_job, at=redriven_at)
        counts = ledger.counts()
    data = scenario.data(clock=lambda: redriven_at + 3)
    try:
        timeline = data.overview()["timeline"]
    finally:
        data.close()
    assert counts[JobState.FAILED] == 0
    failed = dict(zip(timeline["times"], timeline["states"]["failed"], strict=True))
    assert failed[timeline["times"][-1]] == 0
    assert [n for at, n in failed.items() if at < redriven_at - 1][-1] == 1
    assert sum(timeline["finished"]["failed"]) == 1
    queued = dict(zip(timeline["times"], timeline["states"]["queued"], strict=True))
    assert queued[timeline["times"][-1]] == EXPECTED["queued"] + 1


def test_a_new_job_shows_up_on_the_next_refresh(scenario: Scenario) -> None:
    now = [time.time()]
    data = scenario.data(min_interval_s=1.0, queue_every_s=2.0, clock=lambda: now[0])
    try:
        before = data.overview()["summary"]["counts"]["queued"]
        with (
            contextlib.closing(scenario.open_queue()) as queue,
            open_ledger(scenario.ledger_url) as ledger,
        ):
            submit(queue, ledger, Storage(scenario.storage), "ok")
        assert data.overview()["summary"]["counts"]["queued"] == before  # cached within 1 s
        now[0] += 2.5  # past both the overview's and the queue counts' cache
        refreshed = data.overview()
        assert refreshed["summary"]["counts"]["queued"] == before + 1
        assert refreshed["queue"]["visible"] == EXPECTED["queued"] + 1
    finally:
        data.close()


def test_a_busy_window_narrows_the_chart_to_what_the_budget_holds(tmp_path: Path) -> None:
    # 600 jobs over the last 10 minutes: 1,800 changes, for a budget of 500.
    now = time.time()
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        events = []
        for n in range(600):
            job_id, at = f"job-{n:04d}", now - 600 + n
            events += [
                LedgerEvent(job_id, JobState.QUEUED, at=at, task="t"),
                LedgerEvent(job_id, JobState.RUNNING, 1, at=at + 0.2),
                LedgerEvent(job_id, JobState.SUCCEEDED, 1, at=at + 0.4),
            ]
        ledger.record_many(events)
        start, changes = chart_transitions(ledger, now, 3600.0, budget=500)
        assert len(changes) <= 500
        assert now - 600 < start < now - 60  # the newest part of the window, not nothing
        assert changes == ledger.transitions(start, None, limit=10_000)

        data = DashboardData(ledger, lambda: open_queue(f"sqlite:///{tmp_path / 'q.db'}"))
        data.chart_budget = 500
        timeline = data.overview()["timeline"]
    assert timeline["narrowed"] is True
    assert timeline["states"]["succeeded"][-1] == 600
    assert timeline["states"]["succeeded"][0] >= 100  # jobs before the narrowed start


# --- one job ---------------------------------------------------------------------------------


def test_job_json_and_page_show_the_record_and_its_history(
    client: TestClient, scenario: Scenario
) -> None:
    record = client.get(f"/api/jobs/{scenario.bad_job}").json()
    assert record["state"] == "failed"
    assert BAD_REASON in record["error"]
    assert record["task"] == "bad"
    assert record["source"] == f"bad-{scenario.bad_job[-4:]}.csv"
    assert [change["state"] for change in record["history"]] == ["queued", "running", "failed"]

    page = client.get(f"/jobs/{scenario.bad_job}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert scenario.bad_job in page.text
    assert "Value &#x27;abc&#x27; is not a number" in page.text  # escaped, not raw
    assert page.text.count('<tr data-state="') == 3


def test_a_unique_prefix_finds_the_job_and_an_ambiguous_one_is_400(
    client: TestClient, scenario: Scenario
) -> None:
    prefix = scenario.bad_job[:-3].lower()
    assert client.get(f"/api/jobs/{prefix}").json()["job_id"] == scenario.bad_job
    ambiguous = client.get(f"/api/jobs/{scenario.bad_job[:2]}")
    assert ambiguous.status_code == 400
    assert "give more characters" in ambiguous.json()["error"]


def test_unknown_and_malformed_job_ids_are_404_and_400(client: TestClient) -> None:
    assert client.get("/api/jobs/no-such-job").status_code == 404
    assert client.get("/jobs/no-such-job").status_code == 404
    bad = client.get("/api/jobs/bad%20id%3F")
    assert bad.status_code == 400
    assert "bad job id" in bad.json()["error"]


def test_job_page_escapes_html_in_errors(scenario: Scenario) -> None:
    with open_ledger(scenario.ledger_url, writer="evil") as ledger:
        ledger.record("evil-job", JobState.FAILED, attempt=1, error="<script>alert(1)</script>")
    data = scenario.data()
    with TestClient(create_app(data)) as client:
        page = client.get("/jobs/evil-job").text
    data.close()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_jobs_listing_filters_by_state_shows_sources_and_pages(
    client: TestClient, scenario: Scenario
) -> None:
    queued = client.get("/api/jobs", params={"state": "queued"}).json()
    assert {job["job_id"] for job in queued["jobs"]} == set(scenario.queued)
    assert {job["source"] for job in queued["jobs"]} == {
        f"ok-{job_id[-4:]}.csv" for job_id in scenario.queued
    }
    assert queued["next"] is None

    seen: list[str] = []
    page = client.get("/api/jobs", params={"limit": 3}).json()
    while True:
        seen += [job["job_id"] for job in page["jobs"]]
        if page["next"] is None:
            break
        page = client.get("/api/jobs", params={"limit": 3, "before": page["next"]}).json()
    assert len(seen) == len(set(seen)) == sum(EXPECTED.values())


def test_jobs_listing_checks_its_arguments(client: TestClient) -> None:
    assert client.get("/api/jobs", params={"state": "lost"}).status_code == 400
    assert client.get("/api/jobs", params={"limit": 0}).status_code == 400
    bad_cursor = client.get("/api/jobs", params={"before": "not a cursor"})
    assert bad_cursor.status_code == 400
    assert "cursor" in bad_cursor.json()["error"]


# --- groups ----------------------------------------------------------------------------------


def make_groups(scenario: Scenario) -> dict[str, list[str]]:
    """Three groups beside the scenario's jobs, created a second apart: ``grp-run`` (2 of
    4 succeeded, 1 running, 1 queued), ``grp-bad`` (1 of 2 failed: the group failed with a
    reason, its other job cancelled) and ``grp-new`` (3 queued). Returns each group's job
    ids."""
    now = time.time()
    made: dict[str, list[str]] = {}
    with open_ledger(scenario.ledger_url) as ledger:
        for offset, (group_id, k) in enumerate((("grp-run", 4), ("grp-bad", 2), ("grp-new", 3))):
            at = now - 100 + offset
            ledger.create_group(group_id, total=k, at=at)
            jobs = [Job(task="ok", job_id=new_job_id()) for _ in range(k)]
            ledger.record_queued(jobs, group=group_id)
            made[group_id] = [job.job_id for job in jobs]
        a, b, c, _ = made["grp-run"]
        ledger.record_many(
            [LedgerEvent(job_id, JobState.RUNNING, 1, at=now - 50) for job_id in (a, b, c)]
            + [LedgerEvent(job_id, JobState.SUCCEEDED, 1, at=now - 40) for job_id in (a, b)]
        )
        bad, _ = made["grp-bad"]
        ledger.record_many(
            [
                LedgerEvent(bad, JobState.RUNNING, 1, at=now - 30),
                LedgerEvent(bad, JobState.FAILED, 1, at=now - 29, error=BAD_REASON),
            ]
        )
    return made


def test_groups_are_listed_newest_first_with_counts_throughput_and_reason(
    client: TestClient, scenario: Scenario
) -> None:
    assert client.get("/api/groups").json() == {"groups": [], "next": None}
    make_groups(scenario)
    response = client.get("/api/groups")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next"] is None
    groups = {group["group_id"]: group for group in body["groups"]}
    assert [group["group_id"] for group in body["groups"]] == ["grp-new", "grp-bad", "grp-run"]

    running = groups["grp-run"]
    assert running["state"] == "running"
    assert running["total"] == 4
    assert running["done"] == 2
    assert running["remaining"] == 2
    assert running["counts"]["succeeded"] == 2
    assert running["counts"]["running"] == 1
    assert running["counts"]["queued"] == 1
    assert running["throughput_per_s"] > 0
    assert running["time_left_s"] > 0

    failed = groups["grp-bad"]
    assert failed["state"] == "failed"
    assert failed["counts"]["failed"] == 1
    assert failed["counts"]["cancelled"] == 1  # its queued job, once it failed
    assert BAD_REASON in failed["reason"]

    fresh = groups["grp-new"]
    assert fresh["counts"]["queued"] == 3
    assert fresh["throughput_per_s"] is None
    assert fresh["time_left_s"] is None


def test_groups_page_with_a_cursor_and_check_their_arguments(
    client: TestClient, scenario: Scenario
) -> None:
    make_groups(scenario)
    seen: list[str] = []
    page = client.get("/api/groups", params={"limit": 2}).json()
    assert len(page["groups"]) == 2
    while True:
        seen += [group["group_id"] for group in page["groups"]]
        if page["next"] is None:
            break
        page = client.get("/api/groups", params={"limit": 2, "before": page["next"]}).json()
    assert seen == ["grp-new", "grp-bad", "grp-run"]

    assert client.get("/api/groups", params={"limit": 0}).status_code == 400
    assert client.get("/api/groups", params={"limit": "many"}).status_code == 400
    assert client.get("/api/groups", params={"before": "not a cursor"}).status_code == 400


def test_one_group_by_id_or_prefix(client: TestClient, scenario: Scenario) -> None:
    made = make_groups(scenario)
    body = client.get("/api/groups/grp-run").json()
    assert body["group_id"] == "grp-run"
    assert body["done"] == 2
    assert client.get("/api/groups/grp-ba").json()["group_id"] == "grp-bad"
    assert client.get("/api/groups/grp-").status_code == 400  # ambiguous
    assert client.get("/api/groups/nothing-here").status_code == 404
    assert client.get("/api/groups/bad%20id").status_code == 400
    assert len(made["grp-new"]) == 3


# --- no ledger yet, a ledger that cannot be read, a queue that is down -------------------


def test_no_ledger_yet_shows_zeros_and_says_so(tmp_path: Path) -> None:
    url = default_ledger_url(tmp_path / "storage")
    data = DashboardData(
        lambda: open_ledger(url, create=False),
        lambda: open_queue(f"sqlite:///{tmp_path / 'queue.db'}"),
    )
    with TestClient(create_app(data)) as client:
        body = overview(client)
        assert body["note"] == NOTHING_YET
        assert body["summary"]["total"] == 0
        assert set(body["summary"]["counts"].values()) == {0}
        assert client.get("/api/jobs").json() == {"jobs": [], "next": None}
        assert client.get("/api/groups").json() == {"groups": [], "next": None}
        assert client.get("/api/groups/some-group").status_code == 404
        assert client.get("/api/jobs/some-job").status_code == 404
        assert not (tmp_path / "storage").exists()  # reading created nothing

        # Once something is submitted, the next refresh reads it.
        with open_ledger(url) as ledger:
            ledger.record("first-job", JobState.QUEUED, task="t")
        data._overview_at = -float("inf")
        body = overview(client)
    data.close()
    assert body["note"] is None
    assert body["summary"]["counts"]["queued"] == 1


def _one_line_503(response: Any) -> str:
    assert response.status_code == 503, response.text
    (message,) = response.json()["error"].splitlines()
    assert message.startswith("cannot read the ledger:")
    return str(message)


def test_a_ledger_that_cannot_be_read_is_a_503_with_one_line(scenario: Scenario) -> None:
    ledger_file = scenario.storage / "_conveyor" / "ledger.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{ledger_file}{suffix}").unlink(missing_ok=True)
    ledger_file.write_bytes(b"this is not a database, just bytes " * 200)
    data = scenario.data()
    with TestClient(create_app(data), raise_server_exceptions=False) as client:
        _one_line_503(client.get("/api/overview"))
        _one_line_503(client.get("/api/jobs"))
        _one_line_503(client.get("/api/groups"))
        _one_line_503(client.get("/api/groups/grp-run"))
        _one_line_503(client.get(f"/api/jobs/{scenario.bad_job}"))
        assert client.get(f"/jobs/{scenario.bad_job}").status_code == 503
    data.close()


def test_a_ledger_written_by_a_newer_conveyor_is_a_503_naming_it(scenario: Scenario) -> None:
    ledger_file = scenario.storage / "_conveyor" / "ledger.db"
    with contextlib.closing(sqlite3.connect(ledger_file)) as conn, conn:
        (table,) = conn.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE '%meta%' AND type = 'table'"
        ).fetchone()
        conn.execute(f"UPDATE {table} SET value = '999' WHERE key LIKE '%version%'")
    data = scenario.data()
    with TestClient(create_app(data), raise_server_exceptions=False) as client:
        message = _one_line_503(client.get("/api/overview"))
    data.close()
    assert "999" in message or "newer" in message


def test_an_unreachable_queue_still_shows_the_ledger(scenario: Scenario) -> None:
    def broken() -> Queue:
        raise ConfigError("queue https://sqs.example/nope does not exist")

    data = DashboardData(scenario.open_ledger, broken)
    with TestClient(create_app(data)) as client:
        body = overview(client)
    data.close()
    assert body["summary"]["counts"] == EXPECTED
    assert "does not exist" in body["queue"]["error"]
    assert "does not exist" in body["dead_letters"]["error"]


def test_hostile_dead_letters_are_listed_never_a_crash(scenario: Scenario) -> None:
    queue_db = Path(scenario.queue_url.removeprefix("sqlite:///"))
    with contextlib.closing(sqlite3.connect(queue_db)) as conn, conn:
        hostile = [
            "CAST(x'7b22ff' AS TEXT)",  # not UTF-8
            "CAST(x'7b227461736b223a22ff227d' AS TEXT)",  # {"task":"<0xff>"}
            "x'00ff10'",  # a BLOB
            "'[1, 2, 3]'",
            "'{\"job_id\": 7}'",
        ]
        for raw in hostile:
            conn.execute(
                "INSERT INTO dead_letters (message_id, body, sent_at, receive_count, reason, "
                f"dead_at) VALUES ('m-{len(raw)}', {raw}, 0, 1, 'hostile', {time.time()})"
            )
    data = scenario.data()
    with TestClient(create_app(data)) as client:
        body = overview(client)
        listed = client.get("/api/dead-letters", params={"limit": 2}).json()
    data.close()
    letters = body["dead_letters"]["messages"]
    assert len(letters) == 6
    assert [letter["job_id"] for letter in letters[:5]] == [None] * 5  # newest first
    assert letters[-1]["job_id"] == scenario.bad_job
    assert len(listed["messages"]) == 2 and listed["next"] is not None


def test_dead_letters_page_newest_first(scenario: Scenario) -> None:
    with (
        contextlib.closing(scenario.open_queue()) as queue,
        open_ledger(scenario.ledger_url) as ledger,
    ):
        extra = submit(queue, ledger, Storage(scenario.storage), "bad", 4)
        worker = Worker(queue, scenario.settings, ledger=ledger, registry=_tasks(), observers=[])
        while worker.run_once().received:
            pass
    data = scenario.data()
    with TestClient(create_app(data)) as client:
        seen: list[str | None] = []
        page = client.get("/api/dead-letters", params={"limit": 2}).json()
        while True:
            seen += [letter["job_id"] for letter in page["messages"]]
            if page["next"] is None:
                break
            page = client.get("/api/dead-letters", params={"limit": 2, "before": page["next"]})
            page = page.json()
    data.close()
    assert set(seen) == {*extra, scenario.bad_job, None} - {None}
    assert seen[-1] == scenario.bad_job  # the oldest comes last


# --- read-only, offline, safe ----------------------------------------------------------------

ROUTES = [
    "/",
    "/api/overview",
    "/api/jobs",
    "/api/jobs/x",
    "/api/dead-letters",
    "/jobs/x",
    "/static/dashboard.js",
]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_no_route_accepts_a_method_that_could_change_state(client: TestClient, method: str) -> None:
    for route in ROUTES:
        assert client.request(method, route).status_code == 405, route


def test_reading_every_page_changes_neither_ledger_nor_queue(
    client: TestClient, scenario: Scenario
) -> None:
    def snapshot() -> tuple[object, ...]:
        with contextlib.closing(scenario.open_queue()) as queue:
            stats = queue.stats()
            dead = queue.dead_letters()
        with scenario.open_ledger() as ledger:
            jobs = [r.to_dict() for r in ledger.jobs(limit=100)]
            history = [ledger.history(job["job_id"]) for job in jobs]
        return stats, dead, jobs, history

    before = snapshot()
    for route in [*ROUTES, f"/jobs/{scenario.bad_job}", "/api/jobs?state=failed"]:
        client.get(route)
    assert snapshot() == before


def test_the_page_loads_nothing_from_other_hosts(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), path.name
        assert "import(" not in text, path.name
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        assert client.get(asset).status_code == 200


# --- the Host guard -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "allowed"),
    [
        ("127.0.0.1", ["127.0.0.1", "localhost"]),
        ("127.0.0.2", ["127.0.0.2", "localhost"]),
        ("127.8.9.10", ["127.8.9.10", "localhost"]),
        ("::1", ["::1", "localhost"]),
        ("0:0:0:0:0:0:0:1", ["::1", "localhost"]),
        ("localhost", ["localhost", "127.0.0.1", "::1"]),
        ("0.0.0.0", None),
        ("10.1.2.3", None),
        ("::", None),
        ("dashboard.example", None),
    ],
)
def test_every_loopback_bind_is_guarded(bind: str, allowed: list[str] | None) -> None:
    assert loopback_hosts(bind) == allowed


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.2:8080", "127.0.0.2"),
        ("[::1]:8080", "::1"),
        ("[0:0::1]", "::1"),
        ("LOCALHOST.:80", "localhost"),
        ("evil.example:8080", "evil.example"),
    ],
)
def test_host_headers_are_read_in_one_spelling(header: str, host: str) -> None:
    assert canonical_host(host_of(header)) == host


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_the_guard_accepts_the_printed_address_and_refuses_others(
    scenario: Scenario, bind: str
) -> None:
    data = scenario.data()
    shown = f"[{bind}]" if ":" in bind else bind
    app = create_app(data, allowed_hosts=loopback_hosts(bind))
    with TestClient(app, base_url=f"http://{shown}:8080") as client:
        assert client.get("/api/overview").status_code == 200
        assert client.get("/", headers={"host": "localhost:8080"}).status_code == 200
        for evil in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", "[::2]"):
            refused = client.get("/api/overview", headers={"host": evil})
            assert refused.status_code == 400, evil
    data.close()


def _serve(args: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "dashboard", "--port", "0", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://\S+/", line)
        assert match, f"no URL printed: {line!r}"
        yield process, match.group(0)
    finally:
        process.terminate()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


serve = contextlib.contextmanager(_serve)


def _get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("bind", ["127.0.0.2", "::1"])
def test_the_command_on_another_loopback_address_serves_its_printed_url(
    scenario: Scenario, bind: str, clean_env: Callable[[], dict[str, str]]
) -> None:
    env = {**clean_env(), "CONVEYOR_STORAGE": str(scenario.storage)}
    env["CONVEYOR_QUEUE_URL"] = scenario.queue_url
    with serve(["--host", bind], env) as (_, url):
        status, body = _get(url + "api/overview")
        assert status == 200
        assert json.loads(body)["summary"]["counts"] == EXPECTED
        port = url.rsplit(":", 1)[1].strip("/")
        status, _ = _get(url + "api/overview", host=f"evil.example:{port}")
        assert status == 400


# --- the command -----------------------------------------------------------------------------


@pytest.fixture
def clean_env() -> Callable[[], dict[str, str]]:
    """The environment for a dashboard subprocess: no CONVEYOR_, AWS_ or SQS_ settings."""
    import os

    def make() -> dict[str, str]:
        return {
            k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "AWS_", "SQS_"))
        }

    return make


def test_the_command_in_an_empty_directory_shows_nothing_submitted_yet(
    tmp_path: Path, clean_env: Callable[[], dict[str, str]]
) -> None:
    storage = tmp_path / "nothing-here"
    env = {**clean_env(), "CONVEYOR_STORAGE": str(storage)}
    with serve([], env) as (_, url):
        status, body = _get(url + "api/overview")
        assert status == 200
        data = json.loads(body)
        assert data["note"] == NOTHING_YET
        assert data["queue"]["pending"] == 0 and data["queue"]["error"] is None
        assert _get(url + "api/jobs")[0] == 200
    assert not storage.exists()  # read-only: nothing was created


def test_the_command_shows_a_mistyped_queue_url_as_an_error_and_creates_nothing(
    scenario: Scenario, tmp_path: Path, clean_env: Callable[[], dict[str, str]]
) -> None:
    typo = tmp_path / "no-such-dir" / "queue.db"
    env = {**clean_env(), "CONVEYOR_STORAGE": str(scenario.storage)}
    env["CONVEYOR_QUEUE_URL"] = f"sqlite:///{typo}"
    with serve([], env) as (_, url):
        status, body = _get(url + "api/overview")
    assert status == 200
    data = json.loads(body)
    assert data["summary"]["counts"] == EXPECTED  # the ledger is still there
    assert str(typo) in data["queue"]["error"]
    assert not typo.parent.exists()


def test_the_command_reports_a_port_in_use(scenario: Scenario) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["dashboard", "--storage", str(scenario.storage), "--port", str(port)]
        )
    assert result.exit_code == 78
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
