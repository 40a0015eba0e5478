"""The input file: missing, a directory, a FIFO, or the output itself, refused in one line."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conveyor.csvjob.pipeline import process_csv, transform_csv
from conveyor.errors import BadInput
from tests.unit.csvjob_cases import (
    TUTORIAL_INPUT,
    new_file,
)


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match=r"^input\.csv: no such file$"):
        transform_csv(Path("input.csv"), Path("out.csv"), 1)


def test_missing_file_with_a_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(BadInput, match=f"^{re.escape(str(missing))}: no such file$"):
        process_csv(missing, tmp_path / "out.csv", 1)
    assert list(tmp_path.iterdir()) == []


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="is a directory"):
        transform_csv(tmp_path, tmp_path / "out.csv", 1)


def test_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match=r"pipe\.csv: not a regular file$"):
        transform_csv(fifo, tmp_path / "out.csv", 1)


def test_output_may_not_be_the_input(tmp_path: Path) -> None:
    path = new_file(tmp_path, TUTORIAL_INPUT)
    for func in (transform_csv, process_csv):
        with pytest.raises(BadInput, match="would overwrite its own input"):
            func(path, path, 1)
    assert path.read_text() == TUTORIAL_INPUT
