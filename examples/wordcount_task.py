"""A user task for conveyor: count the words of a text file.

    conveyor submit --task wordcount --import examples/wordcount_task.py notes.txt
    conveyor worker --import examples/wordcount_task.py --until-empty

The output is a CSV of ``word,count`` sorted by count, then word; the job's result (shown
by ``conveyor status JOB_ID``) holds the totals. Parameters: ``--param min_length=3``
ignores shorter words, ``--param top=10`` keeps only the most frequent ones.

It also splits: ``client.submit("big.txt", task="wordcount", split_rows=N)`` counts each
range of N lines in its own job (``split_lines``) and sums their counts in one output
(``merge_counts``), the same as the unsplit job's.
"""

from __future__ import annotations

import collections
import csv
import re
from pathlib import Path
from typing import Any

import conveyor
from conveyor import TaskContext
from conveyor.errors import BadInput

#: Letters, with inner apostrophes (ASCII or U+2019) kept: "don't" is one word.
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


def split_lines(input_path: Path, rows: int) -> list[dict[str, Any]]:
    """The pieces of a split job: ranges of ``rows`` lines (``first`` and ``lines``), each
    counted in full (``top`` applies once, in the merge)."""
    with input_path.open(encoding="utf-8", errors="replace") as text:
        total = sum(1 for _ in text)
    return [{"first": first, "lines": rows, "top": 0} for first in range(0, max(total, 1), rows)]


def merge_counts(ctx: TaskContext, parts: list[Path]) -> dict[str, object]:
    """Sum the pieces' ``word,count`` outputs into one, as the unsplit job writes it."""
    counts: collections.Counter[str] = collections.Counter()
    for part in parts:
        with part.open(newline="", encoding="utf-8") as rows:
            for word, count in list(csv.reader(rows))[1:]:
                counts[word] += int(count)
    top = ctx.params.get("params", {}).get("top", 0)
    return _write_counts(ctx, counts, top if type(top) is int and top > 0 else 0)


@conveyor.task("wordcount", split=split_lines, merge=merge_counts)
def wordcount(ctx: TaskContext) -> dict[str, object]:
    """Count words, case-folded; write ``word,count`` rows to ``ctx.write_path``. With
    params ``first`` and ``lines`` (a split job's piece), only those lines."""
    if ctx.input_path is None:
        raise BadInput("wordcount needs an input text file")
    min_length = _int_param(ctx, "min_length", 1)
    top = _int_param(ctx, "top", 0)
    first = _int_param(ctx, "first", 0)
    lines = _int_param(ctx, "lines", 0)
    counts: collections.Counter[str] = collections.Counter()
    try:
        with ctx.input_path.open(encoding="utf-8") as text:
            for number, line in enumerate(text):
                if number < first or (lines and number >= first + lines):
                    continue
                counts.update(
                    word
                    for word in (m.group().casefold() for m in _WORD.finditer(line))
                    if len(word) >= min_length
                )
    except UnicodeDecodeError as exc:
        # Bad input fails for good: retrying will not make the file UTF-8.
        raise BadInput(f"{ctx.job.input}: not UTF-8 text (byte {exc.start})") from None
    return _write_counts(ctx, counts, top)


def _write_counts(
    ctx: TaskContext, counts: collections.Counter[str], top: int
) -> dict[str, object]:
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if top:
        rows = rows[:top]
    # The worker publishes write_path atomically over the output once this returns.
    assert ctx.write_path is not None
    with ctx.write_path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["word", "count"])
        writer.writerows(rows)
    return {"words": sum(counts.values()), "distinct": len(counts), "rows": len(rows)}


def _int_param(ctx: TaskContext, name: str, default: int) -> int:
    value = ctx.params.get(name, default)
    if type(value) is not int or value < 0:
        raise BadInput(f"param {name!r} must be a non-negative integer, not {value!r}")
    return value
