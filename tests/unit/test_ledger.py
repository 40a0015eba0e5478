"""The job ledger: forward-only folds, per-job reads, summaries, the on-disk format."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.errors import BadInput, ConfigError
from conveyor.jobs import Job, JobState
from conveyor.ledger import (
    MAX_ERROR_CHARS,
    MAX_RESULT_BYTES,
    SHARDS,
    Ledger,
    LedgerEvent,
    _shard,
    fold_events,
    new_writer_id,
)

Q, R, T, S, F = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.RETRYING,
    JobState.SUCCEEDED,
    JobState.FAILED,
)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path, writer="w1") as ledger:
        yield ledger


def reader(ledger: Ledger) -> Ledger:
    """A fresh instance reading the same storage (as `conveyor status` would)."""
    return Ledger(ledger.storage)


def log_of(ledger: Ledger, job_id: str) -> Path:
    """The writer's log holding ``job_id``'s events."""
    return ledger.directory / "log" / _shard(job_id) / f"{ledger.writer}.log"


# --- forward-only transitions -----------------------------------------------------------------

# (first event, its attempt) then (second event, its attempt) -> the state that results.
# The second event is always the later one in time.
TRANSITIONS = [
    (Q, 0, R, 1, R),
    (Q, 0, T, 1, T),
    (Q, 0, S, 1, S),
    (Q, 0, F, 1, F),
    (Q, 0, Q, 0, Q),
    (R, 1, Q, 0, R),  # a late `queued` (clock skew, slow submitter) never reopens a job
    (R, 1, R, 1, R),
    (R, 1, T, 1, T),
    (R, 1, S, 1, S),
    (R, 1, F, 1, F),
    (T, 1, Q, 0, T),
    (T, 1, R, 2, R),  # the next attempt
    (T, 1, T, 2, T),
    (T, 1, S, 2, S),
    (T, 1, F, 2, F),
    (R, 2, T, 1, R),  # a stale retry from an older attempt does not win
    (R, 2, R, 1, R),
    (S, 1, Q, 0, S),
    (S, 1, R, 2, S),  # a duplicate delivery's late `running` never overwrites `succeeded`
    (S, 1, T, 2, S),
    (S, 1, F, 2, S),
    (S, 1, S, 2, S),
    (F, 1, Q, 0, F),  # only an explicit redrive reopens a failed job
    (F, 1, R, 2, F),
    (F, 1, T, 2, F),
    (F, 1, F, 2, F),
    (F, 1, S, 2, S),  # a duplicate that succeeded published its output: success wins
]


@pytest.mark.parametrize(("first", "a1", "second", "a2", "expected"), TRANSITIONS)
@pytest.mark.parametrize("write_order", ["in-order", "reversed"])
def test_forward_only_transitions(
    tmp_path: Path,
    first: JobState,
    a1: int,
    second: JobState,
    a2: int,
    expected: JobState,
    write_order: str,
) -> None:
    events = [
        LedgerEvent("J1", first, attempt=a1, at=100.0, worker="wa"),
        LedgerEvent("J1", second, attempt=a2, at=200.0, worker="wb"),
    ]
    if write_order == "reversed":
        events.reverse()  # files and logs read in any order give the same answer
    with Ledger(tmp_path, writer="w1") as ledger:
        for event in events:
            ledger.record_many([event])
    fresh = Ledger(tmp_path)
    record = fresh.get("J1")
    assert record is not None
    assert record.state is expected
    assert fresh.summary(now=300.0).counts[expected] == 1
    assert [r.state for r in fresh.jobs()] == [expected]


def test_transitions_between_writers_on_equal_times_are_deterministic(tmp_path: Path) -> None:
    for writer in ("wb", "wa"):
        with Ledger(tmp_path, writer=writer) as ledger:
            ledger.record("J1", R, attempt=1, at=5.0, worker=writer)
    record = Ledger(tmp_path).get("J1")
    assert record is not None
    assert record.worker == "wb"  # ties go to the larger (time, writer, seq)


# --- the summary's fold equals get's fold -----------------------------------------------------

# (job, state, attempt, time, writer): few values, so ties and clashes are common.
event_strategy = st.tuples(
    st.sampled_from(["J1", "J2", "J3"]),
    st.sampled_from(list(JobState)),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=1, max_value=20).map(float),
    st.sampled_from(["wa", "wb"]),
)


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(event_strategy, min_size=1, max_size=12),
    redrives=st.lists(
        st.tuples(st.sampled_from(["J1", "J2"]), st.integers(1, 20).map(float)), max_size=2
    ),
)
def test_summary_fold_matches_get_fold(
    events: list[tuple[str, JobState, int, float, str]],
    redrives: list[tuple[str, float]],
) -> None:
    with tempfile.TemporaryDirectory() as root:
        writers = {name: Ledger(Path(root), writer=name) for name in ("wa", "wb")}
        for job_id, state, attempt, at, writer in events:
            writers[writer].record(job_id, state, attempt=attempt, at=at, error=f"e{at}")
        for job_id, at in redrives:
            writers["wa"].redrive(job_id, at=at)
        for ledger in writers.values():
            ledger.close()
        reader = Ledger(Path(root))
        listed = {record.job_id: record for record in reader.jobs(limit=10)}
        assert listed == {job_id: reader.get(job_id) for job_id in {job for job, *_ in events}}
        assert sum(reader.summary().counts.values()) == len(listed)


# --- redrive ----------------------------------------------------------------------------------


def test_redrive_reopens_only_failed_jobs(ledger: Ledger) -> None:
    ledger.record("J1", F, attempt=3, at=10.0, error="bad row 7")
    ledger.record("J2", S, attempt=1, at=10.0)
    assert not ledger.redrive("J2")
    assert not ledger.redrive("unknown")
    assert ledger.redrive("J1", at=20.0)
    record = ledger.get("J1")
    assert record is not None
    assert record.state is Q
    assert (record.attempts, record.error) == (0, None)
    assert not ledger.redrive("J1")  # already queued
    # Then it runs again, from attempt 1, and succeeds
    ledger.record("J1", R, attempt=1, at=30.0)
    ledger.record("J1", S, attempt=1, at=31.0, result={"rows": 2})
    record = ledger.get("J1")
    assert record is not None
    assert (record.state, record.attempts, record.result) == (S, 1, {"rows": 2})


def test_summary_agrees_with_get_after_redrive(ledger: Ledger) -> None:
    ledger.record("J1", Q, at=1.0)
    ledger.record("J1", F, attempt=1, at=2.0, error="boom")
    fresh = reader(ledger)
    assert fresh.summary(now=3.0).counts[F] == 1
    ledger.redrive("J1", at=4.0)
    # The same reader sees the redrive on its next (incremental) summary
    assert fresh.summary(now=5.0).counts[Q] == 1
    ledger.record("J1", R, attempt=1, at=6.0)
    summary = fresh.summary(now=7.0)
    assert (summary.counts[R], summary.counts[F], summary.total) == (1, 0, 1)
    assert reader(ledger).summary(now=7.0).counts[R] == 1


def test_events_older_than_a_redrive_do_not_refail_it(ledger: Ledger) -> None:
    ledger.record("J1", F, attempt=1, at=2.0, error="boom")
    ledger.redrive("J1", at=10.0)
    ledger.record("J1", R, attempt=3, at=5.0)  # written late, but it happened before
    record = ledger.get("J1")
    assert record is not None
    assert record.state is Q


# --- records ----------------------------------------------------------------------------------


def test_record_fields_fold_across_events(ledger: Ledger) -> None:
    job = Job(task="csv-process", input="inputs/J1/a.csv", output="outputs/J1/a.csv", seed=7)
    job = Job(**{**job.__dict__, "job_id": "J1", "submitted_at": 100.0})
    ledger.record_queued([job])
    ledger.record("J1", R, attempt=1, at=101.0, worker="pod-a")
    ledger.record("J1", T, attempt=1, at=102.0, worker="pod-a", error="throttled")
    retrying = ledger.get("J1")
    assert retrying is not None
    assert (retrying.state, retrying.error, retrying.finished_at) == (T, "throttled", None)
    ledger.record("J1", R, attempt=2, at=110.0, worker="pod-b")
    ledger.record("J1", S, attempt=2, at=112.5, worker="pod-b", result={"rows": 10})
    record = reader(ledger).get("J1")
    assert record is not None
    assert record.to_dict() == {
        "job_id": "J1",
        "state": "succeeded",
        "attempts": 2,
        "task": "csv-process",
        "input": "inputs/J1/a.csv",
        "output": "outputs/J1/a.csv",
        "seed": 7,
        "worker": "pod-b",
        "submitted_at": 100.0,
        "started_at": 110.0,
        "finished_at": 112.5,
        "duration_s": 2.5,
        "updated_at": 112.5,
        "error": None,
        "result": {"rows": 10},
    }
    json.dumps(record.to_dict())


def test_unknown_job_is_none(ledger: Ledger) -> None:
    assert ledger.get("NOPE") is None
    ledger.record("J1", Q)
    assert ledger.get("NOPE") is None


@pytest.mark.parametrize("job_id", ["../x", "a/b", "", "x" * 65])
def test_bad_job_ids_are_rejected(ledger: Ledger, job_id: str) -> None:
    with pytest.raises(BadInput, match="bad job id"):
        ledger.record(job_id, Q)
    with pytest.raises(BadInput, match="bad job id"):
        ledger.get(job_id)


@pytest.mark.parametrize("attempt", [-1, 1.5, True])
def test_bad_attempts_are_rejected(ledger: Ledger, attempt: Any) -> None:
    with pytest.raises(BadInput, match="bad attempt"):
        ledger.record("J1", R, attempt=attempt)


def test_bad_writer_ids_are_rejected(tmp_path: Path) -> None:
    for writer in ("", "a/b", ".hidden", "x" * 101, "a b"):
        with pytest.raises(BadInput, match="writer id"):
            Ledger(tmp_path, writer=writer)
    assert Ledger(tmp_path, writer=new_writer_id()).writer


def test_long_errors_and_results_are_trimmed(ledger: Ledger) -> None:
    ledger.record("J1", F, attempt=1, error="x" * (MAX_ERROR_CHARS * 2))
    ledger.record("J2", S, attempt=1, result={"big": "y" * MAX_RESULT_BYTES})
    failed, done = ledger.get("J1"), ledger.get("J2")
    assert failed is not None and done is not None
    assert failed.error is not None and len(failed.error) == MAX_ERROR_CHARS + 3
    assert done.result is not None and done.result["truncated_bytes"] > MAX_RESULT_BYTES


def test_values_json_cannot_hold_are_stored_as_text(ledger: Ledger) -> None:
    ledger.record("J1", S, attempt=1, result={"path": Path("/x"), "tab\t": "new\nline"})
    record = reader(ledger).get("J1")
    assert record is not None
    assert record.result == {"path": "/x", "tab\t": "new\nline"}


def test_fold_events_ignores_other_jobs_and_torn_lines() -> None:
    lines = [
        "1.0\tJ1\tqueued\t0\tw\t1\t{}",
        "2.0\tJ2\tfailed\t1\tw\t2\t{}",
        "3.0\tJ1\trunning\t1\tw\t3\t{}",
        "4.0\tJ1\tsucc",
        "not a line",
    ]
    record = fold_events("J1", lines)
    assert record is not None
    assert record.state is R
    assert fold_events("J3", lines) is None


# --- get reads only its shard -----------------------------------------------------------------

_SEEN: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _SEEN is not None and event in ("open", "os.listdir", "os.scandir") and args:
        path = args[0]
        if isinstance(path, str | bytes | os.PathLike):
            _SEEN.append((event, os.fsdecode(path)))


sys.addaudithook(_audit)


def test_get_reads_only_its_shards_logs(tmp_path: Path) -> None:
    global _SEEN  # noqa: PLW0603 - the audit hook cannot be removed, only switched
    # Given jobs in every shard, some beside J7 in its shard, and J7 seen by two writers
    neighbours = [f"X{n}" for n in range(20_000) if _shard(f"X{n}") == _shard("J7")][:5]
    assert neighbours
    with Ledger(tmp_path, writer="w1") as one, Ledger(tmp_path, writer="w2") as two:
        for job_id in [f"J{n}" for n in range(500)] + neighbours:
            one.record(job_id, Q, at=1.0)
            two.record(job_id, R, attempt=1, at=2.0)
        two.record("J7", S, attempt=1, at=3.0)
        three = Ledger(tmp_path, writer="w3")
        three.record("J8" if _shard("J8") != _shard("J7") else "J9", R, attempt=1)
        three.close()
    fresh = Ledger(tmp_path)
    assert len(os.listdir(fresh.directory / "log")) == SHARDS
    shard_dir = fresh.directory / "log" / _shard("J7")
    files = {str(path) for path in fresh.job_files("J7")}
    assert files == {str(shard_dir / "w1.log"), str(shard_dir / "w2.log")}
    # When reading J7
    _SEEN = []
    try:
        record = fresh.get("J7")
    finally:
        seen, _SEEN = _SEEN, None
    # Then only its shard was listed and only its writers' logs there were opened
    assert record is not None and record.state is S
    assert (record.attempts, record.started_at) == (1, 2.0)
    assert seen, "the audit hook saw nothing: the test would prove nothing"
    assert {path for event, path in seen if event == "open"} == files
    assert {path for event, path in seen if event != "open"} == {str(shard_dir)}


def test_get_finds_a_job_named_like_a_state_or_a_writer(tmp_path: Path) -> None:
    # Given job ids that also appear as other lines' state and writer fields
    with Ledger(tmp_path, writer="w1") as one:
        for n in range(50):
            one.record(f"J{n}", Q, at=1.0)
            one.record(f"J{n}", R, attempt=1, at=2.0, worker="w1")
        one.record("queued", F, attempt=1, at=3.0, error="named queued")
        one.record("w1", S, attempt=1, at=4.0)
    fresh = Ledger(tmp_path)
    # Then each folds only its own lines
    failed, done = fresh.get("queued"), fresh.get("w1")
    assert failed is not None and done is not None
    assert (failed.state, failed.error, failed.attempts) == (F, "named queued", 1)
    assert (done.state, done.updated_at) == (S, 4.0)


# --- summaries --------------------------------------------------------------------------------


def test_summary_counts_rates_failures_and_queue_age(tmp_path: Path) -> None:
    now = 10_000.0
    with Ledger(tmp_path, writer="submitter") as sub, Ledger(tmp_path, writer="worker") as work:
        for n in range(8):
            sub.record(f"J{n}", Q, at=now - 1000 + n, task="t")
        for n in (0, 1, 2):
            work.record(f"J{n}", R, attempt=1, at=now - 40)
            work.record(f"J{n}", S, attempt=1, at=now - 30 + n)
        work.record("J3", F, attempt=1, at=now - 500, error="old failure")
        work.record("J4", F, attempt=2, at=now - 100, error="new failure")
        work.record("J5", R, attempt=1, at=now - 5)
        work.record("J6", T, attempt=1, at=now - 5, error="throttled")
        sub.record("J9", Q, at=now - 100)
        work.record_worker_stats("worker", {"ReceiveMessage": 10, "DeleteMessageBatch": 3})
        work.record_worker_stats("worker", {"ReceiveMessage": 12, "DeleteMessageBatch": 4})
        sub.record_worker_stats("submitter", {"SendMessageBatch": 2})
    summary = Ledger(tmp_path).summary(now=now, failures=5)
    assert summary.counts == {Q: 2, R: 1, T: 1, S: 3, F: 2}
    assert summary.total == 9
    assert summary.finished_last_minute == 3
    assert summary.rate_last_minute_per_s == pytest.approx(3 / 60)
    # 5 finished between the first submit (now - 1000) and the last finish (now - 28)
    assert summary.rate_overall_per_s == pytest.approx(5 / (1000 - 28))
    assert [(f.job_id, f.error) for f in summary.recent_failures] == [
        ("J4", "new failure"),
        ("J3", "old failure"),
    ]
    assert summary.recent_failures[0].task == "t"
    assert summary.oldest_queued_age_s == pytest.approx(1000 - 7)
    assert summary.queue_requests == {
        "ReceiveMessage": 12,
        "DeleteMessageBatch": 4,
        "SendMessageBatch": 2,
    }
    assert (summary.writers, summary.events, summary.corrupt_lines) == (2, 19, 0)
    json.dumps(summary.to_dict())


def test_empty_ledger_summary(tmp_path: Path) -> None:
    summary = Ledger(tmp_path).summary(now=1.0)
    assert summary.total == 0
    assert set(summary.counts.values()) == {0}
    assert summary.rate_overall_per_s is None
    assert summary.oldest_queued_age_s is None
    assert summary.recent_failures == []
    assert not (tmp_path / "_conveyor").exists()  # reading never creates anything


def test_summary_is_incremental_and_sees_new_writers(tmp_path: Path) -> None:
    with Ledger(tmp_path, writer="w1") as first:
        first.record("J1", Q, at=1.0)
    fresh = Ledger(tmp_path)
    assert fresh.summary(now=2.0).counts[Q] == 1
    with Ledger(tmp_path, writer="w2") as second:
        second.record("J1", R, attempt=1, at=3.0)
        second.record("J2", Q, at=3.0)
    summary = fresh.summary(now=4.0)
    assert (summary.counts[Q], summary.counts[R], summary.events) == (1, 1, 3)


def test_torn_last_line_waits_and_corrupt_lines_are_counted(ledger: Ledger) -> None:
    ledger.record("J1", Q, at=1.0)
    log = log_of(ledger, "J1")
    with log.open("ab") as file:
        file.write(b"garbage line\n2.0\tJ1\trunning\t1\tw1\t99\t{}")  # last line unfinished
    fresh = reader(ledger)
    summary = fresh.summary(now=3.0)
    assert (summary.counts[Q], summary.corrupt_lines, summary.events) == (1, 1, 2)
    with log.open("ab") as file:
        file.write(b"\n")
    assert fresh.summary(now=3.0).counts[R] == 1


def test_jobs_lists_newest_first_by_state(ledger: Ledger) -> None:
    for n in range(5):
        ledger.record(f"J{n}", F, attempt=1, at=float(n), error=f"e{n}")
    ledger.record("J9", S, attempt=1, at=99.0)
    failed = reader(ledger).jobs(F, limit=3)
    assert [(r.job_id, r.error) for r in failed] == [("J4", "e4"), ("J3", "e3"), ("J2", "e2")]
    assert [r.job_id for r in ledger.jobs(limit=2)] == ["J9", "J4"]


def test_worker_stats_are_validated(ledger: Ledger) -> None:
    with pytest.raises(BadInput):
        ledger.record_worker_stats("a/b", {"x": 1})
    with pytest.raises(BadInput):
        ledger.record_worker_stats("w1", {"x": -1})
    with pytest.raises(BadInput):
        ledger.record_worker_stats("w1", {"x": 1.5})  # type: ignore[dict-item]


# --- files on disk ----------------------------------------------------------------------------


def test_layout_and_line_format(ledger: Ledger) -> None:
    ledger.record("J1", R, attempt=2, at=1.5, worker="pod-a")
    assert sorted(os.listdir(ledger.directory)) == ["format", "log"]
    assert json.loads((ledger.directory / "format").read_text()) == {"format": 2, "shards": 64}
    assert os.listdir(ledger.directory / "log") == [_shard("J1")]
    line = log_of(ledger, "J1").read_text()
    assert line == '1.500000\tJ1\trunning\t2\tw1\t1\t{"worker":"pod-a"}\n'
    assert ledger.job_files("J1") == [log_of(ledger, "J1")]


def test_shards_are_a_stable_hash_of_the_job_id() -> None:
    # Every machine must put a job in the same shard: crc32 mod 64, as two hex digits
    assert [_shard(job_id) for job_id in ("J1", "01JD0000000000000000000000", "x")] == [
        "0a",
        "38",
        "03",
    ]
    shards = {_shard(f"01JD{n:022d}") for n in range(2000)}
    assert shards == {f"{n:02x}" for n in range(SHARDS)}  # time-sorted ids spread out


def test_a_writer_appends_to_one_log_per_shard(ledger: Ledger) -> None:
    for attempt in (1, 2, 3):
        ledger.record("J1", R, attempt=attempt, at=1.0)
    other = next(f"K{n}" for n in range(1000) if _shard(f"K{n}") != _shard("J1"))
    ledger.record(other, Q, at=1.0)
    assert len(log_of(ledger, "J1").read_text().splitlines()) == 3
    assert len(log_of(ledger, other).read_text().splitlines()) == 1
    assert ledger.job_files("J2") == []


def test_a_batch_is_one_write_per_shard_and_logs_stay_open(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a ledger already written to, and 200 jobs over most shards
    ledger.record("J0", Q)
    ids = [f"J{n}" for n in range(200)]
    shards = {_shard(job_id) for job_id in ids}
    assert len(shards) < len(ids)
    writes: list[int] = []
    opens: list[str] = []
    real_write, real_open = os.write, os.open

    def write(fd: int, data: bytes) -> int:
        writes.append(fd)
        return real_write(fd, data)

    def open_(path: str, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, *args, **kwargs)
        opens.append(path)  # only those that opened (a new shard's first try fails)
        return fd

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "open", open_)
    # When they are recorded in two batches of two events each
    for _ in range(2):
        ledger.record_many(
            [LedgerEvent(job_id, state, attempt=1) for job_id in ids for state in (R, S)]
        )
    # Then each batch wrote once per shard, and each new shard's log was opened once
    assert len(writes) == 2 * len(shards)
    assert len(opens) == len(shards - {_shard("J0")})
    monkeypatch.undo()
    assert reader(ledger).summary().counts[S] == 200


def test_a_bad_event_in_a_batch_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(BadInput, match="bad job id"):
        ledger.record_many([LedgerEvent("J1", Q), LedgerEvent("../x", Q), LedgerEvent("J2", Q)])
    assert reader(ledger).summary().total == 0
    assert ledger.get("J1") is None


def test_another_ledger_format_is_refused(tmp_path: Path) -> None:
    # Given a ledger written by an older conveyor (format 1: per-job files under jobs/)
    old = tmp_path / "_conveyor" / "ledger"
    (old / "jobs" / "abc").mkdir(parents=True)
    (old / "log").mkdir()
    (old / "log" / "w0.log").write_text("1.0\tJ1\tqueued\t0\tw0\t1\t{}\n")
    ledger = Ledger(tmp_path, writer="w1")
    # Then reading and writing both say so, and nothing is written
    with pytest.raises(ConfigError, match="another format"):
        ledger.summary()
    with pytest.raises(ConfigError, match="another format"):
        ledger.get("J1")
    with pytest.raises(ConfigError, match="move that directory away"):
        ledger.record("J1", R, attempt=1)
    ledger.close()
    assert sorted(os.listdir(old)) == ["jobs", "log"]


def test_a_format_file_of_another_version_is_refused(ledger: Ledger) -> None:
    ledger.record("J1", Q)
    (ledger.directory / "format").write_text('{"format": 3, "shards": 256}\n')
    with pytest.raises(ConfigError, match="another format"):
        reader(ledger).summary()
    with pytest.raises(ConfigError, match="another format"):
        Ledger(ledger.storage, writer="w2").record("J2", Q)


def test_a_torn_line_in_a_reused_log_is_ended_not_extended(tmp_path: Path) -> None:
    with Ledger(tmp_path, writer="w1") as first:
        first.record("J1", Q, at=1.0)
    log = log_of(first, "J1")
    with log.open("ab") as file:
        file.write(b"2.0\tJ1\trunn")  # the process died mid-line
    with Ledger(tmp_path, writer="w1") as again:
        again.record("J1", Q, at=3.0)
        again.record("J2", Q, at=3.0)
    assert "\trunn\n3.000000\tJ1\tqueued\t" in log.read_text()  # the torn line was ended
    summary = Ledger(tmp_path).summary(now=4.0)
    assert (summary.total, summary.corrupt_lines, summary.events) == (2, 1, 4)
    assert Ledger(tmp_path).get("J1") is not None


def test_close_is_idempotent_and_writing_reopens(ledger: Ledger) -> None:
    ledger.record("J1", Q, at=1.0)
    ledger.sync()
    ledger.close()
    ledger.close()
    ledger.record("J1", R, attempt=1, at=2.0)
    ledger.close()
    assert len(log_of(ledger, "J1").read_text().splitlines()) == 2


def test_periodic_sync_happens_during_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    ledger = Ledger(tmp_path, writer="w1", sync_every_s=0.0)
    ledger.record("J1", Q)
    assert synced
    ledger.close()


def test_a_forked_child_becomes_a_new_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(tmp_path, writer="w1")
    ledger.record("J1", Q, at=1.0)
    monkeypatch.setattr(os, "getpid", lambda: 424242)
    ledger.record("J1", R, attempt=1, at=2.0)
    ledger.close()
    assert ledger.writer == "w1-424242"
    assert sorted(os.listdir(ledger.directory / "log" / _shard("J1"))) == [
        "w1-424242.log",
        "w1.log",
    ]
    record = Ledger(tmp_path).get("J1")
    assert record is not None and record.state is R


def test_storage_full_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.errors import StorageFull

    ledger = Ledger(tmp_path, writer="w1")
    ledger.record("J1", Q)

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageFull, match="storage is full"):
        ledger.record("J1", R, attempt=1)
    monkeypatch.undo()
    record = ledger.get("J1")
    assert record is not None and record.state is Q
    ledger.close()


def test_a_dropped_ledger_closes_its_logs(tmp_path: Path) -> None:
    import gc

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    ledger = Ledger(tmp_path, writer="w1")
    ledger.record_many([LedgerEvent(f"J{n}", Q) for n in range(100)])
    assert open_fds() > before + 30  # the shard logs stay open while it lives
    del ledger
    gc.collect()
    assert open_fds() == before
