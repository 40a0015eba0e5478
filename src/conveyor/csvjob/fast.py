"""The vectorised path: blocks of plain or RFC 4180 records parsed and checked by polars.

A block it cannot take whole, or that breaks a rule, goes to the exact parser instead.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from conveyor.csvjob.exact import FIELD_LIMIT, Rows
from conveyor.csvjob.source import BOM

_LINE_SCHEMA = {"line": pl.String}
_VALUE_SCHEMA = {"ID": pl.String, "Value": pl.Float64}
_TEXT_SCHEMA = {"ID": pl.String, "Value": pl.String}


def fast_cut(block: bytes, at_end: bool) -> tuple[int, bool] | None:
    """How much of ``block`` the fast path can take, and whether it holds quotes.

    Returns ``(cut, quoted)``: the first ``cut`` bytes are whole records. None sends the block
    to the exact parser: a NUL (the fast path's line separator), a BOM (polars would drop one
    that starts a block), a CR that does not end a line, or quotes that polars could read
    differently from the csv module.
    """
    if block.startswith(BOM) or block.find(b"\0") >= 0:
        return None
    if block.find(b'"') >= 0:
        return quoted_cut(block, at_end)
    cut = len(block) if at_end else block.rfind(b"\n") + 1
    if cut == 0:
        return None
    if block.find(b"\r", 0, cut) >= 0 and block.count(b"\r", 0, cut) != block.count(
        b"\r\n", 0, cut
    ):
        return None
    return cut, False


def quoted_cut(block: bytes, at_end: bool) -> tuple[int, bool] | None:
    """The cut of a block with quotes, if they are all RFC 4180 quoting.

    Quotes then toggle "inside a quoted field" one by one, so a line feed after an even number
    of quotes ends a record. On such text the csv module and polars agree; anything else (a
    quote inside an unquoted field, text after a closing quote, a CR inside quotes) is left to
    the exact parser, which reads it as the csv module does.
    """
    data = np.frombuffer(block, np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    if at_end:
        cut = len(block) if len(quotes) % 2 == 0 else 0
    else:
        newlines = np.flatnonzero(data == ord("\n"))
        outside = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
        cut = int(outside[-1]) + 1 if len(outside) else 0
    if cut == 0:
        return None
    quotes = quotes[: np.searchsorted(quotes, cut)]
    opening, closing = quotes[0::2], quotes[1::2]
    # An opening quote starts a field, or doubles the closing quote just before it.
    before = data[np.maximum(opening - 1, 0)]
    if not np.all(
        (opening == 0) | (before == ord(",")) | (before == ord("\n")) | (before == ord('"'))
    ):
        return None
    # A closing quote ends a field, or is doubled by the opening quote just after it.
    after = data[np.minimum(closing + 1, len(block) - 1)]
    ends = (after == ord(",")) | (after == ord("\n")) | (after == ord("\r")) | (after == ord('"'))
    if not np.all(ends | (closing == len(block) - 1)):
        return None
    # Every CR ends a line (CRLF), outside quotes.
    returns = np.flatnonzero(data[:cut] == ord("\r"))
    if len(returns) and (
        returns[-1] + 1 >= len(block)
        or not np.all(data[returns + 1] == ord("\n"))
        or np.any(np.searchsorted(quotes, returns) % 2)
    ):
        return None
    return cut, True


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
