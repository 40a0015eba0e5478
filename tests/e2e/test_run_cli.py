"""``conveyor run`` as a user runs it: a subprocess, its output, its exit code, its files."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conveyor.csvjob.pipeline import transform_csv
from conveyor.tempfiles import TEMP_PREFIX

TUTORIAL_INPUT = (
    "ID,Value\n1,100.5\n2,200.3\n3,150.2\n4,400.6\n5,300.1\n"
    "6,250.4\n7,350.7\n8,450.9\n9,500.0\n10,600.8\n"
)
SEED_LINE = re.compile(r"^Seed: (\d+) \(random; rerun with --seed \1 to reproduce\)$", re.M)


def conveyor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_no_arguments_behaves_like_the_tutorial_script(tmp_path: Path) -> None:
    # Given a directory holding the tutorial's input.csv
    (tmp_path / "input.csv").write_text(TUTORIAL_INPUT)
    # When `conveyor run` runs there with no arguments
    result = conveyor("run", cwd=tmp_path)
    # Then it prints the tutorial's lines, the seed and a summary, and writes output.csv
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Starting batch task..."
    assert SEED_LINE.match(lines[1])
    assert lines[2] == "Batch task completed."
    seed = int(SEED_LINE.match(lines[1]).group(1))  # type: ignore[union-attr]
    assert re.fullmatch(rf"10 rows in \d+\.\d{{3}} s \(seed {seed}\) -> output\.csv", lines[3])
    assert result.stderr == ""
    output = (tmp_path / "output.csv").read_text()
    rows = output.splitlines()
    assert rows[0] == "ID,Value,ProcessedValue"
    assert [row.rsplit(",", 1)[0] for row in rows[1:]] == TUTORIAL_INPUT.splitlines()[1:]
    for row in rows[1:]:
        _, value, processed = row.split(",")
        assert 0.8 <= float(processed) / float(value) < 1.2
    assert temp_files(tmp_path) == []


def test_printed_seed_reproduces_the_run(tmp_path: Path) -> None:
    (tmp_path / "input.csv").write_text(TUTORIAL_INPUT)
    first = conveyor("run", "-o", "first.csv", cwd=tmp_path)
    seed = SEED_LINE.search(first.stdout).group(1)  # type: ignore[union-attr]
    again = conveyor("run", "input.csv", "--output", "again.csv", "--seed", seed, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"Seed: {seed}\n" in again.stdout
    assert (tmp_path / "first.csv").read_bytes() == (tmp_path / "again.csv").read_bytes()
    other = conveyor("run", "--output", "other.csv", "--seed", str(int(seed) ^ 1), cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "other.csv").read_bytes() != (tmp_path / "first.csv").read_bytes()


def test_named_input_and_output_match_the_library(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    source = data / "values.csv"
    source.write_text('ID,Value\n"a,1",1.5\nb,2\r\n')
    result = conveyor(
        "run", str(source), "--output", "out/result.csv", "--seed", "99", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    transform_csv(source, tmp_path / "expected.csv", 99)
    assert (tmp_path / "out" / "result.csv").read_bytes() == (
        tmp_path / "expected.csv"
    ).read_bytes()


def test_sample_runs_anywhere(tmp_path: Path) -> None:
    result = conveyor("run", "--sample", "--seed", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "output.csv").read_text().count("\n") == 11


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("ID,Value\n1,2\n3,abc\n", "data.csv:3: Value 'abc' is not a finite number"),
        ("1,100.5\n", "data.csv:1: missing header"),
        ("", "data.csv: empty file"),
        ("ID,Value\n1,2,3\n", "data.csv:2: expected 2 fields (ID,Value), found 3"),
    ],
)
def test_bad_input_is_one_line_and_exit_65(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "data.csv").write_text(content)
    (tmp_path / "output.csv").write_text("previous\n")
    result = conveyor("run", "data.csv", "--seed", "1", cwd=tmp_path)
    assert result.returncode == 65
    assert result.stderr.startswith(f"conveyor: error: {message}")
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert "Batch task completed." not in result.stdout
    assert (tmp_path / "output.csv").read_text() == "previous\n"
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "input.csv: no such file (give INPUT, or --sample for the tutorial's input)"),
        (("nope.csv",), "nope.csv: no such file"),
        (("data",), "data: is a directory, not a CSV file"),
    ],
)
def test_a_missing_input_is_exit_66_before_anything_is_printed(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "data").mkdir()

    result = conveyor("run", *args, cwd=tmp_path)

    assert result.returncode == 66  # EX_NOINPUT, not 65 (malformed input)
    assert result.stdout == ""  # no "Starting batch task..." nor a seed
    assert result.stderr == f"conveyor: error: {message}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("ID,Value\n1,x\n")
    result = conveyor("--debug", "run", "data.csv", cwd=tmp_path)
    assert result.returncode == 65
    assert "Traceback (most recent call last)" in result.stderr
    assert "BadInput" in result.stderr
    assert result.stderr.rstrip().endswith(
        "conveyor: error: data.csv:2: Value 'x' is not a finite number"
    )


@pytest.mark.parametrize(
    "args",
    [("--seed", "-1"), ("--seed", str(2**63)), ("x.csv", "--sample")],
)
def test_bad_usage_exits_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = conveyor("run", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Usage:" in result.stderr


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs; these machines run tests as root), unmounted after."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, full_disk: Path) -> None:
    # Given an output of about 4 MB headed for a 1 MiB disk
    rows = "".join(f"{i},{i}.5\n" for i in range(150_000))
    (tmp_path / "data.csv").write_text("ID,Value\n" + rows)
    result = conveyor("run", "data.csv", "-o", str(full_disk / "out.csv"), cwd=tmp_path)
    # Then the run fails with one clear line, and the disk holds no partial file
    assert result.returncode == 1
    assert result.stderr.startswith("conveyor: error: cannot write ")
    assert result.stderr.endswith(": storage is full (No space left on device)\n")
    assert len(result.stderr.splitlines()) == 1
    assert list(full_disk.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_removes_the_temp_file(tmp_path: Path, signum: signal.Signals) -> None:
    # Given an input big enough to take a while, and a previous output
    rows = 4_000_000
    pl.DataFrame({"ID": np.arange(rows), "Value": np.arange(rows) * 0.5}).write_csv(
        tmp_path / "big.csv"
    )
    (tmp_path / "output.csv").write_text("previous\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "run", "big.csv", "--seed", "3"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # When the signal arrives while the temporary output is being written
    deadline = time.monotonic() + 30
    while not temp_files(tmp_path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert temp_files(tmp_path), "the run never started writing"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    # Then it exits 75 with one line, leaving the previous output and no temporary file
    assert process.returncode == 75, stderr
    assert stderr == f"conveyor: error: interrupted by {signum.name}; no output was written\n"
    assert (tmp_path / "output.csv").read_text() == "previous\n"
    assert temp_files(tmp_path) == []
