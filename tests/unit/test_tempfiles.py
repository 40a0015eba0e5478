"""Temporary files: names that say who writes them, and the sweeps of what dead
writers left (tempfiles.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor import tempfiles
from conveyor.atomic import atomic_output
from conveyor.storage import (
    MAX_NAME_BYTES,
    STAGING_DIR,
    Storage,
)
from conveyor.tempfiles import LEGACY_TEMP_AGE_S, TEMP_PREFIX, clean_stale_temps, temp_name


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    root = tmp_path / "root"
    (root / "inputs").mkdir(parents=True)
    (root / "inputs" / "a.csv").write_text("ID,Value\n1,2\n")
    (root / "_conveyor").mkdir()
    (root / "_conveyor" / "queue.db").write_text("state")
    return Storage(root)


# --- temporary files of dead writers ------------------------------------------------------

LIVE_WRITER = """
import sys, time
from pathlib import Path
from conveyor.atomic import atomic_output
with atomic_output(Path(sys.argv[1])) as temp:
    temp.write_text("half")
    print(temp, flush=True)
    time.sleep(60)
"""


def age(path: Path, seconds: float) -> Path:
    """Make ``path`` look last written ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


@pytest.fixture
def fresh_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every atomic_output sweeps its directory, however recently it was swept."""
    monkeypatch.setattr(tempfiles, "_last_sweep", {})
    monkeypatch.setattr(tempfiles, "SWEEP_EVERY_S", 0.0)


def test_temporary_names_say_who_writes_and_fit_name_max(tmp_path: Path) -> None:
    name = temp_name("out.csv")
    long_name = "x" * MAX_NAME_BYTES

    host, pid, token, tail = name.removeprefix(TEMP_PREFIX).split("-", 3)
    assert (pid, tail) == (str(os.getpid()), "out.csv")
    assert "-" not in host and len(token) == 12
    assert name != temp_name("out.csv")
    assert len(temp_name(long_name).encode()) <= MAX_NAME_BYTES
    with atomic_output(tmp_path / long_name) as temp:
        temp.write_text("ok")
    assert (tmp_path / long_name).read_text() == "ok"


def test_the_cleaner_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    def file(name: str, seconds_ago: float) -> Path:
        path = tmp_path / name
        path.write_bytes(b"partial")
        return age(path, seconds_ago)

    dead = file(temp_name("a.csv"), 10)  # nobody holds its lock
    young = file(temp_name("b.csv"), 0)  # its writer may be about to lock it
    legacy_old = file(f"{TEMP_PREFIX}0123456789ab-c.csv", 2 * LEGACY_TEMP_AGE_S)
    legacy_recent = file(f"{TEMP_PREFIX}0123456789ab-d.csv", 60)
    others = [file(name, 10) for name in ("out.csv", f"{TEMP_PREFIX}not-ours", ".hidden")]

    removed = clean_stale_temps(tmp_path)

    assert sorted(removed) == sorted([dead, legacy_old])
    assert sorted(tmp_path.iterdir()) == sorted([young, legacy_recent, *others])
    assert clean_stale_temps(tmp_path / "missing") == []


def test_a_live_writers_temporary_file_is_never_removed(tmp_path: Path) -> None:
    # Given another process writing an output, holding its temporary file's lock
    final = tmp_path / "out.csv"
    writer = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(final)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        temp = Path(writer.stdout.readline().strip())
        age(temp, 3600)  # however old it looks
        # When this process cleans the directory and writes its own output there
        removed = clean_stale_temps(tmp_path, min_age_s=0)
        with atomic_output(tmp_path / "mine.csv") as mine:
            mine.write_text("mine")
        # Then the live writer's file is still there, untouched
        assert removed == []
        assert temp.read_text() == "half"
    finally:
        writer.kill()
        writer.communicate()
    # And once it is dead, the next cleaner removes it
    assert clean_stale_temps(tmp_path, min_age_s=0) == [temp]
    assert not final.exists()


def test_a_temporary_file_held_in_this_process_is_spared_too(tmp_path: Path) -> None:
    # flock locks belong to the open file: a cleaner in the writer's own process (a worker
    # whose task thread is writing) sees the lock as held.
    with atomic_output(tmp_path / "out.csv") as temp:
        temp.write_text("writing")  # the task opens and closes the path itself
        age(temp, 3600)
        assert clean_stale_temps(tmp_path, min_age_s=0) == []
    assert (tmp_path / "out.csv").read_text() == "writing"


def test_the_next_output_in_a_directory_sweeps_dead_writers_files(
    tmp_path: Path, fresh_sweeps: None
) -> None:
    dead = tmp_path / temp_name("out.csv")
    dead.write_bytes(b"partial of a kill -9")
    age(dead, 10)

    with atomic_output(tmp_path / "out.csv") as temp:
        temp.write_text("whole")

    assert os.listdir(tmp_path) == ["out.csv"]


def test_ingest_stages_its_copy_where_the_next_ingest_sweeps(
    storage: Storage, tmp_path: Path, fresh_sweeps: None
) -> None:
    # Given the copy a submitter killed mid-ingest left (its job directory is never revisited)
    staging = storage.root / STAGING_DIR
    staging.mkdir(parents=True)
    dead = staging / temp_name("big.csv")
    dead.write_bytes(b"half a copy")
    age(dead, 10)
    source = tmp_path / "next.csv"
    source.write_text("ID,Value\n1,2\n")

    rel = storage.ingest(source, "job2")

    assert (storage.root / rel).read_text() == "ID,Value\n1,2\n"
    assert os.listdir(staging) == []
    assert os.listdir(storage.root / "inputs" / "job2") == ["next.csv"]
