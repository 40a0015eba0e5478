"""The job ledger: every job's state, on the shared storage, safe with many writers on NFS.

Each writer process appends events to its own logs, one per shard of job ids; readers fold
events into records. Files are only ever appended to, each by one writer.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import os
import secrets
import socket
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import BadInput, ConfigError
from conveyor.jobs import TERMINAL, Job, JobState
from conveyor.storage import Storage, atomic_output, check_job_id, storage_error

# On-disk layout, under <root>/_conveyor/ledger/:
#
#   format                     {"format": 2, "shards": 64}, written by the first writer
#   log/<shard>/<writer>.log   one writer's events for the jobs of one shard, one line each
#   stats/<writer>.json        one writer's counters, replaced atomically
#
# <shard> is two hex digits of crc32(job_id) mod 64: get() reads only its shard's logs (a
# 64th of the events) and a summary folds them all. A writer keeps its shard logs open, so
# an event costs one write() (a batch, one per shard it touches), not a file create.
# A line is `t \t job_id \t kind \t attempt \t writer \t seq \t {json extras} \n`: tab-split
# fields so a summary folds an event without parsing JSON; the extras (task, paths, seed,
# worker, error, result) are parsed only for the records shown. `kind` is a JobState value
# or "redrive". One writer per file means no locks, no reliance on O_APPEND across NFS
# clients, and no torn lines from interleaving.

#: The on-disk format this code writes and reads (format 1: a log per writer plus a file
#: per job and writer, `jobs/`; not read any more).
FORMAT = 2
#: Job-id shards: each writer has up to this many log files open.
SHARDS = 64

#: Errors longer than this are cut (the ledger holds reasons, not logs).
MAX_ERROR_CHARS = 4000
#: Results whose JSON is larger than this are replaced by ``{"truncated_bytes": n}``.
MAX_RESULT_BYTES = 64 * 1024
#: How many recent failures a summary lists by default.
RECENT_FAILURES = 10

_REDRIVE = "redrive"
_KINDS = frozenset({*(state.value for state in JobState), _REDRIVE})
_WRITER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_NO_KEY: tuple[Any, ...] = (-1,)
# The first element of an event's key (see _event_key); -1 marks a redrive.
_GROUPS = {"queued": 0, "running": 1, "retrying": 1, "failed": 2, "succeeded": 2, "redrive": -1}
_TERMINAL_RANK = {"failed": 0, "succeeded": 1}
_KIND_NAMES = {kind: kind for kind in _GROUPS}
_READ_CHUNK_BYTES = 16 * 1024 * 1024
_FORMAT_FILE = "format"
_FORMAT_TEXT = json.dumps({"format": FORMAT, "shards": SHARDS}, sort_keys=True) + "\n"
_SHARD_NAMES = frozenset(f"{n:02x}" for n in range(SHARDS))
_LOG_DIR_KEY = "log"  # in Ledger._fds beside the shards (never a shard's name)

# Built once: json.dumps with options builds a new encoder per call. ensure_ascii (the
# default) keeps raw newlines, tabs and lone surrogates out of a line.
_EXTRAS_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)

#: A parsed line: (t, job_id, kind, attempt, writer, seq, extras JSON).
_Event = tuple[float, str, str, int, str, int, str]


def new_writer_id() -> str:
    """A writer id unique to this process: ``<host>-<pid>-<random>``, safe as a file name."""
    host = "".join(c if c in _WRITER_CHARS else "_" for c in socket.gethostname()[:63])
    return f"{host or 'host'}-{os.getpid()}-{secrets.token_hex(3)}"


def check_writer_id(writer: str) -> str:
    """Return ``writer`` if it is usable as a file name (1 to 100 of ``[A-Za-z0-9_.-]``).

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
class LedgerEvent:
    """One thing that happened to a job, as written to the ledger.

    ``attempt`` is the message's receive count (1 for the first run; 0 for ``queued``).
    Only the fields that are known need be given; a record takes each field from the
    newest event that has it.
    """

    job_id: str
    state: JobState
    attempt: int = 0
    at: float | None = None
    worker: str | None = None
    task: str | None = None
    input: str | None = None
    output: str | None = None
    seed: int | None = None
    error: str | None = None
    result: Mapping[str, object] | None = None
    redrive: bool = False

    @classmethod
    def for_job(cls, job: Job, state: JobState, **fields: Any) -> LedgerEvent:
        """An event about ``job`` carrying its task, paths and seed."""
        return cls(
            job_id=job.job_id,
            state=state,
            task=job.task,
            input=job.input,
            output=job.output,
            seed=job.seed,
            **fields,
        )


