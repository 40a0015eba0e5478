"""Many processes writing one ledger at once, on both backends: overlapping, reordered and
duplicated events must end where the forward-only rules say, the counters must stay exact,
and a writer killed mid-transaction must leave none of its batch behind."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.synchronize import Barrier

from conveyor.jobs import JobState
from conveyor.ledger import LedgerEvent, open_ledger, state_rank
from tests.fixtures.postgres import raw_sql

WRITERS = 8
JOBS = 40
JOIN_TIMEOUT_S = 60.0
Q, R, T, S, F = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.RETRYING,
    JobState.SUCCEEDED,
    JobState.FAILED,
)
_fork = multiprocessing.get_context("fork")


def assert_counts_match_rows(url: str) -> None:
    """The maintained counters equal a row-by-row count."""
    rows = raw_sql(
        url, "SELECT coalesce(task, ''), state, count(*) FROM conveyor_jobs GROUP BY 1, 2"
    )
    expected = {(str(task), str(state)): int(str(n)) for task, state, n in rows}
    with open_ledger(url, create=False) as ledger:
        reported = {
            (task, state.value): n
            for task, counts in ledger.counts_by_task().items()
            for state, n in counts.items()
            if n
        }
    assert reported == expected


# --- racing writers ------------------------------------------------------------------------------


def job_events(n: int) -> list[tuple[JobState, int]]:
    """Every event job ``n`` may see: queued, runs and retries, and maybe an end."""
    events = [(Q, 0), (R, 1), (T, 1), (R, 2), (T, 2), (R, 3)]
    ending = n % 4
    if ending == 1:
        events.append((S, 2))
    elif ending == 2:
        events.append((F, 3))
    elif ending == 3:
        events += [(F, 1), (S, 3)]  # a failed duplicate delivery and a success
    return events


def writer_plan(seed: int) -> list[list[LedgerEvent]]:
    """One writer's batches: a random, duplicated, shuffled sample of every job's events."""
    rng = random.Random(seed)
    picked = [
        LedgerEvent(
            f"J{n:03d}",
            state,
            attempt,
            at=1_700_000_000.0 + rng.random(),  # clocks disagree: never compared
            task="race" if state is Q else None,
            worker=f"w{seed}",
        )
        for n in range(JOBS)
        for state, attempt in job_events(n)
        for _ in range(rng.choice((0, 1, 1, 2)))
    ]
    rng.shuffle(picked)
    batches = []
    while picked:
        size = rng.randint(1, 25)
        batches.append(picked[:size])
        picked = picked[size:]
    return batches


def race_writer(url: str, seed: int, barrier: Barrier) -> None:
    with open_ledger(url, writer=f"writer{seed}") as ledger:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        for batch in writer_plan(seed):
            ledger.record_many(batch)


def test_racing_writers_end_where_the_ranks_say(ledger_url: str) -> None:
    open_ledger(ledger_url).close()
    barrier = _fork.Barrier(WRITERS)
    writers = [
        _fork.Process(target=race_writer, args=(ledger_url, seed, barrier))
        for seed in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(JOIN_TIMEOUT_S)
    assert [w.exitcode for w in writers] == [0] * WRITERS

    best: dict[str, tuple[int, JobState]] = {}
    attempts: Counter[str] = Counter()
    for seed in range(WRITERS):
        for batch in writer_plan(seed):
            for event in batch:
                rank = state_rank(event.state, event.attempt)
                best[event.job_id] = max(best.get(event.job_id, (-1, Q)), (rank, event.state))
                attempts[event.job_id] = max(attempts[event.job_id], event.attempt)
    with open_ledger(ledger_url, create=False) as ledger:
        records = ledger.get_many(best)
        assert {j: r.state for j, r in records.items()} == {j: s for j, (_, s) in best.items()}
        assert {j: r.attempts for j, r in records.items()} == dict(attempts)
        for job_id, (rank, _) in best.items():
            ranks = [state_rank(t.state, t.attempt) for t in ledger.history(job_id)]
            assert ranks == sorted(set(ranks)), f"{job_id} moved backwards: {ranks}"
            assert ranks[-1] == rank
        queued = {
            event.job_id
            for seed in range(WRITERS)
            for batch in writer_plan(seed)
            for event in batch
            if event.state is Q
        }
        assert {j for j, r in records.items() if r.task == "race"} == queued
    assert_counts_match_rows(ledger_url)


# --- a writer killed mid-transaction -------------------------------------------------------------

BATCH = 400


def batch_writer(url: str, first_batch: int) -> None:
    """Write batches until killed; batch ``k``'s jobs are ``K<k>-<i>``, all in one call."""
    with open_ledger(url) as ledger:
        k = first_batch
        while True:
            ledger.record_many(
                LedgerEvent(f"K{k}-{i}", Q if i % 2 else S, 0, task=f"t{k % 3}")
                for i in range(BATCH)
            )
            k += 1


