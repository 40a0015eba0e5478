"""Job groups in the ledger contract, on every backend: counts kept with the jobs'
transitions, exactly one completion made due, tolerated failures, the outbox, reads and
pruning."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import BadInput
from conveyor.jobs import Job, JobState
from conveyor.ledger import (
    AmbiguousJobId,
    Completion,
    GroupConflict,
    GroupRecord,
    GroupState,
    Ledger,
    LedgerEvent,
    open_ledger,
)
from tests.fixtures.postgres import raw_sql

Q, R, T = JobState.QUEUED, JobState.RUNNING, JobState.RETRYING
S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED
T0 = 1_700_000_000.0


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with open_ledger(ledger_url, writer="groups") as opened:
        yield opened


def merge(group_id: str, **fields: Any) -> dict[str, Any]:
    """A completion's envelope fields: a merge of the group's outputs."""
    return {
        "job_id": f"{group_id}-merge",
        "task": "merge",
        "input": None,
        "output": f"out/{group_id}.csv",
        "params": {"group": group_id},
        **fields,
    }


def jobs_of(group_id: str, k: int) -> list[str]:
    return [f"{group_id}-{n:03d}" for n in range(k)]


def submit(ledger: Ledger, group_id: str, k: int, **create: Any) -> list[str]:
    """Create a group of ``k`` jobs and record them queued; their ids."""
    assert ledger.create_group(group_id, total=k, at=T0, **create) == []
    ids = jobs_of(group_id, k)
    made = ledger.record_many(LedgerEvent(j, Q, at=T0, task="csv", group=group_id) for j in ids)
    assert made == []
    return ids


def finish(ledger: Ledger, job_ids: list[str], state: JobState = S, **fields: Any) -> list[Any]:
    """Run and end each job in its own transactions; every completion returned."""
    made: list[Any] = []
    for n, job_id in enumerate(job_ids):
        made += ledger.record(job_id, R, attempt=1, at=T0 + 10 + n, worker="w")
        made += ledger.record(job_id, state, attempt=1, at=T0 + 11 + n, **fields)
    return made


def group_of(ledger: Ledger, group_id: str) -> GroupRecord:
    found = ledger.group(group_id)
    assert found is not None
    return found


def true_group_counts(url: str) -> dict[tuple[str, str], int]:
    """(group, state) -> jobs, counted row by row (completion jobs are not counted)."""
    rows = raw_sql(
        url,
        "SELECT group_id, state, count(*) FROM conveyor_jobs "
        "WHERE group_id IS NOT NULL AND completes = 0 GROUP BY 1, 2",
    )
    return {(str(g), str(s)): int(str(n)) for g, s, n in rows}


def assert_group_counts_exact(ledger: Ledger, url: str) -> None:
    """Every group's kept counts (created or not) equal a row-by-row count, and
    :meth:`Ledger.group` reads them."""
    from conveyor.ledger.schema import COUNT_COLUMNS, STATES

    sums = ", ".join(f"sum({column})" for column in COUNT_COLUMNS)
    rows = raw_sql(url, f"SELECT group_id, {sums} FROM conveyor_group_counts GROUP BY group_id")
    kept = {
        (str(group_id), state.value): int(str(n))
        for group_id, *counts in rows
        for state, n in zip(STATES, counts, strict=True)
        if n
    }
    assert kept == true_group_counts(url)
    for (group_id,) in raw_sql(url, "SELECT group_id FROM conveyor_group_counts"):
        record = ledger.group(str(group_id))
        if record is not None:
            assert {s.value: n for s, n in record.counts.items() if n} == {
                state: n for (g, state), n in kept.items() if g == group_id
            }


def assert_all_counts_exact(ledger: Ledger, url: str) -> None:
    """Every group's and every task's maintained counts equal a row-by-row count."""
    assert_group_counts_exact(ledger, url)
    rows = raw_sql(
        url, "SELECT coalesce(task, ''), state, count(*) FROM conveyor_jobs GROUP BY 1, 2"
    )
    expected = {(str(t), str(s)): int(str(n)) for t, s, n in rows}
    reported = {
        (task, state.value): n
        for task, counts in ledger.counts_by_task().items()
        for state, n in counts.items()
        if n
    }
    assert reported == expected


# --- the completion, exactly once -------------------------------------------------------------


def test_the_last_job_to_end_makes_the_completion_due_once(ledger: Ledger, ledger_url: str) -> None:
    ids = submit(ledger, "G1", 4, completion=merge("G1"), source="big.csv")

    early = finish(ledger, ids[:3])
    last = finish(ledger, ids[3:])

    assert early == []
    assert len(last) == 1
    completion = last[0]
    assert isinstance(completion, Completion)
    assert (completion.group_id, completion.job_id) == ("G1", "G1-merge")
    assert completion.job.task == "merge"
    assert completion.job.output == "out/G1.csv"
    assert completion.job.params == {"group": "G1"}
    # Due when the transaction ran (its ``now``), the message's submit time.
    assert completion.job.submitted_at == completion.due_at
    assert completion.due_at == pytest.approx(time.time(), abs=60)
    group = group_of(ledger, "G1")
    assert group.state is GroupState.COMPLETING
    assert (group.total, group.done, group.remaining, group.failures) == (4, 4, 0, 0)
    assert group.counts[S] == 4 and group.completion_job_id == "G1-merge"
    assert group.source == "big.csv"
    job = ledger.get("G1-merge")
    assert job is not None
    assert (job.state, job.group, job.group_completion, job.task) == (Q, "G1", True, "merge")
    assert (job.output, job.seed, job.source) == ("out/G1.csv", completion.job.seed, "big.csv")
    assert ledger.counts(task="merge")[Q] == 1
    assert [t.state for t in ledger.history("G1-merge")] == [Q]
    assert_all_counts_exact(ledger, ledger_url)


def test_duplicates_and_replays_never_make_a_second_completion(
    ledger: Ledger, ledger_url: str
) -> None:
    ids = submit(ledger, "G", 3, completion=merge("G"))
    assert len(finish(ledger, ids)) == 1

    replay = [LedgerEvent(j, s, 1, at=T0 + 50) for j in ids for s in (R, F, S)]
    assert ledger.record_many(replay) == []
    assert ledger.record_many(LedgerEvent(j, Q, group="G", task="csv") for j in ids) == []
    assert ledger.create_group("G", total=3, completion=merge("G")) == []

    assert raw_sql(ledger_url, "SELECT count(*) FROM conveyor_jobs WHERE completes = 1")[0][0] == 1
    assert [c.job_id for c in ledger.due_completions()] == ["G-merge"]
    assert group_of(ledger, "G").counts[S] == 3
    assert_all_counts_exact(ledger, ledger_url)


def test_one_batch_ending_every_job_makes_it_due_once(ledger: Ledger) -> None:
    ids = submit(ledger, "B", 5, completion=merge("B"))

    made = ledger.record_many(
        [LedgerEvent(j, s, 1, at=T0 + 5) for j in ids for s in (R, S)]
        + [LedgerEvent(j, S, 1, at=T0 + 6) for j in ids]
    )

    assert [c.job_id for c in made] == ["B-merge"]


def test_a_late_queued_event_can_be_the_one_that_completes(ledger: Ledger) -> None:
    # Workers recorded the ends before the submitter recorded the jobs queued.
    assert ledger.create_group("L", total=3, completion=merge("L"), at=T0) == []
    ids = jobs_of("L", 3)
    assert ledger.record_many(LedgerEvent(j, S, 1, at=T0 + 1) for j in ids) == []
    assert group_of(ledger, "L").done == 0  # not known to be the group's yet

    jobs = [Job(task="csv", job_id=j, submitted_at=T0) for j in ids]
    assert ledger.record_queued(jobs[:2], group="L") == []
    made = ledger.record_queued(jobs[2:], group="L", sources=["part.csv"])

    assert [c.job_id for c in made] == ["L-merge"]
    record = ledger.get(ids[2])
    assert record is not None
    assert (record.state, record.group, record.source) == (S, "L", "part.csv")


def test_jobs_recorded_before_their_group_are_counted_when_it_is_created(
    ledger: Ledger, ledger_url: str
) -> None:
    ids = jobs_of("E", 3)
    ledger.record_many(LedgerEvent(j, Q, at=T0, group="E") for j in ids)
    ledger.record_many(LedgerEvent(j, S, 1, at=T0 + 1) for j in ids)
    assert ledger.group("E") is None
    assert ledger.due_completions() == []

    made = ledger.create_group("E", total=3, completion=merge("E"), at=T0 + 2)

    assert [c.job_id for c in made] == ["E-merge"]
    group = group_of(ledger, "E")
    assert (group.state, group.counts[S]) == (GroupState.COMPLETING, 3)
    assert ledger.create_group("E", total=3, completion=merge("E")) == []
    assert_all_counts_exact(ledger, ledger_url)


def test_the_outbox_lists_due_completions_until_marked_sent(ledger: Ledger) -> None:
    for n, name in enumerate(("O1", "O2", "O3")):
        ids = submit(ledger, name, 1, completion=merge(name))
        ledger.record(ids[0], S, attempt=1, at=T0 + 100 + n)

    due = ledger.due_completions()
    assert [c.group_id for c in due] == ["O1", "O2", "O3"]  # oldest due first
    assert [c.group_id for c in ledger.due_completions(limit=2)] == ["O1", "O2"]
    assert due[0].job == ledger.due_completions()[0].job  # the same envelope every time

    assert ledger.mark_completion_sent("O2", at=T0 + 200) is True
    assert ledger.mark_completion_sent("O2") is False  # idempotent
    assert ledger.mark_completion_sent("nope") is False
    assert [c.group_id for c in ledger.due_completions()] == ["O1", "O3"]
    assert group_of(ledger, "O2").completion_sent_at == T0 + 200
    with pytest.raises(BadInput):
        ledger.due_completions(limit=0)


def test_the_group_follows_its_completion_job(ledger: Ledger) -> None:
    ids = submit(ledger, "W", 2, completion=merge("W"))
    finish(ledger, ids)
    ledger.mark_completion_sent("W")

    ledger.record("W-merge", R, attempt=1, at=T0 + 30, worker="w2")
    assert group_of(ledger, "W").state is GroupState.COMPLETING
    ledger.record("W-merge", F, attempt=3, at=T0 + 31, error="disk full")
    failed = group_of(ledger, "W")
    assert failed.state is GroupState.FAILED
    assert failed.reason == "completion W-merge failed: disk full"
    assert failed.finished_at == T0 + 31

    assert ledger.redrive("W-merge", at=T0 + 40) is True
    assert group_of(ledger, "W").state is GroupState.COMPLETING
    assert group_of(ledger, "W").reason is None
    assert ledger.due_completions() == []  # already sent: a redrive re-sends it itself

    ledger.record("W-merge", R, attempt=1, at=T0 + 41)
    ledger.record("W-merge", S, attempt=1, at=T0 + 42, result={"rows": 10})
    done = group_of(ledger, "W")
    assert (done.state, done.finished_at, done.reason) == (GroupState.SUCCEEDED, T0 + 42, None)
    assert done.counts[S] == 2  # the completion is not one of the group's jobs
    ledger.record("W-merge", F, attempt=2, at=T0 + 43, error="late duplicate")
    assert group_of(ledger, "W").state is GroupState.SUCCEEDED


def test_a_cancelled_completion_fails_the_group(ledger: Ledger) -> None:
    ids = submit(ledger, "X", 1, completion=merge("X"))
    finish(ledger, ids)

    ledger.cancel("X-merge", reason="not wanted", at=T0 + 60)

    group = group_of(ledger, "X")
    assert group.state is GroupState.FAILED
    assert group.reason == "completion X-merge cancelled: not wanted"
    assert ledger.due_completions() == []


def test_a_group_without_completion_succeeds_when_its_last_job_ends(ledger: Ledger) -> None:
    ids = submit(ledger, "N", 3)

    assert finish(ledger, ids[:2]) == []
    assert group_of(ledger, "N").state is GroupState.RUNNING
    assert finish(ledger, ids[2:]) == []

    group = group_of(ledger, "N")
    assert group.state is GroupState.SUCCEEDED
    assert group.finished_at is not None
    assert group.completion_job_id is None
    assert ledger.due_completions() == []


def test_a_group_of_no_jobs_is_done_at_once(ledger: Ledger) -> None:
    made = ledger.create_group("Z", total=0, completion=merge("Z"), at=T0)
    plain = ledger.create_group("Z2", total=0, at=T0)

    assert [c.job_id for c in made] == ["Z-merge"]
    assert made[0].due_at == T0
    assert group_of(ledger, "Z").state is GroupState.COMPLETING
    assert plain == []
    assert group_of(ledger, "Z2").state is GroupState.SUCCEEDED
    assert ledger.create_group("Z", total=0, completion=merge("Z")) == []


# --- tolerated failures --------------------------------------------------------------------------


def test_failures_up_to_the_tolerance_still_complete(ledger: Ledger) -> None:
    ids = submit(ledger, "TF", 5, completion=merge("TF"), tolerate_failures=2)

    made = finish(ledger, ids[:2], F, error="bad row") + finish(ledger, ids[2:])

    assert [c.job_id for c in made] == ["TF-merge"]
    group = group_of(ledger, "TF")
    assert (group.state, group.failures, group.counts[F]) == (GroupState.COMPLETING, 2, 2)


def test_one_failure_too_many_fails_the_group_and_cancels_its_open_jobs(
    ledger: Ledger, ledger_url: str
) -> None:
    ids = submit(ledger, "P", 8, completion=merge("P"), tolerate_failures=1)
    finish(ledger, ids[:1])  # succeeded
    ledger.record(ids[1], R, attempt=1, at=T0 + 20)  # running: left alone
    ledger.record(ids[2], R, attempt=1, at=T0 + 20)
    ledger.record(ids[2], T, attempt=1, at=T0 + 21, error="flaky")  # retrying: cancelled
    ledger.record(ids[3], R, attempt=1, at=T0 + 22)
    ledger.record(ids[3], F, attempt=1, at=T0 + 23, error="bad.csv:17: bad value")
    assert group_of(ledger, "P").state is GroupState.RUNNING  # 1 failure: tolerated

    made = ledger.record_many([LedgerEvent(ids[4], F, 2, at=T0 + 30, error="boom")], now=T0 + 31)

    assert made == []
    group = group_of(ledger, "P")
    assert group.state is GroupState.FAILED
    assert group.reason == "2 of 8 jobs failed, 1 tolerated; first: P-003: bad.csv:17: bad value"
    assert group.finished_at == T0 + 31  # when the transaction ran
    states = {j: r.state for j, r in ledger.get_many(ids).items()}
    assert [states[j] for j in ids] == [S, R, C, F, F, C, C, C]
    cancelled = ledger.get(ids[5])
    assert cancelled is not None
    assert (cancelled.error, cancelled.finished_at) == ("group P failed", T0 + 31)
    assert group.counts == {Q: 0, R: 1, T: 0, S: 1, F: 2, C: 4}
    assert_all_counts_exact(ledger, ledger_url)

    # Whatever happens next, the completion never becomes due.
    ledger.record(ids[1], S, attempt=1, at=T0 + 40)
    ledger.record(ids[1], T, attempt=2, at=T0 + 41)
    assert finish(ledger, ids) == []
    assert ledger.due_completions() == []
    assert ledger.get("P-merge") is None
    assert group_of(ledger, "P").state is GroupState.FAILED
    assert_all_counts_exact(ledger, ledger_url)


def test_jobs_joining_or_retrying_in_a_failed_group_are_cancelled(ledger: Ledger) -> None:
    assert ledger.create_group("K", total=4, at=T0) == []
    ledger.record_many(LedgerEvent(j, Q, at=T0, group="K") for j in ("K1", "K2"))
    ledger.record("K2", R, attempt=1, at=T0 + 1)
    ledger.record("K1", F, attempt=1, at=T0 + 2, error="boom")
    assert group_of(ledger, "K").state is GroupState.FAILED

    ledger.record("K3", Q, at=T0 + 3, group="K")  # submitted after the failure
    ledger.record("K2", T, attempt=1, at=T0 + 4, error="flaky")

    assert [r.state for r in ledger.get_many(["K2", "K3"]).values()] == [C, C]
    assert group_of(ledger, "K").counts[C] == 2


def test_a_cancelled_job_counts_as_a_failure(ledger: Ledger) -> None:
    ids = submit(ledger, "CX", 3)

    ledger.cancel(ids[0], reason="changed my mind")

    group = group_of(ledger, "CX")
    assert group.state is GroupState.FAILED
    assert group.reason == "1 of 3 jobs failed, 0 tolerated; first: CX-000: changed my mind"
    assert [r.state for r in ledger.get_many(ids).values()] == [C, C, C]


def test_a_tolerated_failure_redriven_and_succeeding_counts_as_a_success(
    ledger: Ledger, ledger_url: str
) -> None:
    ids = submit(ledger, "RD", 2, completion=merge("RD"), tolerate_failures=1)
    finish(ledger, ids[:1], F, error="flaky")
    assert ledger.redrive(ids[0], at=T0 + 50) is True
    assert group_of(ledger, "RD").counts[Q] == 2

    made = finish(ledger, ids)

    assert [c.job_id for c in made] == ["RD-merge"]
    assert group_of(ledger, "RD").counts[S] == 2
    assert_all_counts_exact(ledger, ledger_url)


# --- creating ------------------------------------------------------------------------------------


def test_create_group_is_idempotent_and_refuses_other_settings(ledger: Ledger) -> None:
    assert ledger.create_group("I", total=3, tolerate_failures=1, completion=merge("I")) == []
    assert ledger.create_group("I", total=3, tolerate_failures=1, completion=merge("I")) == []
    first = group_of(ledger, "I")

    for other in (
        {"total": 4, "tolerate_failures": 1, "completion": merge("I")},
        {"total": 3, "tolerate_failures": 0, "completion": merge("I")},
        {"total": 3, "tolerate_failures": 1, "completion": None},
        {"total": 3, "tolerate_failures": 1, "completion": merge("I", job_id="other")},
    ):
        with pytest.raises(GroupConflict, match="group I exists"):
            ledger.create_group("I", **other)
    assert group_of(ledger, "I") == first


@pytest.mark.parametrize(
    "args",
    [
        {"group_id": "bad id", "total": 1},
        {"group_id": "", "total": 1},
        {"group_id": "G", "total": -1},
        {"group_id": "G", "total": 1.0},
        {"group_id": "G", "total": True},
        {"group_id": "G", "total": 1, "tolerate_failures": -1},
        {"group_id": "G", "total": 1, "completion": {"task": "merge"}},
        {"group_id": "G", "total": 1, "completion": {"job_id": "M"}},
        {"group_id": "G", "total": 1, "completion": {"job_id": "bad id", "task": "m"}},
        {"group_id": "G", "total": 1, "completion": {"job_id": "M", "task": "m", "x": 1}},
        {"group_id": "G", "total": 1, "completion": {"job_id": "M", "task": "m", "params": 3}},
        {"group_id": "G", "total": 1, "completion": {"job_id": "M", "task": "m", "seed": -1}},
        {"group_id": "G", "total": 1, "at": float("nan")},
    ],
)
def test_create_group_checks_its_arguments(ledger: Ledger, args: dict[str, Any]) -> None:
    with pytest.raises(BadInput):
        ledger.create_group(**args)
    assert ledger.groups() == []


def test_a_huge_completion_is_refused(ledger: Ledger) -> None:
    with pytest.raises(BadInput, match="over"):
        ledger.create_group("H", total=1, completion=merge("H", params={"x": "y" * 1_100_000}))


def test_the_completion_envelope_is_fixed_at_creation(ledger: Ledger) -> None:
    ids = submit(ledger, "D", 1, completion=merge("D"))
    given = submit(ledger, "D2", 1, completion=merge("D2", seed=42))
    finish(ledger, ids + given)

    due = {c.group_id: c.job for c in ledger.due_completions()}
    assert due["D2"].seed == 42
    assert due["D"] == ledger.due_completions()[0].job  # a drawn seed is stored, not redrawn
    assert ledger.get("D-merge").seed == due["D"].seed  # type: ignore[union-attr]


def test_a_bad_group_on_an_event_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(BadInput, match="group id"):
        ledger.record_many([LedgerEvent("ok", Q), LedgerEvent("J", Q, group="no good")])
    assert ledger.get("ok") is None


# --- reading ------------------------------------------------------------------------------------


def test_group_reads_by_exact_id_or_unique_prefix(ledger: Ledger) -> None:
    for name in ("01HXAAA", "01HXAAB", "other-group"):
        ledger.create_group(name, total=1, at=T0)

    assert group_of(ledger, "01hxaaa").group_id == "01HXAAA"
    assert group_of(ledger, "OTHER").group_id == "other-group"
    with pytest.raises(AmbiguousJobId, match="group id prefix 01hxaa"):
        ledger.group("01hxaa")
    assert ledger.group("nothing") is None
    with pytest.raises(BadInput):
        ledger.group("bad id")


def test_groups_page_newest_first(ledger: Ledger) -> None:
    for n in range(25):
        ledger.create_group(f"G{n:02d}", total=1, at=T0 + n // 2)

    seen: list[str] = []
    before = None
    while page := ledger.groups(limit=4, before=before):
        seen += [g.group_id for g in page]
        before = page[-1].cursor

    assert seen == [f"G{n:02d}" for n in reversed(range(25))]
    with pytest.raises(BadInput):
        ledger.groups(before="junk")


def test_jobs_filter_by_group(ledger: Ledger) -> None:
    a = submit(ledger, "GA", 6, completion=merge("GA"))
    submit(ledger, "GB", 3)
    ledger.record("loner", Q, at=T0)
    finish(ledger, a[:2])

    everything = ledger.jobs(group="GA")
    succeeded = ledger.jobs(S, group="GA")
    page = ledger.jobs(group="GA", limit=2)
    rest = ledger.jobs(group="GA", limit=100, before=page[-1].cursor)

    assert sorted(r.job_id for r in everything) == a
    assert [r.job_id for r in succeeded] == [a[1], a[0]]
    assert {r.job_id for r in page + rest} == set(a)
    assert ledger.jobs(group="GA", task="csv", limit=3)[0].group == "GA"
    assert ledger.jobs(group="nothing") == []
    finish(ledger, a[2:])
    assert ledger.jobs(Q, group="GA")[0].job_id == "GA-merge"


def test_a_group_reports_progress_throughput_and_time_left(ledger: Ledger) -> None:
    ids = submit(ledger, "PR", 10)
    for n, job_id in enumerate(ids[:4]):
        ledger.record(job_id, R, attempt=1, at=T0 + 100 + n)
        ledger.record(job_id, S, attempt=1, at=T0 + 110 + n)
    ledger.record(ids[4], R, attempt=1, at=T0 + 99)

    group = group_of(ledger, "PR")

    assert (group.done, group.remaining, group.counts[R], group.counts[Q]) == (4, 6, 1, 5)
    assert (group.first_started_at, group.last_finished_at) == (T0 + 99, T0 + 113)
    assert group.created_at == T0
    assert group.throughput_per_s(now=T0 + 139) == pytest.approx(4 / 40)
    assert group.time_left_s(now=T0 + 139) == pytest.approx(60)
    data = group.to_dict(now=T0 + 139)
    assert data["state"] == "running" and data["counts"]["succeeded"] == 4
    assert data["time_left_s"] == pytest.approx(60)


# --- pruning ------------------------------------------------------------------------------------


def test_prune_takes_finished_groups_with_their_jobs_and_keeps_running_ones(
    ledger: Ledger, ledger_url: str
) -> None:
    now = T0 + 100 * 86400
    done = submit(ledger, "OLD", 5, completion=merge("OLD"))
    finish(ledger, done)
    ledger.record("OLD-merge", S, attempt=1, at=T0 + 30)
    running = submit(ledger, "RUN", 3)
    finish(ledger, running[:2])  # finished long ago, but their group has not
    ledger.record("plain", S, attempt=1, at=T0)

    deleted = ledger.prune(86400, now=now, batch_size=2)

    assert deleted == 5 + 1 + 1  # the old group's jobs, its completion, the plain job
    assert ledger.group("OLD") is None
    assert ledger.get("OLD-000") is None and ledger.get("OLD-merge") is None
    assert ledger.history("OLD-000") == []
    assert group_of(ledger, "RUN").counts[S] == 2
    assert all(ledger.get(j) is not None for j in running)
    assert raw_sql(ledger_url, "SELECT group_id FROM conveyor_groups") == [("RUN",)]
    assert {g for (g,) in raw_sql(ledger_url, "SELECT group_id FROM conveyor_group_counts")} == {
        "RUN"
    }
    assert_all_counts_exact(ledger, ledger_url)

    ledger.record_many([LedgerEvent(running[2], S, 1, at=T0 + 40)], now=T0 + 40)
    assert group_of(ledger, "RUN").finished_at == T0 + 40
    assert ledger.prune(86400, now=now) == 3
    assert ledger.groups() == []
    assert ledger.prune(86400, now=now) == 0


def test_jobs_of_a_group_never_created_are_pruned_as_plain_jobs(
    ledger: Ledger, ledger_url: str
) -> None:
    ledger.record_many(LedgerEvent(f"U{n}", Q, at=T0, group="U") for n in range(3))
    ledger.record_many(LedgerEvent(f"U{n}", S, 1, at=T0 + 1) for n in range(3))
    assert_all_counts_exact(ledger, ledger_url)

    assert ledger.prune(60, now=T0 + 30) == 0  # not old enough
    assert ledger.prune(60, now=T0 + 120) == 3

    assert raw_sql(ledger_url, "SELECT count(*) FROM conveyor_group_counts")[0][0] == 0
    assert_all_counts_exact(ledger, ledger_url)


# --- cost ---------------------------------------------------------------------------------------


def test_every_sqlite_group_query_walks_an_index(tmp_path: Path) -> None:
    import sqlite3

    from conveyor.ledger import group_sql, job_sql, schema

    url = f"sqlite://{tmp_path / 'ledger.db'}"
    with open_ledger(url) as ledger:
        for g in range(20):
            submit(ledger, f"G{g:02d}", 10, completion=merge(f"G{g:02d}"))
        ledger.record_many(LedgerEvent(f"J{n:04d}", Q, at=T0 + n, task="t") for n in range(300))
    queries: list[tuple[str, list[Any]]] = [
        job_sql.jobs_query(state, task, 10, before, "G01")
        for state in (None, F)
        for task in (None, "csv")
        for before in (None, (T0, "G01-001"))
    ]
    queries += [
        group_sql.groups_query(10, (T0, "G05")),
        (group_sql.SELECT_GROUP, ["G01"]),
        (group_sql.FIND_GROUP_PREFIX, ["G0", "G1", 2]),
        (group_sql.MARK_SENT, [T0, "G01"]),
        (group_sql.counts_query(2), ["G01", "G02"]),
        (schema.BUMP, ["G01", 1, -1, 0, 0, 0, 0, None, None]),
        (group_sql._STATE, ["G01"]),
        (group_sql._COUNTS, ["G01"]),
        (group_sql._FIRST_FAILURE, ["G01", "G01"]),
        (group_sql._FAIL, [T0, "x", "G01"]),
        (group_sql._MAKE_DUE, [T0, "G01"]),
        (group_sql._OPEN_JOBS.format(states="'queued', 'running'", lock=""), ["G01"]),
        (group_sql._COMPLETION_JOB.format(lock=""), ["G01-merge"]),
        (group_sql._PRUNABLE, [T0]),
        (group_sql._PRUNE_JOBS, ["G01", 10]),
        (group_sql._PRUNE_COUNTS, ["G01"]),
        (group_sql._PRUNE_GROUP, ["G01", "G01"]),
        (group_sql.PRUNE_ORPHAN_COUNTS, ["G01", "G01", "G01"]),
        (job_sql.PRUNE_JOBS.format(lock=""), [T0, 10]),
    ]
    conn = sqlite3.connect(tmp_path / "ledger.db")
    try:
        conn.execute("ANALYZE")
        for sql, params in queries:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            full_scans = [
                step
                for step in plan
                if (step.startswith("SCAN conveyor_") and "INDEX" not in step)
                or step.startswith("SCAN conveyor_groups")  # a walk of every group
            ]
            assert not full_scans, f"{sql[:80]}... scans a table: {plan}"
        # Walks of an index in its order, stopping at the limit: no sort of every group.
        for (sql, params), index in (
            ((group_sql.SQLITE_DUE, [9]), "conveyor_groups_due"),  # a partial index
            (group_sql.groups_query(10, None), "conveyor_groups_created"),
        ):
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert plan == [f"SCAN conveyor_groups USING INDEX {index}"]
    finally:
        conn.close()


def test_jobs_without_a_group_never_touch_the_group_tables(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite://{tmp_path / 'ledger.db'}"
    statements: list[str] = []
    with open_ledger(url) as ledger:
        conn = ledger._conn  # type: ignore[attr-defined]
        assert isinstance(conn, sqlite3.Connection)
        conn.set_trace_callback(statements.append)
        ledger.record_many([LedgerEvent("A", Q, task="t"), LedgerEvent("B", Q, task="t")])
        ledger.record_many([LedgerEvent("A", R, 1), LedgerEvent("B", R, 1)])
        ledger.record_many([LedgerEvent("A", S, 1), LedgerEvent("B", F, 1, error="x")])
        conn.set_trace_callback(None)

    assert statements
    assert not [s for s in statements if "conveyor_groups" in s]


def test_a_failed_group_does_not_reopen_its_redriven_jobs_are_cancelled(
    ledger: Ledger, ledger_url: str
) -> None:
    ids = submit(ledger, "FR", 3)
    finish(ledger, ids[:1], F, error="boom")
    assert group_of(ledger, "FR").state is GroupState.FAILED

    assert ledger.redrive(ids[0]) is True

    record = ledger.get(ids[0])
    assert record is not None
    assert (record.state, record.error, record.redrives) == (C, "group FR failed", 1)
    assert group_of(ledger, "FR").state is GroupState.FAILED
    assert_all_counts_exact(ledger, ledger_url)