@dataclass(frozen=True)
class JobRecord:
    """A job's state folded from all its events.

    ``finished_at`` is set once the job is terminal; ``error`` while it is failed or
    retrying; ``result`` (the task's returned dict) once it succeeded.
    """

    job_id: str
    state: JobState
    attempts: int
    updated_at: float
    task: str | None = None
    input: str | None = None
    output: str | None = None
    seed: int | None = None
    worker: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from the last start to the finish, once finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``status --json`` and the dashboard)."""
        return {
            "job_id": self.job_id,
            "state": self.state.value,
            "attempts": self.attempts,
            "task": self.task,
            "input": self.input,
            "output": self.output,
            "seed": self.seed,
            "worker": self.worker,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "updated_at": self.updated_at,
            "error": self.error,
            "result": self.result,
        }


@dataclass(frozen=True)
class Failure:
    """A failed job in a summary."""

    job_id: str
    failed_at: float
    error: str | None
    task: str | None


@dataclass(frozen=True)
class LedgerSummary:
    """Counts and rates over every job in the ledger.

    Attributes:
        counts: jobs per state (every state present, zeros included).
        total: jobs known to the ledger.
        finished_last_minute: jobs that reached a terminal state in the last 60 s.
        rate_last_minute_per_s: ``finished_last_minute / 60``.
        rate_overall_per_s: finished jobs over the span from first submit to last finish.
        recent_failures: the newest failed jobs, newest first.
        oldest_queued_age_s: how long the oldest still-queued job has waited.
        queue_requests: queue requests by kind, summed over every writer's last report.
        writers: writers whose logs were read. events: lines folded. corrupt_lines: lines
            skipped.
    """

    generated_at: float
    counts: dict[JobState, int]
    total: int
    finished_last_minute: int
    rate_last_minute_per_s: float
    rate_overall_per_s: float | None
    recent_failures: list[Failure]
    oldest_queued_age_s: float | None
    queue_requests: dict[str, int]
    writers: int
    events: int
    corrupt_lines: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "generated_at": self.generated_at,
            "counts": {state.value: n for state, n in self.counts.items()},
            "total": self.total,
            "finished_last_minute": self.finished_last_minute,
            "rate_last_minute_per_s": self.rate_last_minute_per_s,
            "rate_overall_per_s": self.rate_overall_per_s,
            "recent_failures": [
                {"job_id": f.job_id, "failed_at": f.failed_at, "error": f.error, "task": f.task}
                for f in self.recent_failures
            ],
            "oldest_queued_age_s": self.oldest_queued_age_s,
            "queue_requests": dict(self.queue_requests),
            "writers": self.writers,
            "events": self.events,
            "corrupt_lines": self.corrupt_lines,
        }


# --- the fold --------------------------------------------------------------------------------


def _event_key(kind: str, attempt: int, t: float, writer: str, seq: int) -> tuple[Any, ...]:
    """The order that makes transitions forward-only: the event with the largest key wins.

    queued < running/retrying (by attempt, then time) < failed < succeeded. A late
    ``running`` can never beat a terminal state; a success beats a failure because its
    output was published (a duplicate delivery that failed does not undo it). Time, writer
    and sequence break ties, so the result does not depend on the order events are read in.
    """
    if kind in ("running", "retrying"):
        return (1, attempt, t, writer, seq)
    if kind == "succeeded":
        return (2, 1, t, writer, seq)
    if kind == "failed":
        return (2, 0, t, writer, seq)
    return (0, 0, t, writer, seq)


class _Fold:
    """One job's state while folding; ``apply`` is commutative (a max over event keys)."""

    __slots__ = (
        "attempts",
        "base_key",
        "base_rest",
        "job_id",
        "key",
        "kind",
        "redriven",
        "rest",
        "run_key",
        "run_rest",
        "started_at",
        "submitted_at",
        "t",
    )

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.key = _NO_KEY
        self.kind = ""
        self.t = 0.0
        self.rest = ""
        self.attempts = 0
        self.submitted_at: float | None = None
        self.base_key = _NO_KEY
        self.base_rest = ""
        self.run_key = _NO_KEY
        self.run_rest = ""
        self.started_at: float | None = None
        self.redriven = False

    def apply(self, event: _Event) -> None:
        t, _, kind, attempt, writer, seq, rest = event
        if kind == _REDRIVE:
            self.redriven = True  # order matters from here: the caller refolds in time order
            return
        key = _event_key(kind, attempt, t, writer, seq)
        self.attempts = max(self.attempts, attempt)
        if kind == "queued":
            if self.submitted_at is None or t < self.submitted_at:
                self.submitted_at = t
            if key > self.base_key:
                self.base_key, self.base_rest = key, rest
        elif kind == "running" and key > self.run_key:
            self.run_key, self.run_rest, self.started_at = key, rest, t
        if key > self.key:
            self.key, self.kind, self.t, self.rest = key, kind, t, rest

    def redrive(self, event: _Event) -> None:
        """Reopen a failed job as queued (only in a fold that runs in time order)."""
        t, _, _, _, writer, seq, rest = event
        if self.kind != "failed":
            return
        self.key = _event_key("queued", 0, t, writer, seq)
        self.kind, self.t, self.rest = "queued", t, rest
        self.attempts = 0
        self.run_key, self.run_rest, self.started_at = _NO_KEY, "", None

    def record(self) -> JobRecord:
        rest, run, base = (_parse_extras(r) for r in (self.rest, self.run_rest, self.base_rest))

        def pick(name: str) -> Any:
            for extras in (rest, run, base):
                if extras.get(name) is not None:
                    return extras[name]
            return None

        state = JobState(self.kind)
        return JobRecord(
            job_id=self.job_id,
            state=state,
            attempts=self.attempts,
            updated_at=self.t,
            task=pick("task"),
            input=pick("input"),
            output=pick("output"),
            seed=pick("seed"),
            worker=pick("worker"),
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            finished_at=self.t if state in TERMINAL else None,
            error=rest.get("error") if state in (JobState.FAILED, JobState.RETRYING) else None,
            result=rest.get("result") if state is JobState.SUCCEEDED else None,
        )


