"""The queue contract: every backend (memory, SQLite, SQS) must pass these same tests.

Only the ``make_queue`` fixture and the public Queue API are used, and every timing is
tolerant of a real network server: short visibility timeouts with polling waits, never an
exact sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from conveyor.errors import ConfigError, LeaseLost, MessageTooLarge
from conveyor.queues import Outgoing, Queue, Received
from tests.fixtures.queues import QueueFactory


def receive_n(queue: Queue, count: int, timeout_s: float = 10.0) -> list[Received]:
    """Receive until ``count`` messages came back or ``timeout_s`` passed (SQS may return
    fewer than asked per call)."""
    received: list[Received] = []
    deadline = time.monotonic() + timeout_s
    while len(received) < count and (remaining_s := deadline - time.monotonic()) > 0:
        received += queue.receive(min(10, count - len(received)), wait_s=min(2.0, remaining_s))
    return received


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``check`` until it holds (SQS's counts are approximate and lag a little)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# --- sending and receiving ---------------------------------------------------------------


def test_only_sqs_is_remote_and_fifo_is_what_was_made(
    make_queue: QueueFactory, queue_backend: str
) -> None:
    queue = make_queue()
    assert queue.remote is (queue_backend == "sqs")
    assert queue.fifo is False
    if queue_backend == "sqs":
        assert make_queue(fifo=True).fifo is True


def test_round_trip_keeps_bodies_and_ids(make_queue: QueueFactory) -> None:
    queue = make_queue()
    bodies = ['{"v": 1, "job_id": "a"}', '{"text": "é ✓ \\u0000"}', "plain"]
    before = time.time()

    ids = queue.send_batch([Outgoing(body) for body in bodies])
    received = receive_n(queue, 3)

    assert len(ids) == 3 and len(set(ids)) == 3
    assert sorted(r.body for r in received) == sorted(bodies)
    assert {r.message_id for r in received} == set(ids)
    assert {r.receive_count for r in received} == {1}
    assert len({r.lease for r in received}) == 3
    assert all(before - 5 <= r.sent_at <= time.time() + 5 for r in received)
    assert queue.ack_batch([r.lease for r in received]).ok == [r.lease for r in received]
    assert eventually(lambda: queue.stats().pending == 0)


def test_receive_on_empty_queue_waits_then_returns_nothing(make_queue: QueueFactory) -> None:
    queue = make_queue()

    start = time.monotonic()
    received = queue.receive(10, wait_s=1.0)
    elapsed_s = time.monotonic() - start

    assert received == []
    assert 0.9 <= elapsed_s < 4.0


def test_long_poll_wakes_when_a_message_arrives(make_queue: QueueFactory) -> None:
    queue = make_queue()
    sender = threading.Timer(0.3, lambda: queue.send(Outgoing("late")))

    start = time.monotonic()
    sender.start()
    try:
        received = queue.receive(1, wait_s=5.0)
    finally:
        sender.join()
    elapsed_s = time.monotonic() - start

    assert [r.body for r in received] == ["late"]
    assert 0.25 <= elapsed_s < 3.0


def test_batch_of_ten(make_queue: QueueFactory) -> None:
    queue = make_queue()
    bodies = [f"message-{i}" for i in range(10)]

    ids = queue.send_batch([Outgoing(body) for body in bodies])
    received = receive_n(queue, 10)

    assert len(set(ids)) == 10
    assert sorted(r.body for r in received) == sorted(bodies)
    result = queue.ack_batch([r.lease for r in received])
    assert sorted(result.ok) == sorted(r.lease for r in received) and result.failed == {}
    assert queue.receive(10, wait_s=0) == []


def test_receive_rejects_more_than_ten_or_none(make_queue: QueueFactory) -> None:
    queue = make_queue()
    with pytest.raises(ValueError):
        queue.receive(11, wait_s=0)
    with pytest.raises(ValueError):
        queue.receive(0, wait_s=0)


def test_body_up_to_the_limit_is_accepted_and_above_rejected(make_queue: QueueFactory) -> None:
    queue = make_queue()
    limit = queue.max_message_bytes
    largest = "x" * limit

    queue.send(Outgoing(largest))
    with pytest.raises(MessageTooLarge):
        queue.send(Outgoing("x" * (limit + 1)))
    with pytest.raises(MessageTooLarge):  # the limit counts UTF-8 bytes, not characters
        queue.send(Outgoing("é" * (limit // 2 + 1)))
    with pytest.raises(MessageTooLarge):  # a bad batch sends nothing
        queue.send_batch([Outgoing("small"), Outgoing("x" * (limit + 1))])

    received = receive_n(queue, 1)
    assert [r.body for r in received] == [largest]
    assert queue.receive(10, wait_s=0.5) == []


# --- visibility and leases ---------------------------------------------------------------


def test_unacked_message_is_redelivered_after_the_visibility_timeout(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(visibility_timeout_s=1)
    queue.send(Outgoing("job"))
    (first,) = queue.receive(1, wait_s=5)

    assert queue.receive(1, wait_s=0) == []  # invisible while leased
    (second,) = receive_n(queue, 1)

    assert second.message_id == first.message_id
    assert second.receive_count == 2
    assert second.lease != first.lease


def test_per_receive_visibility_timeout_overrides_the_default(make_queue: QueueFactory) -> None:
    queue = make_queue(visibility_timeout_s=600)
    queue.send(Outgoing("job"))
    (first,) = queue.receive(1, wait_s=5, visibility_timeout_s=1)

    (second,) = receive_n(queue, 1)

    assert second.message_id == first.message_id and second.receive_count == 2


def test_a_new_lease_invalidates_the_old_one(make_queue: QueueFactory) -> None:
    queue = make_queue(visibility_timeout_s=1)
    queue.send(Outgoing("job"))
    (old,) = queue.receive(1, wait_s=5)
    (new,) = receive_n(queue, 1)  # the old lease expired and someone else took it

    assert queue.ack(old.lease) is False
    with pytest.raises(LeaseLost):
        queue.extend(old.lease, 30)
    with pytest.raises(LeaseLost):
        queue.release(old.lease)
    with pytest.raises(LeaseLost):
        queue.dead_letter(old.lease, "stale")

    # None of that touched the message the new holder has.
    assert queue.stats().dead_lettered == 0
    assert queue.ack(new.lease) is True
    assert queue.receive(1, wait_s=0) == []


def test_ack_batch_reports_partial_failures(make_queue: QueueFactory) -> None:
    queue = make_queue()
    queue.send_batch([Outgoing("a"), Outgoing("b")])
    first, second = receive_n(queue, 2)
    queue.release(second.lease)  # its lease is stale from now on

    result = queue.ack_batch([first.lease, second.lease, "not-a-lease"])

    assert result.ok == [first.lease]
    assert set(result.failed) == {second.lease, "not-a-lease"}
    assert all(result.failed.values())  # every failure says why
    (again,) = receive_n(queue, 1)
    assert again.message_id == second.message_id and again.receive_count == 2


def test_extend_keeps_a_message_invisible_past_its_timeout(make_queue: QueueFactory) -> None:
    queue = make_queue(visibility_timeout_s=1)
    queue.send(Outgoing("long job"))
    (held,) = queue.receive(1, wait_s=5)

    queue.extend(held.lease, 6)

    assert queue.receive(1, wait_s=2.5) == []  # well past the original second
    assert queue.stats().in_flight == 1
    assert queue.ack(held.lease) is True


def test_extend_batch_reports_stale_leases(make_queue: QueueFactory) -> None:
    queue = make_queue()
    queue.send_batch([Outgoing("a"), Outgoing("b")])
    first, second = receive_n(queue, 2)
    queue.ack(second.lease)

    result = queue.extend_batch([first.lease, second.lease], 60)

    assert result.ok == [first.lease]
    assert list(result.failed) == [second.lease]


def test_release_without_delay_makes_the_message_visible_at_once(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(visibility_timeout_s=600)
    queue.send(Outgoing("job"))
    (held,) = queue.receive(1, wait_s=5)

    queue.release(held.lease)
    again = queue.receive(1, wait_s=3)

    assert [(r.message_id, r.receive_count) for r in again] == [(held.message_id, 2)]
    assert queue.ack(held.lease) is False


def test_release_with_delay_hides_the_message_until_the_delay_ends(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(visibility_timeout_s=600)
    queue.send(Outgoing("retry me"))
    (held,) = queue.receive(1, wait_s=5)

    start = time.monotonic()
    queue.release(held.lease, delay_s=2)
    stats = queue.stats()
    nothing = queue.receive(1, wait_s=0)
    (again,) = receive_n(queue, 1)

    assert nothing == []
    assert stats.visible == 0 and stats.pending == 1
    assert again.message_id == held.message_id and again.receive_count == 2
    assert time.monotonic() - start >= 1.5


def test_visibility_timeout_above_the_sqs_cap_is_rejected(make_queue: QueueFactory) -> None:
    with pytest.raises(ConfigError):
        make_queue(visibility_timeout_s=43_201)
    with pytest.raises(ConfigError):
        make_queue(max_receive_count=0)

    queue = make_queue(visibility_timeout_s=43_200)
    queue.send(Outgoing("job"))
    with pytest.raises(ValueError):
        queue.receive(1, wait_s=0, visibility_timeout_s=43_201)
    (held,) = queue.receive(1, wait_s=5)
    with pytest.raises(ValueError):
        queue.extend(held.lease, 43_201)
    assert queue.ack(held.lease) is True  # the rejected calls did not lose the lease


# --- dead letters ------------------------------------------------------------------------


def test_message_received_too_often_goes_to_the_dead_letter_queue(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(visibility_timeout_s=30, max_receive_count=2)
    queue.send(Outgoing("poison"))
    for attempt in (1, 2):
        (held,) = receive_n(queue, 1)
        assert held.receive_count == attempt
        queue.release(held.lease)

    assert queue.receive(1, wait_s=1) == []  # the third receive dead-letters it
    assert eventually(lambda: queue.stats().dead_lettered == 1)
    assert queue.stats().pending == 0
    assert [d.body for d in queue.dead_letters()] == ["poison"]


def test_dead_letter_moves_a_held_message_at_once(make_queue: QueueFactory) -> None:
    queue = make_queue(max_receive_count=5)
    queue.send(Outgoing("bad input"))
    (held,) = queue.receive(1, wait_s=5)

    queue.dead_letter(held.lease, "no ID column in input.csv")

    assert eventually(lambda: queue.stats().dead_lettered == 1)
    assert queue.stats().pending == 0
    (dead,) = queue.dead_letters()
    assert dead.body == "bad input"
    assert dead.reason == "no ID column in input.csv"
    assert queue.receive(1, wait_s=0) == []
    with pytest.raises(LeaseLost):
        queue.dead_letter(held.lease, "twice")


def test_redrive_moves_dead_letters_back_with_a_fresh_receive_count(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    queue.send_batch([Outgoing("one"), Outgoing("two")])
    for held in receive_n(queue, 2):
        queue.dead_letter(held.lease, "permanent")
    assert eventually(lambda: queue.stats().dead_lettered == 2)

    assert queue.redrive(limit=1) == 1
    assert eventually(lambda: queue.stats().dead_lettered == 1)
    assert queue.redrive() == 1

    received = receive_n(queue, 2)
    assert sorted(r.body for r in received) == ["one", "two"]
    assert {r.receive_count for r in received} == {1}
    assert queue.dead_letters() == []


def test_purge_empties_the_queue_but_not_the_dead_letters(make_queue: QueueFactory) -> None:
    queue = make_queue()
    queue.send(Outgoing("dead"))
    (held,) = queue.receive(1, wait_s=5)
    queue.dead_letter(held.lease, "permanent")
    queue.send_batch([Outgoing(str(i)) for i in range(3)])

    assert queue.purge() in (3, -1)  # SQS cannot tell how many

    assert eventually(lambda: queue.stats().pending == 0)
    assert queue.receive(10, wait_s=0) == []
    assert [d.body for d in queue.dead_letters()] == ["dead"]


def dead_letter_all(queue: Queue, bodies: list[str]) -> None:
    """Send ``bodies`` and dead-letter each, one round at a time (so their order is known
    where the backend keeps one)."""
    for body in bodies:
        queue.send(Outgoing(body))
        (held,) = receive_n(queue, 1)
        queue.dead_letter(held.lease, f"reason {body}")
    assert eventually(lambda: queue.stats().dead_lettered == len(bodies))


def test_dead_letters_are_listed_newest_first_a_page_at_a_time(make_queue: QueueFactory) -> None:
    queue = make_queue()
    dead_letter_all(queue, ["a", "b", "c"])

    first = queue.dead_letter_page(2)

    if first[-1].cursor is None:  # SQS lists in no set order and cannot page
        assert sorted(d.body for d in queue.dead_letter_page(10)) == ["a", "b", "c"]
        with pytest.raises(ConfigError, match="cannot page"):
            queue.dead_letter_page(2, before="anything")
        return
    assert [d.body for d in first] == ["c", "b"]
    assert [d.body for d in queue.dead_letters(10)] == ["c", "b", "a"]
    assert [d.body for d in queue.dead_letter_page(2, first[-1].cursor)] == ["a"]
    assert all(d.dead_at is not None and d.dead_at > 0 for d in first)
    assert (first[0].reason, first[1].reason) == ("reason c", "reason b")


def test_reconciliation_marks_hide_letters_only_where_tracked(make_queue: QueueFactory) -> None:
    queue = make_queue()
    dead_letter_all(queue, ["a", "b"])

    unmarked = queue.unreconciled_dead_letters(10)
    queue.mark_reconciled(unmarked[:1])

    assert sorted(d.body for d in unmarked) == ["a", "b"]
    left = [d.body for d in queue.unreconciled_dead_letters(10)]
    if queue.tracks_reconciliation:
        assert [d.body for d in unmarked] == ["a", "b"]  # oldest first
        assert left == ["b"]
    else:
        assert sorted(left) == ["a", "b"]  # nothing is tracked: every letter, every time
    assert queue.stats().dead_lettered == 2  # marking never removes a letter


def test_purge_and_redrive_say_which_jobs_moved_where_they_can(make_queue: QueueFactory) -> None:
    from conveyor.jobs import Job

    queue = make_queue()
    jobs = [Job(task="t") for _ in range(3)]
    dead_letter_all(queue, [jobs[0].to_json(), "no job here"])
    queue.send_batch([Outgoing(job.to_json()) for job in jobs[1:]])

    redriven = queue.redrive_jobs()
    purged = queue.purge_jobs()

    assert redriven.count == 2
    assert redriven.job_ids in (None, [jobs[0].job_id])
    assert eventually(lambda: queue.stats().pending == 0)
    assert purged.count in (4, -1)
    if purged.job_ids is not None:
        assert sorted(purged.job_ids) == sorted(job.job_id for job in jobs)


def test_purging_the_dead_letters(make_queue: QueueFactory) -> None:
    queue = make_queue()
    dead_letter_all(queue, ["a", "b"])

    assert queue.purge_dead_letters() in (2, -1)

    assert eventually(lambda: queue.stats().dead_lettered == 0)
    assert queue.dead_letters() == []


# --- stats and concurrency ---------------------------------------------------------------


def test_stats_count_each_kind_of_message(make_queue: QueueFactory) -> None:
    queue = make_queue(visibility_timeout_s=600)
    queue.send_batch([Outgoing("a"), Outgoing("b"), Outgoing("c")])
    queue.send(Outgoing("later", delay_s=120))
    (in_flight,) = queue.receive(1, wait_s=5)
    (dead,) = queue.receive(1, wait_s=5)
    queue.dead_letter(dead.lease, "permanent")

    def counts() -> tuple[int, int, int, int]:
        stats = queue.stats()
        return stats.visible, stats.in_flight, stats.delayed, stats.dead_lettered

    assert eventually(lambda: counts() == (1, 1, 1, 1)), queue.stats()
    assert queue.stats().pending == 3
    assert in_flight.body in {"a", "b", "c"}


def test_threads_sharing_a_queue_receive_each_message_once(
    make_queue: QueueFactory, queue_backend: str
) -> None:
    queue = make_queue(visibility_timeout_s=60)
    bodies = {f"job-{i}" for i in range(40)}
    queue.send_batch([Outgoing(body) for body in sorted(bodies)])
    acked: list[str] = []
    lock = threading.Lock()

    def consume() -> None:
        while True:
            batch = queue.receive(10, wait_s=1)
            if not batch:
                return
            ok = set(queue.ack_batch([r.lease for r in batch]).ok)
            with lock:
                acked.extend(r.body for r in batch if r.lease in ok)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    if queue_backend == "sqs":
        # A standard SQS queue is at-least-once even for concurrent receives (and moto's
        # server races there too): every message, each acked by a current lease.
        assert set(acked) == bodies
    else:
        assert sorted(acked) == sorted(bodies)  # every message, none twice
