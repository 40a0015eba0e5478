"""The jobs a worker holds: each received message in flight with its lease, the round they
came in, and the heartbeat that keeps their leases alive."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from conveyor.errors import FATAL_ERRORS, ConveyorError, LeaseLost, TransientQueueError
from conveyor.events import Action, WorkerEvent
from conveyor.jobs import Job, job_id_of
from conveyor.ledger import JobRecord, LedgerEvent
from conveyor.queues.base import Queue
from conveyor.queues.messages import Received

log = logging.getLogger("conveyor.worker")

#: Seconds of a lease's remaining life our own clock cannot vouch for (network delays).
LEASE_MARGIN_S = 2.0


class InFlight:
    """One received message in this round, and its job: held until acked, released or its
    lease is lost."""

    def __init__(self, received: Received, valid_until: float) -> None:
        self.received = received
        self.job: Job | None = None  # set once the message is decoded
        #: Recorded ``running`` ahead of its turn (with an earlier job of the round), and
        #: not started yet.
        self.running_ahead = False
        #: Our own clock's estimate of when the lease expires (last extension + timeout).
        self.valid_until = valid_until
        self.lost = threading.Event()  # set by the main thread, read by the task thread

    @property
    def job_id(self) -> str | None:
        """The job's id, read from the raw message if it could not be decoded."""
        if self.job is not None:
            return self.job.job_id
        return job_id_of(self.received.body)

    def check(self) -> None:
        """``TaskContext.check_lease``: raise once the heartbeat lost the lease."""
        if self.lost.is_set():
            raise LeaseLost(f"lease lost on message {self.received.message_id}")


@dataclass
class Round:
    """The jobs received in one round and what is left to do with them."""

    flights: list[InFlight]
    next_beat_at: float
    acks: list[str] = field(default_factory=list)
    unstarted: list[InFlight] = field(default_factory=list)
    #: Ledger events not written yet (see ``Journal.write_deferred``).
    records: list[LedgerEvent] = field(default_factory=list)
    #: The ledger's records of the round's jobs, read once when it was received, and when.
    known: dict[str, JobRecord] = field(default_factory=dict)
    read_at: float = -math.inf
    read_ok: bool = True

    def __post_init__(self) -> None:
        self.unstarted = list(self.flights)

    def defer(self, event: LedgerEvent | None) -> None:
        """Queue a ledger event for the round's next write."""
        if event is not None:
            self.records.append(event)

    def held(self) -> list[InFlight]:
        """Jobs whose lease to keep alive: not yet lost, and either not done or waiting for
        the ack."""
        acking = set(self.acks)
        return [
            flight
            for flight in self.flights
            if not flight.lost.is_set()
            and (flight in self.unstarted or flight.received.lease in acking)
        ]


@dataclass
class RoundResult:
    """What one round did.

    Attributes:
        received: messages received.
        events: the final event of each message handled (``started`` excluded).
        acked: messages deleted from the queue.
        interrupted: a stop request came during the round; unstarted messages were released.
        error: why the round failed as a whole (the queue was unreachable), or None.
    """

    received: int = 0
    events: list[WorkerEvent] = field(default_factory=list)
    acked: int = 0
    interrupted: bool = False
    error: str | None = None

    def count(self, action: Action) -> int:
        """How many messages ended the round with ``action``."""
        return sum(1 for event in self.events if event.action == action)


class Heartbeat:
    """Keeps the leases of a round alive, and vouches for one before its job publishes.

    Args:
        queue: where the leases are extended.
        visibility_timeout_s: each extension's length.
        every_s: seconds between beats.
        clock: monotonic seconds (the worker's clock).
        emit: reports a job event (a lease extended).
        on_beat: called at every beat, leases held or not (the health file).
    """

    def __init__(
        self,
        queue: Queue,
        *,
        visibility_timeout_s: int,
        every_s: float,
        clock: Callable[[], float],
        emit: Callable[[Action, InFlight], WorkerEvent],
        on_beat: Callable[[], None],
    ) -> None:
        self.queue = queue
        self.visibility_timeout_s = visibility_timeout_s
        self.every_s = every_s
        self._clock = clock
        self._emit = emit
        self._on_beat = on_beat
        # Our clock starts a lease after the receive returned, the queue's before: a lease
        # "valid" by less than this is extended before publishing (see confirm).
        self._margin_s = max(LEASE_MARGIN_S, visibility_timeout_s / 10)

    def beat_if_due(self, round_: Round) -> None:
        """Extend every lease still held in this round once a heartbeat is due."""
        now = self._clock()
        if now < round_.next_beat_at:
            return
        round_.next_beat_at = now + self.every_s
        self._on_beat()
        held = round_.held()
        if not held:
            return
        try:
            result = self.queue.extend_batch(
                [flight.received.lease for flight in held], self.visibility_timeout_s
            )
        except FATAL_ERRORS:
            raise
        except ConveyorError as exc:
            log.warning(
                "heartbeat failed, will retry: %s", exc.message, extra={"action": "heartbeat"}
            )
            return
        for flight in held:
            why = result.failed.get(flight.received.lease)
            if why is None:
                flight.valid_until = now + self.visibility_timeout_s
                self._emit(Action.LEASE_EXTENDED, flight)
                continue
            flight.lost.set()
            log.warning(
                "lease lost on message %s: %s",
                flight.received.message_id,
                why,
                extra={"action": "heartbeat", "job_id": flight.job_id},
            )

    def confirm(self, flight: InFlight) -> None:
        """Just before publishing: make sure the job's lease is still ours.

        A lease is lost only by expiring (someone else may then receive the message) or by
        a failed heartbeat. While our own clock says it has plenty of time left, that is
        proof enough and costs no request; close to expiry, extend it to be sure. If the
        queue cannot be reached then, publish only if the lease is still valid by our clock.

        Raises:
            LeaseLost: the lease is gone.
            TransientQueueError: the queue cannot vouch for a lease about to expire.
        """
        flight.check()
        if self._clock() < flight.valid_until - self._margin_s:
            return
        try:
            self.queue.extend(flight.received.lease, self.visibility_timeout_s)
        except LeaseLost:
            flight.lost.set()
            raise
        except TransientQueueError:
            if self._clock() > flight.valid_until - LEASE_MARGIN_S:
                raise
        else:
            flight.valid_until = self._clock() + self.visibility_timeout_s
