"""A user task for conveyor: count the words of a text file.

    conveyor submit --task wordcount --import examples/wordcount_task.py notes.txt
    conveyor worker --import examples/wordcount_task.py --until-empty

The output is a CSV of ``word,count`` sorted by count, then word; the job's result (shown
by ``conveyor status JOB_ID``) holds the totals. Parameters: ``--param min_length=3``
ignores shorter words, ``--param top=10`` keeps only the most frequent ones.
"""

from __future__ import annotations

import collections
import csv
import re

import conveyor
from conveyor.errors import BadInput
from conveyor.tasks import TaskContext

#: Letters, with inner apostrophes (ASCII or U+2019) kept: "don't" is one word.
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


@conveyor.task("wordcount")
def wordcount(ctx: TaskContext) -> dict[str, object]:
    """Count words, case-folded; write ``word,count`` rows to ``ctx.write_path``."""
    if ctx.input_path is None:
        raise BadInput("wordcount needs an input text file")
    min_length = _int_param(ctx, "min_length", 1)
    top = _int_param(ctx, "top", 0)
    counts: collections.Counter[str] = collections.Counter()
    try:
        with ctx.input_path.open(encoding="utf-8") as text:
            for line in text:
                counts.update(
                    word
                    for word in (m.group().casefold() for m in _WORD.finditer(line))
                    if len(word) >= min_length
                )
    except UnicodeDecodeError as exc:
        # Bad input fails for good: retrying will not make the file UTF-8.
        raise BadInput(f"{ctx.job.input}: not UTF-8 text (byte {exc.start})") from None
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if top:
        rows = rows[:top]
    # The worker publishes write_path atomically over the output once this returns.
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
