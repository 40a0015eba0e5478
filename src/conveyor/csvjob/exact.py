"""The exact parser: records read as Python's csv module reads them, each checked, one at a time.

It names the first bad line of a block; the vectorised path (``fast.py``) hands it every
block it cannot take whole.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from conveyor.csvjob.source import VALUE, Lines, csv_problem, show
from conveyor.errors import BadInput

_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def _quote(field: str) -> str:
    """A field as csv.QUOTE_MINIMAL writes it (CR also quoted: it would break the line)."""
    if _NEEDS_QUOTES.search(field):
        return '"' + field.replace('"', '""') + '"'
    return field


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
