"""The CSV job three ways: ``conveyor run``, the tutorial's script, polars' streaming pipeline.

Each contender runs as its own subprocess; its wall time, CPU time and peak RSS (that child's
``ru_maxrss`` from ``wait4``) are measured. Inputs are generated once into ``--data-dir``
(IDs 1..N, values with one decimal in 0..1000) and read from the page cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from benchmarks._table import Table

ROWS = 10_000_000
BIG_ROWS = 50_000_000
QUICK_ROWS = 1_000_000
SEED = 20240601
TUTORIAL_SCRIPT = Path(__file__).with_name("tutorial_batch_processing.py")

#: The polars baseline: the same job as a lazy streaming pipeline, a per-row pseudo-random
#: factor from a hash of the row index. It re-formats ID and Value and does no validation.
POLARS_BASELINE = """
import sys
import polars as pl

source, target = sys.argv[1:3]
bits = (pl.col("index").hash(seed=1) // 2048).cast(pl.Float64)
factor = 0.8 + 0.4 * bits / 2.0**53
(
    pl.scan_csv(source)
    .with_row_index()
    .with_columns(ProcessedValue=pl.col("Value") * factor)
    .drop("index")
    .sink_csv(target)
)
"""


@dataclass(frozen=True)
class Measured:
    """One subprocess run."""

    wall_s: float
    cpu_s: float
    max_rss_mb: float


def make_input(path: Path, rows: int) -> Path:
    """Write the benchmark input once (kept across runs); deterministic for a row count."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(rows)
    temp = path.with_name(path.name + ".partial")
    step = 1_000_000
    with temp.open("wb") as f:
        f.write(b"ID,Value\n")
        for start in range(0, rows, step):
            count = min(step, rows - start)
            tenths = rng.integers(0, 10_001, count)
            frame = pl.DataFrame(
                {"ID": np.arange(start + 1, start + count + 1), "a": tenths // 10, "b": tenths % 10}
            ).select("ID", pl.format("{}.{}", "a", "b").alias("Value"))
            frame.write_csv(f, include_header=False)
    temp.rename(path)
    return path


def measure(command: list[str], cwd: Path) -> Measured:
    """Run ``command`` to completion; raise if it fails."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        wall_s = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"{command} failed: {log.read().decode(errors='replace')[-2000:]}")
    return Measured(wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            lines += chunk.count(b"\n")
    return lines


def run_conveyor(source: Path, work: Path, repeat: int, rows: int) -> list[Measured]:
    """``conveyor run`` ``repeat`` times with one seed; every output must be the same bytes."""
    runs, digests = [], set()
    target = work / "conveyor-output.csv"
    command = [sys.executable, "-m", "conveyor", "run", str(source), "--output", str(target)]
    for _ in range(repeat):
        runs.append(measure([*command, "--seed", str(SEED)], work))
        if count_lines(target) != rows + 1:
            raise RuntimeError(f"conveyor wrote {count_lines(target)} lines, not {rows + 1}")
        digests.add(digest(target))
        target.unlink()
    if len(digests) != 1:
        raise RuntimeError("conveyor wrote different bytes for the same input and seed")
    return runs


def run_polars(source: Path, work: Path, repeat: int) -> list[Measured]:
    target = work / "polars-output.csv"
    command = [sys.executable, "-c", POLARS_BASELINE, str(source), str(target)]
    runs = [measure(command, work) for _ in range(repeat)]
    target.unlink()
    return runs


def run_tutorial(source: Path, work: Path) -> Measured:
    """The tutorial's script, unchanged, in a directory holding only ``input.csv``."""
    directory = work / "tutorial"
    directory.mkdir()
    try:
        os.link(source, directory / "input.csv")
    except OSError:
        shutil.copyfile(source, directory / "input.csv")
    try:
        return measure([sys.executable, str(TUTORIAL_SCRIPT)], directory)
    finally:
        shutil.rmtree(directory)


def row(name: str, runs: list[Measured], rows: int, size: int, reference_s: float) -> list[str]:
    best = min(runs, key=lambda r: r.wall_s)
    median = statistics.median(r.wall_s for r in runs)
    return [
        name,
        f"{best.wall_s:.2f}",
        f"{median:.2f}" if len(runs) > 1 else "-",
        f"{rows / best.wall_s / 1e6:.2f} M",
        f"{size / best.wall_s / 1e6:.0f}",
        f"{max(r.max_rss_mb for r in runs):.0f}",
        f"{best.cpu_s:.2f}",
        f"{best.wall_s / reference_s:.2f}x",
    ]


def run(args: argparse.Namespace | None = None) -> list[Table]:
    """The runner's entry point: the comparison table and the memory-flatness table."""
    quick = bool(getattr(args, "quick", False))
    repeat = int(getattr(args, "repeat", 3))
    data_dir = Path(getattr(args, "data_dir", None) or "bench-data")
    rows = int(getattr(args, "csv_rows", None) or (QUICK_ROWS if quick else ROWS))
    big_rows = QUICK_ROWS * 5 if quick else BIG_ROWS
    source = make_input(data_dir / f"csv-{rows}.csv", rows).resolve()
    size = source.stat().st_size
    with tempfile.TemporaryDirectory(prefix="bench-csv-", dir=data_dir) as temp:
        work = Path(temp).resolve()
        conveyor_runs = run_conveyor(source, work, repeat, rows)
        polars_runs = run_polars(source, work, repeat)
        tutorial = run_tutorial(source, work)
        big = make_input(data_dir / f"csv-{big_rows}.csv", big_rows).resolve()
        big_run = run_conveyor(big, work, 1, big_rows)[0]
    reference_s = min(r.wall_s for r in conveyor_runs)
    comparison = Table(
        title=f"CSV job, {rows:,} rows ({size / 1e6:.0f} MB in): best of {repeat} "
        "(the tutorial's script: 1 run)",
        columns=[
            "tool",
            "wall s",
            "median s",
            "rows/s",
            "input MB/s",
            "peak RSS MB",
            "CPU s",
            "time vs conveyor",
        ],
        rows=[
            row("conveyor run", conveyor_runs, rows, size, reference_s),
            row("polars streaming (scan_csv → sink_csv)", polars_runs, rows, size, reference_s),
            row("tutorial batch_processing.py", [tutorial], rows, size, reference_s),
        ],
        notes=[
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, polars {pl.__version__}; "
            "input in the page cache. conveyor validates every row, copies ID and Value byte "
            "for byte and fsyncs its output before the atomic rename; the others do not.",
        ],
    )
    big_size = big.stat().st_size
    best = min(conveyor_runs, key=lambda r: r.wall_s)
    flatness = Table(
        title="conveyor run: peak memory against input size",
        columns=["rows", "input MB", "wall s", "rows/s", "peak RSS MB"],
        rows=[
            [
                f"{n:,}",
                f"{b / 1e6:.0f}",
                f"{m.wall_s:.2f}",
                f"{n / m.wall_s / 1e6:.2f} M",
                f"{m.max_rss_mb:.0f}",
            ]
            for n, b, m in [(rows, size, best), (big_rows, big_size, big_run)]
        ],
    )
    return [comparison, flatness]


if __name__ == "__main__":
    for table in run(argparse.Namespace(quick="--quick" in sys.argv, repeat=3)):
        print(table.markdown() + "\n")
