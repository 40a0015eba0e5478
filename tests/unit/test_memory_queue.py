"""MemoryQueue beyond the contract: the injectable clock and one queue per URL."""

from __future__ import annotations

import pytest

from conveyor.queues import Outgoing, open_queue
from conveyor.queues.memory import ManualClock, MemoryQueue
from conveyor.settings import Settings


def test_manual_clock_expires_a_lease_without_sleeping() -> None:
    clock = ManualClock()
    queue = MemoryQueue(visibility_timeout_s=30, clock=clock)
    queue.send(Outgoing("job"))
    (first,) = queue.receive(1, wait_s=0)

    clock.advance(29)
    assert queue.receive(1, wait_s=0) == []
    clock.advance(1)
    (second,) = queue.receive(1, wait_s=0)

    assert (second.message_id, second.receive_count) == (first.message_id, 2)
    assert queue.ack(first.lease) is False


def test_a_delay_follows_the_injected_clock() -> None:
    clock = ManualClock()
    queue = MemoryQueue(clock=clock)
    queue.send(Outgoing("later", delay_s=60))

    assert queue.receive(1, wait_s=0) == []
    assert queue.stats().delayed == 1
    clock.advance(60)
    assert [r.body for r in queue.receive(1, wait_s=0)] == ["later"]


def test_a_released_message_counts_as_delayed() -> None:
    queue = MemoryQueue(clock=ManualClock())
    queue.send(Outgoing("x"))
    (held,) = queue.receive(1, wait_s=0)

    queue.release(held.lease, delay_s=10)

    stats = queue.stats()
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 1)


def test_clock_refuses_to_go_backwards() -> None:
    with pytest.raises(ValueError):
        ManualClock().advance(-1)


def test_each_url_opens_a_fresh_queue() -> None:
    settings = Settings(visibility_timeout_s=12, max_receive_count=4)
    first = open_queue("memory://jobs", settings)
    first.send(Outgoing("x"))

    second = open_queue("memory://jobs", settings)

    assert isinstance(second, MemoryQueue) and second is not first
    assert second.stats().pending == 0
    assert (second.visibility_timeout_s, second.max_receive_count) == (12, 4)
    assert second.url == "memory://jobs"


def test_request_counts_follow_sqs_billing() -> None:
    queue = MemoryQueue()
    queue.send_batch([Outgoing(str(i)) for i in range(25)])
    received = queue.receive(10, wait_s=0)
    queue.ack_batch([r.lease for r in received])

    assert queue.request_counts() == {"send": 3, "receive": 1, "ack": 1}
