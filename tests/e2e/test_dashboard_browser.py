"""``conveyor dashboard`` in a real browser (Debian's headless Chromium, driven by
Playwright), over a queue and a ledger (SQLite, and PostgreSQL) where real workers left
jobs in every state."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from conveyor.job_ids import new_job_id
from conveyor.jobs import Job, JobState
from conveyor.ledger import LedgerEvent
from tests.e2e.conftest import QueueEnv
from tests.e2e.helpers import TASKS_FILE, conveyor_command, run, wait_for, workers, write_csv

CHROMIUM = Path("/usr/bin/chromium")
#: Flags for a headless Chromium that talks to nothing but the page under test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
EXPECTED = {
    "queued": 2,
    "running": 1,
    "retrying": 1,
    "succeeded": 4,
    "failed": 1,
    "cancelled": 0,
}

FLAKY_TASK = """
import conveyor


@conveyor.task("e2e-flaky")
def flaky(ctx):
    raise RuntimeError("the network blinked")
"""


def submit(env: dict[str, str], *args: str | Path) -> list[str]:
    return run("submit", *args, env=env).stdout.split()


@pytest.fixture
def browser() -> Iterator[Browser]:
    # Playwright must drive Debian's chromium (`make test` installs it), never fetch its own.
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    assert CHROMIUM.exists(), "chromium is missing: `make test` installs it with apt-get"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def start_dashboard(tmp_path: Path) -> Iterator[Callable[[QueueEnv], str]]:
    """Start ``conveyor dashboard --port 0`` subprocesses; each call returns the printed URL."""
    started: list[subprocess.Popen[str]] = []

    def start(queue_env: QueueEnv) -> str:
        with (tmp_path / f"dashboard-{len(started)}.log").open("w") as log:
            process = subprocess.Popen(
                conveyor_command("dashboard", "--port", "0"),
                env=queue_env.env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        started.append(process)
        assert process.stdout is not None
        first_line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", first_line)
        assert match, f"no URL in the dashboard's output: {first_line!r}"
        return match.group(0)

    yield start
    for process in started:
        process.terminate()
        process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


def make_jobs_in_every_state(
    queue_env: QueueEnv, start_worker: Callable[..., Any]
) -> dict[str, Any]:
    """4 succeeded, 1 failed for good (dead-lettered), 1 retrying (long backoff), 1 running
    (a worker in the middle of it), 2 queued; all through `conveyor submit` and workers."""
    env = queue_env.with_env(CONVEYOR_RETRY_BASE_S="600")
    flaky_file = queue_env.work / "flaky_task.py"
    flaky_file.write_text(FLAKY_TASK)
    good = [write_csv(queue_env.work / f"good-{i}.csv", 50 + i) for i in range(6)]
    bad = queue_env.work / "bad.csv"
    bad.write_text("ID,Value\n1,2.5\n2,abc\n")

    succeeded = submit(env, *good[:4])
    (bad_job,) = submit(env, bad)
    (flaky_job,) = submit(env, "--task", "e2e-flaky", "--import", flaky_file, good[0])
    run("worker", "--import", flaky_file, "--max-jobs", "6", env=env)

    marker_dir = queue_env.work / "markers"
    marker_dir.mkdir()
    (running_job,) = submit(
        env,
        "--task=slow-first",
        "--import",
        TASKS_FILE,
        f"--param=marker_dir={marker_dir}",
        "--param=first_run_s=100",
        good[4],
    )
    start_worker("--import", str(TASKS_FILE), "--batch-size", "1", "--max-jobs", "1")

    def running() -> bool:
        return queue_env.record(running_job)["state"] == JobState.RUNNING.value

    wait_for(running, what="the slow job to start")
    queued = submit(env, good[4], good[5])
    return {
        "succeeded": succeeded,
        "bad": bad_job,
        "flaky": flaky_job,
        "running": running_job,
        "queued": queued,
    }


def shown(page: Page, test_id: str) -> str:
    return page.get_by_test_id(test_id).inner_text().strip()


def test_dashboard_shows_what_the_ledger_and_queue_hold(
    ledger_env: QueueEnv,
    browser: Browser,
    start_dashboard: Callable[[QueueEnv], str],
    tmp_path: Path,
) -> None:
    local_env = ledger_env
    with workers(local_env.env, tmp_path) as start_worker:
        jobs = make_jobs_in_every_state(local_env, start_worker)
        with local_env.open_ledger(create=False) as ledger:
            summary = ledger.summary()
        with local_env.open_queue() as queue:
            stats = queue.stats()
        assert summary.to_dict()["counts"] == EXPECTED
        url = start_dashboard(local_env)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        page.goto(url)

        # The numbers, once the first poll has drawn them.
        for state, count in EXPECTED.items():
            expect(page.get_by_test_id(f"count-{state}")).to_have_text(str(count))
        assert shown(page, "total") == str(summary.total)
        assert shown(page, "queue-visible") == str(stats.visible) == "2"
        assert shown(page, "queue-in-flight") == str(stats.in_flight) == "1"
        assert shown(page, "queue-delayed") == str(stats.delayed) == "1"
        assert shown(page, "queue-dead-lettered") == str(stats.dead_lettered) == "1"
        assert shown(page, "queue-pending") == str(stats.pending)

        # The failure and the dead letter name the bad job, its file, its reason, and link
        # to it.
        failure = page.locator(f'[data-testid="failures"] tr[data-job-id="{jobs["bad"]}"]')
        expect(failure).to_contain_text("abc")
        expect(failure.locator("td.source")).to_have_text(re.compile(r"(^|/)bad\.csv$"))
        dead = page.locator(f'[data-testid="dead-letters"] tr[data-job-id="{jobs["bad"]}"]')
        expect(dead).to_contain_text("csv-process")
        assert page.get_by_test_id("dead-letters").locator("tr").count() == 1

        # The chart has a band for every state present, and the throughput bars.
        chart = page.get_by_test_id("chart-states")
        for state, count in EXPECTED.items():
            expect(chart.locator(f'polygon[data-state="{state}"]')).to_have_count(min(count, 1))
        bars = page.get_by_test_id("chart-throughput").locator('rect[data-state="succeeded"]')
        assert bars.count() >= 1

        # The jobs list: newest first, each with the file it was submitted from; filtered
        # by state.
        listed = page.get_by_test_id("jobs").locator("tr")
        expect(listed).to_have_count(sum(EXPECTED.values()))
        expect(
            page.get_by_test_id("jobs").locator(f'tr[data-job-id="{jobs["bad"]}"]')
        ).to_contain_text("bad.csv")
        page.get_by_test_id("jobs-state").select_option("failed")
        expect(listed).to_have_count(1)
        expect(listed.first).to_have_attribute("data-job-id", jobs["bad"])
        page.get_by_test_id("jobs-state").select_option("")
        expect(listed).to_have_count(sum(EXPECTED.values()))

        ARTIFACTS.mkdir(exist_ok=True)
        name = "dashboard.png" if local_env.ledger_backend == "sqlite" else "dashboard-pg.png"
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)

        # Live: a new job appears without reloading the page.
        submit(local_env.env, write_csv(local_env.work / "late.csv", 3))
        expect(page.get_by_test_id("count-queued")).to_have_text("3", timeout=10_000)
        expect(page.get_by_test_id("queue-visible")).to_have_text("3", timeout=10_000)

        # The failure's link opens the job's record and its history.
        failure.locator("a").click()
        expect(page.locator('td[data-field="state"]')).to_have_text("failed")
        expect(page.locator('td[data-field="error"]')).to_contain_text("abc")
        expect(page.locator('td[data-field="source"]')).to_have_text(re.compile(r"bad\.csv$"))
        history = page.get_by_test_id("history").locator("tbody tr")
        assert [row.get_attribute("data-state") for row in history.all()][-1] == "failed"
        assert page.url.endswith(f"/jobs/{jobs['bad']}")
        assert errors == []


def test_dashboard_lists_groups_with_their_counts_and_reason(
    local_env: QueueEnv, browser: Browser, start_dashboard: Callable[[QueueEnv], str]
) -> None:
    """A group of 4 tolerating 1 failure (1 succeeded, 1 failed, 1 running, 1 queued) shows
    its counts of K; a group whose only job failed shows why."""
    jobs = [Job(task="t", job_id=new_job_id()) for _ in range(5)]
    done, bad, busy, _, lost = (job.job_id for job in jobs)
    with local_env.open_ledger() as ledger:
        ledger.create_group("e2e-group", total=4, tolerate_failures=1)
        ledger.record_queued(jobs[:4], group="e2e-group")
        ledger.create_group("e2e-failed", total=1)
        ledger.record_queued(jobs[4:], group="e2e-failed")
        ledger.record_many(
            [
                LedgerEvent(done, JobState.RUNNING, 1),
                LedgerEvent(done, JobState.SUCCEEDED, 1),
                LedgerEvent(busy, JobState.RUNNING, 1),
                LedgerEvent(bad, JobState.RUNNING, 1),
                LedgerEvent(bad, JobState.FAILED, 1, error="row 3: not a number"),
                LedgerEvent(lost, JobState.RUNNING, 1),
                LedgerEvent(lost, JobState.FAILED, 1, error="row 7: not a number"),
            ]
        )
    url = start_dashboard(local_env)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    rows = page.get_by_test_id("groups").locator("tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-group-id", "e2e-failed")  # newest first
    row = page.get_by_test_id("groups").locator('tr[data-group-id="e2e-group"]')
    expect(row).to_have_attribute("data-state", "running")
    expect(row.locator('td[data-field="done"]')).to_have_text("2 of 4")
    expect(row.locator('td[data-field="failed"]')).to_have_text("1")
    expect(row.locator('td[data-field="running"]')).to_have_text("1")
    expect(row.locator('td[data-field="queued"]')).to_have_text("1")
    failed = page.get_by_test_id("groups").locator('tr[data-group-id="e2e-failed"]')
    expect(failed).to_have_attribute("data-state", "failed")
    expect(failed.locator("td.reason")).to_contain_text("row 7: not a number")
    expect(page.get_by_test_id("groups-empty")).to_be_hidden()
    assert errors == []