def test_a_killed_writer_leaves_no_partial_batch(ledger_url: str) -> None:
    open_ledger(ledger_url).close()
    rng = random.Random(7)
    for round_ in range(4):
        writer = _fork.Process(target=batch_writer, args=(ledger_url, round_ * 100_000))
        writer.start()
        time.sleep(rng.uniform(0.3, 0.8))
        assert writer.pid is not None and writer.is_alive()
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(JOIN_TIMEOUT_S)
        assert writer.exitcode == -signal.SIGKILL

    rows = raw_sql(ledger_url, "SELECT job_id FROM conveyor_jobs")
    per_batch = Counter(str(job_id).split("-")[0] for (job_id,) in rows)
    assert per_batch, "no batch was ever committed"
    assert set(per_batch.values()) == {BATCH}, "a batch was partly written"
    history = raw_sql(ledger_url, "SELECT count(*) FROM conveyor_transitions")[0][0]
    assert history == len(rows)
    assert_counts_match_rows(ledger_url)
    with open_ledger(ledger_url) as ledger:  # still writable after the kills
        ledger.record("after", Q)
        assert ledger.get("after") is not None


# --- racing writers finishing the jobs of groups -------------------------------------------------

GROUP_JOBS = 24
#: Per group: (tolerated failures, jobs that fail, has a completion, created by the writers).
GROUP_PLAN = {
    "GA": (0, 0, True, False),
    "GB": (2, 2, True, False),  # failures within the tolerance: completes
    "GC": (2, 3, True, False),  # one failure too many: fails, cancels its open jobs
    "GD": (0, 0, False, False),  # no completion: succeeds
    "GE": (1, 1, True, True),  # created by the racing writers themselves, at random moments
}


def group_jobs(group: str) -> list[str]:
    return [f"{group}-{n:02d}" for n in range(GROUP_JOBS)]


def group_create_args(group: str) -> dict[str, object]:
    tolerated, _, completion, _ = GROUP_PLAN[group]
    return {
        "total": GROUP_JOBS,
        "tolerate_failures": tolerated,
        "completion": {"job_id": f"{group}-merge", "task": "merge", "seed": 1}
        if completion
        else None,
    }


def group_job_events(group: str, n: int) -> list[tuple[JobState, int]]:
    """A job's events: runs and a retry, then its end (the first jobs of a group fail)."""
    failing = n < GROUP_PLAN[group][1]
    return [(Q, 0), (R, 1), (T, 1), (R, 2), (F if failing else S, 2)]


def group_writer_plan(seed: int) -> list[list[LedgerEvent]]:
    """A writer's batches: every group job's events, each 0-2 times (every one at least once
    by writer 0), shuffled."""
    rng = random.Random(1000 + seed)
    picked = [
        LedgerEvent(
            job_id,
            state,
            attempt,
            at=1_700_000_000.0 + rng.random(),
            task="shard" if state is Q else None,
            group=group if state is Q else None,
            error="bad row" if state is F else None,
        )
        for group in GROUP_PLAN
        for n, job_id in enumerate(group_jobs(group))
        for state, attempt in group_job_events(group, n)
        for _ in range(rng.choice((1, 1, 2)) if seed == 0 else rng.choice((0, 1, 1, 2)))
    ]
    rng.shuffle(picked)
    batches = []
    while picked:
        size = rng.randint(1, 10)
        batches.append(picked[:size])
        picked = picked[size:]
    return batches


def group_race_writer(
    url: str, seed: int, barrier: Barrier, made: multiprocessing.queues.Queue[list[str]]
) -> None:
    rng = random.Random(seed)
    completions: list[str] = []
    with open_ledger(url, writer=f"gwriter{seed}") as ledger:
        batches = group_writer_plan(seed)
        create_at = {rng.randrange(len(batches)) for _ in range(2)}
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        for k, batch in enumerate(batches):
            if k in create_at:
                completions += [
                    c.group_id for c in ledger.create_group("GE", **group_create_args("GE"))
                ]
            completions += [c.group_id for c in ledger.record_many(batch)]
        completions += [c.group_id for c in ledger.create_group("GE", **group_create_args("GE"))]
    made.put(completions)


