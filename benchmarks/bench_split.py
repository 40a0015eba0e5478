"""One big CSV split into shards: ``conveyor run`` against the split job on 1 and 2 processes.

Every contender runs as its own subprocess (tree), measured from outside with ``wait4``
(wall time, CPU of the whole tree, peak RSS) and from inside (the job's own wall and CPU
time, without interpreter start-up and imports, which a long-lived worker pays once).

The split job is this module run as a driver: it starts a pool of P processes and waits until
each has imported polars (as a worker would have), then splits the input, runs the shards on
the pool, each process on one thread (``POLARS_MAX_THREADS=1``, ``workers=0``) publishing its
part atomically as a worker does, and merges the parts. Rows: ``CONVEYOR_BENCH_SPLIT_ROWS``
(default 20 million); rows per shard: ``CONVEYOR_BENCH_SPLIT_SHARD_ROWS`` (default an eighth).

Standalone: ``python -m benchmarks.bench_split [--quick] [--repeat N] [--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.synchronize import Barrier
from pathlib import Path

from benchmarks._table import Table
from benchmarks.bench_csv import POLARS_BASELINE, Measured, digest, make_input

from conveyor.csvjob.merge import merge_csv_parts
from conveyor.csvjob.shard import run_shard
from conveyor.csvjob.split import Shard, split_csv
from conveyor.storage import atomic_output

ROWS = 20_000_000
QUICK_ROWS = 1_000_000
SEED = 20240601
TARGET_SPEEDUP = 1.8
TARGET_OVERHEAD = 0.15
TARGET_RSS_MB = 200
HERE = Path(__file__).resolve().parent

#: ``conveyor run``'s work (process_csv), timed from inside: prints the job's wall and CPU.
WHOLE_FILE = """
import json, resource, sys, time
from pathlib import Path
from conveyor.csvjob.pipeline import process_csv, transform_csv
from conveyor.storage import atomic_output

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

source, target, seed, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cpu0, wall0 = cpu(), time.perf_counter()
if threads == "default":
    process_csv(source, target, seed)
else:
    with atomic_output(target) as temp:
        transform_csv(source, temp, seed, workers=0)
print(json.dumps({"job_s": time.perf_counter() - wall0, "job_cpu_s": cpu() - cpu0}))
"""


@dataclass(frozen=True)
class Run:
    """One contender's run: measured from outside, and what it reported from inside."""

    measured: Measured
    report: dict[str, float]

    @property
    def job_s(self) -> float:
        return self.report.get("job_s", self.measured.wall_s)

    @property
    def job_cpu_s(self) -> float:
        return self.report.get("job_cpu_s", self.measured.cpu_s)


# --- the driver (runs in its own process) -----------------------------------------------------


