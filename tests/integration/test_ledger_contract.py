"""The ledger contract (``conveyor.ledger.base.Ledger``), run unchanged on every backend: SQLite
files and a real PostgreSQL server on 127.0.0.1."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.errors import BadInput, ConveyorError, StorageError
from conveyor.jobs import TERMINAL, Job, JobState
from conveyor.ledger import (
    MAX_ERROR_CHARS,
    MAX_RESULT_BYTES,
    SCHEMA_VERSION,
    AmbiguousJobId,
    JobFinished,
    JobNotFound,
    Ledger,
    LedgerEvent,
    LedgerNotFound,
    SchemaMismatch,
    open_ledger,
)
from tests.fixtures.postgres import raw_sql

Q, R, T = JobState.QUEUED, JobState.RUNNING, JobState.RETRYING
S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED
T0 = 1_700_000_000.0


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url, writer="contract") as opened:
        yield opened


def true_counts(url: str) -> dict[tuple[str, str], int]:
    """(task, state) -> jobs, counted row by row: what the maintained counters must say."""
    rows = raw_sql(
        url, "SELECT coalesce(task, ''), state, count(*) FROM conveyor_jobs GROUP BY 1, 2"
    )
    return {(str(task), str(state)): int(str(n)) for task, state, n in rows}


def reported_counts(ledger: Ledger) -> dict[tuple[str, str], int]:
    return {
        (task, state.value): n
        for task, counts in ledger.counts_by_task().items()
        for state, n in counts.items()
        if n
    }


def assert_counts_exact(ledger: Ledger, url: str) -> None:
    assert reported_counts(ledger) == true_counts(url)
    totals = Counter[str]()
    for (_, state), n in true_counts(url).items():
        totals[state] += n
    assert {s.value: n for s, n in ledger.counts().items() if n} == dict(totals)


def state_of(ledger: Ledger, job_id: str) -> JobState:
    record = ledger.get(job_id)
    assert record is not None
    return record.state


# --- recording and reading one job ------------------------------------------------------------


def test_a_recorded_job_reads_back_with_every_field(ledger: Ledger) -> None:
    ledger.record(
        "J1",
        Q,
        at=T0,
        task="csv",
        input="in/a.csv",
        output="out/a.csv",
        seed=7,
        source="a.csv",
    )
    ledger.record("J1", R, attempt=1, at=T0 + 1, worker="w1")
    ledger.record("J1", S, attempt=1, at=T0 + 3, worker="w1", result={"rows": 10})

    record = ledger.get("J1")

    assert record is not None
    assert (record.job_id, record.state, record.attempts) == ("J1", S, 1)
    assert (record.task, record.input, record.output, record.seed) == (
        "csv",
        "in/a.csv",
        "out/a.csv",
        7,
    )
    assert (record.source, record.worker) == ("a.csv", "w1")
    assert (record.submitted_at, record.started_at, record.finished_at) == (T0, T0 + 1, T0 + 3)
    assert record.updated_at == T0 + 3
    assert record.duration_s == 2.0
    assert record.result == {"rows": 10}
    assert record.error is None
    assert record.redrives == 0
    assert record.to_dict()["state"] == "succeeded"


def test_an_unknown_job_is_none(ledger: Ledger) -> None:
    assert ledger.get("nope") is None
    assert ledger.get_many(["nope"]) == {}
    assert ledger.history("nope") == []


def test_get_many_returns_exact_ids_that_exist(ledger: Ledger) -> None:
    ids = [f"M{n:04d}" for n in range(1200)]  # more than one IN list
    ledger.record_many(LedgerEvent(job_id, Q, at=T0) for job_id in ids)

    found = ledger.get_many([*ids, "missing", ids[0], "m0001"])

    assert set(found) == set(ids)
    assert found["M0003"].state is Q
    assert ledger.get_many([]) == {}
    assert ledger.open_jobs(["M0001", "missing"]) == ["M0001"]


def test_prefix_lookup_is_case_insensitive_and_unique(ledger: Ledger) -> None:
    for job_id in ("01HXABC1", "01HXABD2", "zz-job_1", "01HXAB"):
        ledger.record(job_id, Q, at=T0)

    assert ledger.get("01hxabc") is not None and ledger.get("01hxabc").job_id == "01HXABC1"  # type: ignore[union-attr]
    assert ledger.get("ZZ").job_id == "zz-job_1"  # type: ignore[union-attr]
    assert ledger.get("01HXAB").job_id == "01HXAB"  # type: ignore[union-attr]  # exact wins
    with pytest.raises(AmbiguousJobId, match="01HXA"):
        ledger.get("01hxa")
    assert ledger.get("01HXABE") is None
    assert ledger.get("Q") is None
    with pytest.raises(BadInput):
        ledger.get("bad id!")


# --- the forward-only rules ---------------------------------------------------------------


def test_a_late_running_never_overwrites_succeeded(ledger: Ledger) -> None:
    ledger.record("J", S, attempt=1, at=T0 + 5, result={"ok": True})
    ledger.record("J", R, attempt=1, at=T0 + 1, worker="late")

    record = ledger.get("J")
    assert record is not None
    assert record.state is S
    assert record.result == {"ok": True}
    assert record.finished_at == T0 + 5
    assert record.started_at == T0 + 1  # filled from the late event, which did not move it
    assert record.worker == "late"  # a field the job lacked


def test_succeeded_beats_failed_in_either_order(ledger: Ledger) -> None:
    ledger.record("A", F, attempt=1, at=T0, error="boom")
    ledger.record("A", S, attempt=1, at=T0 + 1)
    ledger.record("B", S, attempt=1, at=T0)
    ledger.record("B", F, attempt=2, at=T0 + 1, error="boom")

    assert state_of(ledger, "A") is S
    assert ledger.get("A").error is None  # type: ignore[union-attr]
    assert state_of(ledger, "B") is S


def test_failed_reopens_only_through_redrive(ledger: Ledger) -> None:
    ledger.record("J", F, attempt=3, at=T0, error="poison")
    ledger.record("J", Q, at=T0 + 1)
    ledger.record("J", R, attempt=4, at=T0 + 2)
    ledger.record("J", T, attempt=9, at=T0 + 3)

    record = ledger.get("J")
    assert record is not None
    assert (record.state, record.error, record.attempts) == (F, "poison", 9)


def test_retrying_and_running_are_ordered_by_attempt(ledger: Ledger) -> None:
    ledger.record("J", R, attempt=1, at=T0)
    ledger.record("J", T, attempt=1, at=T0 + 1, error="flaky")
    ledger.record("J", R, attempt=1, at=T0 + 2)  # a duplicate start of attempt 1: too late
    assert state_of(ledger, "J") is T
    assert ledger.get("J").error == "flaky"  # type: ignore[union-attr]

    ledger.record("J", R, attempt=2, at=T0 + 3, worker="w2")
    ledger.record("J", T, attempt=1, at=T0 + 4, error="stale")
    record = ledger.get("J")
    assert record is not None
    assert (record.state, record.attempts, record.error) == (R, 2, None)
    assert record.started_at == T0 + 3


def test_wall_clocks_are_never_compared(ledger: Ledger) -> None:
    # A machine whose clock is an hour behind still moves the job forward.
    ledger.record("J", Q, at=T0)
    ledger.record("J", R, attempt=1, at=T0 - 3600)
    ledger.record("J", S, attempt=1, at=T0 - 3599)

    record = ledger.get("J")
    assert record is not None
    assert record.state is S
    assert record.finished_at == T0 - 3599


def test_duplicates_change_nothing(ledger: Ledger) -> None:
    for _ in range(3):
        ledger.record("J", Q, at=T0, task="t")
        ledger.record("J", R, attempt=1, at=T0 + 1, worker="w")
        ledger.record("J", S, attempt=1, at=T0 + 2)
    ledger.record("J", R, attempt=1, at=T0 + 9, worker="other")
    ledger.record("J", S, attempt=1, at=T0 + 9, worker="other", result={"dup": True})

    assert [(t.state, t.attempt) for t in ledger.history("J")] == [(Q, 0), (R, 1), (S, 1)]
    assert ledger.get("J").result is None  # type: ignore[union-attr]
    record = ledger.get("J")
    assert record is not None
    assert (record.worker, record.updated_at) == ("w", T0 + 2)


def test_a_reordered_batch_ends_where_the_ranks_say(ledger: Ledger) -> None:
    ledger.record_many(
        [
            LedgerEvent("J", S, 1, at=T0 + 2, result={"n": 1}),
            LedgerEvent("J", R, 1, at=T0 + 1, worker="w"),
            LedgerEvent("J", Q, 0, at=T0, task="t", input="in", seed=3),
        ]
    )

    record = ledger.get("J")
    assert record is not None
    assert (record.state, record.task, record.input, record.seed) == (S, "t", "in", 3)
    assert (record.submitted_at, record.started_at, record.finished_at) == (T0, T0 + 1, T0 + 2)
    assert [t.state for t in ledger.history("J")] == [S]


def test_fields_are_filled_from_a_late_queued_event(ledger: Ledger) -> None:
    ledger.record("J", S, attempt=1, at=T0 + 5, worker="w")
    job = Job(job_id="J", task="csv", input="in/x.csv", output="out/x.csv", seed=11)
    ledger.record_queued([job], sources=["x.csv"])

    record = ledger.get("J")
    assert record is not None
    assert record.state is S
    assert (record.task, record.input, record.output, record.seed) == (
        "csv",
        "in/x.csv",
        "out/x.csv",
        11,
    )
    assert record.source == "x.csv"
    assert record.submitted_at == job.submitted_at
    assert ledger.counts(task="csv")[S] == 1
    assert ledger.counts(task="")[S] == 0


def test_the_earliest_queued_time_is_the_submit_time(ledger: Ledger) -> None:
    ledger.record("J", Q, at=T0 + 10)
    ledger.record("J", Q, at=T0 + 2)
    ledger.record("J", Q, at=T0 + 5)

    assert ledger.get("J").submitted_at == T0 + 2  # type: ignore[union-attr]


def test_cancelled_holds_against_late_open_events(ledger: Ledger) -> None:
    ledger.record("J", Q, at=T0)
    ledger.cancel("J", reason="not needed", at=T0 + 1)
    ledger.record("J", R, attempt=1, at=T0 + 2)
    ledger.record("J", T, attempt=4, at=T0 + 3)
    ledger.record("J", F, attempt=1, at=T0 + 4, error="boom")

    record = ledger.get("J")
    assert record is not None
    assert (record.state, record.error, record.finished_at) == (C, "not needed", T0 + 1)
    # A success still wins: its output was published before the cancel was seen.
    ledger.record("J", S, attempt=1, at=T0 + 5)
    assert state_of(ledger, "J") is S


def test_one_bad_event_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(BadInput):
        ledger.record_many([LedgerEvent("good", Q, at=T0), LedgerEvent("bad id", Q, at=T0)])
    with pytest.raises(BadInput):
        ledger.record_many([LedgerEvent("good", Q, at=T0), LedgerEvent("x", R, attempt=-1)])
    with pytest.raises(BadInput):
        ledger.record_many([LedgerEvent("good", Q, at=T0), LedgerEvent("x", Q, seed=2**63)])
    with pytest.raises(BadInput):
        ledger.record_many([LedgerEvent("good", Q), LedgerEvent("x", Q, at=float("nan"))])

    assert ledger.get("good") is None
    assert ledger.counts()[Q] == 0


def test_long_errors_and_results_are_cut_and_odd_text_is_kept(ledger: Ledger) -> None:
    ledger.record("E", F, attempt=1, error="x" * (MAX_ERROR_CHARS + 50))
    ledger.record("R", S, attempt=1, result={"blob": "y" * MAX_RESULT_BYTES})
    ledger.record("U", F, attempt=1, error="nul\x00 and \ud800 and ünïcode", source="a\x00b")
    ledger.record("P", S, attempt=1, result={"path": Path("/p"), "n": [1, 2.5, None]})
    ledger.record("X", Q, task="t\udcff", input="in/\udcff.csv", worker="w\x00")

    assert len(ledger.get("E").error or "") == MAX_ERROR_CHARS + 3  # type: ignore[union-attr]
    big = len('{"blob":""}') + MAX_RESULT_BYTES
    assert ledger.get("R").result == {"truncated_bytes": big}  # type: ignore[union-attr]
    odd = ledger.get("U")
    assert odd is not None
    assert odd.error == "nul\ufffd and ? and ünïcode"
    assert odd.source == "a\ufffdb"
    assert ledger.get("P").result == {"path": "/p", "n": [1, 2.5, None]}  # type: ignore[union-attr]
    undecodable = ledger.get("X")
    assert undecodable is not None
    assert (undecodable.task, undecodable.input) == ("t?", "in/?.csv")
    assert undecodable.worker == "w\ufffd"


# --- redrive and cancel -----------------------------------------------------------------------


def test_redrive_reopens_a_failed_job_and_keeps_the_failure_in_history(ledger: Ledger) -> None:
    ledger.record("J", Q, at=T0, task="t")
    ledger.record("J", R, attempt=1, at=T0 + 1, worker="w")
    ledger.record("J", F, attempt=1, at=T0 + 2, error="boom")

    assert ledger.redrive("J", at=T0 + 3) is True

    record = ledger.get("J")
    assert record is not None
    assert (record.state, record.attempts, record.redrives) == (Q, 0, 1)
    assert (record.error, record.finished_at, record.started_at) == (None, None, None)
    assert record.submitted_at == T0
    assert ledger.counts()[Q] == 1 and ledger.counts()[F] == 0
    ledger.record("J", R, attempt=1, at=T0 + 4)
    ledger.record("J", S, attempt=1, at=T0 + 5)
    history = [(t.state, t.attempt, t.error) for t in ledger.history("J")]
    assert history == [
        (Q, 0, None),
        (R, 1, None),
        (F, 1, "boom"),
        (Q, 0, None),
        (R, 1, None),
        (S, 1, None),
    ]


def test_redrive_refuses_jobs_that_are_not_failed(ledger: Ledger) -> None:
    ledger.record("S1", S, attempt=1, at=T0)
    ledger.record("R1", R, attempt=1, at=T0)
    ledger.record("C1", C, attempt=0, at=T0)

    assert [ledger.redrive(j) for j in ("S1", "R1", "C1", "unknown")] == [False] * 4
    assert [state_of(ledger, j) for j in ("S1", "R1", "C1")] == [S, R, C]


def test_a_redrive_event_in_a_batch_acts_in_order(ledger: Ledger) -> None:
    ledger.record_many(
        [
            LedgerEvent("J", F, 2, at=T0, error="boom"),
            LedgerEvent("J", Q, at=T0 + 1, redrive=True),
            LedgerEvent("J", R, 1, at=T0 + 2),
            LedgerEvent("K", Q, at=T0 + 1, redrive=True),  # not failed: nothing
        ]
    )

    record = ledger.get("J")
    assert record is not None
    assert (record.state, record.redrives, record.attempts) == (R, 1, 1)
    assert ledger.get("K") is None
    with pytest.raises(BadInput):
        ledger.record("J", R, redrive=True)


def test_cancel_queued_and_running_jobs(ledger: Ledger) -> None:
    ledger.record("QJ", Q, at=T0)
    ledger.record("RJ", R, attempt=2, at=T0)

    queued = ledger.cancel("qj", reason="changed my mind")
    running = ledger.cancel("RJ")

    assert (queued.job_id, queued.state, queued.error) == ("QJ", C, "changed my mind")
    assert (running.state, running.error, running.attempts) == (C, "cancelled", 2)
    assert running.finished_at is not None
    assert ledger.cancel("QJ").state is C  # idempotent
    assert ledger.counts()[C] == 2


def test_cancel_refuses_finished_and_unknown_jobs(ledger: Ledger) -> None:
    ledger.record("SJ", S, attempt=1, at=T0)
    ledger.record("FJ", F, attempt=1, at=T0, error="x")

    with pytest.raises(JobFinished, match="succeeded"):
        ledger.cancel("SJ")
    with pytest.raises(JobFinished, match="failed"):
        ledger.cancel("FJ")
    with pytest.raises(JobNotFound):
        ledger.cancel("nope")
    assert state_of(ledger, "SJ") is S


# --- counts, summary, listings -----------------------------------------------------------


def test_counts_stay_exact_through_transitions_redrives_and_prune(
    ledger: Ledger, ledger_url: str
) -> None:
    events = []
    for n in range(60):
        job_id = f"J{n:03d}"
        task = None if n % 7 == 0 else f"task{n % 3}"
        events.append(LedgerEvent(job_id, Q, at=T0 + n, task=task))
        if n % 2:
            events.append(LedgerEvent(job_id, R, 1, at=T0 + n + 1))
        if n % 3 == 0:
            events.append(LedgerEvent(job_id, S if n % 2 else F, 1, at=T0 + n + 2))
    ledger.record_many(events[:70])
    ledger.record_many(events[70:])
    assert_counts_exact(ledger, ledger_url)

    ledger.record_many(LedgerEvent(f"J{n:03d}", Q, task="late") for n in range(0, 60, 7))
    ledger.redrive("J000")
    ledger.cancel("J001", at=T0 + 500)
    assert_counts_exact(ledger, ledger_url)

    ledger.prune(0, now=T0 + 1000, batch_size=4)
    assert_counts_exact(ledger, ledger_url)
    assert ledger.counts()[S] == ledger.counts()[F] == ledger.counts()[C] == 0
    assert ledger.counts(task="late")[Q] == 4  # J000 (redriven), J014, J028, J056


def test_summary_reads_counts_rates_failures_and_queue_age(ledger: Ledger) -> None:
    now = T0 + 1000
    ledger.record_many(
        [
            LedgerEvent("A", Q, at=T0, task="t1"),
            LedgerEvent("B", Q, at=T0 + 10, task="t1"),
            LedgerEvent("C", Q, at=T0 + 20, task="t2"),
            LedgerEvent("D", Q, at=T0 + 30, task="t2"),
            LedgerEvent("A", S, 1, at=now - 30),
            LedgerEvent("B", F, 1, at=now - 200, error="old failure"),
            LedgerEvent("C", F, 1, at=now - 10, error="new failure"),
        ]
    )
    ledger.record_worker_stats("w1", {"receive": 5, "send": 1})
    ledger.record_worker_stats("w2", {"receive": 2})

    summary = ledger.summary(now=now, failures=5)

    assert summary.counts[Q] == 1 and summary.counts[S] == 1 and summary.counts[F] == 2
    assert summary.total == 4
    assert summary.finished_last_minute == 2
    assert summary.rate_last_minute_per_s == pytest.approx(2 / 60)
    assert summary.rate_overall_per_s == pytest.approx(3 / (now - 10 - T0))
    assert [f.job_id for f in summary.recent_failures] == ["C", "B"]
    assert summary.recent_failures[0].error == "new failure"
    assert summary.oldest_queued_age_s == pytest.approx(now - (T0 + 30))
    assert summary.queue_requests == {"receive": 7, "send": 1}
    assert summary.by_task["t1"][S] == 1 and summary.by_task["t2"][Q] == 1
    assert summary.to_dict()["counts"]["failed"] == 2
    assert ledger.summary(now=now, failures=0).recent_failures == []


def test_an_empty_ledger_summarises_to_zeros(ledger: Ledger) -> None:
    summary = ledger.summary()

    assert summary.total == 0
    assert set(summary.counts) == set(JobState)
    assert summary.rate_overall_per_s is None
    assert summary.oldest_queued_age_s is None
    assert summary.recent_failures == [] and summary.by_task == {}


def test_jobs_pages_newest_first_with_a_cursor(ledger: Ledger) -> None:
    # Ties in the update time are broken by the job id, so paging never skips or repeats.
    ledger.record_many(LedgerEvent(f"J{n:03d}", Q, at=T0 + n // 3) for n in range(50))

    seen: list[str] = []
    before = None
    while True:
        page = ledger.jobs(limit=7, before=before)
        if not page:
            break
        seen.extend(r.job_id for r in page)
        before = page[-1].cursor

    assert seen == [f"J{n:03d}" for n in reversed(range(50))]


def test_jobs_filter_by_state_and_task(ledger: Ledger) -> None:
    for n in range(30):
        ledger.record(f"J{n:02d}", Q, at=T0 + n, task=f"t{n % 2}")
        if n % 3 == 0:
            ledger.record(f"J{n:02d}", F, attempt=1, at=T0 + 100 + n, error="x")

    failed = ledger.jobs(F)
    t1 = ledger.jobs(task="t1", limit=100)
    failed_t0 = ledger.jobs(F, task="t0", limit=2)
    rest = ledger.jobs(F, task="t0", limit=100, before=failed_t0[-1].cursor)

    assert [r.job_id for r in failed] == [f"J{n:02d}" for n in range(27, -1, -3)]
    odd = sorted(range(1, 30, 2), key=lambda n: T0 + (100 + n if n % 3 == 0 else n))
    assert [r.job_id for r in t1] == [f"J{n:02d}" for n in reversed(odd)]
    assert [r.job_id for r in failed_t0 + rest] == ["J24", "J18", "J12", "J06", "J00"]
    assert ledger.jobs(task="nothing") == []


def test_jobs_refuses_bad_limits_and_cursors(ledger: Ledger) -> None:
    for limit in (0, 10_001, 2.5):
        with pytest.raises(BadInput):
            ledger.jobs(limit=limit)  # type: ignore[arg-type]
    for cursor in ("nonsense", "1.5/", "nan/J1", "1.0/bad id"):
        with pytest.raises(BadInput):
            ledger.jobs(before=cursor)


# --- history, transitions, worker stats ---------------------------------------------------------


def test_history_lists_every_move_oldest_first(ledger: Ledger) -> None:
    ledger.record("J", Q, at=T0)
    ledger.record("J", R, attempt=1, at=T0 + 1, worker="w1")
    ledger.record("J", T, attempt=1, at=T0 + 2, worker="w1", error="flaky")
    ledger.record("J", R, attempt=2, at=T0 + 3, worker="w2")
    ledger.record("J", S, attempt=2, at=T0 + 4, worker="w2")

    history = ledger.history("J")

    assert [(t.state, t.attempt, t.at) for t in history] == [
        (Q, 0, T0),
        (R, 1, T0 + 1),
        (T, 1, T0 + 2),
        (R, 2, T0 + 3),
        (S, 2, T0 + 4),
    ]
    assert history[2].error == "flaky" and history[3].worker == "w2"
    assert history[0].to_dict()["state"] == "queued"


def test_transitions_reads_a_time_window(ledger: Ledger) -> None:
    for n in range(20):
        ledger.record(f"J{n:02d}", Q, at=T0 + n)
        ledger.record(f"J{n:02d}", S, attempt=1, at=T0 + n + 0.5)

    window = ledger.transitions(T0 + 5, T0 + 8)
    tail = ledger.transitions(T0 + 18)
    first = ledger.transitions(T0, limit=3)

    assert [(t.job_id, t.state) for t in window] == [
        ("J05", Q),
        ("J05", S),
        ("J06", Q),
        ("J06", S),
        ("J07", Q),
        ("J07", S),
    ]
    assert [t.at for t in tail] == [T0 + 18, T0 + 18.5, T0 + 19, T0 + 19.5]
    assert [t.at for t in first] == [T0, T0 + 0.5, T0 + 1]


def test_worker_stats_are_replaced_per_writer_and_summed(ledger: Ledger) -> None:
    ledger.record_worker_stats("w1", {"receive": 5, "delete": 2})
    ledger.record_worker_stats("w1", {"receive": 9})
    ledger.record_worker_stats("w2", {"receive": 1, "send": 4})
    ledger.record_worker_stats("w3", {})

    assert ledger.queue_requests() == {"receive": 10, "send": 4}
    with pytest.raises(BadInput):
        ledger.record_worker_stats("bad writer", {"receive": 1})
    with pytest.raises(BadInput):
        ledger.record_worker_stats("w1", {"receive": -1})


def test_every_sqlite_reader_walks_an_index(tmp_path: Path) -> None:
    import sqlite3

    from conveyor.ledger import job_sql

    url = f"sqlite://{tmp_path / 'ledger.db'}"
    with open_ledger(url) as ledger:
        ledger.record_many(LedgerEvent(f"J{n:04d}", Q, at=T0 + n, task="t") for n in range(300))
    queries = [
        job_sql.jobs_query(state, task, 10, before)
        for state in (None, F)
        for task in (None, "t")
        for before in (None, (T0, "J0001"))
    ]
    queries += [
        (job_sql.FIND_PREFIX, ["J0", "J1", 2]),
        (f"{job_sql.SELECT_JOBS}IN (?, ?)", ["J0001", "J0002"]),
        (job_sql.FINISHED_BETWEEN, [T0, T0 + 60]),
        (job_sql.SPAN, []),
        (job_sql.OLDEST_QUEUED, []),
        (job_sql.HISTORY, ["J0001"]),
        (job_sql.transitions_query(T0 + 9), [T0, T0 + 9, 10]),
        (job_sql.PRUNE_JOBS.format(lock=""), [T0, 10]),
    ]
    conn = sqlite3.connect(tmp_path / "ledger.db")
    try:
        conn.execute("ANALYZE")
        for sql, params in queries:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            full_scans = [
                step for step in plan if step.startswith("SCAN conveyor_") and "INDEX" not in step
            ]
            assert not full_scans, f"{sql[:80]}... scans a table: {plan}"
    finally:
        conn.close()


# --- retention ----------------------------------------------------------------------------------


def test_prune_deletes_old_finished_jobs_in_batches(ledger: Ledger, ledger_url: str) -> None:
    now = T0 + 100 * 86400
    for n in range(25):
        ledger.record(f"OLD{n:02d}", Q, at=T0)
        ledger.record(f"OLD{n:02d}", S if n % 2 else F, attempt=1, at=T0 + n, error="x")
    ledger.record("RECENT", S, attempt=1, at=now - 60)
    ledger.record("OPEN", R, attempt=1, at=T0)  # open jobs are never pruned, however old
    ledger.record_worker_stats("gone", {"receive": 1})

    first = ledger.prune(86400, now=now, batch_size=10, max_batches=1)
    rest = ledger.prune(86400, now=now, batch_size=10)

    assert (first, rest) == (10, 15)
    assert ledger.get("OLD00") is None and ledger.history("OLD00") == []
    assert ledger.get("RECENT") is not None and ledger.get("OPEN") is not None
    assert ledger.counts()[S] == 1 and ledger.counts()[F] == 0 and ledger.counts()[R] == 1
    assert raw_sql(ledger_url, "SELECT count(*) FROM conveyor_transitions")[0][0] == 2
    assert ledger.prune(86400, now=now) == 0
    # Stats written "now" (the real clock) are older than a cutoff in the far future.
    assert ledger.prune(0, now=3e9) == 1
    assert ledger.queue_requests() == {}
    with pytest.raises(BadInput):
        ledger.prune(-1)
    with pytest.raises(BadInput):
        ledger.prune(10, batch_size=0)


# --- schema, opening, errors --------------------------------------------------------------------


def test_a_new_ledger_has_the_current_schema(ledger: Ledger) -> None:
    assert ledger.schema_version() == SCHEMA_VERSION
    assert ledger.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)


def test_a_newer_schema_is_refused_with_one_line(ledger_url: str) -> None:
    open_ledger(ledger_url).close()
    raw_sql(
        ledger_url,
        f"UPDATE conveyor_meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'",
    )

    for create in (True, False):
        with pytest.raises(SchemaMismatch) as caught:
            open_ledger(ledger_url, create=create)
        assert f"v{SCHEMA_VERSION + 1}" in caught.value.message
        assert "upgrade conveyor" in caught.value.message
        assert "\n" not in caught.value.message
        assert caught.value.exit_code == 78


def test_create_false_refuses_a_missing_ledger(
    ledger_backend: str, tmp_path: Path, make_ledger_url: Callable[[str, Path], str]
) -> None:
    if ledger_backend == "sqlite":
        missing = f"sqlite://{tmp_path / 'none' / 'ledger.db'}"
    else:
        empty = make_ledger_url("postgresql", tmp_path)
        missing = empty.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(LedgerNotFound):
        open_ledger(missing, create=False)
    if ledger_backend == "sqlite":
        assert not (tmp_path / "none").exists()
        open_ledger(missing).close()
        assert open_ledger(missing, create=False).schema_version() == SCHEMA_VERSION


def test_create_false_refuses_a_database_without_the_schema(
    make_postgres_url: Callable[..., str],
) -> None:
    url = make_postgres_url(migrated=False)
    with pytest.raises(LedgerNotFound):
        open_ledger(url, create=False)
    with open_ledger(url) as created:
        assert created.schema_version() == SCHEMA_VERSION


def test_the_password_never_appears_in_errors(make_postgres_url: Callable[..., str]) -> None:
    secret = "hunter2-S3cr%40t"
    with socket_closed_port() as port:
        url = f"postgresql://conveyor:{secret}@127.0.0.1:{port}/db?connect_timeout=2"
        with pytest.raises(StorageError) as caught:
            open_ledger(url)
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for error in chain:
        for text in (str(error), repr(error)):
            assert "hunter2" not in text and "S3cr" not in text
    assert "***" in caught.value.message
    assert "\n" not in caught.value.message

    working = make_postgres_url(password=secret)
    with open_ledger(working) as opened:
        assert "hunter2" not in opened.url and "hunter2" not in repr(opened)
        assert opened.url.startswith("postgresql://conveyor:***@")


class socket_closed_port:
    """A loopback port nothing listens on, for as long as the block runs."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


