"""The job ledger at scale: ledgers of 100k, 1M and 10M finished jobs on SQLite and on
PostgreSQL, written through the ledger contract in this run, then the reads users make.

For each backend one ledger grows through the sizes (jobs are added further back in time,
so the last hour holds the same activity at every size), and at each size the real CLI
runs as subprocesses against it: ``conveyor status``, ``status --state failed``,
``status JOB``, and ``conveyor dashboard``'s first ``/api/overview``, each timed (wall
seconds) with its peak RSS. Sizes: ``CONVEYOR_BENCH_LEDGER_SIZES`` (e.g. ``10k,100k``);
backends: ``CONVEYOR_BENCH_LEDGER_BACKENDS`` (``sqlite,postgresql``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.job_ids import new_job_id
from conveyor.jobs import JobState
from conveyor.ledger import Ledger, LedgerEvent, open_ledger
from conveyor.queues import open_queue
from conveyor.settings import Settings, default_queue_url

#: The sizes of a full run, and of ``--quick``.
SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (10_000, 100_000)
BACKENDS = ("sqlite", "postgresql")
#: Jobs per ``record_many`` call: a submitter's batch of queued events, then the workers'
#: running and outcome events of the same jobs (two events a job).
BATCH_JOBS = 10_000
#: One job in this many fails (``status --state failed`` lists them).
FAIL_EVERY = 100
#: Jobs finish this far apart, the newest just now: the dashboard's one-hour window holds
#: the same 3,600 jobs (10,800 state changes) at every size.
SPACING_S = 1.0
#: The targets of issue 10, checked at the largest size.
TARGET_STATUS_S = 0.3
TARGET_STATUS_MB = 120.0
TARGET_GROWTH = 1.5
TARGET_OVERVIEW_S = 0.5
COMMAND_TIMEOUT_S = 600.0


@dataclass
class Sample:
    """One measured command: wall seconds and peak RSS (MB)."""

    seconds: float
    rss_mb: float

    def __str__(self) -> str:
        return f"{_seconds(self.seconds)}, {self.rss_mb:.0f} MB"


@dataclass
class Results:
    """Everything measured on one backend."""

    backend: str
    samples: dict[tuple[str, int], Sample] = field(default_factory=dict)
    build_s: dict[int, float] = field(default_factory=dict)
    disk_mb: dict[int, float] = field(default_factory=dict)


# --- sizes and numbers -------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"10k,100k,1M"`` as job counts, ascending.

    Raises:
        ValueError: a size is not a positive number with an optional k/M suffix.
    """
    sizes = []
    for item in text.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", item)
        if not match:
            raise ValueError(f"bad ledger size {item!r}: use e.g. 10k, 100k, 1M, 10M")
        scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
        sizes.append(int(float(match.group(1)) * scale))
    if not sizes or min(sizes) < 1:
        raise ValueError("ledger sizes must be positive")
    return tuple(sorted(set(sizes)))


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _size(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


# --- a PostgreSQL server on 127.0.0.1 -----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian's layout)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    return found[-1].parent


def _as_postgres(argv: list[str]) -> list[str]:
    """The server refuses to run as root: run its tools as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def postgres_server(base: Path) -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1 and a database in it; yields its URL."""
    pg_bin = _pg_bin()
    data = base / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres(
            [
                *(str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "conveyor"),
                *("-E", "UTF8", "--locale", "C.UTF-8", "--no-sync"),
            ]
        ),
        check=True,
        capture_output=True,
    )
    ctl = [str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log")]
    options = f"-h 127.0.0.1 -p {port} -k {data} -c max_connections=200"
    subprocess.run(_as_postgres([*ctl, "-o", options, "-w", "start"]), check=True)
    try:
        import psycopg

        with psycopg.connect(
            f"postgresql://conveyor@127.0.0.1:{port}/postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE bench")
        yield f"postgresql://conveyor@127.0.0.1:{port}/bench"
    finally:
        subprocess.run(_as_postgres([*ctl, "-m", "fast", "-w", "stop"]), check=False)


# --- writing the ledger ------------------------------------------------------------------


def add_jobs(ledger: Ledger, first: int, last: int, now: float) -> list[str]:
    """Record jobs number ``first`` to ``last - 1`` as finished (job n finished
    ``n * SPACING_S`` before ``now``), through ``record_many`` in large batches: a batch
    of queued events as a submitter writes them, then the running and outcome events as
    workers do. Returns the ids of the first and the middle job written."""
    picked: list[str] = []
    for start in range(first, last, BATCH_JOBS):
        numbers = range(start, min(start + BATCH_JOBS, last))
        ids = [new_job_id(now - n * SPACING_S - 1.0) for n in numbers]
        if start == first or (first + last) // 2 in numbers:
            picked.append(ids[0])
        queued = []
        done = []
        for n, job_id in zip(numbers, ids, strict=True):
            finished = now - n * SPACING_S
            queued.append(
                LedgerEvent(
                    job_id,
                    JobState.QUEUED,
                    at=finished - 1.0,
                    task="csv-process",
                    input=f"inputs/{job_id}/part-{n}.csv",
                    output=f"outputs/{job_id}/part-{n}.csv",
                    seed=n,
                    source=f"part-{n}.csv",
                )
            )
            done.append(LedgerEvent(job_id, JobState.RUNNING, 1, at=finished - 0.5, worker="w-1"))
            if n % FAIL_EVERY == 0:
                done.append(
                    LedgerEvent(
                        job_id,
                        JobState.FAILED,
                        1,
                        at=finished,
                        error=f"part-{n}.csv:2: Value 'abc' is not a number",
                    )
                )
            else:
                done.append(
                    LedgerEvent(job_id, JobState.SUCCEEDED, 1, at=finished, result={"rows": 1000})
                )
        ledger.record_many(queued)
        ledger.record_many(done)
    return picked


def _vacuum(url: str) -> None:
    """What autovacuum does soon after a bulk load (statistics for the planner, the
    visibility map for index-only scans), done now so the reads measure a settled
    database rather than one still being vacuumed behind them."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def _disk_mb(path: Path) -> float:
    total = 0
    for parent, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
    return total / 1e6


# --- measuring the commands -----------------------------------------------------------------


#: Runs a command as its child and reports the child's wall seconds and peak RSS. A child
#: started straight from this process would report at least this process's own RSS:
#: Linux counts the memory a process had before ``exec`` in its peak, so the command is
#: started from this small wrapper instead.
_WRAPPER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(report, "w") as out:
    out.write(f"{seconds} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[Sample, str]:
    """Run a command to its end; its wall time, its own peak RSS, its stdout.

    Raises:
        RuntimeError: it failed.
    """
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report"
        done = subprocess.run(
            [sys.executable, "-S", "-c", _WRAPPER, str(report), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        seconds_text, rss_kb, code = report.read_text().split()
    if done.returncode != 0 or code != "0":
        raise RuntimeError(f"{' '.join(argv)} exited {code}: {done.stderr.strip()}")
    return Sample(float(seconds_text), int(rss_kb) / 1024), done.stdout


def measure_overview(env: dict[str, str]) -> Sample:
    """Start ``conveyor dashboard``, time its first ``/api/overview``; its peak RSS."""
    argv = [sys.executable, "-m", "conveyor", "dashboard", "--port", "0"]
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://\S+/", line)
        if not match:
            raise RuntimeError(f"the dashboard printed no URL: {line!r}")
        started = time.perf_counter()
        with urllib.request.urlopen(match.group(0) + "api/overview", timeout=600) as response:
            body = response.read()
        seconds = time.perf_counter() - started
        if b'"summary"' not in body:
            raise RuntimeError(f"no overview: {body[:200]!r}")
        return Sample(seconds, _peak_rss_mb(process.pid))
    finally:
        process.terminate()
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()


def _peak_rss_mb(pid: int) -> float:
    """A running process's peak RSS so far (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def best_of(repeat: int, measure: Callable[[], Sample]) -> Sample:
    """The fastest of ``repeat`` runs (peak RSS is that of the same run)."""
    return min((measure() for _ in range(max(1, repeat))), key=lambda s: s.seconds)


def measure_size(
    results: Results, size: int, env: dict[str, str], job_ids: Sequence[str], repeat: int
) -> None:
    """Time the CLI's reads of the ledger as it is now."""
    conveyor = [sys.executable, "-m", "conveyor"]

    def command(*args: str, expect: str) -> Callable[[], Sample]:
        def run() -> Sample:
            sample, stdout = run_measured([*conveyor, *args], env)
            if expect not in stdout:
                raise RuntimeError(f"conveyor {' '.join(args)}: {expect!r} not in {stdout!r}")
            return sample

        return run

    deep = job_ids[-1]
    results.samples["status", size] = best_of(repeat, command("status", expect="succeeded"))
    results.samples["status --state failed", size] = best_of(
        repeat, command("status", "--state", "failed", expect="failed")
    )
    results.samples["status JOB", size] = best_of(repeat, command("status", deep, expect=deep))
    results.samples["dashboard /api/overview", size] = best_of(
        repeat, lambda: measure_overview(env)
    )


# --- one backend ------------------------------------------------------------------------------


def bench_backend(
    backend: str, sizes: Sequence[int], base: Path, repeat: int, log: Callable[[str], None]
) -> Results:
    """Grow one ledger through ``sizes`` on ``backend`` and measure at each size."""
    results = Results(backend)
    storage = base / "storage"
    storage.mkdir()
    open_queue(default_queue_url(storage), Settings(storage=storage)).close()
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            url = stack.enter_context(postgres_server(base))
        else:
            url = f"sqlite:///{base / 'ledger.db'}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "CONVEYOR_STORAGE": str(storage),
            "CONVEYOR_LEDGER_URL": url,
        }
        now = time.time()
        built = 0
        job_ids: list[str] = []
        with open_ledger(url, writer="bench") as ledger:
            ledger.record_worker_stats("w-1", {"ReceiveMessage": 12, "DeleteMessageBatch": 7})
            for size in sizes:
                started = time.perf_counter()
                job_ids += add_jobs(ledger, built, size, now)
                results.build_s[size] = time.perf_counter() - started
                built = size
                if backend == "postgresql":
                    _vacuum(url)
                results.disk_mb[size] = _disk_mb(base / ("pgdata" if backend != "sqlite" else ""))
                log(f"{backend}: {size:,} jobs written in {results.build_s[size]:.0f} s; measuring")
                measure_size(results, size, env, job_ids, repeat)
    return results


