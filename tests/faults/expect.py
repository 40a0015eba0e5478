"""What the fault suite's test tasks publish, computed without running them."""

from __future__ import annotations

import hashlib

#: The fault-copy task writes its output in chunks of this many bytes.
CHUNK_BYTES = 4096


def fault_copy_output(data: bytes, seed: int) -> bytes:
    """The output of the ``fault-copy`` task for an input and a seed: a line naming both,
    then the input, so a torn write is visible and every rerun writes the same bytes."""
    digest = hashlib.sha256(data).hexdigest()
    return f"seed={seed} sha256={digest} bytes={len(data)}\n".encode() + data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_bytes(index: int, size: int = 12_000) -> bytes:
    """A deterministic input of about ``size`` bytes for job number ``index``."""
    line = f"job {index:06d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 2 + "\n"
    return (line * (size // len(line) + 1)).encode()[:size]
