"""The CSV task: byte-exact output, determinism however it is chunked, every input rule."""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conveyor import csvtask
from conveyor.csvtask import (
    FACTOR_MAX,
    FACTOR_MIN,
    MAX_SEED,
    CsvStats,
    new_seed,
    process_csv,
    row_factor,
    row_factors,
    transform_csv,
)
from conveyor.errors import BadInput
from conveyor.storage import TEMP_PREFIX

#: Ways to run the same job; every one must write the same bytes and report the same error.
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "tiny-blocks": {"block_bytes": 5, "workers": 2},
    "small-blocks-inline": {"block_bytes": 64, "workers": 0},
    "one-worker": {"block_bytes": 200, "workers": 1},
    "exact-parser": {"fast": False},
}

TUTORIAL_INPUT = (
    "ID,Value\n1,100.5\n2,200.3\n3,150.2\n4,400.6\n5,300.1\n"
    "6,250.4\n7,350.7\n8,450.9\n9,500.0\n10,600.8\n"
)
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_counter = itertools.count()


# --- helpers -----------------------------------------------------------------------------------


def splitmix64_outputs(seed: int, count: int) -> list[int]:
    """SplitMix64 written out independently of the module (Vigna's reference algorithm)."""
    mask = 2**64 - 1
    state, out = seed, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


def quote_minimal(field: str) -> str:
    return '"' + field.replace('"', '""') + '"' if re.search(r'[,"\r\n]', field) else field


def expected_output(rows: list[tuple[str, str]], seed: int) -> bytes:
    """What the job must write, computed the slow, obvious way."""
    lines = ["ID,Value,ProcessedValue\n"]
    for i, (ident, value) in enumerate(rows):
        processed = float(value) * row_factor(seed, i)
        lines.append(f"{quote_minimal(ident)},{value},{processed!r}\n")
    return "".join(lines).encode()


def new_file(directory: Path, content: bytes | str, name: str | None = None) -> Path:
    path = directory / (name or f"in{next(_counter)}.csv")
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def run(path: Path, seed: int = 7, **options: Any) -> bytes:
    """Transform ``path`` and return the output bytes."""
    out = path.with_name(f"{path.name}.{next(_counter)}.out")
    stats = transform_csv(path, out, seed, **options)
    data = out.read_bytes()
    assert stats.output_bytes == len(data)
    assert stats.input_bytes == path.stat().st_size
    return data


