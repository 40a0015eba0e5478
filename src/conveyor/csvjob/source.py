"""The input file: opened safely, its header checked, where its data starts and ends, its lines."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import BadInput

#: The input's header line, and the output's.
HEADER = "ID,Value"
#: UTF-8's byte order mark, allowed (and skipped) at the start of the file.
BOM = b"\xef\xbb\xbf"
#: The csv module's default limit on one field, in characters; applied to every block.
FIELD_LIMIT = 131_072
#: A physical line longer than this is refused before it is held in memory.
MAX_LINE_BYTES = 4 << 20
#: ``Value``: a decimal number as ``float()`` reads it, minus spaces, ``_``, inf and nan.
VALUE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Span:
    """The part of a file one shard processes (see ``shard.transform_csv_range``)."""

    start: int
    end: int
    first_row: int
    first_line: int


def input_error(name: str, exc: OSError) -> BadInput:
    """The one-line BadInput for an input that cannot be opened or read."""
    if isinstance(exc, FileNotFoundError):
        return BadInput(f"{name}: no such file")
    if isinstance(exc, PermissionError):
        return BadInput(f"{name}: permission denied")
    return BadInput(f"{name}: cannot read ({exc.strerror or exc})")


def check_input_exists(input_path: Path) -> None:
    """BadInput unless ``input_path`` exists (checked before any output is created)."""
    try:
        os.stat(input_path)
    except OSError as exc:
        raise input_error(str(input_path), exc) from exc


def refuse_same_file(input_path: Path, output_path: Path) -> None:
    """BadInput when the output is the input itself (also through links)."""
    with contextlib.suppress(OSError):
        if os.path.samefile(input_path, output_path):
            raise BadInput(f"{output_path}: the output would overwrite its own input")


@contextlib.contextmanager
def open_input(input_path: Path) -> Iterator[tuple[int, os.stat_result]]:
    """Open the input for reading; one clear BadInput when that is not possible."""
    name = str(input_path)
    try:
        # O_NONBLOCK: a FIFO is refused below instead of waiting for a writer.
        fd = os.open(input_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise input_error(name, exc) from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise BadInput(f"{name}: is a directory, not a CSV file")
        if not stat.S_ISREG(info.st_mode):
            raise BadInput(f"{name}: not a regular file")
        yield fd, info
    finally:
        os.close(fd)


class Source:
    """The input file: its name for messages, and where its header and data start and end."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        self.fd = fd
        self.size = size
        self.name = name
        #: Offset just past the last byte that is not CR or LF: trailing blank lines are ignored.
        self.data_end = self._content_end()
        start = len(BOM) if self.read(0, len(BOM)) == BOM else 0
        if start >= self.data_end:
            raise BadInput(f"{name}: empty file")
        lines = Lines(self.read, start, self.data_end, 1, name)
        try:
            header = next(csv.reader(lines), [])
        except csv.Error as exc:
            raise BadInput(f"{name}:{lines.line_no}: {csv_problem(exc)}") from exc
        self._check_header(header)
        self.data_start = lines.offset
        #: Number of the first line after the header.
        self.first_line = lines.line_no + 1

    def narrow(self, span: Span) -> None:
        """Keep only ``span``'s rows; BadInput unless it is whole lines after the header."""
        if not (
            self.data_start <= span.start
            and span.end <= self.size
            and self._starts_line(span.start)
            and (span.end >= self.data_end or self._starts_line(span.end))
        ):
            raise BadInput(
                f"{self.name}: bytes {span.start}..{span.end} are not whole lines after the "
                "header (has the file changed since it was split?)"
            )
        self.data_start = span.start
        self.data_end = max(span.start, min(span.end, self.data_end))
        self.first_line = span.first_line

    def _starts_line(self, offset: int) -> bool:
        return offset == self.data_start or self.read(offset - 1, 1) == b"\n"

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``."""
        try:
            return os.pread(self.fd, size, offset)
        except OSError as exc:
            raise input_error(self.name, exc) from exc

    def _content_end(self) -> int:
        end = self.size
        while end > 0:
            tail = self.read(max(0, end - 65536), min(end, 65536))
            stripped = tail.rstrip(b"\r\n")
            if stripped:
                return end - len(tail) + len(stripped)
            end -= len(tail)
        return 0

    def _check_header(self, fields: list[str]) -> None:
        if fields == ["ID", "Value"]:
            return
        found = show(",".join(fields))
        if len(fields) == 2 and VALUE.fullmatch(fields[1]):
            raise BadInput(
                f"{self.name}:1: missing header: the first line must be {HEADER!r}, "
                f"found the data row {found}"
            )
        raise BadInput(f"{self.name}:1: expected header {HEADER!r}, found {found}")


def show(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, shortened when long."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def csv_problem(exc: csv.Error) -> str:
    """The csv module's error as the message a user reads."""
    text = str(exc)
    if text.startswith("field larger than field limit"):
        return f"a field is longer than {FIELD_LIMIT} characters"
    if text.startswith("new-line character seen in unquoted field"):
        return "carriage return (CR) inside an unquoted field; lines must end in LF or CRLF"
    return text


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
