"""Where the records of a block end, when its quotes (if any) are plain RFC 4180 quoting:
the cut the vectorised path and the split pass share (numpy only, no polars)."""

from __future__ import annotations

import numpy as np

from conveyor.csvjob.source import BOM


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
