"""The claim check: params too big for a message go to a file under ``_conveyor/claims/``,
written once (named by their hash), linked to each job's own name, verified when loaded,
removed when the job is done."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.atomic import atomic_output
from conveyor.errors import BadMessage, MessageTooLarge
from conveyor.job_ids import is_job_id
from conveyor.settings import STATE_DIR
from conveyor.statefiles import storage_error
from conveyor.storage import Storage
from conveyor.strict_json import MAX_DEPTH, canonical_json, parse_json

#: The largest claim-checked params file a worker will load.
MAX_CLAIM_BYTES = 64 * 1024 * 1024
#: Where claim-checked params live, relative to the storage root.
CLAIMS_DIR = f"{STATE_DIR}/claims"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class ClaimRef:
    """Where a claim-checked message's params are: ``path`` under the root, and their hash."""

    path: str
    sha256: str


def claim_path(job_id: str) -> str:
    """The job's own name for its claim-checked params, relative to the storage root.
    (A job id has no dot, so it never clashes with a shared ``<sha256>.json``.)"""
    return f"{CLAIMS_DIR}/{job_id}.job.json"


def _claim_path(digest: str) -> str:
    return f"{CLAIMS_DIR}/{digest}.json"


def store_claim(storage: Storage, job_id: str, params: Mapping[str, Any]) -> ClaimRef:
    """Write ``params`` once, atomically, to ``_conveyor/claims/<sha256>.json`` (named by
    their hash, so equal params share one file), hard-linked to a name of the job's own
    (:func:`claim_path`); the reference to put in the message instead of the params.

    Raises:
        MessageTooLarge: the params exceed ``MAX_CLAIM_BYTES``.
        StorageError: the claim could not be written.
    """
    data = canonical_json(params).encode()
    if len(data) > MAX_CLAIM_BYTES:
        raise MessageTooLarge(
            f"job {job_id}: params are {len(data)} bytes, over {MAX_CLAIM_BYTES}; "
            "put large data in an input file"
        )
    digest = hashlib.sha256(data).hexdigest()
    _write_claim(storage, digest, data)
    return ClaimRef(_link_claim(storage, job_id, digest, data), digest)


def load_claim(storage: Storage, job_id: str, ref: ClaimRef) -> dict[str, Any]:
    """The params a message's claim holds, verified against its hash.

    Raises:
        BadMessage: the claim is missing, unreadable, altered (hash mismatch) or not a
            JSON object.
    """
    path = storage.root / ref.path
    try:
        with path.open("rb") as claim:
            data = claim.read(MAX_CLAIM_BYTES + 1)
    except FileNotFoundError:
        raise BadMessage(f"bad message: job {job_id}: claim {ref.path} is missing") from None
    except OSError as exc:
        raise BadMessage(
            f"bad message: job {job_id}: cannot read claim {ref.path}: {exc.strerror}"
        ) from exc
    if len(data) > MAX_CLAIM_BYTES or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise BadMessage(f"bad message: job {job_id}: claim {ref.path} fails its checksum")
    params = parse_json(data.decode("utf-8", "replace"), what="claim", max_depth=MAX_DEPTH - 1)
    if not isinstance(params, dict):
        raise BadMessage(f"bad message: job {job_id}: claim {ref.path} is not an object")
    return params


def claim_ref(value: object, job_id: object) -> ClaimRef:
    """A message's ``params_ref`` field, checked: the job's own claim or a shared one.

    Raises:
        BadMessage: it is not ``{"path", "sha256"}`` naming one of those.
    """
    if not isinstance(value, dict) or set(value) != {"path", "sha256"}:
        raise BadMessage("bad message: field 'params_ref': expected {'path', 'sha256'}")
    digest = value["sha256"]
    if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
        raise BadMessage("bad message: field 'params_ref.sha256': not a sha256 hex digest")
    own = claim_path(job_id) if isinstance(job_id, str) and is_job_id(job_id) else None
    if value["path"] not in (own, _claim_path(digest)):
        raise BadMessage(
            f"bad message: field 'params_ref.path': expected {own or _claim_path(digest)}"
        )
    return ClaimRef(path=value["path"], sha256=digest)


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
    _publish_claim(own, data)
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
    _publish_claim(final, data)


def _publish_claim(path: Path, data: bytes) -> None:
    """Publish ``data`` at ``path`` atomically, owner-only (0600) from the start."""
    with atomic_output(path) as temp:
        try:
            os.chmod(temp, 0o600)
            temp.write_bytes(data)
        except OSError as exc:
            raise storage_error(exc, f"cannot write claim {path}") from exc