def test_a_bad_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConveyorError, match="unknown ledger URL"):
        open_ledger("mysql://x/y")
    with pytest.raises(ConveyorError, match="SQLite ledger URL"):
        open_ledger("sqlite://")


def test_a_closed_ledger_refuses_calls(ledger_url: str) -> None:
    opened = open_ledger(ledger_url)
    opened.close()
    opened.close()
    with pytest.raises(StorageError, match="closed"):
        opened.get("J")


def test_writer_ids_are_checked(ledger_url: str) -> None:
    with open_ledger(ledger_url, writer="host-1.a_b") as opened:
        assert opened.writer == "host-1.a_b"
    with open_ledger(ledger_url) as opened:
        assert opened.writer
    with pytest.raises(BadInput):
        open_ledger(ledger_url, writer="no spaces")


# --- sharing ------------------------------------------------------------------------------------


def test_threads_share_one_ledger(ledger: Ledger, ledger_url: str) -> None:
    def work(k: int) -> None:
        for n in range(40):
            job_id = f"T{k}-{n}"
            ledger.record_many([LedgerEvent(job_id, Q, task="t"), LedgerEvent(job_id, R, 1)])
            ledger.record(job_id, S, attempt=1)
            ledger.get(job_id)
            ledger.summary()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert ledger.counts()[S] == 160
    assert_counts_exact(ledger, ledger_url)