def _parse_extras(rest: str) -> dict[str, Any]:
    if not rest:
        return {}
    try:
        value = json.loads(rest)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _parse_line(line: str) -> _Event | None:
    """A log line's fields, or None for a torn or corrupt line."""
    parts = line.split("\t", 6)
    if len(parts) != 7 or parts[2] not in _KINDS:
        return None
    try:
        return (
            float(parts[0]),
            parts[1],
            parts[2],
            int(parts[3]),
            parts[4],
            int(parts[5]),
            parts[6],
        )
    except ValueError:
        return None


def fold_events(job_id: str, lines: Iterable[str]) -> JobRecord | None:
    """Fold one job's event lines, in time order, into its record (None if there are none).

    Time order matters only for redrives (``failed → queued``); every other transition is
    decided by the event keys alone.
    """
    events = [ev for ev in map(_parse_line, lines) if ev is not None and ev[1] == job_id]
    if not events:
        return None
    fold = _fold_in_time_order(job_id, events)
    return fold.record() if fold.kind else None


def _fold_in_time_order(job_id: str, events: list[_Event]) -> _Fold:
    events.sort(key=lambda ev: (ev[0], ev[4], ev[5]))
    fold = _Fold(job_id)
    for event in events:
        if event[2] == _REDRIVE:
            fold.redrive(event)
        else:
            fold.apply(event)
    return fold


