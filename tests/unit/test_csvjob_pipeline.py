"""The pipeline: byte-exact output, determinism however it is chunked, atomic publication."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.csvjob import pipeline
from conveyor.csvjob.factors import row_factors
from conveyor.csvjob.pipeline import CsvStats, process_csv, transform_csv
from conveyor.errors import BadInput
from conveyor.job_ids import MAX_SEED, new_seed
from conveyor.tempfiles import TEMP_PREFIX
from tests.unit.csvjob_cases import (
    MODES,
    TUTORIAL_INPUT,
    expected_output,
    new_file,
    quote_minimal,
    run,
)

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for hypothesis examples (function-scoped tmp_path cannot be used there)."""
    return tmp_path_factory.mktemp("csv")


@pytest.mark.parametrize("mode", MODES)
def test_tutorial_input_gives_the_expected_bytes(tmp_path: Path, mode: str) -> None:
    path = new_file(tmp_path, TUTORIAL_INPUT)
    rows = [tuple(line.split(",")) for line in TUTORIAL_INPUT.splitlines()[1:]]
    assert run(path, 42, **MODES[mode]) == expected_output(rows, 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "variant",
    [
        "\ufeffID,Value\n1,2\n3,4\n",  # UTF-8 BOM
        "ID,Value\r\n1,2\r\n3,4\r\n",  # CRLF
        "ID,Value\n1,2\r\n3,4\n",  # mixed line endings
        "ID,Value\n1,2\n3,4",  # no newline at the end
        "ID,Value\n1,2\n3,4\n\n\r\n\n",  # blank lines at the end
        '"ID","Value"\n"1","2"\n3,"4"\n',  # quoted fields
    ],
)
def test_accepted_variants_give_the_plain_output(tmp_path: Path, mode: str, variant: str) -> None:
    expected = expected_output([("1", "2"), ("3", "4")], 9)
    assert run(new_file(tmp_path, variant), 9, **MODES[mode]) == expected


def test_header_only_gives_header_only(tmp_path: Path) -> None:
    assert run(new_file(tmp_path, "ID,Value\n")) == b"ID,Value,ProcessedValue\n"


ids = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=6
)


finite = st.floats(allow_nan=False, allow_infinity=False)


values = st.one_of(
    finite.map(repr),
    st.integers(-(10**25), 10**25).map(str),
    st.tuples(finite, st.integers(0, 12)).map(lambda fp: f"{fp[0]:.{fp[1]}f}"),
    st.tuples(finite, st.integers(0, 20)).map(lambda fp: f"{fp[0]:.{fp[1]}E}"),
    st.from_regex(r"\A[+-]?([0-9]{1,25}\.?[0-9]{0,25}|\.[0-9]{1,25})([eE][+-]?[0-9]{1,3})?\Z"),
).filter(lambda text: math.isfinite(float(text)))


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str]]]:
    """A valid input in any accepted shape, and the rows it holds."""
    rows = draw(st.lists(st.tuples(ids, values), max_size=40))
    endings = draw(st.lists(st.sampled_from(["\n", "\r\n"]), min_size=len(rows) + 1))
    quote_all = draw(st.booleans())

    def field(text: str) -> str:
        return f'"{text.replace(chr(34), chr(34) * 2)}"' if quote_all else quote_minimal(text)

    lines = [field("ID") + "," + field("Value")]
    lines += [field(ident) + "," + field(value) for ident, value in rows]
    text = "".join(line + end for line, end in zip(lines, endings, strict=False))
    if draw(st.booleans()):
        text = text.rstrip("\r\n") if rows and not rows[-1][1].endswith("\n") else text
    text += draw(st.sampled_from(["", "\n", "\r\n\n"]))
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + text).encode(), rows


@given(csv_files(), st.integers(0, MAX_SEED))
@HYPOTHESIS
def test_every_mode_writes_the_expected_bytes(
    scratch: Path, file: tuple[bytes, list[tuple[str, str]]], seed: int
) -> None:
    content, rows = file
    path = new_file(scratch, content)
    expected = expected_output(rows, seed)
    for mode, options in MODES.items():
        assert run(path, seed, **options) == expected, mode