def _record_in_child(ledger: Ledger, job_id: str) -> None:
    ledger.record(job_id, S, attempt=1)
    ledger.close()


def test_a_forked_child_opens_its_own_connection(ledger: Ledger) -> None:
    ledger.record("PARENT", Q)  # the parent's connection is open before the fork
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_record_in_child, args=(ledger, "CHILD"))
    child.start()
    child.join(60)

    assert child.exitcode == 0
    assert state_of(ledger, "CHILD") is S
    ledger.record("PARENT", S, attempt=1)  # and the parent's still works
    assert state_of(ledger, "PARENT") is S
    assert {s for s in (state_of(ledger, "CHILD"), state_of(ledger, "PARENT"))} <= TERMINAL


def test_a_deadlocked_write_is_retried(make_postgres_url: Callable[..., str]) -> None:
    import psycopg

    url = make_postgres_url()
    waiting = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with open_ledger(url) as ledger:
        ledger.record_many([LedgerEvent("A", Q, at=T0), LedgerEvent("B", Q, at=T0)])
        other = psycopg.connect(url)
        try:
            # The other session waits longer before checking for deadlocks, so the
            # ledger's transaction is the one PostgreSQL aborts.
            other.execute("SET deadlock_timeout = '20s'")
            other.execute("UPDATE conveyor_jobs SET worker = 'other' WHERE job_id = 'B'")
            writer = threading.Thread(
                target=ledger.record_many,
                args=([LedgerEvent("A", R, 1, at=T0 + 1), LedgerEvent("B", R, 1, at=T0 + 1)],),
            )
            writer.start()  # locks A, then waits for B
            deadline = time.monotonic() + 10
            while raw_sql(url, waiting)[0][0] != 1:
                assert time.monotonic() < deadline, "the ledger never waited for B"
                time.sleep(0.02)
            other.execute("UPDATE conveyor_jobs SET worker = 'other' WHERE job_id = 'A'")
            other.commit()  # the ledger was the victim: this went through
        finally:
            other.close()
        writer.join(30)

        assert not writer.is_alive()
        records = ledger.get_many(["A", "B"])
        assert [(r.state, r.worker) for r in records.values()] == [(R, "other")] * 2


def test_a_dropped_connection_is_replaced(make_postgres_url: Callable[..., str]) -> None:
    url = make_postgres_url()
    with open_ledger(url) as ledger:
        ledger.record("A", Q, at=T0)
        killed = raw_sql(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'conveyor'",
        )
        assert killed and all(row[0] for row in killed)

        ledger.record("A", R, attempt=1, at=T0 + 1)

        assert state_of(ledger, "A") is R


def test_a_url_postgresql_cannot_use_is_a_config_error() -> None:
    for url in (
        "postgresql://conveyor:pw-1@127.0.0.1:notaport/db",
        "postgresql://conveyor@127.0.0.1:1/db?password=pw-1&sslmode=bogus",
    ):
        with pytest.raises(ConveyorError) as caught:
            open_ledger(url)
        assert caught.value.exit_code == 78
        assert caught.value.message.startswith("bad ledger URL ")
        assert "pw-1" not in caught.value.message
