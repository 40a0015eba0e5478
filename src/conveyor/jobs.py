"""The message envelope (``Job``): versioned JSON, validated on both ends, claim-checked when
big; ``JobState``; and ``job_id_of()``, the one reader of a job id from any message body.

The envelope's parts live beside it: ids and seeds (:mod:`conveyor.job_ids`), the field
checks (:mod:`conveyor.job_checks`), the claim check (:mod:`conveyor.claims`), strict JSON
(:mod:`conveyor.strict_json`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import posixpath
import time
from dataclasses import dataclass, field, replace
from typing import Any

from conveyor.claims import ClaimRef, claim_ref, load_claim, store_claim
from conveyor.errors import BadMessage, MessageTooLarge
from conveyor.job_checks import check_job, json_type
from conveyor.job_ids import is_job_id, new_job_id, new_seed
from conveyor.storage import Storage
from conveyor.strict_json import canonical_json, parse_json

#: The envelope version this code writes and reads.
VERSION = 1
#: Above this a submitter claim-checks the params (many SQS queues still cap at 256 KiB).
CLAIM_THRESHOLD_BYTES = 256 * 1024
#: The largest message any supported queue carries (SQS since 2025): the decoder's limit.
MAX_MESSAGE_BYTES = 1024 * 1024

_REQUIRED = ("v", "job_id", "task", "input", "seed", "submitted_at")
# `output` may be absent or null: a job that publishes nothing (its effect is elsewhere).
_KNOWN = frozenset((*_REQUIRED, "output", "params", "params_ref"))


class JobState(enum.StrEnum):
    """Where a job is: ``queued → running → (retrying → running)* → succeeded | failed``,
    or ``cancelled`` from any state that is not terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for states a job never leaves (except ``failed`` by an explicit redrive)."""
        return self in TERMINAL


#: States a job never leaves on its own.
TERMINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True, kw_only=True)
class Job:
    """One requested run of a task: the message envelope on the queue.

    Validated on construction, so an invalid job can neither be sent nor received.
    ``params`` must be a JSON object (str keys; str, int, finite float, bool, None, list and
    dict values) and is treated as read-only. When the params were claim-checked,
    ``params`` is empty and ``params_ref`` says where they are (:func:`decode_from_queue`
    loads them). ``output`` is None for a job that publishes no file (a no-op, or a task
    whose effect lies elsewhere): the worker then publishes nothing.

    Raises:
        BadMessage: a field is missing, of the wrong type or out of range; the reason
            names the field.
    """

    task: str
    output: str | None = None
    input: str | None = None
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    seed: int = field(default_factory=new_seed)
    job_id: str = field(default_factory=new_job_id)
    submitted_at: float = field(default_factory=time.time)
    params_ref: ClaimRef | None = None

    def __post_init__(self) -> None:
        check_job(self)

    # --- encoding ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The envelope as a JSON-ready dict, fields in their documented order."""
        data: dict[str, Any] = {
            "v": VERSION,
            "job_id": self.job_id,
            "task": self.task,
            "input": self.input,
            "output": self.output,
        }
        if self.params_ref is not None:
            data["params_ref"] = {"path": self.params_ref.path, "sha256": self.params_ref.sha256}
        else:
            data["params"] = self.params
        data["seed"] = self.seed
        data["submitted_at"] = self.submitted_at
        return data

    def to_json(self) -> str:
        """The envelope as compact ASCII JSON (so its length in characters is its size).

        Raises:
            BadMessage: a value cannot be written as JSON (an integer too long to print).
        """
        try:
            return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BadMessage(f"bad message: job {self.job_id}: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Job:
        """Parse and validate a message.

        The nesting depth is checked before parsing, so a message of 100,000 nested
        brackets is rejected without recursion.

        Raises:
            BadMessage: not UTF-8, too large, too deep, not JSON, not an object, an unknown
                version, an unknown or missing field, a wrong type or value; the reason
                names the field.
        """
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise BadMessage("bad message: not UTF-8") from None
        if not isinstance(text, str):
            raise BadMessage(f"bad message: expected JSON text, got {type(text).__name__}")
        _check_size(text, max_bytes)
        _check_utf8(text)
        data = parse_json(text, what="message")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> Job:
        """Validate a decoded envelope (see :meth:`from_json`)."""
        if not isinstance(data, dict):
            raise BadMessage(f"bad message: expected a JSON object, got {json_type(data)}")
        if "v" not in data:
            raise BadMessage("bad message: missing field 'v' (the envelope version)")
        version = data["v"]
        if type(version) is not int or version != VERSION:
            raise BadMessage(f"bad message: field 'v': unsupported version {version!r}")
        unknown = sorted(set(data) - _KNOWN)
        if unknown:
            raise BadMessage(f"bad message: unknown field(s) {', '.join(map(repr, unknown))}")
        missing = [name for name in _REQUIRED if name not in data]
        if "params" not in data and "params_ref" not in data:
            missing.append("params")
        if missing:
            raise BadMessage(f"bad message: missing field(s) {', '.join(map(repr, missing))}")
        if "params" in data and "params_ref" in data:
            raise BadMessage("bad message: field 'params_ref': not allowed with 'params'")
        ref = claim_ref(data["params_ref"], data["job_id"]) if "params_ref" in data else None
        return cls(
            job_id=data["job_id"],
            task=data["task"],
            input=data["input"],
            output=data.get("output"),
            params=data.get("params", {}),
            seed=data["seed"],
            submitted_at=data["submitted_at"],
            params_ref=ref,
        )

    # --- identity ----------------------------------------------------------------------

    @property
    def params_sha256(self) -> str:
        """sha256 of the params' canonical JSON (the claim check's name, when there is one)."""
        if self.params_ref is not None:
            return self.params_ref.sha256
        return hashlib.sha256(canonical_json(self.params).encode()).hexdigest()

    @property
    def dedup_id(self) -> str:
        """sha256 of task, input, output, params and seed: FIFO queues drop repeats of it.

        The params enter through their own hash, so the id is the same whether or not they
        were claim-checked. The job id and submit time do not enter: two submissions of the
        same work are the same work.
        """
        identity = [self.task, self.input, self.output, self.params_sha256, self.seed]
        return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


# --- the message text -----------------------------------------------------------------------


def encode_for_queue(job: Job, storage: Storage, max_bytes: int = CLAIM_THRESHOLD_BYTES) -> str:
    """The message text for ``job``, claim-checking its params if it is over ``max_bytes``.

    The params are written once, atomically, to ``_conveyor/claims/<sha256>.json`` (named
    by their hash, so equal params share one file), hard-linked to a name of the job's own,
    and the message carries that name and the hash instead (:func:`conveyor.claims.store_claim`).
    The worker removes the job's name once the job succeeded (:func:`release_claim`).

    Raises:
        MessageTooLarge: the message is too large even without its params, or the params
            exceed ``MAX_CLAIM_BYTES``.
        StorageError: the claim could not be written.
    """
    text = job.to_json()
    if len(text) <= max_bytes:
        return text
    if job.params_ref is None:
        job = replace(job, params={}, params_ref=store_claim(storage, job.job_id, job.params))
        text = job.to_json()
    if len(text) > max_bytes:
        raise MessageTooLarge(
            f"job {job.job_id}: message is {len(text)} bytes even without params, over "
            f"the queue's {max_bytes}"
        )
    return text


def decode_from_queue(text: str | bytes, storage: Storage) -> Job:
    """Parse a message and, if its params were claim-checked, load and verify them.

    Raises:
        BadMessage: the message is invalid (see :meth:`Job.from_json`), its output is its
            input (the job would overwrite its own input), or its claim is missing,
            unreadable, altered (hash mismatch) or not a JSON object.
    """
    job = Job.from_json(text)
    if job.input is not None and job.output is not None:
        _check_output_is_not_input(job.job_id, job.input, job.output, storage)
    ref = job.params_ref
    if ref is None:
        return job
    return replace(job, params=load_claim(storage, job.job_id, ref), params_ref=None)


def _check_output_is_not_input(job_id: str, input: str, output: str, storage: Storage) -> None:
    """Refuse a job whose output is its input, by name or once symlinks are followed: the
    worker would replace the input with the output (``conveyor run`` refuses it too).

    Raises:
        BadMessage: they are the same file.
    """
    same = posixpath.normpath(input) == posixpath.normpath(output)
    if not same:
        root = storage.root
        same = os.path.realpath(root / input) == os.path.realpath(root / output)
    if same:
        raise BadMessage(
            f"bad message: job {job_id}: its output {output} is its input: "
            "the job would overwrite its own input"
        )


def _check_utf8(text: str) -> None:
    """Reject text that carries bytes that were not UTF-8 (as lone surrogates: see
    :func:`conveyor.queues.base.message_text`), rather than parse an altered message."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadMessage(
            f"bad message: not UTF-8 (at character {exc.start}): it cannot be a job envelope"
        ) from None


def _check_size(text: str, max_bytes: int) -> None:
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise BadMessage(f"bad message: {size} bytes, over the limit of {max_bytes}")


# --- reading a job id from anything ---------------------------------------------------------

#: How ``Job.to_json`` starts every envelope: the job id follows, with no escapes possible.
_ENVELOPE_HEAD = f'{{"v":{VERSION},"job_id":"'


def job_id_of(body: object) -> str | None:
    """The job id in a message body, if it has a valid one (even if the rest is malformed).

    Total: it never raises, whatever ``body`` is (text that was not UTF-8, bytes, None, a
    huge or deeply nested body, JSON of any shape), and returns None when no valid job id
    can be read. Every reader of a message or a dead letter uses it (the worker,
    reconciliation, ``dlq list``, the dashboard), so a hostile body is handled the same way
    everywhere. Read straight from the text when the body starts the way conveyor writes
    envelopes (the fast path: every received message needs it), else parsed.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        body = bytes(body).decode("utf-8", "surrogateescape")
    if not isinstance(body, str):
        return None
    start = len(_ENVELOPE_HEAD)
    if body.startswith(_ENVELOPE_HEAD):
        end = body.find('"', start, start + 65)
        if end > start and is_job_id(body[start:end]):
            return body[start:end]
    if len(body) > MAX_MESSAGE_BYTES:
        return None
    try:  # deep nesting ends in RecursionError: the id of a too-deep envelope still counts
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    job_id = data.get("job_id") if isinstance(data, dict) else None
    return job_id if is_job_id(job_id) else None