def test_big_file_is_identical_across_block_sizes_and_workers(tmp_path: Path) -> None:
    # Given 60,000 rows, with quoted IDs and tiny values sprinkled in
    rng = np.random.default_rng(5)
    numbers = rng.uniform(-1000, 1000, 60_000)
    lines = ["ID,Value"]
    for i, number in enumerate(numbers):
        ident = f'"id,{i}"' if i % 997 == 0 else str(i)
        value = f"{number * 1e-9:.3e}" if i % 1009 == 0 else f"{number:.2f}"
        lines.append(f"{ident},{value}")
    path = new_file(tmp_path, "\n".join(lines) + "\n")
    # When it is run with very different block sizes and thread counts
    reference = run(path, 11, fast=False)
    # Then every run writes the same bytes
    for block_bytes, workers in [(1 << 20, 2), (4096, 2), (777, 1), (65536, 0), (3000, 3)]:
        assert run(path, 11, block_bytes=block_bytes, workers=workers) == reference
    assert reference.count(b"\n") == 60_001
    assert run(path, 12) != reference


def test_rows_per_block_do_not_depend_on_the_seed_counter(tmp_path: Path) -> None:
    # The factor depends on the row number, not on how many rows came before in a block.
    path = new_file(tmp_path, "ID,Value\n" + "".join(f"{i},1\n" for i in range(1000)))
    lines = run(path, 77, block_bytes=100).decode().splitlines()[1:]
    assert [float(line.split(",")[2]) for line in lines] == row_factors(77, 0, 1000).tolist()


# --- atomic output -----------------------------------------------------------------------------


def test_process_csv_publishes_atomically(tmp_path: Path) -> None:
    path = new_file(tmp_path, TUTORIAL_INPUT, "input.csv")
    out = tmp_path / "sub" / "output.csv"
    stats = process_csv(path, out, 42)
    assert isinstance(stats, CsvStats)
    assert (stats.rows, stats.seed) == (10, 42)
    assert out.read_bytes() == run(path, 42)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_process_csv_picks_and_reports_a_seed(tmp_path: Path) -> None:
    path = new_file(tmp_path, TUTORIAL_INPUT, "input.csv")
    stats = process_csv(path, tmp_path / "a.csv")
    assert 0 <= stats.seed <= MAX_SEED
    process_csv(path, tmp_path / "b.csv", stats.seed)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_new_seed_is_63_bit_and_fresh() -> None:
    seeds = {new_seed() for _ in range(50)}
    assert len(seeds) == 50
    assert all(0 <= seed <= MAX_SEED for seed in seeds)


def test_bad_input_leaves_the_previous_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "output.csv"
    out.write_text("previous\n")
    bad = new_file(tmp_path, "ID,Value\n" + "1,2\n" * 50_000 + "3,x\n", "bad.csv")
    with pytest.raises(BadInput, match=":50002: Value 'x'"):
        process_csv(bad, out, 1)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "output.csv"]


def test_interrupt_mid_run_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run that is interrupted while its third block is being rendered
    path = new_file(tmp_path, "ID,Value\n" + "".join(f"{i},{i}\n" for i in range(700_000)))
    assert path.stat().st_size > 3 * pipeline.DEFAULT_BLOCK_BYTES
    out = tmp_path / "output.csv"
    out.write_text("previous\n")
    calls = itertools.count()
    real_render: Callable[..., pl.DataFrame] = pipeline.render

    def render(*args: Any) -> pl.DataFrame:
        if next(calls) == 2:
            raise KeyboardInterrupt
        return real_render(*args)

    monkeypatch.setattr(pipeline, "render", render)
    with pytest.raises(KeyboardInterrupt):
        process_csv(path, out, 1)
    # Then the previous output is intact and no temporary file is left
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "output.csv"])


def test_transform_rejects_a_bad_seed(tmp_path: Path) -> None:
    path = new_file(tmp_path, TUTORIAL_INPUT)
    for seed in (-1, MAX_SEED + 1):
        with pytest.raises(ValueError, match="seed"):
            transform_csv(path, tmp_path / "out.csv", seed)
