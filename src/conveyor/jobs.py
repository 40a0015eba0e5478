"""The message envelope (`Job`): versioned JSON, validated on both ends, claim-checked when big.

Also `JobState`, the states a job moves through in the ledger, and `new_job_id()`.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import math
import os
import posixpath
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from conveyor.errors import BadInput, BadMessage, MessageTooLarge
from conveyor.settings import STATE_DIR
from conveyor.storage import (
    Storage,
    atomic_output,
    check_job_id,
    check_relative_path,
    storage_error,
)

#: The envelope version this code writes and reads.
VERSION = 1
#: Above this a submitter claim-checks the params (many SQS queues still cap at 256 KiB).
CLAIM_THRESHOLD_BYTES = 256 * 1024
#: The largest message any supported queue carries (SQS since 2025): the decoder's limit.
MAX_MESSAGE_BYTES = 1024 * 1024
#: The largest claim-checked params file a worker will load.
MAX_CLAIM_BYTES = 64 * 1024 * 1024
#: Deepest nesting of arrays and objects accepted, the envelope itself counting as 1.
MAX_DEPTH = 32
#: Seeds are non-negative signed 64-bit integers, so every language can hold them.
MAX_SEED = 2**63 - 1
#: Where claim-checked params live, relative to the storage root.
CLAIMS_DIR = f"{STATE_DIR}/claims"

_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# One regex match per character that matters to nesting, so the depth scan is linear.
_NESTING_CHARS = re.compile(r'["\\\[\]{}]')

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


def new_job_id(now_s: float | None = None) -> str:
    """A new job id: 26 Crockford base32 characters, 48-bit milliseconds + 80 random bits.

    Ids sort by creation time (to the millisecond), are safe in URLs and file names, and
    collide with negligible probability even across many submitters.
    """
    ms = int((time.time() if now_s is None else now_s) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | secrets.randbits(80)
    chars = [_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5)]
    return "".join(chars)


def new_seed() -> int:
    """A random seed for a job: the task derives its randomness from it, so reruns match."""
    return secrets.randbits(63)


def canonical_json(value: object) -> str:
    """Compact JSON with sorted keys and ASCII only: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class ClaimRef:
    """Where a claim-checked message's params are: ``path`` under the root, and their hash."""

    path: str
    sha256: str


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
        _check_job(self)

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
            raise BadMessage(f"bad message: expected a JSON object, got {_json_type(data)}")
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
        ref = _claim_ref(data["params_ref"], data["job_id"]) if "params_ref" in data else None
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


# --- the claim check -------------------------------------------------------------------------


def encode_for_queue(job: Job, storage: Storage, max_bytes: int = CLAIM_THRESHOLD_BYTES) -> str:
    """The message text for ``job``, claim-checking its params if it is over ``max_bytes``.

    The params are written once, atomically, to ``_conveyor/claims/<sha256>.json`` (named
    by their hash, so equal params share one file), hard-linked to a name of the job's own
    (:func:`claim_path`), and the message carries that name and the hash instead. The
    worker removes the job's name once the job succeeded (:func:`release_claim`).

    Raises:
        MessageTooLarge: the message is too large even without its params, or the params
            exceed ``MAX_CLAIM_BYTES``.
        StorageError: the claim could not be written.
    """
    text = job.to_json()
    if len(text) <= max_bytes:
        return text
    if job.params_ref is None:
        data = canonical_json(job.params).encode()
        if len(data) > MAX_CLAIM_BYTES:
            raise MessageTooLarge(
                f"job {job.job_id}: params are {len(data)} bytes, over {MAX_CLAIM_BYTES}; "
                "put large data in an input file"
            )
        digest = hashlib.sha256(data).hexdigest()
        _write_claim(storage, digest, data)
        path = _link_claim(storage, job.job_id, digest, data)
        job = replace(job, params={}, params_ref=ClaimRef(path, digest))
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
    path = storage.root / ref.path
    try:
        with path.open("rb") as claim:
            data = claim.read(MAX_CLAIM_BYTES + 1)
    except FileNotFoundError:
        raise BadMessage(f"bad message: job {job.job_id}: claim {ref.path} is missing") from None
    except OSError as exc:
        raise BadMessage(
            f"bad message: job {job.job_id}: cannot read claim {ref.path}: {exc.strerror}"
        ) from exc
    if len(data) > MAX_CLAIM_BYTES or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise BadMessage(f"bad message: job {job.job_id}: claim {ref.path} fails its checksum")
    params = parse_json(data.decode("utf-8", "replace"), what="claim", max_depth=MAX_DEPTH - 1)
    if not isinstance(params, dict):
        raise BadMessage(f"bad message: job {job.job_id}: claim {ref.path} is not an object")
    return replace(job, params=params, params_ref=None)


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


