"""Shared helpers of the csvjob tests: files, the ways to run the pipeline, whole vs split runs."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

from conveyor.csvjob.factors import row_factor
from conveyor.csvjob.merge import merge_csv_parts
from conveyor.csvjob.pipeline import transform_csv
from conveyor.csvjob.shard import run_shard
from conveyor.csvjob.split import SPLIT_BLOCK_BYTES, split_csv
from conveyor.errors import BadInput

#: Ways to run the same job; every one must write the same bytes and report the same error.
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "tiny-blocks": {"block_bytes": 5, "workers": 2},
    "small-blocks-inline": {"block_bytes": 64, "workers": 0},
    "one-worker": {"block_bytes": 200, "workers": 1},
    "exact-parser": {"fast": False},
}


TUTORIAL_INPUT = (
    "ID,Value\n1,100.5\n2,200.3\n3,150.2\n4,400.6\n5,300.1\n"
    "6,250.4\n7,350.7\n8,450.9\n9,500.0\n10,600.8\n"
)


SEED = 20240601


_counter = itertools.count()


def quote_minimal(field: str) -> str:
    return '"' + field.replace('"', '""') + '"' if re.search(r'[,"\r\n]', field) else field


def expected_output(rows: list[tuple[str, str]], seed: int) -> bytes:
    """What the job must write, computed the slow, obvious way."""
    lines = ["ID,Value,ProcessedValue\n"]
    for i, (ident, value) in enumerate(rows):
        processed = float(value) * row_factor(seed, i)
        lines.append(f"{quote_minimal(ident)},{value},{processed!r}\n")
    return "".join(lines).encode()


def new_file(directory: Path, content: bytes | str, name: str | None = None) -> Path:
    path = directory / (name or f"in{next(_counter)}.csv")
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def run(path: Path, seed: int = 7, **options: Any) -> bytes:
    """Transform ``path`` and return the output bytes."""
    out = path.with_name(f"{path.name}.{next(_counter)}.out")
    stats = transform_csv(path, out, seed, **options)
    data = out.read_bytes()
    assert stats.output_bytes == len(data)
    assert stats.input_bytes == path.stat().st_size
    return data


def outcome(path: Path, seed: int = 7, **options: Any) -> bytes | str:
    """The output bytes, or the error message."""
    try:
        return run(path, seed, **options)
    except BadInput as exc:
        return exc.message


def whole(path: Path, seed: int = SEED) -> bytes | str:
    """What ``conveyor run`` writes for ``path`` (the bytes), or its error message."""
    out = path.with_name(f"{path.name}.whole")
    try:
        transform_csv(path, out, seed)
    except BadInput as exc:
        return exc.message
    return out.read_bytes()


def split_run(
    path: Path,
    rows_per_shard: int,
    seed: int = SEED,
    *,
    split_block_bytes: int = SPLIT_BLOCK_BYTES,
    block_bytes: int = 1 << 20,
) -> bytes | str:
    """Split, run every shard, merge: the merged bytes, or the first failing shard's error."""
    directory = path.with_name(f"{path.name}.parts{next(_counter)}")
    directory.mkdir()
    parts = []
    try:
        for shard in split_csv(path, rows_per_shard, block_bytes=split_block_bytes):
            part = directory / f"part-{shard.index:05d}.csv"
            run_shard(path, part, seed, shard, block_bytes=block_bytes)
            parts.append(part)
    except BadInput as exc:
        return exc.message
    final = directory / "merged.csv"
    merge_csv_parts(parts, final)
    assert sorted(p.name for p in directory.iterdir()) == ["merged.csv"]
    return final.read_bytes()


def rows_text(count: int, newline: str = "\n", start: int = 0, *, quoted: bool = True) -> str:
    """``count`` data rows with quoted IDs (commas, doubled quotes) among plain ones."""
    rows = []
    for i in range(start, start + count):
        ident = f'"id,{i}"' if i % 7 == 3 else f'"say ""{i}"""' if i % 11 == 5 else f"id{i}"
        ident = ident if quoted else f"id{i}"
        rows.append(f"{ident},{i % 1000}.{i % 10}{newline}")
    return "".join(rows)