# --- the tables ----------------------------------------------------------------------------------


def _targets(what: str) -> tuple[float, float | None]:
    if what.startswith("status"):
        return TARGET_STATUS_S, TARGET_STATUS_MB
    return TARGET_OVERVIEW_S, None


def tables(all_results: Sequence[Results], sizes: Sequence[int]) -> list[Any]:
    """The reads table (one row per backend and command) and the build table."""
    from benchmarks._table import Table

    first, last = sizes[0], sizes[-1]
    columns = ["backend", "command", *(_size(n) for n in sizes)]
    if len(sizes) > 1:
        columns.append(f"growth {_size(first)}→{_size(last)} (time, RSS)")
    columns.append(f"target at {_size(last)}")
    rows: list[Sequence[object]] = []
    for results in all_results:
        for what in dict.fromkeys(key[0] for key in results.samples):
            cells: list[object] = [results.backend, f"`{what}`"]
            cells += [
                str(results.samples[what, n]) if (what, n) in results.samples else "not run"
                for n in sizes
            ]
            ran = [n for n in sizes if (what, n) in results.samples]
            a, b = results.samples[what, ran[0]], results.samples[what, ran[-1]]
            growth = b.seconds / a.seconds
            if len(sizes) > 1:
                cells.append(f"x{growth:.2f}, x{b.rss_mb / a.rss_mb:.2f}")
            limit_s, limit_mb = _targets(what)
            met = b.seconds <= limit_s and (limit_mb is None or b.rss_mb <= limit_mb)
            if what.startswith("status") and len(sizes) > 1:
                met = met and growth <= TARGET_GROWTH
            target = f"≤ {_seconds(limit_s)}" + (f", ≤ {limit_mb:.0f} MB" if limit_mb else "")
            cells.append(f"{target}: {'met' if met else '**not met**'}")
            rows.append(cells)
    reads = Table(
        title="Job ledger reads: the CLI and the dashboard as subprocesses, best of the runs",
        columns=columns,
        rows=rows,
        notes=[
            "Wall seconds of the whole command (interpreter start included) and its peak RSS;"
            " the dashboard: its first `/api/overview` after start, and the server's peak RSS.",
            f"Targets (issue 10): `status` ≤ {TARGET_STATUS_S} s and ≤ {TARGET_STATUS_MB:.0f} MB"
            f" at 10M jobs, growing at most x{TARGET_GROWTH} from 100k to 10M; the dashboard's"
            f" overview ≤ {TARGET_OVERVIEW_S} s at 10M.",
            f"Every job finished (1 in {FAIL_EVERY} failed), {SPACING_S:.0f} s apart back from"
            " now: the last hour (the dashboard's chart) holds the same 3,600 jobs at every size.",
        ],
    )
    build_rows: list[Sequence[object]] = []
    for results in all_results:
        previous = 0
        for n in sizes:
            if n not in results.build_s:
                continue
            added = n - previous
            seconds = results.build_s[n]
            build_rows.append(
                [
                    results.backend,
                    f"{_size(previous)}→{_size(n)}" if previous else _size(n),
                    f"{seconds:.1f} s",
                    f"{seconds / added * 1e6:.0f} µs",
                    f"{results.disk_mb[n]:,.0f} MB",
                ]
            )
            previous = n
    build = Table(
        title="Building the ledgers through the contract (record_many, 10,000 jobs a call)",
        columns=["backend", "jobs", "written in", "per job (3 events)", "on disk"],
        rows=build_rows,
        notes=[
            "Per batch: the submitter's queued events in one call, then the workers' running"
            " and outcome events in another, as conveyor writes them. PostgreSQL: a"
            " `VACUUM (ANALYZE)` after each size (what autovacuum does after a bulk load)."
        ],
    )
    return [reads, build]