class _Folder:
    """The read side: folds every log incrementally (each refresh reads only new bytes)."""

    def __init__(self) -> None:
        self.folds: dict[str, _Fold] = {}
        #: Bytes folded so far, by log file (``<shard>/<writer>.log``).
        self.offsets: dict[str, int] = {}
        self.writers: dict[str, str] = {}
        self.events = 0
        self.corrupt = 0

    def read_logs(self, log_dir: str) -> set[str]:
        """Fold what was appended since the last call; return the redriven jobs touched."""
        touched: set[str] = set()
        try:
            shards = sorted(name for name in os.listdir(log_dir) if name in _SHARD_NAMES)
        except FileNotFoundError:
            return touched
        seen: set[str] = set()
        for shard in shards:
            for name in _log_names(f"{log_dir}/{shard}"):
                key = f"{shard}/{name}"
                seen.add(key)
                self._read_log(f"{log_dir}/{key}", key, touched)
        for gone in set(self.offsets) - seen:
            del self.offsets[gone]
        return touched

    def writer_count(self) -> int:
        """How many writers' logs were read (each writer has a log per shard it wrote)."""
        return len({key.partition("/")[2] for key in self.offsets})

    def _read_log(self, path: str, name: str, touched: set[str]) -> None:
        offset = self.offsets.get(name, 0)
        try:
            log = open(path, "rb")  # noqa: SIM115 - closed by the with block below
        except FileNotFoundError:
            return
        with log:
            if os.fstat(log.fileno()).st_size < offset:
                offset = 0  # replaced by a new file of the same name: folding again is harmless
            log.seek(offset)
            while chunk := log.read(_READ_CHUNK_BYTES):
                end = chunk.rfind(b"\n") + 1
                if end == 0:
                    break  # a line still being written: read it next time
                self._fold_text(chunk[:end].decode("utf-8", "replace"), touched)
                offset += end
                log.seek(offset)
        self.offsets[name] = offset

    def _fold_text(self, text: str, touched: set[str]) -> None:  # noqa: PLR0912 - hot loop
        """Fold whole lines. This is ``_Fold.apply`` inlined (the summary's hot loop, about
        5 µs per event on a slow core); a test checks both give the same records."""
        folds = self.folds
        # One string object per writer and per kind, not one per line: the folds keep them.
        writers = self.writers
        lines = text.split("\n")
        lines.pop()  # the empty string after the final newline
        self.events += len(lines)
        for line in lines:
            parts = line.split("\t", 6)
            if len(parts) != 7:
                self.corrupt += 1
                continue
            t_text, job_id, kind, attempt_text, writer, seq_text, rest = parts
            kind = _KIND_NAMES.get(kind, kind)
            writer = writers.setdefault(writer, writer)
            group = _GROUPS.get(kind)
            try:
                t, attempt, seq = float(t_text), int(attempt_text), int(seq_text)
            except ValueError:
                group = None
            if group is None:
                self.corrupt += 1
                continue
            fold = folds.get(job_id)
            if fold is None:
                fold = folds[job_id] = _Fold(job_id)
            if group < 0:  # a redrive: order matters from here, the caller refolds the job
                fold.redriven = True
                touched.add(job_id)
                continue
            if fold.redriven:
                touched.add(job_id)
            if attempt > fold.attempts:  # noqa: PLR1730 - max() costs a call per event
                fold.attempts = attempt
            if group == 1:
                key: tuple[Any, ...] = (1, attempt, t, writer, seq)
                if kind == "running" and key > fold.run_key:
                    fold.run_key, fold.run_rest, fold.started_at = key, rest, t
            else:
                key = (group, _TERMINAL_RANK.get(kind, 0), t, writer, seq)
                if group == 0:
                    submitted = fold.submitted_at
                    if submitted is None or t < submitted:
                        fold.submitted_at = t
                    if key > fold.base_key:
                        fold.base_key, fold.base_rest = key, rest
            if key > fold.key:
                fold.key, fold.kind, fold.t, fold.rest = key, kind, t, rest


# --- the ledger ------------------------------------------------------------------------------


