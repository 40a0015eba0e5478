"""The output: ID and Value as read, ProcessedValue as repr writes it, synced as it grows."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conveyor.csvjob import output as csv_output
from conveyor.csvjob.factors import row_factor
from tests.unit.csvjob_cases import (
    new_file,
    run,
)

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_id_and_value_are_copied_byte_for_byte(tmp_path: Path) -> None:
    content = 'ID,Value\n007,500.0\n x y ,100.50\n"1,5",+1e3\n"say ""hi""",.5\n"a\nb",-0\nü€,5.\n'
    out = run(new_file(tmp_path, content), 3).decode().split("\n")
    assert out[1].startswith("007,500.0,")
    assert out[2].startswith(" x y ,100.50,")
    assert out[3].startswith('"1,5",+1e3,')
    assert out[4].startswith('"say ""hi""",.5,')
    assert out[5:7] == ['"a', f'b",-0,{-0.0 * row_factor(3, 4)!r}']
    assert out[7].startswith("ü€,5.,")


def test_quoted_fields_that_need_no_quotes_lose_them(tmp_path: Path) -> None:
    out = run(new_file(tmp_path, 'ID,Value\n"1","2.5"\n'), 3)
    assert out.split(b"\n")[1].startswith(b"1,2.5,")


@given(
    st.lists(
        st.floats(allow_nan=False)
        | st.sampled_from([1e-5, -2.5e-7, 9.999999999999999e-05, 1e-4, 1e16, 1e22, 5e-324]),
        min_size=1,
        max_size=50,
    )
)
@example(
    [1e-05, 1.5e-05, 0.0001, 1e15, 1e16, -0.0, 0.0, math.inf, -math.inf, 1.7976931348623157e308]
)
@HYPOTHESIS
def test_processed_values_are_written_as_repr(values: list[float]) -> None:
    # Given any floats, tiny and huge included, as the products to write
    column = csv_output.format_products(np.array(values, dtype=np.float64))
    buffer = io.BytesIO()
    pl.DataFrame([column]).write_csv(buffer, include_header=False, quote_style="never")
    # Then each is written exactly as Python's repr writes it
    assert buffer.getvalue().decode().splitlines() == [repr(v) for v in values]


def test_csv_module_agrees_on_the_output(tmp_path: Path) -> None:
    content = 'ID,Value\n"a,b",1\n"q""q",2\nplain,3\n"multi\nline",4\n'
    out = run(new_file(tmp_path, content), 8)
    rows = list(csv.reader(io.StringIO(out.decode(), newline="")))
    assert [row[:2] for row in rows] == [
        ["ID", "Value"],
        ["a,b", "1"],
        ['q"q', "2"],
        ["plain", "3"],
        ["multi\nline", "4"],
    ]
    assert [float(row[2]) for row in rows[1:]] == [
        float(v) * row_factor(8, i) for i, v in enumerate("1234")
    ]


def test_large_output_is_flushed_as_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(csv_output, "SYNC_EVERY_BYTES", 100_000)
    monkeypatch.setattr(os, "fdatasync", synced.append)
    path = new_file(tmp_path, "ID,Value\n" + "".join(f"{i},{i}.25\n" for i in range(50_000)))
    run(path, block_bytes=32768)
    assert len(synced) >= 3
