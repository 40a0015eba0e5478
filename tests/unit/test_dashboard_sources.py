"""The dashboard's sources: the ledger opened once there is one and reopened after a failed
read, the queue asked sparingly and reopened after a failure, pages and their cursors."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.dashboard.data import next_cursor
from conveyor.dashboard.sources import NO_MESSAGES, LedgerSource, LedgerUnreadable, QueueSource
from conveyor.errors import BadInput, QueueNotFound
from conveyor.ledger import LedgerNotFound
from conveyor.queues.messages import DeadLetter, QueueStats

STATS = QueueStats(visible=3, in_flight=1, delayed=0, dead_lettered=2)


class FakeLedger:
    """Enough of a ledger for LedgerSource: a URL, close(), and a read that may fail."""

    url = "postgresql://conveyor:***@db/jobs"

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Opener:
    """Opens what ``results`` says, in turn: an object to return or an error to raise."""

    def __init__(self, *results: Any) -> None:
        self.results = list(results)
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            raise result
        return result


class FakeQueue:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.asked = 0
        self.closed = False

    def stats(self) -> QueueStats:
        self.asked += 1
        if self.fail is not None:
            raise self.fail
        return STATS

    def dead_letter_page(self, limit: int, before: str | None = None) -> list[DeadLetter]:
        return [DeadLetter("m1", "{}", 5, "boom", cursor="c1")][:limit]

    def close(self) -> None:
        self.closed = True


def test_no_ledger_yet_reads_as_none_and_is_opened_once_there_is_one() -> None:
    ledger = FakeLedger()
    opener = Opener(LedgerNotFound("nothing yet"), ledger)
    source = LedgerSource(opener)
    with source.reading() as first:
        assert first is None
    with source.reading() as second:
        assert second is ledger
    with source.reading() as third:
        assert third is ledger
    assert opener.calls == 2
    assert source.url == FakeLedger.url


def test_a_failed_read_is_one_line_and_the_ledger_is_reopened_next_time() -> None:
    broken, fresh = FakeLedger(), FakeLedger()
    opener = Opener(broken, fresh)
    source = LedgerSource(opener)
    one_line = r"^cannot read the ledger: OSError: disk gone$"
    with pytest.raises(LedgerUnreadable, match=one_line), source.reading():
        raise OSError("disk gone\nand more")
    assert broken.closed
    with source.reading() as ledger:
        assert ledger is fresh


def test_a_bad_request_is_not_the_ledgers_fault() -> None:
    ledger = FakeLedger()
    source = LedgerSource(Opener(ledger))
    with pytest.raises(BadInput), source.reading():
        raise BadInput("ambiguous prefix")
    with source.reading() as again:
        assert again is ledger and not ledger.closed


def test_the_url_shown_hides_the_password() -> None:
    source = LedgerSource(Opener(FakeLedger()), "postgresql://u:hunter2@db/jobs")
    assert "hunter2" not in source.url


def make_queue_source(opener: Opener) -> QueueSource:
    return QueueSource(opener, stats_every_s=2.0, dead_letters_every_s=10.0, dead_letters_shown=50)


def test_queue_counts_are_asked_at_most_once_per_interval() -> None:
    queue = FakeQueue()
    source = make_queue_source(Opener(queue))
    assert source.stats(100.0) == (STATS, None)
    assert source.stats(101.9) == (STATS, None)
    assert queue.asked == 1
    source.stats(102.0)
    assert queue.asked == 2


def test_a_missing_queue_is_zeros_and_a_broken_one_says_why_and_is_reopened() -> None:
    assert make_queue_source(Opener(QueueNotFound("no queue"))).stats(0.0) == (NO_MESSAGES, None)
    broken, healthy = FakeQueue(fail=RuntimeError("connection reset")), FakeQueue()
    source = make_queue_source(Opener(broken, healthy))
    assert source.stats(0.0) == (None, "RuntimeError: connection reset")
    assert broken.closed
    assert source.stats(5.0) == (STATS, None)


def test_dead_letters_are_kept_between_polls() -> None:
    source = make_queue_source(Opener(FakeQueue()))
    letters, error = source.dead_letters(0.0)
    assert [d.message_id for d in letters] == ["m1"] and error is None
    assert source.dead_letters(5.0)[0] is letters
    assert source.dead_letter_page(1, None)[0].cursor == "c1"
    assert make_queue_source(Opener(QueueNotFound("none"))).dead_letter_page(10, None) == []


def test_the_next_cursor_only_when_the_page_is_full() -> None:
    full = [
        DeadLetter("a", "{}", 1, None, cursor="ca"),
        DeadLetter("b", "{}", 1, None, cursor="cb"),
    ]
    assert next_cursor(full, 2) == "cb"
    assert next_cursor(full, 3) is None
    assert next_cursor([], 0) is None
    assert next_cursor([DeadLetter("c", "{}", 1, None)], 1) is None  # a queue that cannot page
