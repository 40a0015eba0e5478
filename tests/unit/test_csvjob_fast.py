"""The vectorised path: it takes every valid block, and agrees with the exact parser on any text."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conveyor.csvjob import pipeline
from tests.unit.csvjob_cases import (
    MODES,
    expected_output,
    new_file,
    outcome,
    run,
)

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for hypothesis examples (function-scoped tmp_path cannot be used there)."""
    return tmp_path_factory.mktemp("csv")


@pytest.mark.parametrize("quoting", [csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])
def test_valid_files_never_need_the_exact_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quoting: Literal[0, 1, 2, 3]
) -> None:
    # Given a valid file of 30,000 rows, some IDs with commas, quotes or line breaks
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=quoting, lineterminator="\r\n")
    writer.writerow(["ID", "Value"])
    special = ["a,b", 'say "hi"', "two\nlines", "x"]
    writer.writerows([f"{special[i % 4]}{i}", i / 8] for i in range(30_000))
    path = new_file(tmp_path, buffer.getvalue())
    expected = run(path, 4, fast=False)

    # When the exact parser is made unavailable
    def refuse(*args: Any) -> None:
        raise AssertionError("the fast path handed a valid block to the exact parser")

    monkeypatch.setattr(pipeline, "parse_exact", refuse)
    # Then the fast path alone writes the same bytes, whatever the block size
    for block_bytes in (1 << 20, 10_000):
        assert run(path, 4, block_bytes=block_bytes) == expected


alphabet = st.sampled_from([*'0123456789.,e-+" \r\n\tx\x00', "\n\n", ",,", "\ufeff", "é"])


@given(st.lists(alphabet, max_size=60).map("".join))
@example('1,"2\n3",4\n')
@example("1, 2\n3,4 \n")
@example('x"y,1\n"a"b,2\n')  # quotes the csv module reads literally, or as text after quotes
@example('"a""b",1\n"a\r\nb",2\r\n"a\rb",3\n')
@example('"",1\n')
@example('"1,5",2\n"3",4\n"""",5\n')
@example('"a"",1\n2,3\n')  # an unterminated quoted field swallows the rest
@HYPOTHESIS
def test_any_text_gets_the_same_outcome_in_every_mode(scratch: Path, body: str) -> None:
    # Given a valid header and arbitrary text after it
    path = new_file(scratch, "ID,Value\n" + body)
    # Then every mode writes the same bytes, or reports the same error
    outcomes = {mode: outcome(path, 5, **options) for mode, options in MODES.items()}
    assert len(set(outcomes.values())) == 1, outcomes


@given(st.text(st.sampled_from(list("0123456789+-.eE_ xia\t")), min_size=1, max_size=12))
@example(" 1")
@example("1e-400")
@HYPOTHESIS
def test_value_rule_is_float_syntax_without_extras(scratch: Path, value: str) -> None:
    path = new_file(scratch, f"ID,Value\nrow,{value}\n")
    fast = outcome(path, 1)
    assert fast == outcome(path, 1, fast=False)
    plain_decimal = re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value) is not None
    if plain_decimal and math.isfinite(float(value)):
        assert fast == expected_output([("row", value)], 1)
    else:
        assert fast == f"{path}:2: Value {value!r} is not a finite number"
