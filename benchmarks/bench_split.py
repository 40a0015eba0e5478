"""One big CSV split into shards, as users run it: ``conveyor submit --split-rows N big.csv``,
then real ``conveyor worker --until-empty`` processes (1, then 2, each single-threaded),
against ``conveyor run`` (one process) and polars' streaming pipeline.

Every process is measured from outside with ``wait4`` (wall time, CPU, peak RSS); the
workers' JSON logs give the timeline (shards, the merge, when the output was published).
Rows: ``CONVEYOR_BENCH_SPLIT_ROWS`` (default 20 million); rows per shard:
``CONVEYOR_BENCH_SPLIT_SHARD_ROWS`` (default: 16 shards); worker batch size:
``CONVEYOR_BENCH_SPLIT_BATCH`` (default 1: one shard a round, so that the table measures
how the shards scale and not how the prefetch splits 16 jobs; the worker's own default
holds about a second of work ahead). ``CONVEYOR_BENCH_SPLIT_IN_STORAGE=1``: the input is
already on the storage (``submit --in-storage``), as a big file put on EFS beforehand is: no
copy at submit.

Standalone: ``python -m benchmarks.bench_split [--quick] [--repeat N] [--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchmarks._table import Table
from benchmarks.bench_csv import POLARS_BASELINE, Measured, digest, make_input

ROWS = 20_000_000
QUICK_ROWS = 1_000_000
SHARDS = 16
SEED = 20240601
TARGET_SPEEDUP = 1.8
TARGET_OVERHEAD = 0.15
TARGET_RSS_MB = 200
HERE = Path(__file__).resolve().parent
CONVEYOR = [sys.executable, "-m", "conveyor"]
#: Each worker on one core: polars' pool is one thread; csv-shard parses on the calling thread.
ONE_THREAD = {"POLARS_MAX_THREADS": "1"}


@dataclass
class SplitRun:
    """The split job on W workers: the submit, each worker, and the workers' timeline."""

    workers: int
    submit: Measured
    each: list[Measured]
    workers_wall_s: float  # from the workers' start to the last one's exit
    to_output_s: float  # from the submit's start to the merged output's publication
    workers_to_output_s: float  # from the workers' start to the same
    startup_s: float  # from the workers' start to the first shard's
    shards_s: float  # first shard started -> last shard finished
    merge_s: float
    jobs_by_worker: list[int] = field(default_factory=list)

    @property
    def cpu_s(self) -> float:
        return self.submit.cpu_s + sum(m.cpu_s for m in self.each)

    @property
    def rss_mb(self) -> float:
        return max(m.max_rss_mb for m in self.each)


def measure(command: list[str], env: dict[str, str] | None = None) -> tuple[Measured, str]:
    """Run ``command`` from the repository root; its measurement and its standard output."""
    return _reap(_start(command, env))


#: Runs a command and writes its wall time, CPU and peak RSS (wait4) to a file. The
#: measured command is its child, not the bench's: a child's peak RSS starts at its
#: parent's (the fork's image counts until exec), and this launcher is small.
LAUNCH = """
import json, os, subprocess, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
process = subprocess.Popen(command)
_, status, usage = os.wait4(process.pid, 0)
process.returncode = code = os.waitstatus_to_exitcode(status)
with open(report, "w") as f:
    json.dump([time.perf_counter() - started, usage.ru_utime + usage.ru_stime,
               usage.ru_maxrss / 1024, code], f)
"""


@dataclass
class _Child:
    command: list[str]
    process: subprocess.Popen[bytes]
    report: Path
    out: IO[bytes]
    err: IO[bytes]


def _start(command: list[str], env: dict[str, str] | None, log: Path | None = None) -> _Child:
    """Start ``command``; its standard error goes to ``log`` if given (kept), else a temp."""
    # Closed by _reap, which reads them once the child has exited.
    out = tempfile.TemporaryFile()  # noqa: SIM115
    err = log.open("w+b") if log else tempfile.TemporaryFile()  # noqa: SIM115
    fd, report = tempfile.mkstemp(prefix="bench-split-", suffix=".json")
    os.close(fd)
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, report, *command],
        cwd=HERE.parent,
        stdout=out,
        stderr=err,
        env={**os.environ, **(env or {})},
    )
    return _Child(command, process, Path(report), out, err)


def _reap(child: _Child) -> tuple[Measured, str]:
    """Wait for ``child``; its measurement (from the launcher) and its standard output."""
    child.process.wait()
    wall_s, cpu_s, rss_mb, code = json.loads(child.report.read_text())
    child.report.unlink()
    with child.out, child.err:
        child.out.seek(0)
        child.err.seek(0)
        out, err = child.out.read().decode(), child.err.read().decode(errors="replace")
    if code != 0 or child.process.returncode != 0:
        raise RuntimeError(f"{child.command} exited {code}: {err[-2000:]}")
    return Measured(wall_s, cpu_s, rss_mb), out