class Ledger:
    """The job ledger under ``<root>/_conveyor/ledger/``, shared by every machine.

    Writing: each process is one *writer* (``writer`` must be unique to the process; the
    default is) with its own log file per shard of job ids (``log/<shard>/<writer>.log``),
    so writers never contend and nothing relies on file locks or on append atomicity across
    NFS clients. The logs stay open: an event costs one ``write()``, and a batch
    (:meth:`record_many`) one per shard it touches. Files are only ever appended to;
    readers skip a torn last line.

    Durability: :meth:`record` returns once the event is written to the OS (it survives the
    process being killed, and is visible at once on this machine). No fsync per event (that
    would cost milliseconds on EFS): the logs written since the last sync are fsync'ed at
    most every ``sync_every_s`` during writes, and on :meth:`sync` and :meth:`close`; other
    machines (NFS) see an event after that sync. A machine crash can lose the events since
    the last sync; the queue, not the ledger, decides what runs again.

    Reading: :meth:`get` reads its job's shard only (a 64th of the events).
    :meth:`summary` and :meth:`jobs` fold every log, keeping what they read, so calling
    them again on the same instance reads only new events.

    One instance may be shared by threads. After a fork the child becomes a new writer.

    Raises (any method touching the files):
        ConfigError: the ledger on the storage is in another format (an older conveyor's).
    """

    def __init__(
        self,
        storage: Storage | Path | str,
        writer: str | None = None,
        *,
        sync_every_s: float = 5.0,
    ) -> None:
        self.storage = storage if isinstance(storage, Storage) else Storage(storage)
        self.directory = self.storage.state_dir / "ledger"
        # Plain strings on the write path: pathlib costs more than the system calls.
        self._log_root = os.path.join(self.directory, "log")
        self._given_writer = None if writer is None else check_writer_id(writer)
        self.writer = self._given_writer or new_writer_id()
        self.sync_every_s = sync_every_s
        self._pid = os.getpid()
        #: Open descriptors: this writer's log in each shard, and ``log/`` itself.
        self._fds: dict[str, int] = {}
        self._unsynced: set[int] = set()  # descriptors written since their last fsync
        self._format_ok = False
        self._seq = 0
        self._last_sync = time.monotonic()
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._folder = _Folder()
        # An instance dropped without close() (a reader, a test) must not keep 65 files open.
        weakref.finalize(self, _close_all, self._fds)

    def __repr__(self) -> str:
        return f"Ledger({str(self.directory)!r}, writer={self.writer!r})"

    # --- writing -------------------------------------------------------------------------

    def record(
        self,
        job_id: str,
        state: JobState,
        *,
        attempt: int = 0,
        at: float | None = None,
        worker: str | None = None,
        task: str | None = None,
        input: str | None = None,
        output: str | None = None,
        seed: int | None = None,
        error: str | None = None,
        result: Mapping[str, object] | None = None,
    ) -> None:
        """Record that ``job_id`` reached ``state``; see :meth:`record_many`."""
        extras = _extras(
            task=task,
            input=input,
            output=output,
            seed=seed,
            worker=worker,
            error=error,
            result=result,
        )
        with self._write_lock:
            self._write([(job_id, JobState(state).value, attempt, at, extras)])

    def record_many(self, events: Iterable[LedgerEvent]) -> None:
        """Record several events with one log write (a worker's batch, a submit).

        Transitions are forward-only when read back: an event that would move a job
        backwards (``running`` after ``succeeded``) is kept but does not change its state.
        ``at`` defaults to now; errors over ``MAX_ERROR_CHARS`` and results over
        ``MAX_RESULT_BYTES`` are cut; values JSON cannot hold are stored as strings.

        Raises:
            BadInput: a job id or attempt is invalid.
            StorageError: the ledger could not be written (StorageFull when the disk is).
        """
        items = [
            (
                event.job_id,
                _REDRIVE if event.redrive else JobState(event.state).value,
                event.attempt,
                event.at,
                _extras(
                    task=event.task,
                    input=event.input,
                    output=event.output,
                    seed=event.seed,
                    worker=event.worker,
                    error=event.error,
                    result=event.result,
                ),
            )
            for event in events
        ]
        with self._write_lock:
            self._write(items)

    def record_queued(self, jobs: Iterable[Job]) -> None:
        """Record freshly sent jobs as ``queued`` at their submit time (a submitter's call)."""
        self.record_many(
            [LedgerEvent.for_job(job, JobState.QUEUED, at=job.submitted_at) for job in jobs]
        )

    def redrive(self, job_id: str, *, at: float | None = None) -> bool:
        """Reopen a failed job as ``queued`` (``dlq redrive``); the only way back from failed.

        Returns:
            True if the job was failed and is now queued; False otherwise (unknown, or not
            failed: a redrive of a running or succeeded job is refused).
        """
        record = self.get(job_id)
        if record is None or record.state is not JobState.FAILED:
            return False
        self.record_many([LedgerEvent(job_id, JobState.QUEUED, at=at, redrive=True)])
        return True

    def record_worker_stats(self, writer: str, counts: Mapping[str, int]) -> None:
        """Store a writer's cumulative counters (queue requests by kind, say), replacing its
        previous report; :meth:`summary` sums the latest report of every writer.

        Raises:
            BadInput: the writer id or a count is invalid.
            StorageError: the file could not be written.
        """
        check_writer_id(writer)
        for kind, count in counts.items():
            if not isinstance(kind, str) or type(count) is not int or count < 0:
                raise BadInput(f"bad worker stat {kind!r}={count!r}: counts are ints >= 0")
        data = {"writer": writer, "updated_at": time.time(), "counts": dict(counts)}
        final = self.directory / "stats" / f"{writer}.json"
        with atomic_output(final) as temp:
            try:
                temp.write_text(json.dumps(data, sort_keys=True))
            except OSError as exc:
                raise storage_error(exc, f"cannot write {final}") from exc

    def sync(self) -> None:
        """Make every event recorded so far durable (fsync this writer's logs)."""
        with self._write_lock:
            self._sync_locked()

    def close(self) -> None:
        """Sync and close this writer's logs. Idempotent; a later write reopens them."""
        with self._write_lock:
            if self._fds:
                self._sync_locked()
            self._close_fds()

    def _close_fds(self) -> None:
        _close_all(self._fds)
        self._unsynced.clear()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, items: Iterable[tuple[str, str, int, float | None, str]]) -> None:
        """Write events given as (job_id, kind, attempt, at, extras JSON); hold the lock.

        Every event is checked before any is written, then each shard gets one write.
        """
        self._check_fork()
        by_shard: dict[str, list[str]] = {}
        writer = self.writer
        for job_id, kind, attempt, at, rest in items:
            check_job_id(job_id)
            if type(attempt) is not int or attempt < 0:
                raise BadInput(f"bad attempt {attempt!r}: an int >= 0")
            when = time.time() if at is None else float(at)
            if not math.isfinite(when) or when < 0:
                raise BadInput(f"bad event time {at!r}")
            self._seq += 1
            line = f"{when:.6f}\t{job_id}\t{kind}\t{attempt}\t{writer}\t{self._seq}\t{rest}\n"
            shard = _shard(job_id)
            lines = by_shard.get(shard)
            if lines is None:
                by_shard[shard] = [line]
            else:
                lines.append(line)
        if not by_shard:
            return
        if not self._format_ok:
            self._check_format(create=True)
        for shard, lines in by_shard.items():
            self._append(shard, "".join(lines).encode())
        if time.monotonic() - self._last_sync >= self.sync_every_s:
            self._sync_locked()

    def _append(self, shard: str, data: bytes) -> None:
        """Append whole lines to this writer's log in ``shard``, opening it if needed."""
        fd = self._fds.get(shard)
        if fd is None:
            fd, data = self._open_log(shard, data)
        try:
            _write_all(fd, data)
        except OSError as exc:
            raise storage_error(exc, f"cannot append to {self._log_path(shard)}") from exc
        self._unsynced.add(fd)

    def _open_log(self, shard: str, data: bytes) -> tuple[int, bytes]:
        """Open (creating) this writer's log in ``shard``; ``data`` gains a newline first if
        the log ends in a torn line (a writer id reused after a crash: end it, don't extend
        it)."""
        rel = f"{shard}/{self.writer}.log"
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        try:
            try:
                fd = os.open(rel, flags, 0o644, dir_fd=self._log_dir())
            except FileNotFoundError:  # a new shard directory, or log/ was recreated
                os.makedirs(f"{self._log_root}/{shard}", exist_ok=True)
                try:
                    fd = os.open(rel, flags, 0o644, dir_fd=self._log_dir())
                except FileNotFoundError:  # our log/ descriptor is of a removed directory
                    self._close_fds()
                    fd = os.open(rel, flags, 0o644, dir_fd=self._log_dir())
        except OSError as exc:
            raise storage_error(exc, f"cannot open {self._log_path(shard)}") from exc
        self._fds[shard] = fd
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
        except OSError as exc:
            raise storage_error(exc, f"cannot read {self._log_path(shard)}") from exc
        return fd, data

    def _log_dir(self) -> int:
        """A descriptor of ``log/``: opening relative to it skips walking the root's path."""
        fd = self._fds.get(_LOG_DIR_KEY)
        if fd is None:
            os.makedirs(self._log_root, exist_ok=True)
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            fd = self._fds[_LOG_DIR_KEY] = os.open(self._log_root, flags)
        return fd

    def _log_path(self, shard: str) -> str:
        return f"{self._log_root}/{shard}/{self.writer}.log"

    def _sync_locked(self) -> None:
        self._last_sync = time.monotonic()
        while self._unsynced:
            fd = self._unsynced.pop()
            try:
                os.fsync(fd)
            except OSError as exc:
                raise storage_error(exc, "cannot sync the ledger log") from exc

    def _check_format(self, *, create: bool) -> None:
        """Refuse a ledger in another format; a writer marks a new ledger with this one's.

        Raises:
            ConfigError: the ledger was written in another format (format 1 has ``jobs/``).
            StorageError: the format file cannot be read or written.
        """
        path = os.path.join(self.directory, _FORMAT_FILE)
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                text: str | None = file.read()
        except FileNotFoundError:
            text = None
        except OSError as exc:
            raise storage_error(exc, f"cannot read {path}") from exc
        if text is None and os.path.isdir(os.path.join(self.directory, "jobs")):
            text = '{"format": 1}'
        if text is None:
            if not create:
                return  # no ledger yet: nothing to refuse, and a reader creates nothing
            try:
                os.makedirs(self.directory, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                return self._check_format(create=False)  # another writer just created it
            except OSError as exc:
                raise storage_error(exc, f"cannot create {path}") from exc
            try:
                _write_all(fd, _FORMAT_TEXT.encode())
            finally:
                os.close(fd)
        elif text.strip() and text.strip() != _FORMAT_TEXT.strip():
            raise ConfigError(
                f"the job ledger in {self.directory} has another format ({text.strip()[:60]}) "
                f"than this conveyor's {_FORMAT_TEXT.strip()}: move that directory away "
                "(or use the conveyor that wrote it)"
            )
        self._format_ok = True  # an empty file is one being written: the same format
        return None

    def _check_fork(self) -> None:
        """A forked child must not share its parent's logs: it becomes a new writer."""
        pid = os.getpid()
        if pid == self._pid:
            return
        self._pid = pid
        self._close_fds()  # the child's copies; the parent's stay open
        self._seq = 0
        base = self._given_writer
        self.writer = check_writer_id(f"{base[:80]}-{pid}") if base else new_writer_id()

    # --- reading -------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, reading only its shard's logs; None if it has no events.

        Raises:
            BadInput: the job id is malformed.
            StorageError: the shard's directory exists but cannot be read.
            ConfigError: the ledger is in another format.
        """
        events = self._job_events(check_job_id(job_id))
        if not events:
            self._check_format(create=False)  # an old ledger: say so, not "no such job"
            return None
        fold = _fold_in_time_order(job_id, events)
        return fold.record() if fold.kind else None

    def summary(
        self, now: float | None = None, *, failures: int = RECENT_FAILURES
    ) -> LedgerSummary:
        """Counts by state, finish rates, recent failures, queue age and request counts.

        Folds every writer's log (1.5 to 3 s per 100,000 jobs on first call; later
        calls on the same instance read only what was appended since).
        """
        now = time.time() if now is None else now
        with self._read_lock:
            folds = self._refresh()
            counts = dict.fromkeys((state.value for state in JobState), 0)
            finished_recent = finished = 0
            first_submit = oldest_queued = math.inf
            last_finish = -math.inf
            failed: list[_Fold] = []
            recent_from = now - 60.0
            # One pass, on plain strings: this loop runs once per job in the ledger.
            for fold in folds.values():
                kind = fold.kind
                counts[kind] += 1
                submitted = fold.submitted_at
                if submitted is not None and submitted < first_submit:
                    first_submit = submitted
                if kind == "succeeded" or kind == "failed":  # noqa: PLR1714 - faster than `in`
                    finished += 1
                    t = fold.t
                    last_finish = max(last_finish, t)
                    if recent_from <= t <= now:
                        finished_recent += 1
                    if kind == "failed":
                        failed.append(fold)
                elif kind == "queued":
                    oldest_queued = min(oldest_queued, submitted or fold.t)
            newest_failed = heapq.nlargest(failures, failed, key=lambda f: f.t)
            span = last_finish - first_submit
            return LedgerSummary(
                generated_at=now,
                counts={JobState(kind): n for kind, n in counts.items()},
                total=len(folds),
                finished_last_minute=finished_recent,
                rate_last_minute_per_s=finished_recent / 60.0,
                rate_overall_per_s=finished / span if finished and span > 0 else None,
                recent_failures=[_failure(f) for f in newest_failed],
                oldest_queued_age_s=(
                    max(0.0, now - oldest_queued) if oldest_queued < math.inf else None
                ),
                queue_requests=self._queue_requests(),
                writers=self._folder.writer_count(),
                events=self._folder.events,
                corrupt_lines=self._folder.corrupt,
            )

    def jobs(self, state: JobState | None = None, limit: int = 100) -> list[JobRecord]:
        """The most recently updated jobs (in ``state``, if given), newest first."""
        with self._read_lock:
            folds = self._refresh()
            wanted = None if state is None else JobState(state).value
            chosen = heapq.nlargest(
                limit,
                (f for f in folds.values() if wanted is None or f.kind == wanted),
                key=lambda f: f.t,
            )
            return [fold.record() for fold in chosen]

    def _refresh(self) -> dict[str, _Fold]:
        if not self._format_ok:
            self._check_format(create=False)
        touched = self._folder.read_logs(self._log_root)
        for job_id in touched:
            # Redrives depend on time order: fold such a job again from its shard.
            fold = _fold_in_time_order(job_id, self._job_events(job_id))
            if fold.kind:
                fold.redriven = True
                self._folder.folds[job_id] = fold
        return self._folder.folds

    def _job_events(self, job_id: str) -> list[_Event]:
        """Every event of the job in its shard's logs (one per writer); torn lines skipped."""
        directory = f"{self._log_root}/{_shard(job_id)}"
        needle = f"\t{job_id}\t".encode()
        events: list[_Event] = []
        for name in _log_names(directory):
            try:
                with open(f"{directory}/{name}", "rb") as file:
                    data = file.read()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise storage_error(exc, f"cannot read {directory}/{name}") from exc
            events.extend(_events_in(data, job_id, needle))
        return events

    def job_files(self, job_id: str) -> list[Path]:
        """The log files holding the job's events (one per writer that recorded it).

        They hold other jobs' events too (those of its shard): filter lines by job id, or
        use :func:`fold_events`.
        """
        directory = f"{self._log_root}/{_shard(check_job_id(job_id))}"
        needle = f"\t{job_id}\t".encode()
        files = []
        for name in _log_names(directory):
            path = Path(directory, name)
            with contextlib.suppress(FileNotFoundError):
                if any(True for _ in _events_in(path.read_bytes(), job_id, needle)):
                    files.append(path)
        return sorted(files)

    def _queue_requests(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        stats_dir = self.directory / "stats"
        try:
            names = os.listdir(stats_dir)
        except FileNotFoundError:
            return totals
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                counts = json.loads((stats_dir / name).read_text()).get("counts", {})
            except (OSError, ValueError, AttributeError):
                continue  # vanished or torn: the next summary will see it
            for kind, count in counts.items():
                if isinstance(count, int):
                    totals[kind] = totals.get(kind, 0) + count
        return totals


def _failure(fold: _Fold) -> Failure:
    record = fold.record()
    return Failure(job_id=fold.job_id, failed_at=fold.t, error=record.error, task=record.task)


def _shard(job_id: str) -> str:
    """The job's shard: two hex digits of crc32(job_id) mod 64 (stable across machines).

    A hash, not a prefix of the id: time-sortable ids share their leading characters.
    """
    return f"{zlib.crc32(job_id.encode()) % SHARDS:02x}"


def _log_names(directory: str) -> list[str]:
    """The writers' log files in a shard directory (none if it does not exist)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise storage_error(exc, f"cannot list {directory}") from exc
    return [name for name in names if name.endswith(".log") and not name.startswith(".")]


def _events_in(data: bytes, job_id: str, needle: bytes) -> Iterator[_Event]:
    """The job's events among a log's whole lines, found by searching for ``needle``
    (``\\t<job_id>\\t``) rather than parsing every line of the shard."""
    at = data.find(needle)
    while at >= 0:
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        if end < 0:
            return  # a torn last line
        event = _parse_line(data[start:end].decode("utf-8", "replace"))
        if event is not None and event[1] == job_id:
            yield event
        at = data.find(needle, end)


def _extras(
    *,
    task: str | None,
    input: str | None,
    output: str | None,
    seed: int | None,
    worker: str | None,
    error: str | None,
    result: Mapping[str, object] | None,
) -> str:
    """The JSON of an event's optional fields (errors and results trimmed)."""
    extras: dict[str, object] = {}
    if task is not None:
        extras["task"] = task
    if input is not None:
        extras["input"] = input
    if output is not None:
        extras["output"] = output
    if seed is not None:
        extras["seed"] = seed
    if worker is not None:
        extras["worker"] = worker
    if error is not None:
        extras["error"] = (
            error if len(error) <= MAX_ERROR_CHARS else error[:MAX_ERROR_CHARS] + "..."
        )
    if result is not None:
        value = dict(result)
        size = len(_EXTRAS_ENCODER.encode(value))
        extras["result"] = value if size <= MAX_RESULT_BYTES else {"truncated_bytes": size}
    return _EXTRAS_ENCODER.encode(extras) if extras else "{}"


def _close_all(fds: dict[str, int]) -> None:
    """Close a writer's descriptors (no sync: what was written is already the OS's)."""
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # rare: a signal or a full disk cut the write short
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


__all__ = [
    "Failure",
    "JobRecord",
    "Ledger",
    "LedgerEvent",
    "LedgerSummary",
    "check_writer_id",
    "fold_events",
    "new_writer_id",
]