def outcome(path: Path, seed: int = 7, **options: Any) -> bytes | str:
    """The output bytes, or the error message."""
    try:
        return run(path, seed, **options)
    except BadInput as exc:
        return exc.message


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for hypothesis examples (function-scoped tmp_path cannot be used there)."""
    return tmp_path_factory.mktemp("csv")


# --- the row factor ----------------------------------------------------------------------------


def test_factor_is_splitmix64_of_seed_and_row() -> None:
    # Given SplitMix64's published test vector for seed 1234567
    outputs = splitmix64_outputs(1234567, 5)
    assert outputs[:2] == [6457827717110365317, 3203168211198807973]
    # Then row i's factor comes from output i's top 53 bits
    for row, value in enumerate(outputs):
        assert row_factor(1234567, row) == min(0.8 + 0.4 * ((value >> 11) * 2.0**-53), FACTOR_MAX)


@given(
    seed=st.integers(0, MAX_SEED),
    start=st.integers(0, 2**40),
    count=st.integers(0, 300),
)
@HYPOTHESIS
def test_vector_factors_equal_scalar_factors(seed: int, start: int, count: int) -> None:
    factors = row_factors(seed, start, count)
    assert factors.tolist() == [row_factor(seed, start + i) for i in range(count)]


def test_factors_lie_in_0_8_to_1_2() -> None:
    factors = row_factors(12345, 0, 1_000_000)
    assert factors.min() >= 0.8
    assert factors.max() < 1.2
    # and they spread over the whole range, not a corner of it
    assert factors.min() < 0.801
    assert factors.max() > 1.199
    assert abs(factors.mean() - 1.0) < 0.001


def test_top_factor_is_clamped_below_1_2() -> None:
    # The largest 53-bit draw rounds up to exactly 1.2 without the clamp.
    top = FACTOR_MIN + 0.4 * ((2**53 - 1) * 2.0**-53)
    assert top == 1.2
    assert min(top, FACTOR_MAX) < 1.2
    assert math.nextafter(1.2, 0.0) == FACTOR_MAX


def test_new_seed_is_63_bit_and_fresh() -> None:
    seeds = {new_seed() for _ in range(50)}
    assert len(seeds) == 50
    assert all(0 <= seed <= MAX_SEED for seed in seeds)


# --- output bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_tutorial_input_gives_the_expected_bytes(tmp_path: Path, mode: str) -> None:
    path = new_file(tmp_path, TUTORIAL_INPUT)
    rows = [tuple(line.split(",")) for line in TUTORIAL_INPUT.splitlines()[1:]]
    assert run(path, 42, **MODES[mode]) == expected_output(rows, 42)  # type: ignore[arg-type]


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
    column = csvtask._format_products(np.array(values, dtype=np.float64))
    buffer = io.BytesIO()
    pl.DataFrame([column]).write_csv(buffer, include_header=False, quote_style="never")
    # Then each is written exactly as Python's repr writes it
    assert buffer.getvalue().decode().splitlines() == [repr(v) for v in values]


# --- determinism -------------------------------------------------------------------------------

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

    monkeypatch.setattr(csvtask, "_parse_exact", refuse)
    # Then the fast path alone writes the same bytes, whatever the block size
    for block_bytes in (1 << 20, 10_000):
        assert run(path, 4, block_bytes=block_bytes) == expected


# --- bad input ---------------------------------------------------------------------------------

BAD_INPUTS = [
    ("", ": empty file"),
    ("\ufeff", ": empty file"),
    ("\n\r\n\n", ": empty file"),
    (
        "1,100.5\n2,200\n",
        ":1: missing header: the first line must be 'ID,Value', found the data row '1,100.5'",
    ),
    ("id,value\n1,2\n", ":1: expected header 'ID,Value', found 'id,value'"),
    ("ID,Value,Extra\n1,2\n", ":1: expected header 'ID,Value', found 'ID,Value,Extra'"),
    ("ID;Value\n1;2\n", ":1: expected header 'ID,Value', found 'ID;Value'"),
    ("ID,Value\n1,2\n3,4,5\n", ":3: expected 2 fields (ID,Value), found 3"),
    ("ID,Value\n1,2\n3,4,\n", ":3: expected 2 fields (ID,Value), found 3"),
    ("ID,Value\n1,2\n3\n4,5\n", ":3: expected 2 fields (ID,Value), found 1"),
    ("ID,Value\n1,2\n \n", ":3: expected 2 fields (ID,Value), found 1"),
    ("ID,Value\n1,2\n\n3,4\n", ":3: blank line (blank lines may only end the file)"),
    ("ID,Value\n1,2\n,4\n", ":3: empty ID"),
    ('ID,Value\n1,2\n"",4\n', ":3: empty ID"),
    ("ID,Value\n1,2\n3,\n", ":3: empty Value"),
    ("ID,Value\n1,2\n3,abc\n", ":3: Value 'abc' is not a finite number"),
    ("ID,Value\n1,2\n3,inf\n", ":3: Value 'inf' is not a finite number"),
    ("ID,Value\n1,2\n3,nan\n", ":3: Value 'nan' is not a finite number"),
    ("ID,Value\n1,2\n3,1e999\n", ":3: Value '1e999' is not a finite number"),
    ("ID,Value\n1,2\n3, 1\n", ":3: Value ' 1' is not a finite number"),
    ("ID,Value\n1,2\n3,\t1\n", ":3: Value '\\t1' is not a finite number"),
    ("ID,Value\n1,2\n3,1 \n", ":3: Value '1 ' is not a finite number"),
    ("ID,Value\n1,2\n3,1_000\n", ":3: Value '1_000' is not a finite number"),
    ("ID,Value\n1,2\n3,0x10\n", ":3: Value '0x10' is not a finite number"),
    ("ID,Value\n1,2\n3,\u0661\n", ":3: Value '\u0661' is not a finite number"),
    ("ID,Value\n1,2\n3,1e\n", ":3: Value '1e' is not a finite number"),
    ("ID,Value\n1,2\n3,.\n", ":3: Value '.' is not a finite number"),
    ('ID,Value\n"a\nb",1\n3,x\n', ":4: Value 'x' is not a finite number"),
    (
        "ID,Value\n1,2\n3,4\r5,6\n",
        ":3: carriage return (CR) inside an unquoted field; lines must end in LF or CRLF",
    ),
    ("ID,Value\n1,2\n3\x00,4\n", ":3: contains a NUL byte"),
    (b"ID,Value\n1,2\n\xff3,4\n", ":3: not valid UTF-8 (byte 0xff at column 1)"),
    ("ID,Value\n1,2\n" + "x" * 131_073 + ",1\n", ":3: a field is longer than 131072 characters"),
    ("ID,Value\n1,2\n3," + "9" * 131_073 + "\n", ":3: a field is longer than 131072 characters"),
    ("ID,Value\n1,2\n" + "y" * (5 << 20) + "\n", ":3: line longer than 4194304 bytes"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("content", "problem"), BAD_INPUTS, ids=[p for _, p in BAD_INPUTS])
def test_bad_input_names_file_line_and_problem(
    tmp_path: Path, mode: str, content: str | bytes, problem: str
) -> None:
    path = new_file(tmp_path, content, "data.csv")
    with pytest.raises(BadInput) as caught:
        run(path, **MODES[mode])
    assert caught.value.message == f"{path}{problem}"
    assert caught.value.exit_code == 65
    assert "\n" not in caught.value.message


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


def test_the_first_error_in_the_file_wins(tmp_path: Path) -> None:
    # Given errors in many blocks, the first at line 30,002
    lines = ["ID,Value"] + [f"{i},{i}.5" for i in range(100_000)]
    for index in (30_001, 30_002, 50_000, 99_999):
        lines[index] = f"{index},oops{index}"
    lines[70_000] = '"quoted",x'  # and one in a block only the exact parser takes
    path = new_file(tmp_path, "\n".join(lines) + "\n")
    for options in [{"block_bytes": 4096}, {"block_bytes": 4096, "workers": 0}, {}]:
        with pytest.raises(BadInput, match=r":30002: Value 'oops30001' is not"):
            run(path, **options)


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
    assert path.stat().st_size > 3 * csvtask.DEFAULT_BLOCK_BYTES
    out = tmp_path / "output.csv"
    out.write_text("previous\n")
    calls = itertools.count()
    real_render: Callable[..., pl.DataFrame] = csvtask._render

    def render(*args: Any) -> pl.DataFrame:
        if next(calls) == 2:
            raise KeyboardInterrupt
        return real_render(*args)

    monkeypatch.setattr(csvtask, "_render", render)
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


def test_large_output_is_flushed_as_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(csvtask, "SYNC_EVERY_BYTES", 100_000)
    monkeypatch.setattr(os, "fdatasync", synced.append)
    path = new_file(tmp_path, "ID,Value\n" + "".join(f"{i},{i}.25\n" for i in range(50_000)))
    run(path, block_bytes=32768)
    assert len(synced) >= 3


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


def test_rows_per_block_do_not_depend_on_the_seed_counter(tmp_path: Path) -> None:
    # The factor depends on the row number, not on how many rows came before in a block.
    path = new_file(tmp_path, "ID,Value\n" + "".join(f"{i},1\n" for i in range(1000)))
    lines = run(path, 77, block_bytes=100).decode().splitlines()[1:]
    assert [float(line.split(",")[2]) for line in lines] == row_factors(77, 0, 1000).tolist()
