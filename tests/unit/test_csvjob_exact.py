"""The input rules: every bad input named by file, line and problem, the first one winning."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import BadInput
from tests.unit.csvjob_cases import (
    MODES,
    new_file,
    run,
)

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