def run(args: argparse.Namespace | None = None) -> list[Any]:
    """The benchmark runner's entry point."""
    quick = bool(getattr(args, "quick", False))
    sizes_text = os.environ.get("CONVEYOR_BENCH_LEDGER_SIZES")
    sizes = parse_sizes(sizes_text) if sizes_text else (QUICK_SIZES if quick else SIZES)
    backends = [
        name.strip()
        for name in os.environ.get("CONVEYOR_BENCH_LEDGER_BACKENDS", ",".join(BACKENDS)).split(",")
        if name.strip()
    ]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown ledger backend(s) {sorted(unknown)}: use {BACKENDS}")
    repeat = int(getattr(args, "repeat", 3) or 3)

    def log(text: str) -> None:
        print(f"# {text}", file=sys.stderr, flush=True)

    # Writing through the contract costs about 1.2 ms a job on PostgreSQL on this machine
    # (server and client sharing 2 cores): 10M jobs would take 3+ hours, so by default
    # PostgreSQL stops at 1M (CONVEYOR_BENCH_LEDGER_PG_MAX raises it).
    pg_max = parse_sizes(os.environ.get("CONVEYOR_BENCH_LEDGER_PG_MAX", "1m"))[0]
    all_results = []
    for backend in backends:
        base = Path(tempfile.mkdtemp(prefix=f"conveyor-bench-ledger-{backend}-"))
        base.chmod(0o755)  # the PostgreSQL server's user must reach its data directory
        mine = [n for n in sizes if backend != "postgresql" or n <= pg_max] or list(sizes[:1])
        try:
            all_results.append(bench_backend(backend, mine, base, repeat, log))
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return tables(all_results, sizes)


def main() -> None:
    """Run standalone: ``python -m benchmarks.bench_ledger [--quick] [--repeat N]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    for table in run(parser.parse_args()):
        print(table.markdown() + "\n")


if __name__ == "__main__":
    main()
