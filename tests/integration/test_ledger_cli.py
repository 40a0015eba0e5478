"""``conveyor ledger migrate`` and ``conveyor ledger prune`` on both ledger backends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor.cli import cli
from conveyor.jobs import JobState
from conveyor.ledger import SCHEMA_VERSION, open_ledger
from tests.fixtures.postgres import raw_sql

DAY_S = 86400.0


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def empty_ledger_url(
    ledger_backend: str,
    tmp_path: Path,
    make_ledger_url: Callable[[str, Path], str],
    request: pytest.FixtureRequest,
) -> str:
    """A ledger URL with nothing there yet: no SQLite file, or a database with no schema."""
    if ledger_backend == "sqlite":
        return make_ledger_url("sqlite", tmp_path)
    make_postgres_url: Callable[..., str] = request.getfixturevalue("make_postgres_url")
    return make_postgres_url(migrated=False, password="hush-hush")


def test_migrate_creates_then_finds_the_schema_current(empty_ledger_url: str) -> None:
    code, first = run("ledger", "migrate", "--ledger", empty_ledger_url)
    again_code, again = run("ledger", "migrate", env={"CONVEYOR_LEDGER_URL": empty_ledger_url})

    assert (code, again_code) == (0, 0)
    assert first.startswith(f"ledger schema: v0 -> v{SCHEMA_VERSION} at ")
    assert again.startswith(f"ledger schema: v{SCHEMA_VERSION} -> v{SCHEMA_VERSION} (already")
    assert "hush-hush" not in first + again
    with open_ledger(empty_ledger_url, create=False) as ledger:
        assert ledger.schema_version() == SCHEMA_VERSION


def test_migrate_refuses_a_newer_schema(ledger_url: str) -> None:
    open_ledger(ledger_url).close()
    raw_sql(ledger_url, "UPDATE conveyor_meta SET value = '99'")

    code, output = run("ledger", "migrate", "--ledger", ledger_url)

    assert code == 78
    assert "v99, newer than this conveyor's" in output


def test_prune_deletes_finished_jobs_past_the_retention(ledger_url: str) -> None:
    now = time.time()
    with open_ledger(ledger_url) as ledger:
        ledger.record("OLD", JobState.SUCCEEDED, attempt=1, at=now - 40 * DAY_S)
        ledger.record("WEEK", JobState.FAILED, attempt=1, at=now - 7 * DAY_S, error="x")
        ledger.record("NEW", JobState.SUCCEEDED, attempt=1, at=now - 60)
        ledger.record("OPEN", JobState.QUEUED, at=now - 90 * DAY_S)

    code, default = run("ledger", "prune", "--ledger", ledger_url)
    code_h, hours = run(
        "ledger",
        "prune",
        "--ledger",
        ledger_url,
        env={"CONVEYOR_LEDGER_RETENTION": "24h"},
    )

    assert (code, code_h) == (0, 0)
    assert default.startswith("pruned 1 finished job(s) older than 30d from ")
    assert hours.startswith("pruned 1 finished job(s) older than 1d from ")
    with open_ledger(ledger_url, create=False) as ledger:
        assert set(ledger.get_many(["OLD", "WEEK", "NEW", "OPEN"])) == {"NEW", "OPEN"}


def test_prune_uses_the_embedded_ledger_of_the_storage(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    missing_code, missing = run("ledger", "prune", "--storage", str(storage))
    run("ledger", "migrate", "--storage", str(storage))
    code, output = run("ledger", "prune", "--storage", str(storage), "--older-than", "0")
    bad_code, bad = run("ledger", "prune", "--storage", str(storage), "--older-than", "1y")
    none_code, none = run("ledger", "prune", "--storage", str(tmp_path / "nowhere"))

    assert missing_code == 78 and "no ledger at" in missing
    assert (code, output.split(" from ")[0]) == (0, "pruned 0 finished job(s) older than 0s")
    assert (storage / "_conveyor" / "ledger.db").is_file()
    assert bad_code == 2 and "bad duration '1y'" in bad
    assert none_code == 78 and "does not exist" in none