def run_writers(target: object, url: str, extra: tuple[object, ...] = ()) -> list[list[str]]:
    barrier = _fork.Barrier(WRITERS)
    made: multiprocessing.queues.Queue[list[str]] = _fork.Queue()
    writers = [
        _fork.Process(target=target, args=(url, seed, barrier, made, *extra))
        for seed in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    results = [made.get(timeout=JOIN_TIMEOUT_S * 2) for _ in writers]
    for writer in writers:
        writer.join(JOIN_TIMEOUT_S)
    assert [w.exitcode for w in writers] == [0] * WRITERS
    return results


def assert_group_counts_match_rows(url: str) -> None:
    """Every group's kept counts equal a row-by-row count of its jobs."""
    from conveyor.ledger.schema import COUNT_COLUMNS, STATES

    sums = ", ".join(f"sum({column})" for column in COUNT_COLUMNS)
    rows = raw_sql(url, f"SELECT group_id, {sums} FROM conveyor_group_counts GROUP BY group_id")
    kept = {
        (str(group), state.value): int(str(n))
        for group, *counts in rows
        for state, n in zip(STATES, counts, strict=True)
        if n
    }
    counted = raw_sql(
        url,
        "SELECT group_id, state, count(*) FROM conveyor_jobs "
        "WHERE group_id IS NOT NULL AND completes = 0 GROUP BY 1, 2",
    )
    assert kept == {(str(g), str(s)): int(str(n)) for g, s, n in counted}


def completion_writer(
    url: str, seed: int, barrier: Barrier, made: multiprocessing.queues.Queue[list[str]]
) -> None:
    """Run every completion job, with duplicate deliveries, racing the other writers."""
    rng = random.Random(seed)
    events = [
        LedgerEvent(f"{group}-merge", state, attempt)
        for group in ("GA", "GB", "GE")
        for state, attempt in ((R, 1), (T, 1), (R, 2), (S, 2))
        for _ in range(rng.choice((1, 2)))
    ]
    rng.shuffle(events)
    with open_ledger(url) as ledger:
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        made.put([c.group_id for e in events for c in ledger.record_many([e])])


def test_racing_writers_make_each_completion_due_exactly_once(ledger_url: str) -> None:
    from conveyor.ledger import GroupState

    with open_ledger(ledger_url) as ledger:
        for group, (_, _, _, by_writers) in GROUP_PLAN.items():
            if not by_writers:
                assert ledger.create_group(group, **group_create_args(group)) == []

    results = run_writers(group_race_writer, ledger_url)

    made = Counter(group for result in results for group in result)
    assert made == {"GA": 1, "GB": 1, "GE": 1}, "a completion was made due twice, or never"
    merges = raw_sql(
        ledger_url, "SELECT group_id, job_id, state FROM conveyor_jobs WHERE completes = 1"
    )
    assert sorted(merges) == [(g, f"{g}-merge", "queued") for g in ("GA", "GB", "GE")]
    assert_group_counts_match_rows(ledger_url)
    assert_counts_match_rows(ledger_url)
    with open_ledger(ledger_url, create=False) as ledger:
        assert sorted(c.group_id for c in ledger.due_completions()) == ["GA", "GB", "GE"]
        states = {g: ledger.group(g).state for g in GROUP_PLAN}  # type: ignore[union-attr]
        assert states == {
            "GA": GroupState.COMPLETING,
            "GB": GroupState.COMPLETING,
            "GC": GroupState.FAILED,
            "GD": GroupState.SUCCEEDED,
            "GE": GroupState.COMPLETING,
        }
        gb = ledger.group("GB")
        assert gb is not None
        assert (gb.counts[JobState.FAILED], gb.counts[JobState.SUCCEEDED]) == (2, 22)
        gc = ledger.group("GC")
        assert gc is not None and gc.reason is not None
        assert gc.reason.startswith("3 of 24 jobs failed, 2 tolerated; first: GC-0")
        assert ledger.get("GC-merge") is None

    assert run_writers(completion_writer, ledger_url) == [[]] * WRITERS
    with open_ledger(ledger_url, create=False) as ledger:
        for group in ("GA", "GB", "GE"):
            record = ledger.group(group)
            assert record is not None and record.state is GroupState.SUCCEEDED
            assert record.finished_at is not None
    assert_group_counts_match_rows(ledger_url)
    assert_counts_match_rows(ledger_url)


def test_the_last_two_ends_racing_make_the_completion_due_once(
    make_postgres_url: Callable[..., str],
) -> None:
    """Two transactions each end one of a group's last two jobs, both counted before either
    commits: the second to decide must wait for the first and see its count."""
    import psycopg

    from conveyor.ledger import Completion, group_sql
    from conveyor.ledger.checks import check_event
    from conveyor.ledger.postgres import _PostgresTx

    url = make_postgres_url()
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event = 'advisory'"
    )
    with open_ledger(url) as ledger:
        ledger.create_group("G", total=2, completion={"job_id": "G-merge", "task": "merge"})
        ledger.record_many([LedgerEvent(j, Q, group="G") for j in ("A", "B")])
        first = psycopg.connect(url)
        try:
            with first.transaction(), first.cursor() as cur:
                tx = _PostgresTx(cur)
                touched = tx.apply([check_event(LedgerEvent("A", S, 1), 0.0)])
                assert group_sql.settle_all(tx, touched, 1.0) == []  # B is still queued
                other: list[Completion] = []
                second = threading.Thread(
                    target=lambda: other.extend(ledger.record_many([LedgerEvent("B", S, 1)]))
                )
                second.start()  # counts B, then waits for the group's lock
                deadline = time.monotonic() + 10
                while raw_sql(url, waiting)[0][0] != 1:
                    assert time.monotonic() < deadline, "the second end never waited"
                    assert second.is_alive(), "the second end decided without the first's count"
                    time.sleep(0.02)
        finally:
            first.close()
        second.join(30)

        assert [c.job_id for c in other] == ["G-merge"]
        assert [c.job_id for c in ledger.due_completions()] == ["G-merge"]
