"""The message envelope: validation on both ends, job ids, dedup ids, the claim check."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.errors import BadMessage
from conveyor.job_ids import MAX_SEED, new_job_id
from conveyor.jobs import (
    TERMINAL,
    VERSION,
    Job,
    JobState,
    decode_from_queue,
    encode_for_queue,
    job_id_of,
)
from conveyor.queues.messages import message_text
from conveyor.storage import Storage, check_job_id
from conveyor.strict_json import MAX_DEPTH, parse_json
from conveyor.tempfiles import TEMP_PREFIX

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def envelope(**changes: Any) -> dict[str, Any]:
    """A valid envelope as a dict, with some fields changed (``None`` values kept)."""
    data: dict[str, Any] = {
        "v": 1,
        "job_id": "01JABCDEFGHJKMNPQRSTVWXYZ0",
        "task": "csv-process",
        "input": "inputs/01JABCDEFGHJKMNPQRSTVWXYZ0/a.csv",
        "output": "outputs/01JABCDEFGHJKMNPQRSTVWXYZ0/a.csv",
        "params": {},
        "seed": 12345,
        "submitted_at": 1732270000.5,
    }
    data.update(changes)
    return data


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path)


# --- job ids and states -----------------------------------------------------------------------


def test_new_job_id_shape_and_uniqueness() -> None:
    ids = {new_job_id() for _ in range(5000)}
    assert len(ids) == 5000
    for job_id in list(ids)[:100]:
        assert len(job_id) == 26
        assert set(job_id) <= CROCKFORD


def test_new_job_ids_sort_by_time() -> None:
    times = [1_700_000_000.0 + i * 0.001 for i in range(0, 5000, 7)]
    ids = [new_job_id(t) for t in times]
    assert ids == sorted(ids)


def test_new_job_id_encodes_milliseconds() -> None:
    job_id = new_job_id(1_732_270_000.123)
    value = 0
    for char in job_id:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    assert value >> 80 == 1_732_270_000_123


def test_terminal_states() -> None:
    assert {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED} == TERMINAL
    assert JobState.FAILED.terminal
    assert not JobState.RETRYING.terminal
    assert [s.value for s in JobState] == [
        "queued",
        "running",
        "retrying",
        "succeeded",
        "failed",
        "cancelled",
    ]


# --- round trips ------------------------------------------------------------------------------


def test_round_trip() -> None:
    job = Job(task="csv-process", input="inputs/a.csv", output="outputs/a.csv", params={"k": [1]})
    text = job.to_json()
    assert text.isascii()
    assert Job.from_json(text) == job
    assert Job.from_json(text.encode()) == job
    assert json.loads(text)["v"] == VERSION


def test_defaults_are_fresh() -> None:
    a = Job(task="t", output="o")
    b = Job(task="t", output="o")
    assert a.job_id != b.job_id
    assert 0 <= a.seed <= MAX_SEED
    assert abs(a.submitted_at - time.time()) < 60
    assert a.input is None and a.params == {}


def test_integer_submit_time_is_accepted() -> None:
    job = Job.from_dict(envelope(submitted_at=1732270000))
    assert job.submitted_at == 1732270000.0
    assert isinstance(job.submitted_at, float)


def test_documented_example_parses() -> None:
    text = (
        '{"v": 1, "job_id": "01JX", "task": "csv-process", "input": "inputs/01JX/a.csv",'
        ' "output": "outputs/01JX/a.csv", "params": {}, "seed": 12345,'
        ' "submitted_at": 1732270000.5}'
    )
    job = Job.from_json(text)
    assert (job.task, job.seed, job.input) == ("csv-process", 12345, "inputs/01JX/a.csv")


# --- rejections -------------------------------------------------------------------------------

BAD = [
    pytest.param("not json", "not valid JSON", id="not-json"),
    pytest.param("[1, 2]", "expected a JSON object", id="array"),
    pytest.param('"text"', "expected a JSON object", id="string"),
    pytest.param("null", "expected a JSON object", id="null"),
    pytest.param(json.dumps(envelope(v=2)), "'v'", id="version-2"),
    pytest.param(json.dumps(envelope(v="1")), "'v'", id="version-str"),
    pytest.param(json.dumps(envelope(v=True)), "'v'", id="version-bool"),
    pytest.param(json.dumps(envelope(extra=1)), "unknown field.*'extra'", id="unknown-field"),
    pytest.param(json.dumps(envelope(job_id="a/b")), "'job_id'", id="job-id-slash"),
    pytest.param(json.dumps(envelope(job_id="")), "'job_id'", id="job-id-empty"),
    pytest.param(json.dumps(envelope(job_id="x" * 65)), "'job_id'", id="job-id-long"),
    pytest.param(json.dumps(envelope(job_id=5)), "'job_id'", id="job-id-int"),
    pytest.param(json.dumps(envelope(task="")), "'task'", id="task-empty"),
    pytest.param(json.dumps(envelope(task="a b")), "'task'", id="task-space"),
    pytest.param(json.dumps(envelope(task=None)), "'task'", id="task-null"),
    pytest.param(json.dumps(envelope(input="../x")), "'input'.*'\\.\\.'", id="input-parent"),
    pytest.param(json.dumps(envelope(input="/etc/passwd")), "'input'", id="input-absolute"),
    pytest.param(json.dumps(envelope(input=3)), "'input'", id="input-int"),
    pytest.param(json.dumps(envelope(output="_conveyor/x")), "'output'", id="output-state"),
    pytest.param(json.dumps(envelope(output="")), "'output'", id="output-empty"),
    pytest.param(json.dumps(envelope(output=7)), "'output'", id="output-int"),
    pytest.param(json.dumps(envelope(output="../x")), "'output'", id="output-parent"),
    pytest.param(json.dumps(envelope(seed=-1)), "'seed'", id="seed-negative"),
    pytest.param(json.dumps(envelope(seed=2**63)), "'seed'", id="seed-big"),
    pytest.param(json.dumps(envelope(seed=1.5)), "'seed'", id="seed-float"),
    pytest.param(json.dumps(envelope(seed=True)), "'seed'", id="seed-bool"),
    pytest.param(json.dumps(envelope(seed="1")), "'seed'", id="seed-str"),
    pytest.param(json.dumps(envelope(submitted_at="now")), "'submitted_at'", id="time-str"),
    pytest.param(json.dumps(envelope(submitted_at=-1)), "'submitted_at'", id="time-negative"),
    pytest.param(json.dumps(envelope(submitted_at=False)), "'submitted_at'", id="time-bool"),
    pytest.param(json.dumps(envelope(params=[])), "'params'", id="params-array"),
    pytest.param(json.dumps(envelope(params=None)), "'params'", id="params-null"),
    pytest.param(
        json.dumps(envelope(params_ref={"path": "x", "sha256": "0" * 64})),
        "'params_ref'",
        id="ref-with-params",
    ),
    pytest.param(
        json.dumps({k: v for k, v in envelope(params_ref=None).items() if k != "params"}),
        "'params_ref'",
        id="ref-null",
    ),
    pytest.param('{"v": 1, "v": 1}', "duplicate key 'v'", id="duplicate-key"),
    pytest.param(
        json.dumps(envelope()).replace("12345", "NaN"), "not valid JSON", id="nan-constant"
    ),
    pytest.param(
        json.dumps(envelope()).replace("12345", "Infinity"), "not valid JSON", id="infinity"
    ),
]


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_invalid_messages_are_rejected_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason) as info:
        Job.from_json(text)
    assert info.value.permanent


@pytest.mark.parametrize("field", ["v", "job_id", "task", "input", "seed", "submitted_at"])
def test_each_missing_field_is_named(field: str) -> None:
    data = envelope()
    del data[field]
    with pytest.raises(BadMessage, match=f"missing field.*'{field}'"):
        Job.from_dict(data)


@pytest.mark.parametrize("absent", [True, False], ids=["absent", "null"])
def test_a_job_without_output_is_valid_in_version_1(absent: bool) -> None:
    # Given a version-1 envelope whose output is absent (older writers never omit it) or null
    data = envelope(output=None)
    if absent:
        del data["output"]
    # Then it decodes to a job without output, and encodes with an explicit null
    job = Job.from_json(json.dumps(data))
    assert job.output is None
    assert job.to_dict()["output"] is None
    assert json.loads(job.to_json())["v"] == 1
    assert Job.from_json(job.to_json()) == job
    assert Job(task="t").output is None
    assert Job(task="t", seed=1).dedup_id != Job(task="t", output="o", seed=1).dedup_id


def test_missing_params_is_named() -> None:
    data = envelope()
    del data["params"]
    with pytest.raises(BadMessage, match=r"missing field.*'params'"):
        Job.from_dict(data)


def test_null_input_is_allowed() -> None:
    assert Job.from_dict(envelope(input=None)).input is None


def test_oversized_message_is_rejected() -> None:
    text = json.dumps(envelope(params={"blob": "x" * 2000}))
    with pytest.raises(BadMessage, match="over the limit of 1000"):
        Job.from_json(text, max_bytes=1000)
    assert Job.from_json(text, max_bytes=len(text)).params["blob"] == "x" * 2000


def test_size_limit_counts_utf8_bytes() -> None:
    text = json.dumps(envelope(params={"s": "é" * 600}), ensure_ascii=False)
    assert len(text) < 1000 < len(text.encode())
    with pytest.raises(BadMessage, match="bytes"):
        Job.from_json(text, max_bytes=1000)


def test_non_utf8_bytes_are_rejected() -> None:
    with pytest.raises(BadMessage, match="UTF-8"):
        Job.from_json(b"\xff\xfe{}")


def test_very_deep_nesting_is_rejected_without_recursion() -> None:
    text = "[" * 100_000 + "]" * 100_000
    started = time.perf_counter()
    with pytest.raises(BadMessage, match="nested deeper than 32"):
        Job.from_json(text)
    assert time.perf_counter() - started < 1.0


def test_deep_params_are_rejected_at_the_limit() -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels):
            value = {"a": value}
        return value

    # The envelope is level 1 and params level 2, so params may nest 30 more levels.
    ok = json.dumps(envelope(params=nested(MAX_DEPTH - 2)))
    assert Job.from_json(ok)
    too_deep = json.dumps(envelope(params=nested(MAX_DEPTH - 1)))
    with pytest.raises(BadMessage, match="nested deeper"):
        Job.from_json(too_deep)
    with pytest.raises(BadMessage, match="nested deeper"):
        Job(task="t", output="o", params=nested(MAX_DEPTH))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    tricky = "[[[[" * 20 + '\\"' + "{{{{" * 20
    job = Job.from_json(json.dumps(envelope(params={"s": tricky, "t": "\\", "u": '"]'})))
    assert job.params["s"] == tricky


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({1: "x"}, "key 1 is not a string"),
        ({"t": (1, 2)}, "'params.t'"),
        ({"f": float("nan")}, "'params.f'"),
        ({"o": object()}, "'params.o'"),
        ({"l": [1, {"deep": {1.5}}]}, r"'params.l\[1\].deep'"),
    ],
)
def test_params_that_json_cannot_carry_are_rejected(params: dict[Any, Any], reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        Job(task="t", output="o", params=params)


def test_parse_json_rejects_depth() -> None:
    assert parse_json("[[1]]", what="x", max_depth=2) == [[1]]
    with pytest.raises(BadMessage, match="bad x: nested deeper than 2"):
        parse_json("[[[1]]]", what="x", max_depth=2)


# --- property tests ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
path_parts = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_. -]{0,15}", fullmatch=True).filter(
    lambda part: part not in ("..", ".") and not part.startswith(TEMP_PREFIX)
)
paths = (
    st.lists(path_parts, min_size=1, max_size=4)
    .map("/".join)
    .filter(lambda p: not p.casefold().startswith("_conveyor"))
)
jobs = st.builds(
    Job,
    task=names,
    input=st.none() | paths,
    output=st.none() | paths,
    params=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    seed=st.integers(min_value=0, max_value=MAX_SEED),
    job_id=st.from_regex(r"[0-9A-Za-z_-]{1,64}", fullmatch=True),
    submitted_at=st.floats(min_value=0, max_value=4e9),
    # A job whose output is its input is refused on receive (tested on its own).
).filter(lambda job: job.input is None or job.input != job.output)


@given(jobs)
def test_valid_jobs_round_trip(job: Job) -> None:
    assert Job.from_json(job.to_json()) == job


@given(json_values)
def test_random_json_never_crashes_the_decoder(value: Any) -> None:
    with contextlib.suppress(BadMessage):
        Job.from_json(json.dumps(value))


@given(st.text(max_size=200))
def test_random_text_never_crashes_the_decoder(text: str) -> None:
    with contextlib.suppress(BadMessage):
        Job.from_json(text)


@given(st.sampled_from(sorted(envelope())), json_values)
def test_random_field_values_decode_or_raise_bad_message(field: str, value: Any) -> None:
    try:
        job = Job.from_json(json.dumps(envelope(**{field: value})))
    except BadMessage:
        return
    assert Job.from_json(job.to_json()) == job


# --- dedup ------------------------------------------------------------------------------------


def test_dedup_id_ignores_job_id_and_time_but_not_work() -> None:
    job = Job(task="t", input="in/a", output="out/a", params={"x": 1, "y": [2]}, seed=7)
    same_work = replace(job, job_id=new_job_id(), submitted_at=job.submitted_at + 5)
    reordered = replace(job, params={"y": [2], "x": 1})
    assert job.dedup_id == same_work.dedup_id == reordered.dedup_id
    assert len(job.dedup_id) == 64
    for other in (
        replace(job, seed=8),
        replace(job, params={"x": 2, "y": [2]}),
        replace(job, output="out/b"),
        replace(job, output=None),
        replace(job, input=None),
        replace(job, task="u"),
    ):
        assert other.dedup_id != job.dedup_id


# --- the claim check (more in test_claims.py) ------------------------------------------------


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job=jobs)
def test_claim_checked_jobs_round_trip(storage: Storage, job: Job) -> None:
    # Room for the envelope and a claim reference (about 170 bytes), not for big params.
    limit = len(replace(job, params={}).to_json()) + 200
    text = encode_for_queue(job, storage, max_bytes=limit)
    assert len(text) <= limit
    assert ("params_ref" in json.loads(text)) == (len(job.to_json()) > limit)
    assert decode_from_queue(text, storage) == job


# --- hostile bodies: one tolerant path for every reader ------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"v":1,"job_id":"BLOB1","task":"t"}', "BLOB1"),  # a BLOB row
        (b"\x7b\x22\xff", None),  # not UTF-8, as bytes
        (message_text(b'{"v":1,"job_id":"SURR","task":"\xff"}'), "SURR"),  # ... as text
        (message_text(b'{"v":1,"job_id":"AB\xff"}'), None),  # the id itself is broken
        (None, None),
        (12, None),
        ("", None),
        ("null", None),
        ('{"job_id": ["J"]}', None),
        ('{"job_id": {"a": 1}}', None),
        ("[" * 200_000, None),  # deeper than any envelope: never parsed
        ('{"v":1,"job_id":"BIG","x":"' + "a" * (2 * 1024 * 1024) + '"}', "BIG"),  # fast path
        ('{"x":"' + "a" * (2 * 1024 * 1024) + '","job_id":"BIG2"}', None),  # too big to parse
    ],
    ids=lambda v: repr(v)[:30],
)
def test_job_id_of_reads_any_body_and_never_raises(body: object, expected: str | None) -> None:
    assert job_id_of(body) == expected


@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        st.binary(max_size=200).map(message_text),
        json_values.map(json.dumps),
        st.dictionaries(st.sampled_from(["v", "job_id", "task"]), json_values).map(json.dumps),
        st.none(),
        st.integers(),
    )
)
def test_job_id_of_is_total(body: object) -> None:
    found = job_id_of(body)
    assert found is None or check_job_id(found) == found


@given(st.binary(min_size=1, max_size=300))
def test_bodies_that_are_not_utf8_are_bad_messages_never_crashes(raw: bytes) -> None:
    # Given a stored body as the queue reads it: text carrying any bytes
    text = message_text(raw)
    # Then the decoder accepts it only if it really was UTF-8, and fails only with a reason
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(BadMessage, match="not UTF-8"):
            Job.from_json(text)
    else:
        with contextlib.suppress(BadMessage):
            Job.from_json(text)


def test_a_valid_envelope_with_one_bad_byte_is_refused_not_altered() -> None:
    good = Job(task="t", params={"name": "é"}).to_json().replace("\\u00e9", "é")
    raw = good.encode().replace("é".encode(), b"\xe9")  # latin-1 where UTF-8 belongs
    with pytest.raises(BadMessage, match="not UTF-8"):
        Job.from_json(message_text(raw))


@pytest.mark.parametrize(
    ("input_rel", "output_rel"),
    [("data/a.csv", "data/a.csv"), ("data/a.csv", "data//a.csv"), ("data/a.csv", "data/./a.csv")],
)
def test_a_message_whose_output_is_its_input_is_refused_on_receive(
    storage: Storage, input_rel: str, output_rel: str
) -> None:
    text = json.dumps(envelope(input=input_rel, output=output_rel))
    with pytest.raises(BadMessage, match=r"its output .* is its input") as caught:
        decode_from_queue(text, storage)
    assert "\n" not in caught.value.message


def test_an_output_that_is_a_symlink_to_the_input_is_refused(storage: Storage) -> None:
    (storage.root / "in").mkdir()
    (storage.root / "in" / "a.csv").write_text("ID,Value\n")
    (storage.root / "out").symlink_to(storage.root / "in")
    text = json.dumps(envelope(input="in/a.csv", output="out/a.csv"))
    with pytest.raises(BadMessage, match="is its input"):
        decode_from_queue(text, storage)
    assert decode_from_queue(json.dumps(envelope(input="in/a.csv", output="out/b.csv")), storage)
