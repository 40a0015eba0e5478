"""Temporary files of writers that were killed: the next run or submit that touches their
directory removes them, and never one a live process is still writing (real processes,
real signals)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conveyor.storage import STAGING_DIR
from conveyor.tempfiles import STALE_TEMP_AGE_S, TEMP_PREFIX

ROWS = 4_000_000
#: A writer that holds its temporary file (and its lock) until killed.
LIVE_WRITER = """
import sys, time
from pathlib import Path
from conveyor.atomic import atomic_output
with atomic_output(Path(sys.argv[1])) as temp:
    temp.write_text("being written")
    print(temp, flush=True)
    time.sleep(120)
"""


def conveyor(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def temps(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob(f"{TEMP_PREFIX}*") if p.is_file())


def kill_when_writing(process: subprocess.Popen[str], directory: Path) -> Path:
    """SIGKILL ``process`` once a temporary file under ``directory`` holds data."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        written = [p for p in temps(directory) if p.stat().st_size > 0]
        if written:
            process.kill()
            process.communicate(timeout=30)
            return written[0]
        time.sleep(0.005)
    process.kill()
    _, stderr = process.communicate(timeout=30)
    raise AssertionError(f"never saw a temporary file being written: {stderr}")


def wait_until_stale(path: Path) -> None:
    """Let the killed writer's file age past the cleaner's guard for fresh files."""
    age_s = time.time() - path.stat().st_mtime
    time.sleep(max(0.0, STALE_TEMP_AGE_S + 0.2 - age_s))


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.csv"
    pl.DataFrame({"ID": np.arange(ROWS), "Value": np.arange(ROWS) * 0.25}).write_csv(path)
    return path


@pytest.mark.slow
def test_a_killed_run_leaves_no_temporary_file_after_the_next_run(
    tmp_path: Path, big_csv: Path
) -> None:
    # Given a `conveyor run` SIGKILLed while writing its output
    first = conveyor("run", str(big_csv), "--seed", "1", cwd=tmp_path)
    left = kill_when_writing(first, tmp_path)
    assert left.exists() and not (tmp_path / "output.csv").exists()
    wait_until_stale(left)
    # When the next run writes to the same directory
    (tmp_path / "small.csv").write_text("ID,Value\n1,2\n")
    second = conveyor("run", "small.csv", "--seed", "1", cwd=tmp_path)
    _, stderr = second.communicate(timeout=60)
    # Then it succeeds and the dead run's temporary file is gone
    assert second.returncode == 0, stderr
    assert temps(tmp_path) == []
    assert (tmp_path / "output.csv").read_text().startswith("ID,Value,ProcessedValue\n1,2,")


@pytest.mark.slow
def test_a_killed_submit_leaves_no_temporary_file_after_the_next_submit(
    tmp_path: Path, big_csv: Path
) -> None:
    env = {**os.environ, "CONVEYOR_STORAGE": str(tmp_path / "storage")}
    storage = tmp_path / "storage"
    # Given a submit SIGKILLed while copying a large input into the storage
    first = conveyor("submit", str(big_csv), cwd=tmp_path, env=env)
    left = kill_when_writing(first, storage)
    assert left.parent == storage / STAGING_DIR
    wait_until_stale(left)
    # When another input is submitted
    (tmp_path / "small.csv").write_text("ID,Value\n1,2\n")
    second = conveyor("submit", "small.csv", cwd=tmp_path, env=env)
    stdout, stderr = second.communicate(timeout=60)
    # Then its copy is in place and the killed submit's partial copy is gone
    assert second.returncode == 0, stderr
    assert temps(storage) == []
    job_id = stdout.split()[-1]
    assert (storage / "inputs" / job_id / "small.csv").read_text() == "ID,Value\n1,2\n"


def test_a_live_writers_temporary_file_survives_every_cleaner(tmp_path: Path) -> None:
    # Given another process writing output.csv here, however old its file looks
    writer = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(tmp_path / "output.csv")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        live = Path(writer.stdout.readline().strip())
        then = time.time() - 3600
        os.utime(live, (then, then))
        # When a `conveyor run` writes to the same directory
        (tmp_path / "small.csv").write_text("ID,Value\n1,2\n")
        run = conveyor("run", "small.csv", "-o", "other.csv", cwd=tmp_path)
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
        # Then the live writer's file is untouched
        assert live.read_text() == "being written"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate()
    # And once its writer is dead, the next run removes it
    run = conveyor("run", "small.csv", "-o", "third.csv", cwd=tmp_path)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert temps(tmp_path) == []


@pytest.mark.slow
def test_runs_killed_at_random_moments_leave_nothing_behind(tmp_path: Path, big_csv: Path) -> None:
    # Given several runs into one directory, each SIGKILLed at a random moment
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    for _ in range(3):
        run = conveyor("run", str(big_csv), "--seed", "1", cwd=tmp_path)
        time.sleep(rng.uniform(0.0, 2.5))  # before, during or after the write
        run.kill()
        run.communicate(timeout=30)
    for left in temps(tmp_path):
        wait_until_stale(left)
    # When one more run writes there
    (tmp_path / "small.csv").write_text("ID,Value\n1,2\n")
    last = conveyor("run", "small.csv", "-o", "small-out.csv", cwd=tmp_path)
    _, stderr = last.communicate(timeout=60)
    # Then no temporary file of any killed run is left
    assert last.returncode == 0, stderr
    assert temps(tmp_path) == [], f"random seed {seed}"
