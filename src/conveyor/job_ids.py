"""Job ids and seeds: new_job_id() (time-sortable, safe in URLs and file names), new_seed()."""

from __future__ import annotations

import secrets
import time

from conveyor.errors import BadInput
from conveyor.storage import check_job_id

#: Seeds are non-negative signed 64-bit integers, so every language can hold them.
MAX_SEED = 2**63 - 1

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


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


def is_job_id(value: object) -> bool:
    """Whether ``value`` is a valid job id (see :func:`conveyor.storage.check_job_id`)."""
    try:
        check_job_id(value)
    except BadInput:
        return False
    return True
