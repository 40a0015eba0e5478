"""The SQL both backends share, without a database: the version check, the upsert's
parameters, batches, listings and the decoding of counts."""

from __future__ import annotations

import pytest

from conveyor.jobs import JobState
from conveyor.ledger import (
    SCHEMA_VERSION,
    LedgerEvent,
    SchemaMismatch,
    job_sql,
    schema,
)
from conveyor.ledger.checks import check_event
from conveyor.ledger.decode import decode_counts

Q, R, T = JobState.QUEUED, JobState.RUNNING, JobState.RETRYING
S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED


# --- the shared SQL helpers -------------------------------------------------------------------


def test_schema_versions_are_checked_with_one_line() -> None:
    schema.check_version(0, "here")
    schema.check_version(SCHEMA_VERSION, "here")
    with pytest.raises(SchemaMismatch, match=r"newer.*upgrade conveyor"):
        schema.check_version(SCHEMA_VERSION + 1, "here", upgrading=True)
    if SCHEMA_VERSION > 1:
        with pytest.raises(SchemaMismatch, match="conveyor ledger migrate"):
            schema.check_version(SCHEMA_VERSION - 1, "here")
    assert len(schema.SQLITE_STEPS) == len(schema.POSTGRES_STEPS) == SCHEMA_VERSION


def test_an_older_schema_asks_for_a_migrate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    with pytest.raises(SchemaMismatch) as caught:
        schema.check_version(2, "sqlite:///x")
    assert "run `conveyor ledger migrate`" in caught.value.message
    assert "\n" not in caught.value.message
    schema.check_version(2, "sqlite:///x", upgrading=True)


def test_event_params_keep_only_what_the_state_carries() -> None:
    def params(event: LedgerEvent) -> dict[str, object]:
        names = ["submitted_at", "started_at", "finished_at", "updated_at", "error", "result"]
        return dict(zip(names, job_sql.event_params(check_event(event, now=5))[10:16], strict=True))

    assert params(LedgerEvent("J", Q, error="x")) == {
        "submitted_at": 5,
        "started_at": None,
        "finished_at": None,
        "updated_at": 5,
        "error": None,
        "result": None,
    }
    assert params(LedgerEvent("J", R, 1))["started_at"] == 5
    assert params(LedgerEvent("J", T, 1, error="flaky"))["error"] == "flaky"
    assert params(LedgerEvent("J", C, error="stop"))["error"] == "stop"
    done = params(LedgerEvent("J", S, 1, result={"n": 1}, error="ignored"))
    assert (done["finished_at"], done["result"], done["error"]) == (5, '{"n":1}', None)


def test_runs_split_redrives_from_ordinary_events_in_order() -> None:
    rows = [
        check_event(e, now=1)
        for e in (
            LedgerEvent("A", Q),
            LedgerEvent("B", Q),
            LedgerEvent("A", Q, redrive=True),
            LedgerEvent("A", R, 1),
        )
    ]
    assert [(redrive, [r.job_id for r in group]) for redrive, group in job_sql.runs(rows)] == [
        (False, ["A", "B"]),
        (True, ["A"]),
        (False, ["A"]),
    ]


def test_jobs_query_filters_and_pages() -> None:
    sql, params = job_sql.jobs_query(F, "t", 10, (5.0, "J"))
    assert "WHERE state = ? AND task = ? AND (updated_at, job_id) < (?, ?)" in sql
    assert sql.endswith("ORDER BY updated_at DESC, job_id DESC LIMIT ?")
    assert "UNION" not in sql
    assert params == ["failed", "t", 5.0, "J", 10]


def test_jobs_query_without_a_state_merges_one_walk_per_state() -> None:
    sql, params = job_sql.jobs_query(None, None, 3, None)
    assert sql.count("UNION ALL") == len(JobState) - 1
    assert params == [p for state in JobState for p in (state.value, 3)] + [3]


def test_counts_decode_to_every_state_and_drop_empty_tasks() -> None:
    counts = decode_counts(
        [("t", "queued", 2), ("t", "failed", 1), ("", "running", 3), ("gone", "queued", 0)]
    )
    assert set(counts) == {"t", ""}
    assert set(counts["t"]) == set(JobState)
    assert (counts["t"][Q], counts["t"][F], counts[""][R]) == (2, 1, 3)
