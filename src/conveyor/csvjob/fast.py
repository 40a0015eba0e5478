"""The vectorised path: blocks of plain or RFC 4180 records parsed and checked by polars.

A block it cannot take whole, or that breaks a rule, goes to the exact parser instead.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from conveyor.csvjob.exact import Rows
from conveyor.csvjob.source import FIELD_LIMIT

_LINE_SCHEMA = {"line": pl.String}
_VALUE_SCHEMA = {"ID": pl.String, "Value": pl.Float64}
_TEXT_SCHEMA = {"ID": pl.String, "Value": pl.String}


def parse_plain(block: bytes) -> Rows | None:
    """Parse a quote-free block with polars; None when any row breaks a rule."""
    try:
        lines = pl.read_csv(
            block, has_header=False, schema=_LINE_SCHEMA, separator="\0", quote_char=None
        ).to_series()
        values = pl.read_csv(
            block, has_header=False, schema=_VALUE_SCHEMA, quote_char=None, columns=[1]
        ).to_series()
    except pl.exceptions.PolarsError:  # more than two fields, bad UTF-8, a non-number
        return None
    if len(lines) != len(values) or lines.null_count() or values.null_count():
        return None  # blank lines, a missing Value
    if np.count_nonzero(np.frombuffer(block, np.uint8) == ord(",")) != len(lines):
        return None  # every line has a comma (else its Value is missing): one has more
    array = values.to_numpy()
    if (
        lines.str.starts_with(",").any()
        or (lines.str.len_bytes() > FIELD_LIMIT).any()
        or not np.isfinite(array).all()
    ):
        return None
    # polars' number parser skips leading spaces and tabs, which the rule refuses.
    if (block.find(b" ") >= 0 or block.find(b"\t") >= 0) and lines.str.contains(",[ \t]").any():
        return None
    return Rows(lines, array, len(lines))


def parse_quoted(block: bytes) -> Rows | None:
    """Parse a block of RFC 4180 records with polars; None when any row breaks a rule."""
    try:
        frame = pl.read_csv(block, has_header=False, schema=_TEXT_SCHEMA, quote_char='"')
    except pl.exceptions.PolarsError:  # more than two fields, bad UTF-8
        return None
    ident, value = frame.get_column("ID"), frame.get_column("Value")
    numbers = value.cast(pl.Float64, strict=False)  # strict syntax: no spaces, as the rule says
    if ident.null_count() or numbers.null_count():
        return None  # blank lines, missing or empty fields, a non-number
    array = numbers.to_numpy()
    if (
        (ident == "").any()
        or (ident.str.len_chars() > FIELD_LIMIT).any()
        or (value.str.len_chars() > FIELD_LIMIT).any()
        or not np.isfinite(array).all()
    ):
        return None
    needs_quotes = pl.col("ID").str.contains(r'[,"\r\n]')
    quoted = pl.lit('"') + pl.col("ID").str.replace_all('"', '""', literal=True) + pl.lit('"')
    lines = frame.select(
        pl.concat_str(
            [pl.when(needs_quotes).then(quoted).otherwise(pl.col("ID")), pl.col("Value")],
            separator=",",
        ).alias("line")
    ).to_series()
    used = block.count(b"\n") + (not block.endswith(b"\n"))
    return Rows(lines, array, used)