def conveyor_run(source: Path, target: Path) -> Measured:
    """``conveyor run SOURCE --seed S``: the one-process job users compare against."""
    return measure([*CONVEYOR, "run", str(source), "-o", str(target), "--seed", str(SEED)])[0]


def split_job(
    source: Path, storage: Path, workers: int, shard_rows: int, batch: int, in_storage: bool
) -> tuple[SplitRun, Path]:
    """Submit ``source`` split, drain it with ``workers`` worker processes; the merged file.

    ``in_storage``: the input is already on the storage (hard-linked there first, as a big
    file put on EFS beforehand would be) and submitted with ``--in-storage``: no copy.
    """
    env = {"CONVEYOR_STORAGE": str(storage)}
    submit_cmd = [*CONVEYOR, "submit", "--json", "--seed", str(SEED), "--split-rows"]
    given = str(source)
    if in_storage:
        (storage / "inputs" / "bench").mkdir(parents=True)
        os.link(source, storage / "inputs" / "bench" / source.name)
        submit_cmd.insert(-1, "--in-storage")
        given = f"inputs/bench/{source.name}"
    started = time.time()
    submit, out = measure([*submit_cmd, str(shard_rows), given], env)
    group_id = json.loads(out)["group_id"]
    logs = [storage.parent / f"{storage.name}-worker{i}.log" for i in range(workers)]
    command = [*CONVEYOR, "worker", "--until-empty", "--batch-size", str(batch)]
    processes = [_start(command, {**env, **ONE_THREAD}, log) for log in logs]
    workers_started, workers_epoch = time.perf_counter(), time.time()
    results: list[tuple[Measured, str]] = [(Measured(0, 0, 0), "")] * workers

    def reap(i: int) -> None:
        results[i] = _reap(processes[i])

    threads = [threading.Thread(target=reap, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    workers_wall_s = time.perf_counter() - workers_started
    events = [_events(log) for log in logs]
    shards = [e for log in events for e in log if e.get("task") == "csv-shard"]
    merges = [e for log in events for e in log if e.get("task") == "csv-merge"]
    merged = [e for e in merges if e["action"] == "succeeded"]
    if len(merged) != 1:
        raise RuntimeError(f"expected one merge, the logs show {len(merged)}")
    starts = [e["ts"] for e in shards if e["action"] == "started"]
    ends = [e["ts"] for e in shards if e["action"] == "succeeded"]
    run = SplitRun(
        workers=workers,
        submit=submit,
        each=[measured for measured, _ in results],
        workers_wall_s=workers_wall_s,
        to_output_s=merged[0]["ts"] - started,
        workers_to_output_s=merged[0]["ts"] - workers_epoch,
        startup_s=min(starts) - workers_epoch,
        shards_s=max(ends) - min(starts),
        merge_s=float(merged[0]["duration_s"]),
        jobs_by_worker=[
            sum(1 for e in log if e.get("action") == "succeeded" and e.get("task") == "csv-shard")
            for log in events
        ],
    )
    for log in logs:
        log.unlink()
    output = next((storage / "outputs" / group_id).glob("*.csv"))
    return run, output


def _events(log: Path) -> list[dict[str, Any]]:
    """The job events of a worker's JSON log."""
    events = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("action") in ("started", "succeeded") and "task" in event:
                events.append(event)
    return events


def idle_costs(work: Path) -> tuple[float, float]:
    """CPU seconds that do not grow with the rows: ``conveyor run`` of a header-only file, and
    a worker draining the split group of one (start-up, polars' import, an empty shard and its
    merge): what every process pays once, taken out to compare the work itself."""
    empty = work / "empty.csv"
    empty.write_text("ID,Value\n")
    run = min(conveyor_run(empty, work / "empty-out.csv").cpu_s for _ in range(2))
    worker = []
    for i in range(2):
        split, _ = split_job(empty, work / f"idle-{i}", 1, 1, 1, in_storage=False)
        worker.append(split.each[0].cpu_s)
    return run, min(worker)


#: Two kernels that say what 2 processes can gain on this machine at all: one bound by the
#: CPU (a Python loop), one by memory bandwidth (numpy streaming through 32 MB arrays, as
#: the CSV job streams its blocks).
_CEILING_KERNELS = {
    "a CPU-bound loop": "x = 0\nfor i in range(15_000_000):\n    x += i",
    "a memory-bound numpy kernel": (
        "import numpy as np\na = np.random.default_rng(1).random(4_000_000)\n"
        "for _ in range(150):\n    (a * 1.0001).sum()"
    ),
}


def machine_ceiling(repeat: int) -> dict[str, float]:
    """Speed-up of 2 processes over 1 running each kernel (best of ``repeat``): the most the
    split job could gain here if it had no serial part."""
    found = {}
    for name, code in _CEILING_KERNELS.items():
        command = [sys.executable, "-c", code]
        alone = min(_wall(command, 1) for _ in range(repeat))
        paired = min(_wall(command, 2) for _ in range(repeat))
        found[name] = 2 * alone / paired
    return found


def _wall(command: list[str], copies: int) -> float:
    started = time.perf_counter()
    processes = [subprocess.Popen(command) for _ in range(copies)]
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError(f"{command} failed")
    return time.perf_counter() - started


def run(args: argparse.Namespace | None = None) -> list[Table]:
    """The runner's entry point: the contenders, and the split job against its targets."""
    quick = bool(getattr(args, "quick", False))
    repeat = int(getattr(args, "repeat", 3))
    data_dir = Path(getattr(args, "data_dir", None) or "bench-data").resolve()
    rows = int(os.environ.get("CONVEYOR_BENCH_SPLIT_ROWS") or (QUICK_ROWS if quick else ROWS))
    shard_rows = int(os.environ.get("CONVEYOR_BENCH_SPLIT_SHARD_ROWS") or -(-rows // SHARDS))
    batch = int(os.environ.get("CONVEYOR_BENCH_SPLIT_BATCH") or 1)
    in_storage = os.environ.get("CONVEYOR_BENCH_SPLIT_IN_STORAGE", "") not in ("", "0")
    source = make_input(data_dir / f"csv-{rows}.csv", rows).resolve()
    load = os.getloadavg()
    cli: list[Measured] = []
    polars: list[Measured] = []
    splits: dict[int, list[SplitRun]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-split-", dir=data_dir) as temp:
        work = Path(temp)
        idle_run, idle_worker = idle_costs(work)
        target = work / "run.csv"
        for round_ in range(repeat):  # interleaved, so a burst of load hits every contender
            cli.append(conveyor_run(source, target))
            expected = digest(target)
            target.unlink()
            for workers in (1, 2):
                storage = work / f"storage-{round_}-{workers}"
                split, output = split_job(source, storage, workers, shard_rows, batch, in_storage)
                if digest(output) != expected:
                    raise RuntimeError(f"the split job on {workers} workers wrote other bytes")
                splits[workers].append(split)
                subprocess.run(["rm", "-rf", str(storage)], check=True)
            polars_cmd = [sys.executable, "-c", POLARS_BASELINE, str(source), str(target)]
            polars.append(measure(polars_cmd)[0])
            target.unlink()
    ceiling = machine_ceiling(1 if quick else repeat)
    return tables(
        rows,
        source.stat().st_size,
        shard_rows,
        f"workers --batch-size {batch}" + (", input already on the storage" if in_storage else ""),
        repeat,
        (cli, polars, splits),
        (idle_run, idle_worker),
        (load, os.getloadavg()),
        ceiling,
    )


def tables(
    rows: int,
    size: int,
    shard_rows: int,
    how: str,
    repeat: int,
    results: tuple[list[Measured], list[Measured], dict[int, list[SplitRun]]],
    idle: tuple[float, float],
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
    ceiling: dict[str, float],
) -> list[Table]:
    """The results as markdown tables."""
    cli_runs, polars_runs, splits = results
    cli = min(cli_runs, key=lambda m: m.wall_s)
    polars = min(polars_runs, key=lambda m: m.wall_s)
    one = min(splits[1], key=lambda r: r.to_output_s)
    two = min(splits[2], key=lambda r: r.to_output_s)
    shards = -(-rows // shard_rows)

    def plain(name: str, m: Measured) -> list[str]:
        rate = f"{rows / m.wall_s / 1e6:.2f} M"
        return [name, "1", f"{m.wall_s:.2f}", "-", f"{m.cpu_s:.2f}", f"{m.max_rss_mb:.0f}", rate]

    def split(r: SplitRun) -> list[str]:
        return [
            f"submit --split-rows {shard_rows:,} + {r.workers} worker(s) --until-empty",
            str(r.workers),
            f"{r.to_output_s:.2f}",
            f"{r.workers_wall_s + r.submit.wall_s:.2f}",
            f"{r.cpu_s:.2f}",
            f"{r.rss_mb:.0f}",
            f"{rows / r.to_output_s / 1e6:.2f} M",
        ]

    contenders = Table(
        title=f"Split job: {rows:,} rows ({size / 1e6:.0f} MB), {shards} shards of "
        f"{shard_rows:,} rows, {how}, best of {repeat}",
        columns=[
            "run",
            "processes",
            "wall s to output",
            "wall s to exit",
            "CPU s",
            "peak RSS MB",
            "rows/s",
        ],
        rows=[
            plain("`conveyor run` (CLI)", cli),
            split(one),
            split(two),
            plain("polars streaming (scan_csv → sink_csv)", polars),
        ],
        notes=[
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
            f"{loads[0][0]:.1f} before and {loads[1][0]:.1f} after (1 min). Input in the page "
            "cache. Everything is a real process measured from outside (wait4): the split "
            "job's CPU is its submit's plus every worker's, start-up included; its peak RSS is "
            "the largest worker's. Wall s to output: from the submit's start to the merged "
            "output's publication (the merge job's log line); to exit: the submit, then the "
            "workers until the last one exits (--until-empty adds one empty 2 s poll).",
        ],
    )
    fixed_cpu = idle[1] * 2
    work_one = sum(m.cpu_s for m in one.each) - idle[1]
    work_run = cli.cpu_s - idle[0]
    speedup = one.to_output_s / two.to_output_s
    workers_speedup = one.workers_to_output_s / two.workers_to_output_s
    shard_speedup = one.shards_s / two.shards_s
    serial = (one.submit.wall_s + one.merge_s) / one.to_output_s
    rss = max(one.rss_mb, two.rss_mb)
    verdict = Table(
        title="Split job against its targets",
        columns=["measure", "value", "target", "met"],
        rows=[
            [
                "speed-up 1 → 2 workers, submit start to merged output",
                f"{speedup:.2f}x",
                f"≥ {TARGET_SPEEDUP}x",
                _met(speedup >= TARGET_SPEEDUP),
            ],
            [
                "speed-up 1 → 2 workers, workers' start to merged output",
                f"{workers_speedup:.2f}x",
                f"≥ {TARGET_SPEEDUP}x",
                _met(workers_speedup >= TARGET_SPEEDUP),
            ],
            [
                "speed-up 1 → 2 workers, the shards alone",
                f"{shard_speedup:.2f}x",
                f"≥ {TARGET_SPEEDUP}x",
                _met(shard_speedup >= TARGET_SPEEDUP),
            ],
            [
                "serial share of the 1-worker job: submit (copy + split) and merge",
                f"{serial:.0%} ({one.submit.wall_s:.2f} s + {one.merge_s:.2f} s)",
                "-",
                "-",
            ],
            [
                "CPU of shards + merge vs conveyor run's (start-up of each process taken out)",
                f"{work_one / work_run - 1:+.1%}",
                f"≤ +{TARGET_OVERHEAD:.0%}",
                _met(work_one / work_run - 1 <= TARGET_OVERHEAD),
            ],
            [
                "CPU of the whole split job (submit, 1 worker, start-ups) vs conveyor run's",
                f"{one.cpu_s / cli.cpu_s - 1:+.1%}",
                "-",
                "-",
            ],
            [
                "Amdahl's bound for 2 workers with that serial share",
                f"{1 / (serial + (1 - serial) / 2):.2f}x",
                "-",
                "-",
            ],
            *(
                [f"this machine: 2 processes of {name} against 1", f"{gain:.2f}x", "-", "-"]
                for name, gain in ceiling.items()
            ),
            ["peak RSS per worker", f"{rss:.0f} MB", f"≤ {TARGET_RSS_MB} MB", _met(rss <= 200)],
        ],
        notes=[
            f"Start-up CPU, measured apart: conveyor run on a header-only file {idle[0]:.2f} s, "
            f"an idle worker --until-empty {idle[1]:.2f} s ({fixed_cpu:.2f} s for two). The "
            "submit (copy of the input onto the storage, split pass) and the merge run once "
            "whatever the number of workers, so they bound the speed-up (Amdahl): with a "
            "serial share s, 2 workers give at most 1 / (s + (1 - s) / 2).",
        ],
    )
    rounds = Table(
        title="Each round: where the time goes",
        columns=[
            "round",
            "workers",
            "submit s",
            "submit CPU s",
            "worker start s",
            "shards s",
            "merge s",
            "to output s",
            "shards per worker",
            "peak RSS MB per worker",
        ],
        rows=[
            [
                str(i + 1),
                str(r.workers),
                f"{r.submit.wall_s:.2f}",
                f"{r.submit.cpu_s:.2f}",
                f"{r.startup_s:.2f}",
                f"{r.shards_s:.2f}",
                f"{r.merge_s:.2f}",
                f"{r.to_output_s:.2f}",
                " + ".join(map(str, r.jobs_by_worker)),
                " + ".join(f"{m.max_rss_mb:.0f}" for m in r.each),
            ]
            for i in range(repeat)
            for r in (splits[1][i], splits[2][i])
        ],
    )
    return [contenders, verdict, rounds]


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_split", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 million rows: a smoke test")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is shown")
    parser.add_argument("--data-dir", type=Path, default=Path("bench-data"))
    for table in run(parser.parse_args(argv)):
        print(table.markdown() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
