"""The ledger's logic that needs no database: the rank order, event checks, cursors,
URL redaction, the shared SQL helpers and the CLI's durations."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from conveyor.cli.ledger import format_duration, parse_duration_s
from conveyor.errors import BadInput, ConfigError
from conveyor.jobs import TERMINAL, JobState
from conveyor.ledger import (
    DEFAULT_RETENTION_S,
    MAX_ERROR_CHARS,
    MAX_RESULT_BYTES,
    SCHEMA_VERSION,
    JobRecord,
    LedgerEvent,
    SchemaMismatch,
    check_writer_id,
    job_sql,
    new_writer_id,
    open_ledger,
    redact_url,
    schema,
    state_rank,
)
from conveyor.ledger.checks import check_event, check_prefix, parse_cursor
from conveyor.ledger.decode import decode_counts
from conveyor.ledger.groups import (
    Completion,
    GroupRecord,
    GroupState,
    check_group_id,
    completion_job,
)

Q, R, T = JobState.QUEUED, JobState.RUNNING, JobState.RETRYING
S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED


# --- the rank order ------------------------------------------------------------------------


def test_open_states_rank_by_attempt_then_step() -> None:
    order = [(Q, 0), (R, 1), (T, 1), (R, 2), (T, 2), (R, 3)]
    ranks = [state_rank(state, attempt) for state, attempt in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)


def test_every_terminal_state_beats_every_open_one_and_succeeded_beats_all() -> None:
    open_max = max(state_rank(s, a) for s, a in itertools.product((Q, R, T), range(10_000)))
    assert min(state_rank(s, 1) for s in TERMINAL) > open_max
    assert state_rank(S, 1) > state_rank(F, 99) == state_rank(C, 0)
    assert state_rank(F, 1) == state_rank(F, 7)  # a terminal state ignores the attempt


# --- checking events -------------------------------------------------------------------------


def test_check_event_resolves_the_time_and_the_rank() -> None:
    row = check_event(LedgerEvent("J1", R, 2, worker="w"), now=123.5)

    assert (row.at, row.rank, row.attempt, row.worker) == (123.5, state_rank(R, 2), 2, "w")
    assert check_event(LedgerEvent("J1", S, 1, at=7), now=9).at == 7.0


@pytest.mark.parametrize(
    "event",
    [
        LedgerEvent("bad id", Q),
        LedgerEvent("", Q),
        LedgerEvent("x" * 65, Q),
        LedgerEvent("J", R, -1),
        LedgerEvent("J", R, True),
        LedgerEvent("J", R, 1.0),  # type: ignore[arg-type]
        LedgerEvent("J", Q, at=-1),
        LedgerEvent("J", Q, at=math.inf),
        LedgerEvent("J", Q, seed=-1),
        LedgerEvent("J", Q, seed=2**63),
        LedgerEvent("J", Q, seed=True),
        LedgerEvent("J", R, 1, redrive=True),
        LedgerEvent("J", "nope"),  # type: ignore[arg-type]
    ],
)
def test_check_event_refuses_bad_events(event: LedgerEvent) -> None:
    with pytest.raises((BadInput, ValueError)):
        check_event(event, now=1.0)


def test_check_event_cuts_long_errors_and_results_and_cleans_text() -> None:
    long = check_event(LedgerEvent("J", F, 1, error="e" * (MAX_ERROR_CHARS * 2)), now=1)
    big = check_event(LedgerEvent("J", S, 1, result={"b": "x" * MAX_RESULT_BYTES}), now=1)
    odd = check_event(LedgerEvent("J", F, 1, error="a\x00b\udcff", source="s\x00"), now=1)
    compact = check_event(LedgerEvent("J", S, 1, result={"a": [1, None], "p": {1, 2}}), now=1)

    assert long.error == "e" * MAX_ERROR_CHARS + "..."
    cut = len('{"b":""}') + MAX_RESULT_BYTES
    assert big.result_json == '{"truncated_bytes":' + str(cut) + "}"
    assert (odd.error, odd.source) == ("a\ufffdb?", "s\ufffd")
    assert compact.result_json == '{"a":[1,null],"p":"{1, 2}"}'


# --- ids, cursors, URLs ----------------------------------------------------------------------


def test_cursor_round_trips_and_bad_cursors_are_refused() -> None:
    record = JobRecord("J-1_a", S, 1, updated_at=1_700_000_000.123456789)
    assert parse_cursor(record.cursor) == (1_700_000_000.123456789, "J-1_a")
    for bad in ("", "/", "1.0", "1.0/", "x/J", "inf/J", "nan/J", "1.0/J 1", "1.0/" + "J" * 65):
        with pytest.raises(BadInput):
            parse_cursor(bad)


def test_prefixes_are_upper_cased_and_checked() -> None:
    assert check_prefix("01hx-a_b") == "01HX-A_B"
    with pytest.raises(BadInput):
        check_prefix("no/slash")
    assert job_sql.prefix_bounds("01HX") == ("01HX", "01HY")
    assert job_sql.prefix_bounds("A_") == ("A_", "A`")
    low, high = job_sql.prefix_bounds("AB-")
    assert low <= "AB-Z9" < high and not low <= "AB." < high


def test_writer_ids() -> None:
    assert check_writer_id("host-1.worker_2") == "host-1.worker_2"
    for bad in ("", ".hidden", "has space", "x" * 101, "a/b"):
        with pytest.raises(BadInput):
            check_writer_id(bad)
    mine = new_writer_id()
    assert check_writer_id(mine) == mine
    assert mine != new_writer_id()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql://u@h/db?password=pw&x=1", "postgresql://u@h/db?password=***&x=1"),
        ("postgresql://h/db?PassWord=pw", "postgresql://h/db?PassWord=***"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///abs/ledger.db", "sqlite:///abs/ledger.db"),
        ("postgresql://u:pw@[::1", "<unparseable URL>"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


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


# --- groups -------------------------------------------------------------------------------------


def test_group_ids_use_the_job_id_alphabet() -> None:
    assert check_group_id("01HX-group_1") == "01HX-group_1"
    for bad in ("", "a b", "x" * 65, "a/b", None, 7):
        with pytest.raises(BadInput, match="bad group id"):
            check_group_id(bad)


def test_a_completion_is_a_checked_envelope_with_a_stored_seed() -> None:
    drawn = completion_job("G", {"job_id": "G-merge", "task": "merge"}, 12.5)
    given = completion_job(
        "G", {"job_id": "G-m", "task": "m", "seed": 3, "params": {"k": [1]}, "input": "in/x"}, 1
    )

    assert (drawn.job_id, drawn.task, drawn.params, drawn.submitted_at) == (
        "G-merge",
        "merge",
        {},
        12.5,
    )
    assert 0 <= drawn.seed < 2**63
    assert (given.seed, given.params, given.input, given.output) == (3, {"k": [1]}, "in/x", None)
    due = Completion.from_stored("G", drawn.to_json(), 99.0)
    assert (due.group_id, due.job_id, due.due_at, due.job.submitted_at) == (
        "G",
        "G-merge",
        99.0,
        99.0,
    )
    assert due.job.seed == drawn.seed


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"task": "m"}, "missing"),
        ({"job_id": "M"}, "missing"),
        ({"job_id": "M", "task": "m", "v": 1}, "unknown"),
        ({"job_id": "M", "task": "m", "params_ref": {}}, "unknown"),
        ({"job_id": "bad id", "task": "m"}, "job_id"),
        ({"job_id": "M", "task": "bad task!"}, "task"),
        ({"job_id": "M", "task": "m", "params": [1]}, "params"),
        ({"job_id": "M", "task": "m", "seed": 2**63}, "seed"),
        ({"job_id": "M", "task": "m", "params": {"x": "y" * 1_100_000}}, "over"),
    ],
)
def test_a_bad_completion_is_refused_with_its_reason(
    fields: dict[str, object], reason: str
) -> None:
    with pytest.raises(BadInput, match=reason) as caught:
        completion_job("G", fields, 1.0)
    assert caught.value.message.startswith("bad completion for group G: ")
    assert "\n" not in caught.value.message


def group_record(**fields: object) -> GroupRecord:
    counts = dict.fromkeys(JobState, 0)
    counts.update(fields.pop("counts", {}))  # type: ignore[call-overload]
    base: dict[str, object] = {"group_id": "G", "state": GroupState.RUNNING, "total": 10}
    return GroupRecord(counts=counts, **{**base, **fields})  # type: ignore[arg-type]


def test_a_group_record_computes_progress() -> None:
    group = group_record(
        counts={Q: 3, R: 2, S: 3, F: 1, C: 1}, first_started_at=100.0, last_finished_at=150.0
    )

    assert (group.done, group.failures, group.remaining, group.finished) == (5, 2, 5, False)
    assert group.throughput_per_s(now=200.0) == pytest.approx(5 / 100)
    assert group.time_left_s(now=200.0) == pytest.approx(100.0)
    assert group.cursor == "0.0/G"
    assert group.to_dict(now=200.0)["remaining"] == 5


def test_a_group_record_with_no_progress_yet_has_no_estimate() -> None:
    fresh = group_record(counts={Q: 10})
    started = group_record(counts={R: 10}, first_started_at=5.0)
    instant = group_record(counts={S: 10}, first_started_at=5.0, last_finished_at=5.0)

    assert (fresh.throughput_per_s(now=9.0), fresh.time_left_s(now=9.0)) == (None, None)
    assert started.time_left_s(now=9.0) is None
    assert instant.throughput_per_s(now=9.0) is None  # all done in no measurable time
    assert instant.time_left_s(now=9.0) == 0.0


def test_a_finished_group_measures_its_throughput_to_its_last_end() -> None:
    done = group_record(
        state=GroupState.SUCCEEDED,
        counts={S: 10},
        first_started_at=0.0,
        last_finished_at=20.0,
        finished_at=21.0,
    )

    assert done.finished and done.remaining == 0
    assert done.throughput_per_s(now=10_000.0) == pytest.approx(0.5)
    assert done.time_left_s(now=10_000.0) == 0.0
    oversubscribed = group_record(counts={S: 12}, total=10)
    assert oversubscribed.remaining == 0


def test_what_an_event_does_to_its_group_on_postgresql() -> None:
    from conveyor.ledger.group_sql import Touch
    from conveyor.ledger.postgres import _touch

    assert _touch("running", 0, joining=False) is Touch.COUNTED
    assert _touch("retrying", 0, joining=False) is Touch.COUNTED
    for state in ("succeeded", "failed", "cancelled"):
        assert _touch(state, 0, joining=False) == Touch.COUNTED | Touch.DECISIVE
    assert _touch("queued", 0, joining=True) == Touch.COUNTED | Touch.DECISIVE
    assert _touch("succeeded", 1, joining=False) is Touch.COMPLETION


# --- durations for ``conveyor ledger prune`` ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400.0),
        ("12h", 43200.0),
        ("90m", 5400.0),
        ("45s", 45.0),
        ("7", 7.0),
        ("1.5h", 5400.0),
        (" 2D ", 172800.0),
        ("0", 0.0),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "30 days", "-1d", "1y", "1e3s", "1h30m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration_s(text)


def test_durations_format_in_the_largest_unit() -> None:
    assert format_duration(DEFAULT_RETENTION_S) == "30d"
    assert [format_duration(s) for s in (7200, 5400, 90, 0, 1.5)] == [
        "2h",
        "90m",
        "90s",
        "0s",
        "1.5s",
    ]


# --- where the SQLite ledger may live -------------------------------------------------------------


def test_the_sqlite_ledger_is_refused_on_nfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import conveyor.queues.sqlite_path as queue_sqlite

    mounts = f"1 0 0:1 / / rw - ext4 /dev/vda rw\n2 1 0:2 / {tmp_path} rw - nfs4 fs-1:/ rw\n"
    monkeypatch.setattr(queue_sqlite, "_read_mountinfo", lambda: mounts)

    with pytest.raises(ConfigError) as caught:
        open_ledger(f"sqlite://{tmp_path / 'state' / 'ledger.db'}")

    assert "CONVEYOR_LEDGER_URL" in caught.value.message
    assert caught.value.exit_code == 78
    assert not (tmp_path / "state").exists()
