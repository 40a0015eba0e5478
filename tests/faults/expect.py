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


def csv_rows(index: int) -> list[tuple[str, str]]:
    """The ``ID,Value`` rows of the kill storm's input number ``index`` (one ID needs quotes)."""
    return [
        (str(index), f"{index}.5"),
        (f"row-{index}", repr(index * 0.125)),
        (f"a,{index}", "-7e-3"),
    ]


def csv_text(rows: list[tuple[str, str]]) -> bytes:
    """An input file holding ``rows``."""
    lines = ["ID,Value", *(f"{_quoted(ident)},{value}" for ident, value in rows)]
    return ("\n".join(lines) + "\n").encode()


def csv_reference(rows: list[tuple[str, str]], seed: int) -> bytes:
    """What the CSV task must publish for ``rows``, the slow, obvious way (independent of
    ``conveyor.csvjob``'s vectorised code): ``ProcessedValue = float(Value) * factor``."""
    from conveyor.csvjob import row_factor

    lines = ["ID,Value,ProcessedValue\n"]
    for row, (ident, value) in enumerate(rows):
        lines.append(f"{_quoted(ident)},{value},{float(value) * row_factor(seed, row)!r}\n")
    return "".join(lines).encode()


def _quoted(field: str) -> str:
    needs = any(c in field for c in ',"\r\n')
    return '"' + field.replace('"', '""') + '"' if needs else field
