"""What the ledger's public methods check before a backend runs: events become the rows
backends write (:func:`check_event`), and cursors, id prefixes, limits and writer ids."""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
from dataclasses import dataclass

from conveyor.errors import BadInput
from conveyor.jobs import JobState
from conveyor.ledger.groups import check_group_id
from conveyor.ledger.records import LedgerEvent, state_rank
from conveyor.storage import check_job_id

#: Errors longer than this are cut (the ledger holds reasons, not logs).
MAX_ERROR_CHARS = 4000
#: Results whose JSON is larger than this are replaced by ``{"truncated_bytes": n}``.
MAX_RESULT_BYTES = 64 * 1024

_WRITER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def new_writer_id() -> str:
    """A writer id unique to this process: ``<host>-<pid>-<random>``."""
    host = "".join(c if c in _WRITER_CHARS else "_" for c in socket.gethostname()[:63])
    return f"{host or 'host'}-{os.getpid()}-{secrets.token_hex(3)}"


def check_writer_id(writer: str) -> str:
    """Return ``writer`` if it is 1 to 100 of ``[A-Za-z0-9_.-]`` (not starting with a dot).

    Raises:
        BadInput: it is not.
    """
    if not (
        isinstance(writer, str)
        and 0 < len(writer) <= 100
        and set(writer) <= _WRITER_CHARS
        and not writer.startswith(".")
    ):
        raise BadInput(f"bad ledger writer id {writer!r}: use 1 to 100 of [A-Za-z0-9_.-]")
    return writer


@dataclass(frozen=True)
class EventRow:
    """A checked event as backends write it: times resolved, texts trimmed, JSON encoded."""

    job_id: str
    state: JobState
    rank: int
    attempt: int
    at: float
    worker: str | None
    task: str | None
    input: str | None
    output: str | None
    seed: int | None
    error: str | None
    result_json: str | None
    source: str | None
    redrive: bool
    group: str | None = None
    #: Set only on the queued event the ledger itself writes for a group's completion job.
    completes: bool = False


def check_event(event: LedgerEvent, now: float) -> EventRow:
    """Check one event and turn it into the row a backend writes.

    Raises:
        BadInput: the job id, attempt, time or seed is invalid.
    """
    check_job_id(event.job_id)
    state = JobState(event.state)
    attempt = event.attempt
    if type(attempt) is not int or attempt < 0:
        raise BadInput(f"bad attempt {attempt!r}: an int >= 0")
    at = now if event.at is None else float(event.at)
    if not math.isfinite(at) or at < 0:
        raise BadInput(f"bad event time {event.at!r}")
    if event.seed is not None and (type(event.seed) is not int or not 0 <= event.seed < 2**63):
        raise BadInput(f"bad seed {event.seed!r}: an int from 0 to 2**63-1")
    if event.redrive and state is not JobState.QUEUED:
        raise BadInput("a redrive event reopens a job as queued")
    group = None if event.group is None else check_group_id(event.group)
    error = event.error
    if error is not None and len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + "..."
    result_json = None
    if event.result is not None:
        result_json = _ENCODER.encode(dict(event.result))
        if len(result_json) > MAX_RESULT_BYTES:
            result_json = _ENCODER.encode({"truncated_bytes": len(result_json)})
    return EventRow(
        job_id=event.job_id,
        state=state,
        rank=state_rank(state, attempt),
        attempt=attempt,
        at=at,
        worker=clean_text(event.worker),
        task=clean_text(event.task),
        input=clean_text(event.input),
        output=clean_text(event.output),
        seed=event.seed,
        error=clean_text(error),
        result_json=result_json,
        source=clean_text(event.source),
        redrive=event.redrive,
        group=group,
    )


def clean_text(value: str | None) -> str | None:
    """Text a database can store: lone surrogates and NULs replaced."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value.encode("utf-8", "replace").decode("utf-8")


def parse_cursor(cursor: str) -> tuple[float, str]:
    """The (updated_at, job_id) position in a cursor from :attr:`JobRecord.cursor`.

    Raises:
        BadInput: it is not such a cursor.
    """
    at_text, _, job_id = cursor.partition("/")
    try:
        at = float(at_text)
    except ValueError:
        at = math.nan
    if not math.isfinite(at) or not job_id:
        raise BadInput(f"bad cursor {cursor[:80]!r}: use the cursor of a listed job")
    return at, check_job_id(job_id)


def check_limit(limit: int) -> None:
    """Refuse a page size outside 1 to 10,000.

    Raises:
        BadInput: it is outside.
    """
    if type(limit) is not int or not 1 <= limit <= 10_000:
        raise BadInput(f"bad limit {limit!r}: 1 to 10000")


def check_prefix(prefix: str) -> str:
    """The upper-cased job id prefix to look up (ids compare case-insensitively).

    Raises:
        BadInput: it could not be part of a job id.
    """
    check_job_id(prefix)
    return prefix.upper()
