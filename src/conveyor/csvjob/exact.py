"""The exact parser: records read as Python's csv module reads them, each checked, one at a time.

It names the first bad line of a block; the vectorised path (``fast.py``) hands it every
block it cannot take whole.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from conveyor.errors import BadInput

#: The csv module's default limit on one field, in characters; applied to every block.
FIELD_LIMIT = 131_072
#: A physical line longer than this is refused before it is held in memory.
MAX_LINE_BYTES = 4 << 20
#: ``Value``: a decimal number as ``float()`` reads it, minus spaces, ``_``, inf and nan.
VALUE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def show(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, shortened when long."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _quote(field: str) -> str:
    """A field as csv.QUOTE_MINIMAL writes it (CR also quoted: it would break the line)."""
    if _NEEDS_QUOTES.search(field):
        return '"' + field.replace('"', '""') + '"'
    return field


def csv_problem(exc: csv.Error) -> str:
    """The csv module's error as the message a user reads."""
    text = str(exc)
    if text.startswith("field larger than field limit"):
        return f"a field is longer than {FIELD_LIMIT} characters"
    if text.startswith("new-line character seen in unquoted field"):
        return "carriage return (CR) inside an unquoted field; lines must end in LF or CRLF"
    return text


@dataclass
class Rows:
    """Rows ready to render: output lines ``ID,Value`` (quoted as needed) and parsed values."""

    lines: pl.Series
    values: npt.NDArray[np.float64]
    lines_used: int  # physical lines the rows took


def parse_exact(lines: Lines, stop: int, name: str) -> Rows:
    """Parse records from ``lines`` until one ends at or after byte ``stop``.

    Raises:
        BadInput: the first malformed record, with its line number.
    """
    reader = csv.reader(lines)
    first_line = lines.line_no + 1
    out: list[str] = []
    values: list[float] = []
    while lines.offset < stop:
        line_no = lines.line_no + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise BadInput(f"{name}:{lines.line_no}: {csv_problem(exc)}") from exc
        ident, value = _check_record(fields, name, line_no)
        out.append(_quote(ident) + "," + value)
        values.append(float(value))
    return Rows(
        pl.Series("line", out, dtype=pl.String),
        np.array(values, dtype=np.float64),
        lines.line_no + 1 - first_line,
    )


def _check_record(fields: list[str], name: str, line_no: int) -> tuple[str, str]:
    """The record's ID and Value text, or BadInput saying what is wrong with it."""
    where = f"{name}:{line_no}"
    if len(fields) != 2:
        if not fields:
            raise BadInput(f"{where}: blank line (blank lines may only end the file)")
        raise BadInput(f"{where}: expected 2 fields (ID,Value), found {len(fields)}")
    ident, value = fields
    if not ident:
        raise BadInput(f"{where}: empty ID")
    if not value:
        raise BadInput(f"{where}: empty Value")
    if not VALUE.fullmatch(value) or not math.isfinite(float(value)):
        raise BadInput(f"{where}: Value {show(value)} is not a finite number")
    return ident, value


class Lines:
    """Physical lines (ending in LF) of ``[offset, end)``, decoded, for :func:`csv.reader`.

    After each record the reader returns, ``offset`` is where the next record starts and
    ``line_no`` the number of the last line consumed.
    """

    def __init__(
        self, read: Callable[[int, int], bytes], offset: int, end: int, line_no: int, name: str
    ) -> None:
        self.offset = offset
        self.line_no = line_no - 1
        self._read = read
        self._end = end
        self._name = name
        self._buf = b""
        self._pos = 0  # index in _buf of the byte at `offset`

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> str:
        if self.offset >= self._end:
            raise StopIteration
        newline = self._buf.find(b"\n", self._pos)
        while newline < 0 and self.offset + len(self._buf) - self._pos < self._end:
            if len(self._buf) - self._pos > MAX_LINE_BYTES:
                raise BadInput(f"{self._where(1)}: line longer than {MAX_LINE_BYTES} bytes")
            have = len(self._buf) - self._pos
            more = self._read(self.offset + have, min(1 << 20, self._end - self.offset - have))
            if not more:
                break
            self._buf = self._buf[self._pos :] + more
            self._pos = 0
            newline = self._buf.find(b"\n", have)
        stop = min(
            newline + 1 if newline >= 0 else len(self._buf), self._pos + self._end - self.offset
        )
        raw = self._buf[self._pos : stop]
        if len(raw) > MAX_LINE_BYTES:
            raise BadInput(f"{self._where(1)}: line longer than {MAX_LINE_BYTES} bytes")
        self._pos = stop
        self.offset += len(raw)
        self.line_no += 1
        return self._decode(raw)

    def _decode(self, raw: bytes) -> str:
        if b"\0" in raw:
            raise BadInput(f"{self._where(0)}: contains a NUL byte")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"{self._where(0)}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} "
                f"at column {exc.start + 1})"
            ) from exc

    def _where(self, ahead: int) -> str:
        return f"{self._name}:{self.line_no + ahead}"