def _claim_path(digest: str) -> str:
    return f"{CLAIMS_DIR}/{digest}.json"


def claim_path(job_id: str) -> str:
    """The job's own name for its claim-checked params, relative to the storage root.
    (A job id has no dot, so it never clashes with a shared ``<sha256>.json``.)"""
    return f"{CLAIMS_DIR}/{job_id}.job.json"


def _link_claim(storage: Storage, job_id: str, digest: str, data: bytes) -> str:
    """Give the job its own name for the shared claim file (a hard link: no copy), so that
    removing it when the job ends never takes the params of another job; a copy of its
    own where the filesystem has no hard links.

    Raises:
        StorageError: the claim could not be written.
    """
    rel = claim_path(job_id)
    own, shared = storage.root / rel, storage.root / _claim_path(digest)
    for _ in range(3):
        try:
            os.link(shared, own)
        except FileExistsError:
            with contextlib.suppress(OSError):
                if os.path.samefile(own, shared):
                    return rel  # this job was encoded before, with these params
                own.unlink()  # a stale name (a job id used again): replace it
        except FileNotFoundError:
            _write_claim(storage, digest, data)  # a worker just released the shared name
        except OSError:
            break
        else:
            return rel
    with atomic_output(own) as temp:
        try:
            os.chmod(temp, 0o600)
            temp.write_bytes(data)
        except OSError as exc:
            raise storage_error(exc, f"cannot write claim {own}") from exc
    return rel


def release_claim(storage: Storage, job_id: str, ref: ClaimRef) -> None:
    """Remove a finished job's claim: its own name, then the shared file once no other
    job's name links to it (a submit racing with this just writes the shared file again).
    A reference that is not the job's own name (an older message) is left alone. Never
    raises: a claim left behind costs space, not correctness."""
    if ref.path != claim_path(job_id):
        return
    with contextlib.suppress(OSError):
        (storage.root / ref.path).unlink()
    shared = storage.root / _claim_path(ref.sha256)
    with contextlib.suppress(OSError):
        if shared.stat().st_nlink == 1:
            shared.unlink()


def release_claims_of(storage: Storage, job_ids: Iterable[str]) -> int:
    """Remove the claims of jobs known only by id (their messages are gone: ``queue
    purge``): each job's own name, then the shared file once no job links to it (its
    name is the hash of the bytes). Returns how many jobs had one. Never raises."""
    released = 0
    for job_id in job_ids:
        own = storage.root / claim_path(job_id)
        try:
            data = own.read_bytes()
        except (OSError, ValueError):
            continue
        release_claim(
            storage, job_id, ClaimRef(claim_path(job_id), hashlib.sha256(data).hexdigest())
        )
        released += 1
    return released


def _write_claim(storage: Storage, digest: str, data: bytes) -> None:
    """Write a claim owner-only (0600, in directories created 0700): params may carry
    secrets such as API tokens."""
    final = storage.root / _claim_path(digest)
    try:
        if final.stat().st_size == len(data):
            return  # content-addressed: an existing file of this size has these bytes
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise storage_error(exc, f"cannot check claim {final}") from exc
    try:
        storage.root.mkdir(parents=True, exist_ok=True)
        for directory in (storage.root / STATE_DIR, final.parent):
            directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, f"cannot create {final.parent}") from exc
    with atomic_output(final) as temp:
        try:
            os.chmod(temp, 0o600)
            temp.write_bytes(data)
        except OSError as exc:
            raise storage_error(exc, f"cannot write claim {final}") from exc


def _claim_ref(value: object, job_id: object) -> ClaimRef:
    if not isinstance(value, dict) or set(value) != {"path", "sha256"}:
        raise BadMessage("bad message: field 'params_ref': expected {'path', 'sha256'}")
    digest = value["sha256"]
    if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
        raise BadMessage("bad message: field 'params_ref.sha256': not a sha256 hex digest")
    own = claim_path(job_id) if isinstance(job_id, str) and _valid_job_id(job_id) else None
    if value["path"] not in (own, _claim_path(digest)):
        raise BadMessage(
            f"bad message: field 'params_ref.path': expected {own or _claim_path(digest)}"
        )
    return ClaimRef(path=value["path"], sha256=digest)


