"""Job groups without a database: ids, completion envelopes, progress, and what an event
does to its group."""

from __future__ import annotations

import pytest

from conveyor.errors import BadInput
from conveyor.jobs import JobState
from conveyor.ledger.groups import (
    Completion,
    GroupRecord,
    GroupState,
    check_group_id,
    completion_job,
)

Q, R, T = JobState.QUEUED, JobState.RUNNING, JobState.RETRYING
S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED


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
