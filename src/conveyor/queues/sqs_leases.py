"""The leases (receipt handles) one SQSQueue handed out: which are current, expired,
superseded or past SQS's 12-hour cap, decided locally since SQS does not always say."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from conveyor.queues.base import MAX_VISIBILITY_TIMEOUT_S
from conveyor.queues.messages import BatchResult

#: Stale leases remembered so that using one again fails without asking SQS.
REMEMBERED_STALE_LEASES = 10_000
#: Words in a failure reason that mark the 12-hour cap (``extend`` raises LeaseCapReached).
CAP_REASON = "SQS's 12-hour visibility cap"


@dataclass
class HeldMessage:
    """A message this instance holds through a lease (receipt handle): what dead-lettering
    it needs, and when the lease was received and expires.

    ``received_at`` is read before the receive call and ``expires_at`` after the latest
    visibility change, both on the book's clock: the 12-hour cap is never overrun, and a
    lease is called expired only when it surely is.
    """

    message_id: str
    body: str
    receive_count: int
    group_id: str | None
    received_at: float
    expires_at: float


class LeaseBook:
    """Thread-safe record of current leases, and a bounded memory of stale ones.

    SQS (and moto even more) accepts an old receipt handle after the message was received
    again, so a book is the only way one process can refuse a superseded lease.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._leases: dict[str, HeldMessage] = {}
        self._newest: dict[str, str] = {}  # message id -> its newest lease
        self._stale: OrderedDict[str, str] = OrderedDict()  # lease -> why it is stale

    def add(self, lease: str, booked: HeldMessage) -> None:
        """Record a fresh lease; this book's older lease on the same message goes stale."""
        with self._lock:
            older = self._newest.get(booked.message_id)
            if older is not None and older != lease:
                self._mark_stale(older, "stale lease: the message was received again since")
            self._newest[booked.message_id] = lease
            self._leases[lease] = booked

    def prune(self, now: float) -> None:
        """Forget leases received over 12 hours before ``now``: none of them is valid."""
        horizon = now - MAX_VISIBILITY_TIMEOUT_S
        with self._lock:
            for old in [old for old, b in self._leases.items() if b.received_at < horizon]:
                self._mark_stale(old, "stale lease: received more than 12 hours ago")

    def get(self, lease: str) -> HeldMessage | None:
        """The lease's record; None if unknown here or stale."""
        with self._lock:
            return self._leases.get(lease)

    def stale_reason(self, lease: str) -> str | None:
        """Why ``lease`` can no longer be used, or None if it may still be current."""
        with self._lock:
            return self._stale.get(lease)

    def screen(self, leases: Sequence[str], result: BatchResult) -> list[str]:
        """The unique leases not known to be stale; stale ones go to ``result.failed``."""
        with self._lock:
            live = []
            for lease in dict.fromkeys(leases):
                why = self._stale.get(lease)
                if why is None:
                    live.append(lease)
                else:
                    result.failed[lease] = why
            return live

    def extendable(
        self, leases: Sequence[str], visibility_timeout_s: int, result: BatchResult
    ) -> list[str]:
        """Like :meth:`screen`, also failing leases known to have expired (AWS rejects
        those) or that an extension would keep invisible past the 12-hour cap."""
        now = self.clock()
        live = []
        for lease in self.screen(leases, result):
            booked = self.get(lease)
            if booked is not None and now > booked.expires_at:
                result.failed[lease] = (
                    f"lease expired {now - booked.expires_at:.0f} s ago: "
                    "the message may already be with another worker"
                )
            elif booked is not None and cap_left_s(booked, now) < visibility_timeout_s:
                result.failed[lease] = (
                    f"cannot extend by {visibility_timeout_s} s: the message was received "
                    f"{now - booked.received_at:.0f} s ago and {CAP_REASON} would pass"
                )
            else:
                live.append(lease)
        return live

    def release_delays(self, leases: Sequence[str], delay_s: int) -> list[int]:
        """Per lease, ``delay_s`` shortened so that it ends within the 12-hour cap."""
        now = self.clock()
        delays = []
        for lease in leases:
            booked = self.get(lease)
            allowed_s = delay_s if booked is None else cap_left_s(booked, now)
            delays.append(max(0, min(delay_s, allowed_s)))
        return delays

    def extended(self, lease: str, visibility_timeout_s: int) -> None:
        """Note a successful visibility change made just now."""
        expires_at = self.clock() + visibility_timeout_s
        with self._lock:
            booked = self._leases.get(lease)
            if booked is not None:
                booked.expires_at = expires_at

    def retire(self, lease: str, why: str) -> None:
        """The lease is done with (acked, released, dead-lettered): reuse fails with ``why``."""
        with self._lock:
            self._mark_stale(lease, why)

    def retire_all(self, why: str) -> None:
        """Every current lease is done with (the queue was purged)."""
        with self._lock:
            for lease in list(self._leases):
                self._mark_stale(lease, why)

    def _mark_stale(self, lease: str, why: str) -> None:
        booked = self._leases.pop(lease, None)
        if booked is not None and self._newest.get(booked.message_id) == lease:
            del self._newest[booked.message_id]
        self._stale[lease] = why
        self._stale.move_to_end(lease)
        while len(self._stale) > REMEMBERED_STALE_LEASES:
            self._stale.popitem(last=False)


def cap_left_s(booked: HeldMessage, now: float) -> int:
    """Seconds of invisibility still allowed under the 12-hour cap since receive."""
    return math.floor(MAX_VISIBILITY_TIMEOUT_S - (now - booked.received_at))