# --- JSON with limits -------------------------------------------------------------------------


def parse_json(text: str, *, what: str, max_depth: int = MAX_DEPTH) -> object:
    """``json.loads`` that rejects deep nesting (before parsing), duplicate keys and NaN.

    Raises:
        BadMessage: the text is not strict JSON or nests deeper than ``max_depth``.
    """
    if _too_deep(text, max_depth):
        raise BadMessage(f"bad {what}: nested deeper than {max_depth} levels")
    try:
        return json.loads(
            text, object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as exc:
        raise BadMessage(f"bad {what}: not valid JSON ({exc})") from None


def _too_deep(text: str, max_depth: int) -> bool:
    """Whether arrays/objects nest deeper than ``max_depth``, brackets in strings aside."""
    if text.count("[") + text.count("{") <= max_depth:
        return False  # cannot nest deeper than it has brackets: the common, fast case
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _NESTING_CHARS.finditer(text):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


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


# --- field validation -------------------------------------------------------------------------


def _check_job(job: Job) -> None:
    try:
        check_job_id(job.job_id)
    except BadInput as exc:
        raise BadMessage(f"bad message: field 'job_id': {exc.message}") from None
    if not isinstance(job.task, str) or not _TASK_NAME.match(job.task):
        raise BadMessage(
            f"bad message: field 'task': {_short(job.task)} is not a task name "
            "(1 to 128 of [A-Za-z0-9_.:-], starting with a letter or digit)"
        )
    if job.input is not None:
        _check_path("input", job.input)
    if job.output is not None:
        _check_path("output", job.output)
    if type(job.seed) is not int or not 0 <= job.seed <= MAX_SEED:
        raise BadMessage(f"bad message: field 'seed': {_short(job.seed)} is not in 0..2**63-1")
    when = job.submitted_at
    if type(when) not in (int, float) or not math.isfinite(when) or when < 0:
        raise BadMessage(f"bad message: field 'submitted_at': {_short(when)} is not a time")
    if not isinstance(job.params, dict):
        raise BadMessage(
            f"bad message: field 'params': expected an object, got {_json_type(job.params)}"
        )
    if job.params_ref is not None and job.params:
        raise BadMessage("bad message: field 'params_ref': not allowed with non-empty 'params'")
    # The envelope is level 1 of the message, so its params start at level 2.
    _check_json_value(job.params, "params", 2)
    if type(when) is int:
        object.__setattr__(job, "submitted_at", float(when))


def _check_path(name: str, value: object) -> None:
    try:
        check_relative_path(value)
    except BadInput as exc:
        raise BadMessage(f"bad message: field {name!r}: {exc.message}") from None


def _check_json_value(value: object, where: str, depth: int) -> None:
    """Reject what JSON cannot carry faithfully: non-str keys, NaN, tuples, other types."""
    if depth > MAX_DEPTH:
        raise BadMessage(f"bad message: field {where!r}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadMessage(f"bad message: field {where!r}: key {key!r} is not a string")
            if isinstance(item, dict | list):
                _check_json_value(item, f"{where}.{key}", depth + 1)
            else:
                _check_scalar(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict | list):
                _check_json_value(item, f"{where}[{index}]", depth + 1)
            else:
                _check_scalar(item, f"{where}[{index}]")
    else:
        _check_scalar(value, where)


def _check_scalar(value: object, where: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    raise BadMessage(f"bad message: field {where!r}: {_short(value)} is not a JSON value")


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


# --- reading a job id from anything --------------------------------------------------------------

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
        if end > start and _valid_job_id(body[start:end]):
            return body[start:end]
    if len(body) > MAX_MESSAGE_BYTES:
        return None
    try:  # deep nesting ends in RecursionError: the id of a too-deep envelope still counts
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    job_id = data.get("job_id") if isinstance(data, dict) else None
    return job_id if _valid_job_id(job_id) else None


def _valid_job_id(value: object) -> bool:
    try:
        check_job_id(value)
    except BadInput:
        return False
    return True