def drive(source: Path, output: Path, processes: int, shard_rows: int) -> dict[str, float]:
    """Split ``source``, run the shards on ``processes`` warm processes, merge; report."""
    os.environ["POLARS_MAX_THREADS"] = "1"  # read by polars when a pool process imports it
    context = get_context("spawn")
    ready = context.Barrier(processes + 1)
    pool = context.Pool(processes, initializer=_warm, initargs=(ready,))
    try:
        ready.wait()  # every process has started and imported polars, as a worker would have
        cpu_start, started = _self_cpu_s(), time.perf_counter()
        shards = split_csv(source, shard_rows)
        split_s, split_cpu_s = time.perf_counter() - started, _self_cpu_s() - cpu_start
        parts_dir = output.with_name(output.name + ".parts")
        parts_dir.mkdir()
        jobs = [(source, parts_dir / f"part-{s.index:05d}.csv", s) for s in shards]
        results = pool.starmap(_run_shard, jobs, chunksize=1)
        shards_s = time.perf_counter() - started - split_s
        merge_cpu_start, merge_started = _self_cpu_s(), time.perf_counter()
        merge_csv_parts([part for _, part, _ in jobs], output, threads=processes)
        merge_s, merge_cpu_s = time.perf_counter() - merge_started, _self_cpu_s() - merge_cpu_start
        job_s = time.perf_counter() - started
        parts_dir.rmdir()
    finally:
        pool.close()  # a clean exit, then reaped: their CPU counts in this process tree's
        pool.join()
    rss_by_pid: dict[int, float] = {}
    for pid, rss_mb, _ in results:
        rss_by_pid[pid] = max(rss_by_pid.get(pid, 0.0), rss_mb)
    shard_cpu_s = sum(cpu for _, _, cpu in results)
    return {
        "shards": len(shards),
        "job_s": job_s,
        "job_cpu_s": split_cpu_s + shard_cpu_s + merge_cpu_s,
        "split_s": split_s,
        "split_cpu_s": split_cpu_s,
        "shards_s": shards_s,
        "shard_cpu_s": shard_cpu_s,
        "merge_s": merge_s,
        "merge_cpu_s": merge_cpu_s,
        "worker_rss_mb": max(rss_by_pid.values()),
        "driver_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _warm(ready: Barrier) -> None:
    """A pool process's start: conveyor.csvjob (and polars) is imported with this module."""
    ready.wait()


def _run_shard(source: Path, part: Path, shard: Shard) -> tuple[int, float, float]:
    """In a pool process: run one shard into its part, published as a worker publishes."""
    before = _self_cpu_s()
    with atomic_output(part) as temp:
        run_shard(source, temp, SEED, shard, workers=0)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return os.getpid(), rss_mb, _self_cpu_s() - before


def _spin(count: int) -> None:
    """Pure CPU work, for the calibration."""
    total = 0
    for i in range(count):
        total += i


def calibrate(count: int = 20_000_000) -> float:
    """What 2 processes gain over 1 on pure CPU work right now: the ceiling of any speed-up.

    Other work on the machine shows up here: 2.0 on an idle 2-core machine, about 1.0 when
    another program keeps a core busy.
    """
    context = get_context("spawn")
    with context.Pool(2) as pool:
        pool.map(_spin, [1, 1], chunksize=1)  # both started and warm
        started = time.perf_counter()
        _spin(count)
        _spin(count)
        one = time.perf_counter() - started
        started = time.perf_counter()
        pool.map(_spin, [count, count], chunksize=1)
        two = time.perf_counter() - started
    return one / two


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the measurements ---------------------------------------------------------------------------


def measure(command: list[str], env: dict[str, str] | None = None) -> tuple[Measured, str]:
    """Run ``command`` from the repository root; its measurement and its standard output."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            command, cwd=HERE.parent, stdout=out, stderr=err, env={**os.environ, **(env or {})}
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall_s = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"{command} failed: {err.read().decode(errors='replace')[-2000:]}")
        out.seek(0)
        text = out.read().decode()
    return Measured(wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024), text


def run_whole(source: Path, target: Path, threads: str) -> Run:
    """``conveyor run``'s function on the whole file, with its default threads or one."""
    command = [sys.executable, "-c", WHOLE_FILE, str(source), str(target), str(SEED), threads]
    env = {"POLARS_MAX_THREADS": "1"} if threads == "one" else None
    measured, out = measure(command, env)
    return Run(measured, json.loads(out))


def run_split(source: Path, work: Path, processes: int, shard_rows: int) -> tuple[Run, Path]:
    """The split job on ``processes`` processes."""
    output = work / f"split-{processes}.csv"
    report_path = work / "report.json"
    command = [sys.executable, "-m", "benchmarks.bench_split", "--drive", str(source)]
    command += [str(output), str(processes), str(shard_rows), str(report_path)]
    measured, _ = measure(command)
    report = json.loads(report_path.read_text())
    report_path.unlink()
    return Run(measured, report), output


def check_same(path: Path, expected: str, what: str) -> None:
    if digest(path) != expected:
        raise RuntimeError(f"{what} wrote other bytes than conveyor run")
    path.unlink()


def run(args: argparse.Namespace | None = None) -> list[Table]:
    """The runner's entry point: the contenders, and the split job against its targets."""
    quick = bool(getattr(args, "quick", False))
    repeat = int(getattr(args, "repeat", 3))
    data_dir = Path(getattr(args, "data_dir", None) or "bench-data").resolve()
    rows = int(os.environ.get("CONVEYOR_BENCH_SPLIT_ROWS") or (QUICK_ROWS if quick else ROWS))
    shard_rows = int(os.environ.get("CONVEYOR_BENCH_SPLIT_SHARD_ROWS") or -(-rows // 8))
    source = make_input(data_dir / f"csv-{rows}.csv", rows).resolve()
    results: dict[str, list[Run]] = {}
    ceilings: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-split-", dir=data_dir) as temp:
        work = Path(temp)
        target = work / "run.csv"
        cli = [sys.executable, "-m", "conveyor", "run", str(source), "-o", str(target)]
        results["cli"] = [Run(measure([*cli, "--seed", str(SEED)])[0], {})]
        expected = digest(target)
        target.unlink()
        for _ in range(repeat):  # interleaved, so a burst of load hits every contender alike
            for threads in ("default", "one"):
                results.setdefault(threads, []).append(run_whole(source, target, threads))
                check_same(target, expected, f"the whole file on {threads} thread(s)")
            ceilings.append(calibrate())
            for processes in (1, 2):
                split, output = run_split(source, work, processes, shard_rows)
                results.setdefault(f"split{processes}", []).append(split)
                check_same(output, expected, f"the split job on {processes} processes")
            polars = [sys.executable, "-c", POLARS_BASELINE, str(source), str(target)]
            results.setdefault("polars", []).append(Run(measure(polars)[0], {}))
            target.unlink()
    return tables(rows, source.stat().st_size, shard_rows, repeat, results, ceilings)


def tables(
    rows: int,
    size: int,
    shard_rows: int,
    repeat: int,
    results: dict[str, list[Run]],
    ceilings: list[float],
) -> list[Table]:
    """The results as two markdown tables."""
    best = {name: min(runs, key=lambda r: r.job_s) for name, runs in results.items()}
    one, two = best["split1"], best["split2"]
    shards = int(one.report["shards"])

    def line(name: str, procs: str, r: Run, rss_mb: float, note: str = "") -> list[str]:
        return [
            name,
            procs,
            f"{r.job_s:.2f}",
            f"{r.job_cpu_s:.2f}",
            f"{r.measured.wall_s:.2f}",
            f"{r.measured.cpu_s:.2f}",
            f"{rss_mb:.0f}",
            f"{rows / r.job_s / 1e6:.2f} M",
            note,
        ]

    def split_line(procs: int, r: Run) -> list[str]:
        p = r.report
        note = (
            f"split {p['split_s']:.2f} s, shards {p['shards_s']:.2f} s, merge {p['merge_s']:.2f} s"
        )
        return line(f"split job, {shards} shards", str(procs), r, p["worker_rss_mb"], note)

    contenders = Table(
        title=f"Split job: {rows:,} rows ({size / 1e6:.0f} MB in), {shard_rows:,} rows per "
        f"shard, best of {repeat}",
        columns=[
            "run",
            "processes",
            "job s",
            "job CPU s",
            "process wall s",
            "process CPU s",
            "peak RSS MB",
            "rows/s",
            "notes",
        ],
        rows=[
            line("`conveyor run` (CLI)", "1", best["cli"], best["cli"].measured.max_rss_mb),
            line(
                "conveyor run's process_csv",
                "1",
                best["default"],
                best["default"].measured.max_rss_mb,
                "default threads",
            ),
            line(
                "the same on one thread",
                "1",
                best["one"],
                best["one"].measured.max_rss_mb,
                "POLARS_MAX_THREADS=1, workers=0",
            ),
            split_line(1, one),
            split_line(2, two),
            line(
                "polars streaming (scan_csv → sink_csv)",
                "1",
                best["polars"],
                best["polars"].measured.max_rss_mb,
            ),
        ],
        notes=[
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}; input in the page "
            "cache. job s / job CPU s: the work alone, timed inside (for the CLI and polars: the "
            "whole process). process wall s / CPU s: the whole process tree, with interpreter "
            "start-up and imports (for the split job, its driver and every pool process). The "
            "split job's peak RSS is its largest shard process's; its driver (split and merge) "
            f"peaked at {one.report['driver_rss_mb']:.0f} MB. Shards fsync their parts; the "
            "merge copies them in the kernel (copy_file_range, a thread per process) and fsyncs "
            "the output.",
        ],
    )
    speedup = one.job_s / two.job_s
    shard_speedup = one.report["shards_s"] / two.report["shards_s"]
    base_cpu = best["default"].job_cpu_s
    work_cpu = one.report["shard_cpu_s"] + one.report["merge_cpu_s"]
    rss = max(one.report["worker_rss_mb"], two.report["worker_rss_mb"])
    serial = (one.report["split_s"] + one.report["merge_s"]) / one.job_s
    verdict = Table(
        title="Split job against its targets",
        columns=["measure", "value", "target", "met"],
        rows=[
            [
                "speed-up, 1 → 2 processes: split + shards + merge",
                f"{speedup:.2f}x",
                f"≥ {TARGET_SPEEDUP}x",
                _met(speedup >= TARGET_SPEEDUP),
            ],
            [
                "speed-up, 1 → 2 processes: the shards alone",
                f"{shard_speedup:.2f}x",
                f"≥ {TARGET_SPEEDUP}x",
                _met(shard_speedup >= TARGET_SPEEDUP),
            ],
            ["share of the 1-process job that is serial (split, merge)", f"{serial:.0%}", "-", "-"],
            [
                "the machine's own speed-up, 1 → 2 processes, pure CPU (min-max)",
                f"{min(ceilings):.2f}x-{max(ceilings):.2f}x",
                "2.00x when idle",
                "-",
            ],
            [
                "CPU of shards + merge vs conveyor run's",
                f"{work_cpu / base_cpu - 1:+.1%}",
                f"≤ +{TARGET_OVERHEAD:.0%}",
                _met(work_cpu / base_cpu - 1 <= TARGET_OVERHEAD),
            ],
            [
                "CPU of split + shards + merge vs conveyor run's",
                f"{one.job_cpu_s / base_cpu - 1:+.1%}",
                "-",
                "-",
            ],
            [
                "same, vs conveyor run on one thread",
                f"{one.job_cpu_s / best['one'].job_cpu_s - 1:+.1%}",
                "-",
                "-",
            ],
            [
                "peak RSS per shard process",
                f"{rss:.0f} MB",
                f"≤ {TARGET_RSS_MB} MB",
                _met(rss <= TARGET_RSS_MB),
            ],
        ],
        notes=[
            "Speed-up is job time on 1 process over job time on 2. The split pass and the "
            "merge run once, whatever the number of processes, so they bound the speed-up "
            "(Amdahl): with a serial share s, 2 processes give at most 1 / (s + (1 - s) / 2).",
        ],
    )
    rounds = Table(
        title="Each round: the machine's pure-CPU speed-up, then the split job on 1 and 2",
        columns=["round", "machine 1 → 2", "job s, 1 process", "job s, 2 processes", "speed-up"],
        rows=[
            [
                str(i + 1),
                f"{ceiling:.2f}x",
                f"{a.job_s:.2f}",
                f"{b.job_s:.2f}",
                f"{a.job_s / b.job_s:.2f}x",
            ]
            for i, (ceiling, a, b) in enumerate(
                zip(ceilings, results["split1"], results["split2"], strict=True)
            )
        ],
    )
    return [contenders, verdict, rounds]


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--drive"]:
        source, output, processes, shard_rows, report = argv[1:6]
        result = drive(Path(source), Path(output), int(processes), int(shard_rows))
        Path(report).write_text(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_split", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 million rows: a smoke test")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is shown")
    parser.add_argument("--data-dir", type=Path, default=Path("bench-data"))
    for table in run(parser.parse_args(argv)):
        print(table.markdown() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
