"""The dashboard's HTTP API over a real ledger and a real SQLite queue holding jobs in every
state, made by the real worker."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from conveyor.cli import cli
from conveyor.dashboard import DashboardData, create_app
from conveyor.dashboard.app import STATIC_DIR
from conveyor.errors import BadInput, ConfigError
from conveyor.jobs import Job, JobState, encode_for_queue, new_job_id
from conveyor.ledger import Ledger
from conveyor.queues import Queue, open_queue
from conveyor.queues.base import Outgoing
from conveyor.settings import Settings
from conveyor.storage import Storage
from conveyor.tasks import TaskContext, TaskRegistry
from conveyor.worker import Worker

#: The scenario below leaves exactly these many jobs in each state.
EXPECTED = {"queued": 2, "running": 1, "retrying": 1, "succeeded": 3, "failed": 1}
BAD_REASON = "row 2: Value 'abc' is not a number"


@dataclass
class Scenario:
    """A storage root and queue with jobs in every state, and the ids of the notable ones."""

    storage: Path
    queue_url: str
    settings: Settings
    bad_job: str = ""
    flaky_job: str = ""
    running_job: str = ""
    succeeded: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)

    def open_queue(self) -> Queue:
        return open_queue(self.queue_url, self.settings)


def _tasks() -> TaskRegistry:
    registry = TaskRegistry()

    def ok(ctx: TaskContext) -> dict[str, object]:
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
    """Send ``count`` jobs of ``task`` and record them as queued, as `conveyor submit` does."""
    jobs = []
    for _ in range(count):
        job_id = new_job_id()
        jobs.append(Job(task=task, output=storage.default_output(job_id, None), job_id=job_id))
    queue.send_batch([Outgoing(encode_for_queue(job, storage)) for job in jobs])
    ledger.record_queued(jobs)
    return [job.job_id for job in jobs]


def make_scenario(root: Path, sqs: tuple[str, Settings] | None = None) -> Scenario:
    """Jobs in every state, through the real worker wherever a worker makes the state.

    3 succeeded; 1 failed for good (bad input: dead-lettered at once); 1 retrying (a
    transient error, released with a long backoff); 1 running (received and recorded as
    running, as by a worker in the middle of it); 2 queued. On SQLite unless ``sqs`` gives
    the URL and settings of an SQS queue.
    """
    storage_dir = root / "storage"
    storage_dir.mkdir()
    url, base = sqs or (f"sqlite:///{root / 'queue.db'}", Settings())
    settings = base.with_(storage=storage_dir, queue_url=url, wait_s=0.0, retry_base_s=600.0)
    scenario = Scenario(storage_dir, url, settings)
    storage = Storage(storage_dir)
    queue = scenario.open_queue()
    ledger = Ledger(storage, writer="scenario")
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
    return make_scenario(tmp_path)


@pytest.fixture(params=["sqlite", "sqs"])
def any_scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Scenario:
    """The scenario on each queue backend (SQS as served by moto on loopback)."""
    if request.param == "sqlite":
        return make_scenario(tmp_path)
    create = request.getfixturevalue("create_sqs_queue")
    return make_scenario(tmp_path, create("dash", Settings(max_receive_count=3)))


@pytest.fixture
def client(scenario: Scenario) -> Iterator[TestClient]:
    data = DashboardData(
        Ledger(Storage(scenario.storage)), scenario.open_queue, queue_url=scenario.queue_url
    )
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
    data = DashboardData(Ledger(any_scenario.storage), any_scenario.open_queue)
    with TestClient(create_app(data)) as client:
        body = overview(client)
    data.close()
    with contextlib.closing(any_scenario.open_queue()) as queue:
        stats = queue.stats()

    assert body["summary"]["counts"] == EXPECTED
    assert body["queue"]["pending"] == stats.pending == 4  # 2 queued, running, retrying
    assert body["queue"]["dead_lettered"] == stats.dead_lettered == 1
    (dead,) = body["dead_letters"]["messages"]
    assert BAD_REASON in dead["reason"]
    assert dead["task"] == "bad"


def test_overview_counts_match_the_scenario_and_the_ledger(
    client: TestClient, scenario: Scenario
) -> None:
    data = overview(client)
    ledger_counts = Ledger(Storage(scenario.storage)).summary().to_dict()["counts"]

    assert data["summary"]["counts"] == EXPECTED == ledger_counts
    assert data["summary"]["total"] == sum(EXPECTED.values())
    # 2 queued visible, 1 held by the "running" worker, the flaky one delayed by its backoff.
    assert {k: data["queue"][k] for k in ("visible", "in_flight", "delayed", "dead_lettered")} == {
        "visible": 2,
        "in_flight": 1,
        "delayed": 1,
        "dead_lettered": 1,
    }
    assert data["queue"]["error"] is None


def test_recent_failures_and_dead_letters_name_the_bad_job_and_its_reason(
    client: TestClient, scenario: Scenario
) -> None:
    data = overview(client)

    (failure,) = data["summary"]["recent_failures"]
    assert failure["job_id"] == scenario.bad_job
    assert BAD_REASON in failure["error"]
    (dead,) = data["dead_letters"]["messages"]
    assert dead["job_id"] == scenario.bad_job
    assert dead["task"] == "bad"
    assert BAD_REASON in dead["reason"]
    assert data["dead_letters"]["error"] is None


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
    # Before anything was submitted, nothing was in any state.
    assert all(series[0] <= last[state] for state, series in timeline["states"].items())


def test_a_new_job_shows_up_on_the_next_refresh(scenario: Scenario) -> None:
    now = [time.time()]
    data = DashboardData(
        Ledger(Storage(scenario.storage)),
        scenario.open_queue,
        queue_url=scenario.queue_url,
        min_interval_s=1.0,
        queue_every_s=2.0,
        clock=lambda: now[0],
    )
    try:
        before = data.overview()["summary"]["counts"]["queued"]
        with contextlib.closing(scenario.open_queue()) as queue, Ledger(scenario.storage) as led:
            submit(queue, led, Storage(scenario.storage), "ok")
        assert data.overview()["summary"]["counts"]["queued"] == before  # cached within 1 s
        now[0] += 2.5  # past both the overview's and the queue counts' cache
        refreshed = data.overview()
        assert refreshed["summary"]["counts"]["queued"] == before + 1
        assert refreshed["queue"]["visible"] == EXPECTED["queued"] + 1
    finally:
        data.close()


# --- one job ---------------------------------------------------------------------------------


def test_job_json_and_page_show_the_record(client: TestClient, scenario: Scenario) -> None:
    record = client.get(f"/api/jobs/{scenario.bad_job}").json()
    assert record["state"] == "failed"
    assert BAD_REASON in record["error"]
    assert record["task"] == "bad"

    page = client.get(f"/jobs/{scenario.bad_job}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert scenario.bad_job in page.text
    assert "Value &#x27;abc&#x27; is not a number" in page.text  # escaped, not raw


def test_unknown_and_malformed_job_ids_are_404_and_400(client: TestClient) -> None:
    assert client.get("/api/jobs/no-such-job").status_code == 404
    assert client.get("/jobs/no-such-job").status_code == 404
    bad = client.get("/api/jobs/bad%20id%3F")
    assert bad.status_code == 400
    assert "bad job id" in bad.json()["error"]


def test_job_page_escapes_html_in_errors(scenario: Scenario, tmp_path: Path) -> None:
    with Ledger(scenario.storage, writer="evil") as ledger:
        ledger.record("evil-job", JobState.FAILED, attempt=1, error="<script>alert(1)</script>")
    data = DashboardData(Ledger(scenario.storage), scenario.open_queue)
    with TestClient(create_app(data)) as client:
        page = client.get("/jobs/evil-job").text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_jobs_listing_filters_by_state_and_checks_its_arguments(
    client: TestClient, scenario: Scenario
) -> None:
    queued = client.get("/api/jobs", params={"state": "queued"}).json()
    assert {job["job_id"] for job in queued} == set(scenario.queued)
    assert len(client.get("/api/jobs", params={"limit": 2}).json()) == 2
    assert client.get("/api/jobs", params={"state": "lost"}).status_code == 400
    assert client.get("/api/jobs", params={"limit": 0}).status_code == 400


# --- read-only, offline, safe ----------------------------------------------------------------

ROUTES = ["/", "/api/overview", "/api/jobs", "/api/jobs/x", "/jobs/x", "/static/dashboard.js"]


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
        summary = Ledger(scenario.storage).summary(0.0)
        files = sorted(p.relative_to(scenario.storage) for p in scenario.storage.rglob("*"))
        return summary.counts, summary.events, stats, dead, files

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


def test_a_foreign_host_header_is_refused_on_loopback(scenario: Scenario) -> None:
    data = DashboardData(Ledger(scenario.storage), scenario.open_queue)
    app = create_app(data, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8080") as client:
        assert client.get("/api/overview").status_code == 200
        assert client.get("/api/overview", headers={"host": "evil.example"}).status_code == 400
    data.close()


def test_an_unreachable_queue_still_shows_the_ledger(scenario: Scenario) -> None:
    def broken() -> Queue:
        raise ConfigError("queue https://sqs.example/nope does not exist")

    data = DashboardData(Ledger(scenario.storage), broken)
    with TestClient(create_app(data)) as client:
        body = overview(client)
    assert body["summary"]["counts"] == EXPECTED
    assert "does not exist" in body["queue"]["error"]
    assert "does not exist" in body["dead_letters"]["error"]


# --- the command -----------------------------------------------------------------------------


def test_the_command_refuses_a_missing_storage_root(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dashboard", "--storage", str(tmp_path / "nope")])
    assert result.exit_code == 78
    assert "does not exist" in result.output


def test_the_command_reports_a_port_in_use(scenario: Scenario) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["dashboard", "--storage", str(scenario.storage), "--port", str(port)]
        )
    assert result.exit_code == 78
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
